"""Servers bind to loopback unless told otherwise.

The project starts one server itself (PostgreSQL in CI, benchmark/ci/postgres.sh) and documents
the dashboards users start (mlflow ui, optuna-dashboard); every such command names 127.0.0.1.
"""

import re
from pathlib import Path

from diffexp.harness.cli import EPILOG

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmark" / "README.md"]


def server_commands(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if re.search(r"\b(mlflow (ui|server)|optuna-dashboard)\b", line) and not line.strip().startswith("|")
    ]


def test_documented_dashboards_bind_to_loopback():
    commands = server_commands(EPILOG) + [c for doc in DOCS for c in server_commands(doc.read_text())]
    assert len(commands) >= 3
    for command in commands:
        assert "--host 127.0.0.1" in command, command


def test_ci_postgres_listens_on_loopback_only():
    script = (ROOT / "benchmark" / "ci" / "postgres.sh").read_text()
    assert "listen_addresses = '127.0.0.1'" in script
    hosts = re.findall(r"^host\s+\S+\s+\S+\s+(\S+)", script, flags=re.M)
    assert hosts and all(h.startswith("127.0.0.1/") for h in hosts), hosts
