"""An OS lock beside a SQLite file, for the stores two processes may create at once (Optuna's
and MLflow's)."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path


@contextlib.contextmanager
def schema_lock(database: Path):
    """An OS lock beside a SQLite file while a process opens it: Optuna's and MLflow's schema
    creation are not safe against a second process doing the same ('table ... already exists')."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".schema-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def tracking_schema_lock(uri: str):
    """:func:`schema_lock` for a SQLite tracking store; nothing for a server."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with schema_lock(Path(uri.removeprefix("sqlite:///"))):
        yield
