"""Where a report came from: package versions, code commit, machine. A reader of a pasted table
should be able to tell which code and which environment produced the numbers.

Versions come from package metadata (no heavy imports); the commit is read from ``.git`` files
directly (no ``git`` process; a dirty tree is not detected).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = [
    "diffexp",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "lightning",
    "mlflow",
    "optuna",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "seaborn",
    "open_clip_torch",
    "compel",
    "pillow",
]


def package_versions(names=PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_dir(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file() and dot.read_text().startswith("gitdir:"):  # worktree / submodule
            return (folder / dot.read_text().split(":", 1)[1].strip()).resolve()
    return None


def git_commit(start: Path | None = None) -> str | None:
    """HEAD's commit of the repository containing ``start`` (default: this package's checkout)."""
    git = _git_dir(Path(start or Path(__file__).resolve().parent))
    if git is None:
        return None
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else None
        for base in filter(None, [git, (git / common).resolve() if common else None]):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        return subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, str]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "?",
        "cpus": str(os.cpu_count()),
        "memory_gib": str(_memory_gib()),
        "gpus": _gpus() or "none visible",
        "python": sys.version.split()[0],
    }


def collect(command: list[str] | None = None) -> dict:
    """Everything the provenance section shows about the report's own environment."""
    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(command) if command else " ".join(sys.argv),
        "git_commit": git_commit() or "unknown",
        "machine": machine(),
        "packages": package_versions(),
    }
