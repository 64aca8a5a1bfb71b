"""A run directory is a contract: one training at a time, and a resume only of the same run.

``RunDirectory.open`` takes an exclusive lock (``run.lock``, an OS lock that dies with its process,
so a SIGKILL never leaves a stale lock behind), then compares the config with the one the run
was started with (stored in the checkpoint, else in ``config.yaml``). Only after both pass does
anything in the directory change: ``config.yaml`` and a line in ``resumes.jsonl`` recording the
fields that changed on resume.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from diffexp.algorithms.run_identity import flatten_config, resumable
from diffexp.algorithms.run_record import CONFIG_NAME, HOLDER_NAME, LOCK_NAME, MLFLOW_RUN_NAME, RESUMES_NAME


class RunDirectoryError(ValueError):
    """A run directory that cannot be used as asked; the message says why and what to do."""


def config_differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (old value, new value) for every field that differs."""
    a, b = flatten_config(old), flatten_config(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if _norm(a.get(k)) != _norm(b.get(k))}


def _norm(value):
    return json.loads(json.dumps(value, default=str))


def _with_defaults(config_class, stored: dict) -> dict:
    """A checkpoint's config with the fields a later diffexp added, at their defaults (which keep the
    old behaviour), so that adding a field does not make old runs unresumable; as stored if invalid."""
    try:
        return config_class.model_validate(stored).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError; the identity check then names the differences
        return stored


class RunDirectory:
    """The folder of one run (``run.output_dir/run.name``); use ``with RunDirectory.open(...)``."""

    def __init__(self, path: Path, lock: FileLock | None):
        self.path = path
        self.lock = lock

    @property
    def primary(self) -> bool:
        """Whether this process owns the directory (DDP's other ranks open it unlocked)."""
        return self.lock is not None

    @classmethod
    def open(cls, config, primary: bool = True, lock_timeout: float = 0) -> RunDirectory:
        """Lock the directory (``primary``: the process that owns it; DDP's other ranks do not lock;
        ``lock_timeout``: seconds to wait for another holder). Raises :class:`RunDirectoryError`."""
        path = run_path(config)
        if not primary:
            return cls(path, None)
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path / LOCK_NAME), timeout=lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirectoryError(
                f"run directory {path} is in use by another training ({describe_holder(path)}). Wait for it to "
                "finish, stop it, or train into another directory (run.name=...)."
            ) from None
        directory = cls(path, lock)
        directory._write_holder()
        return directory

    def check_and_record(self, config, stored_config: dict | None) -> None:
        """Refuse ``config`` if it is not the run of ``stored_config`` (the config of the checkpoint
        to resume from; None: a fresh start), then write ``config.yaml`` (and ``resumes.jsonl``)."""
        if not self.primary:
            return
        new = config.model_dump(mode="json")
        if stored_config is not None:
            stored_config = _with_defaults(type(config), stored_config)
            self._check_identity(stored_config, new)
        self._record(new, stored_config)

    def _write_holder(self) -> None:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        (self.path / HOLDER_NAME).write_text(json.dumps(holder))

    def _check_identity(self, old: dict, new: dict) -> None:
        changed = config_differences(old, new)
        refused = {k: v for k, v in changed.items() if not resumable(k)}
        if refused:
            lines = "\n".join(f"  {k}: {v[0]!r} -> {v[1]!r}" for k, v in refused.items())
            raise RunDirectoryError(
                f"cannot resume {self.path}: its checkpoint was trained with a different config:\n{lines}\n"
                "A resume must continue the same run. Train into a new directory (run.name=...), or start this "
                "one over (diffexp train --restart), which discards its checkpoint and curve."
            )

    def _record(self, new: dict, old: dict | None) -> None:
        (self.path / CONFIG_NAME).write_text(yaml.safe_dump(new, sort_keys=False))
        changed = config_differences(old, new) if old is not None else {}
        if changed:
            entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "changed": {k: list(v) for k, v in changed.items()}}
            with open(self.path / RESUMES_NAME, "a") as f:
                f.write(json.dumps(entry) + "\n")
            print("resumed with changed fields: " + ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in changed.items()))

    # -- the MLflow run of this directory ---------------------------------------------------
    def stored_mlflow_run(self, tracking_uri: str) -> str | None:
        """The MLflow run id this directory logged into on ``tracking_uri`` (None: none yet)."""
        file = self.path / MLFLOW_RUN_NAME
        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text())
        except ValueError:
            return None
        return data.get("run_id") if data.get("tracking_uri") == tracking_uri else None

    def store_mlflow_run(self, tracking_uri: str, run_id: str) -> None:
        (self.path / MLFLOW_RUN_NAME).write_text(json.dumps({"tracking_uri": tracking_uri, "run_id": run_id}))

    def forget_mlflow_run(self) -> None:
        (self.path / MLFLOW_RUN_NAME).unlink(missing_ok=True)

    def close(self) -> None:
        if self.lock is not None and self.lock.is_locked:
            (self.path / HOLDER_NAME).unlink(missing_ok=True)
            self.lock.release()

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_path(config) -> Path:
    out = Path(config.run.output_dir)
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"run.output_dir {out} is a file, not a directory; point it at a folder")
    path = out / config.run.name
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"run directory {path} is a file; choose another run.name or run.output_dir")
    return path


def describe_holder(path: Path) -> str:
    try:
        holder = json.loads((path / HOLDER_NAME).read_text())
        return f"host {holder['host']}, PID {holder['pid']}, started {holder['started']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
