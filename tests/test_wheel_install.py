"""The library works installed: built as a wheel, installed (not editable) into a fresh virtual
environment and run from a folder outside the checkout, ``diffexp --help`` lists every command
and ``diffexp ablation --profile quick`` runs the main job to its report.

The fresh environment takes its dependencies from this one's site-packages (a ``.pth`` line, which
does not run this environment's editable-install hook), so nothing is downloaded; ``diffexp``
itself must come from the wheel, which the test checks.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("sample", "strategy-grids", "train", "export", "ablation", "sweep", "report", "embedded")


def _setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


def _build_wheel(dist: Path, source: Path) -> Path:
    # a copy of what the wheel is built from, so the build leaves nothing in the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "diffexp", source / "diffexp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # build here with this environment's setuptools when it can make wheels itself (70.1 brought
    # bdist_wheel in), else in pip's isolated build environment
    isolation = ["--no-build-isolation"] if _setuptools_version() >= (70, 1) else []
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(dist), str(source)]
    subprocess.run(command, check=True)
    (wheel,) = dist.glob("diffexp-*.whl")
    return wheel


def _fresh_environment(venv: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(install, check=True)
    return venv / "bin"


@pytest.mark.slow
def test_the_main_job_runs_from_a_wheel_outside_the_checkout(tmp_path):
    (tmp_path / "dist").mkdir()
    (tmp_path / "source").mkdir()
    wheel = _build_wheel(tmp_path / "dist", tmp_path / "source")
    bin_dir = _fresh_environment(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    readme_before = (ROOT / "README.md").read_bytes()

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import diffexp, diffexp.embedded.ablation as a; print(diffexp.__file__); "
         "print(a.DEFAULT_STUDY.is_file())"],
        cwd=work, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(tmp_path / "venv"), f"diffexp imported from {where[0]}, not the wheel"
    assert where[1] == "True"  # the main job's study file is package data

    shown = subprocess.run(
        [str(bin_dir / "diffexp"), "--help"], cwd=work, env=env, check=True, capture_output=True, text=True
    ).stdout
    missing = [c for c in COMMANDS if c not in shown]
    assert not missing, f"diffexp --help does not list {missing}:\n{shown}"

    done = subprocess.run(
        [str(bin_dir / "diffexp"), "ablation", "--profile", "quick"],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = work / "reports" / "embedded-quick"
    assert (report / "index.html").is_file() and (report / "verdict.md").read_text().strip()
    assert (work / "runs" / "sweeps" / "embedded_ablation-quick").is_dir()
    assert (ROOT / "README.md").read_bytes() == readme_before  # the library never writes the checkout
