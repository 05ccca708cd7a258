"""The interop environment, shared by every test in this folder (built once per session)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import interop_env  # noqa: E402


@pytest.fixture(scope="session")
def peer_python() -> Path:
    mode = os.environ.get("VSAE_INTEROP", "auto")
    if mode == "skip":
        pytest.skip("VSAE_INTEROP=skip: the SAELens / SAE Bench interop test was switched off")
    t = time.time()
    try:
        py = interop_env.ensure_env()
    except interop_env.EnvUnavailable as e:
        if mode == "require":
            pytest.fail(f"VSAE_INTEROP=require but {e}")
        pytest.skip(f"interop environment cannot be created: {e}")
    print(f"interop env {py} ready in {time.time() - t:.1f} s")
    return py


