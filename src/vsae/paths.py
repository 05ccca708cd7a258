"""Where the project keeps what it downloads and computes.

Everything lives under one folder, ``$VSAE_HOME`` (default: ``.vsae/`` at the repository root, or
``~/.cache/vsae`` when the package is not run from a checkout). ``assets/`` holds the pinned offline
downloads, ``store/`` the content-addressed artifacts (activation caches, trained SAEs, eval tables).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def vsae_home() -> Path:
    env = os.environ.get("VSAE_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".vsae"
    return Path.home() / ".cache" / "vsae"


def assets_dir() -> Path:
    return vsae_home() / "assets"


def store_dir() -> Path:
    return Path(os.environ.get("VSAE_STORE", vsae_home() / "store")).expanduser().resolve()
