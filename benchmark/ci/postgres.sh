#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the sweep harness's tests, on loopback only.
#
#   eval "$(bash benchmark/ci/postgres.sh)"      # exports DIFFEXP_TEST_POSTGRES_URL
#   bash benchmark/ci/postgres.sh stop           # stop it again
#
# Installs PostgreSQL with apt-get when no server binaries are found (needs root), then runs
# a private cluster (its own data directory, port and socket directory, so it never touches a
# system cluster) listening on 127.0.0.1 only, with a password-protected role and database.
# Idempotent: a second call reuses the running server. stdout carries only the
# `export DIFFEXP_TEST_POSTGRES_URL=...` line (progress goes to stderr), so `eval` works.
#
# Settings (environment): DIFFEXP_PG_DIR (/tmp/diffexp-postgres), DIFFEXP_PG_PORT (54329),
# DIFFEXP_PG_USER (diffexp), DIFFEXP_PG_PASSWORD (diffexp), DIFFEXP_PG_DB (diffexp_test).
set -euo pipefail

PGDIR="${DIFFEXP_PG_DIR:-/tmp/diffexp-postgres}"
PORT="${DIFFEXP_PG_PORT:-54329}"
DBUSER="${DIFFEXP_PG_USER:-diffexp}"
DBPASS="${DIFFEXP_PG_PASSWORD:-diffexp}"
DBNAME="${DIFFEXP_PG_DB:-diffexp_test}"
DATA="$PGDIR/data"
LOG="$PGDIR/server.log"

say() { echo "[postgres.sh] $*" >&2; }

find_bin() {  # the newest installed server's bin directory
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" != 0 ]; then
    say "PostgreSQL server binaries not found and not root: install the 'postgresql' package first"; exit 1
  fi
  say "installing PostgreSQL with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN="$(find_bin)" || { say "PostgreSQL installed but initdb/pg_ctl not found"; exit 1; }
fi

# The server refuses to run as root: run it as the 'postgres' account (created if missing).
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PGDIR" --shell /bin/bash postgres
  OWNER=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

if [ "${1:-start}" = stop ]; then
  if [ -f "$DATA/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; else say "not running"; fi
  exit 0
fi

mkdir -p "$PGDIR"
chown "$OWNER" "$PGDIR"
chmod 700 "$PGDIR"

if [ ! -f "$DATA/PG_VERSION" ]; then
  say "initialising a cluster in $DATA"
  PWFILE="$(mktemp)"; echo "$DBPASS" > "$PWFILE"; chown "$OWNER" "$PWFILE"
  as_owner "$BIN/initdb" -D "$DATA" -U "$DBUSER" --pwfile="$PWFILE" -A scram-sha-256 -E UTF8 --no-locale >&2
  rm -f "$PWFILE"
  cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  # Password logins over TCP on loopback only (no 'host all all 0.0.0.0/0').
  cat > "$DATA/pg_hba.conf" <<HBA
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
HBA
fi

if as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  say "server already running on 127.0.0.1:$PORT"
else
  say "starting the server on 127.0.0.1:$PORT (log: $LOG)"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >&2 || { tail -20 "$LOG" >&2; exit 1; }
fi

export PGPASSWORD="$DBPASS"
PSQL="$BIN/psql"; [ -x "$PSQL" ] || PSQL=psql
for _ in $(seq 1 30); do
  "$PSQL" -h 127.0.0.1 -p "$PORT" -U "$DBUSER" -d postgres -Atqc "select 1" >/dev/null 2>&1 && break
  sleep 1
done
if [ "$("$PSQL" -h 127.0.0.1 -p "$PORT" -U "$DBUSER" -d postgres -Atqc "select 1 from pg_database where datname = '$DBNAME'")" != 1 ]; then
  "$PSQL" -h 127.0.0.1 -p "$PORT" -U "$DBUSER" -d postgres -qc "create database \"$DBNAME\"" >&2
fi
say "ready: database $DBNAME, user $DBUSER"
echo "export DIFFEXP_TEST_POSTGRES_URL=postgresql+psycopg2://$DBUSER:$DBPASS@127.0.0.1:$PORT/$DBNAME"
