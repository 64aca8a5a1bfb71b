"""Where a study's trials live: Optuna storage URLs, validated with messages that say what to do.

* no URL: a SQLite file inside the run directory, ``sqlite:///<run_dir>/optuna.db``;
* any SQLAlchemy URL Optuna's RDBStorage accepts (``postgresql+psycopg2://user:pw@host/db``,
  ``mysql+pymysql://...``, ``sqlite:////abs/path.db``); heartbeats are Optuna's own. On SQLite,
  trial claims (WAITING -> RUNNING) also take a file lock beside the database, because SQLite
  ignores the row lock that makes Optuna's claim atomic (see :func:`claim_locked_rdb_storage`);
* ``journal:<file>``: Optuna's JournalStorage on a file (JournalFileBackend), for many machines
  sharing a file system without a database server. Optuna has no heartbeats for journal
  storage, so the harness records its own (a trial system attribute, see ``worker.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffexp.algorithms.sqlite_lock import schema_lock

#: pip packages that provide SQLAlchemy's database drivers (driver name -> package).
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]'",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "pymysql": "PyMySQL",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb",
    "cx_oracle": "cx_Oracle",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
ASYNC_DRIVERS = {"asyncpg", "aiomysql", "aiosqlite", "asyncmy", "psycopg_async"}


class StorageError(ValueError):
    """A storage URL that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class StorageSpec:
    url: str
    kind: str  # "rdb" or "journal"
    path: Path | None = None  # the journal file, or the SQLite file

    @property
    def display(self) -> str:
        return redact(self.url)


def default_storage_url(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    if url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _expand(path: str, url: str) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "~user" of an unknown user
        raise StorageError(
            f"storage {url}: cannot expand the home directory in {path!r}; give an absolute path"
        ) from None


def parse_storage_url(url: str | None, run_dir: str | Path, create_dirs: bool = True) -> StorageSpec:
    """Validate a storage URL (default: SQLite in ``run_dir``); raises :class:`StorageError`.

    ``create_dirs``: create the folder of a SQLite or journal file (off for dry runs)."""
    if url is None or url == "":
        url = default_storage_url(run_dir)
        if create_dirs:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
    url = str(url).strip()
    if url.startswith("journal:"):
        rest = url[len("journal:") :]
        if rest.startswith("//"):  # journal:///abs/file or journal://relative/file
            rest = rest[2:]
        if not rest:
            raise StorageError(
                "storage journal:<file> needs a file path, e.g. journal:runs/sweeps/study/optuna.journal"
            )
        path = _expand(rest, url)  # relative paths: from the working directory
        _require_folder(path, url, create_dirs, run_dir)
        return StorageSpec(url=f"journal:{path.resolve()}", kind="journal", path=path.resolve())
    if "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL; use sqlite:///<file>, an SQLAlchemy URL such as "
            "postgresql+psycopg2://user:password@host:5432/db or mysql+pymysql://..., or journal:<file>"
        )
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise StorageError(f"storage {redact(url)} is not a valid SQLAlchemy URL: {err}") from None
    if parsed.drivername.startswith("redis"):
        raise StorageError(
            f"storage {redact(url)}: Redis journal storage is not supported by the harness; use journal:<file> or a "
            "database URL"
        )
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise StorageError(
            f"storage {redact(url)}: unknown database scheme {parsed.drivername!r}; use sqlite:///<file>, "
            "postgresql+psycopg2://..., mysql+pymysql://... (any SQLAlchemy URL) or journal:<file>"
        ) from None
    driver = getattr(dialect, "driver", parsed.get_driver_name())
    if driver in ASYNC_DRIVERS:
        raise StorageError(
            f"storage {redact(url)}: async driver {driver!r} cannot be used by Optuna; use a synchronous one (e.g. postgresql+psycopg2://)"
        )
    try:
        dialect.import_dbapi() if hasattr(dialect, "import_dbapi") else dialect.dbapi()
    except ImportError as err:
        package = DRIVER_PACKAGES.get(driver, driver)
        raise StorageError(
            f"storage {redact(url)}: the {parsed.get_backend_name()} driver {driver!r} is not installed "
            f"({err}); install it with: pip install {package}"
        ) from None
    path = None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file::memory"):
            raise StorageError(
                f"storage {url}: an in-memory SQLite database cannot be shared by workers; give a file, sqlite:///path/to/optuna.db"
            )
        path = _expand(parsed.database, redact(url))
        _require_folder(path, redact(url), create_dirs, run_dir)
    return StorageSpec(url=url, kind="rdb", path=path)


def _require_folder(path: Path, url: str, create: bool, run_dir: str | Path) -> None:
    """A storage file outside the run directory must be in a folder that exists: a typo in the path
    would otherwise create a new tree with a new, empty study in it. Inside the run directory, the
    folder is made."""
    if not create or path.parent.is_dir():
        return
    if path.resolve().is_relative_to(Path(run_dir).resolve()):
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        raise StorageError(
            f"storage {url}: folder {path.parent} does not exist; create it first (mkdir -p {path.parent}) or fix "
            "the path"
        )


def retry_callback_class():
    """Optuna's RetryHeartbeatStaleTrialCallback (>= 4.9), or RetryFailedTrialCallback before it."""
    import optuna

    return (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    )


def claim_locked_rdb_storage(lock_path: Path):
    """An RDBStorage class whose WAITING -> RUNNING transitions hold a file lock at ``lock_path``.

    Optuna claims a trial by reading its row ``FOR UPDATE`` and setting RUNNING only if it is still
    WAITING. SQLite ignores ``FOR UPDATE``, so two workers can both read WAITING and both claim
    one trial. SQLite's workers share the database's file system, so a file lock beside it makes
    the read-and-set one step. Other transitions (heartbeats, results) do not need it."""
    import optuna
    from filelock import FileLock

    class ClaimLockedRDBStorage(optuna.storages.RDBStorage):
        def set_trial_state_values(self, trial_id, state, values=None):
            if state != optuna.trial.TrialState.RUNNING:
                return super().set_trial_state_values(trial_id, state, values)
            with FileLock(lock_path, timeout=120):
                return super().set_trial_state_values(trial_id, state, values)

    return ClaimLockedRDBStorage


def open_storage(spec: StorageSpec, heartbeat_interval: int, grace_period: int, stale_callback: Callable | None = None):
    """The Optuna storage object, with heartbeats (RDB) and the stale-trial retry callback."""
    import optuna

    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(spec.path)))
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    if stale_callback is not None:
        name = (
            "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        )
        kwargs[name] = stale_callback
    engine_kwargs: dict[str, Any] = {}
    storage_class = optuna.storages.RDBStorage
    if spec.path is not None:  # SQLite
        engine_kwargs["connect_args"] = {"timeout": 120}  # concurrent workers wait for the file lock
        storage_class = claim_locked_rdb_storage(spec.path.with_name(spec.path.name + ".claim.lock"))
    else:
        engine_kwargs["pool_pre_ping"] = True
    lock = schema_lock(spec.path) if spec.path is not None else contextlib.nullcontext()
    try:
        with lock, warnings.catch_warnings():  # a new SQLite file: one process at a time creates its tables
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return storage_class(spec.url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as err:  # connection refused, bad credentials, ...
        raise StorageError(
            f"storage {spec.display}: cannot open: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from None
