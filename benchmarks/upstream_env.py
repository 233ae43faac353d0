"""LitServe 0.2.19 from the package index, in a virtual environment of its own, for `side_by_side.py`.

The environment is made once (`python -m venv`, then `pip install litserve==0.2.19`, which brings its own
FastAPI, uvicorn and pyzmq) under the user's cache directory, never in the project's environment, and is
reused by later runs. The MLP workload needs torch, which LitServe does not install: rather than have pip
resolve a second copy of several hundred MB, a `.pth` file added after the install appends the directory
holding the running interpreter's torch to the environment's path. Entries from a `.pth` file come after
the environment's own site-packages, so LitServe and its dependencies are always the environment's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["UPSTREAM_VERSION", "default_dir", "ensure_upstream"]

UPSTREAM_VERSION = "0.2.19"
_PTH = "zz_side_by_side_torch.pth"


def default_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "litserve-bench" / f"litserve-{UPSTREAM_VERSION}"


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _installed_version(python: Path) -> str | None:
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litserve'))"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(python).parent,  # not the checkout: its litserve must not be what is found
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def _torch_dir() -> Path | None:
    try:
        import torch
    except ImportError:
        return None
    return Path(torch.__file__).resolve().parent.parent


def ensure_upstream(venv: Path) -> Path:
    """The python of a virtual environment at `venv` holding LitServe 0.2.19 (made if missing)."""
    python = _python(venv)
    if not python.exists():
        print(f"creating {venv} for LitServe {UPSTREAM_VERSION}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if _installed_version(python) != UPSTREAM_VERSION:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"litserve=={UPSTREAM_VERSION}"], check=True, cwd=venv
        )
    torch_dir = _torch_dir()
    if torch_dir is not None:
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(site) / _PTH).write_text(f"{torch_dir}\n")
    version = _installed_version(python)
    if version != UPSTREAM_VERSION:
        raise RuntimeError(f"{venv} holds litserve {version}, not {UPSTREAM_VERSION}")
    return python
