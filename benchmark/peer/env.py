"""The peer environment (`.venv-trl`): TRL 0.23.1 and the diffusers/transformers it works with,
on the project's own torch build.

Created on first use by `benchmark/peer_comparison.py` (or `python benchmark/peer/env.py`). A
`.pth` file appends this project's site-packages to the peer's path, so torch, torchvision and
numpy come from the same install as diffexp's (no second torch download) while the peer's own
trl/transformers/diffusers/peft/accelerate, installed into `.venv-trl`, shadow the project's.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements-trl.txt")
DEFAULT_DIR = ROOT / ".venv-trl"


def peer_python(env_dir: Path = DEFAULT_DIR) -> Path:
    return env_dir / "bin" / "python"


def ensure_peer_env(env_dir: Path = DEFAULT_DIR, log=print) -> Path:
    """The peer interpreter, creating or refreshing the environment when its pins changed."""
    python = peer_python(env_dir)
    marker = env_dir / ".installed"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log(f"creating the peer environment {env_dir} (TRL 0.23.1; a few minutes, downloads ~100 MB)")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    peer_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(peer_site) / "zz_project_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-warn-conflicts", "-r", str(REQUIREMENTS)], check=True
    )
    check = (
        "import torch, trl, diffusers, transformers; from trl import DDPOTrainer, AlignPropTrainer; "
        "print(trl.__version__, torch.__version__)"
    )
    versions = subprocess.run([str(python), "-c", check], check=True, capture_output=True, text=True).stdout.strip()
    log(f"peer environment ready: trl, torch = {versions}")
    marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(ensure_peer_env())
