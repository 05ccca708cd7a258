"""The second virtual environment of the interop tests: SAELens 6.54.12 + SAE Bench 0.6.0.

They pin transformer-lens < 4 and numpy < 2, so they cannot live in the main ``.venv``. The environment
is created once at ``<repo>/.venv-interop/`` (git-ignored; ``$VSAE_INTEROP_VENV`` moves it) from
``requirements.txt`` beside this file and reused while the requirements file is unchanged: the folder's
``vsae-interop.json`` records the sha256 of that file and the Python version, and a mismatch rebuilds it.

Build: ``python -m venv`` into ``.venv-interop.building``, ``pip install torch==2.13.0`` first (the
machine's local CPU build of that exact version), then ``pip install --no-deps -r requirements.txt``
(the complete pinned closure: nothing is resolved, so nothing else is fetched), an import check, and a
rename into place, under a file lock so that two runs never build it at once.

When the build fails, one bounded ``pip download`` of ``sae-lens==6.54.12`` tells a missing registry
(:class:`EnvUnavailable`: the tests skip, saying why) from a broken requirements file (a
``RuntimeError``: the tests fail).

``python tests/interop/interop_env.py`` builds it (or reports it is already there) and prints the path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"
#: first install step: exactly this torch, which pip takes from the machine's local CPU wheel
TORCH = "torch==2.13.0"
IMPORT_CHECK = ("import sae_lens, sae_bench, sae_bench.custom_saes.topk_sae, sae_bench.evals.core.main; "
                "print(sae_lens.__version__)")


class EnvUnavailable(RuntimeError):
    """The interop environment cannot be created here (no package registry)."""


def venv_dir() -> Path:
    return Path(os.environ.get("VSAE_INTEROP_VENV", REPO / ".venv-interop")).expanduser().resolve()


def requirements_digest() -> str:
    h = hashlib.sha256(REQUIREMENTS.read_bytes())
    h.update(f"python {sys.version_info.major}.{sys.version_info.minor}".encode())
    return h.hexdigest()


def python_of(root: Path) -> Path:
    return root / "bin" / "python"


def _stamp(root: Path) -> dict | None:
    try:
        return json.loads((root / "vsae-interop.json").read_text())
    except (OSError, ValueError):
        return None


def is_ready(root: Path | None = None) -> bool:
    root = root or venv_dir()
    st = _stamp(root)
    return bool(st and st.get("requirements_sha256") == requirements_digest() and python_of(root).exists())


def _run(cmd: list[str], log, timeout: float) -> None:
    log.write(f"$ {' '.join(map(str, cmd))}\n")
    log.flush()
    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if r.returncode:
        raise subprocess.CalledProcessError(r.returncode, cmd)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _registry_reachable(python: str, timeout: float = 180) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as d:
        try:
            r = subprocess.run([python, "-m", "pip", "download", "--no-deps", "-q", "--dest", d, "sae-lens==6.54.12"],
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"pip download of sae-lens==6.54.12 timed out after {timeout:.0f} s"
        return r.returncode == 0, (r.stderr or r.stdout).strip()[-400:]


def ensure_env(timeout: float = 3600) -> Path:
    """The interop environment's python (built first if missing or stale); see the module docstring."""
    root = venv_dir()
    if is_ready(root):
        return python_of(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_ready(root):  # built by another run while we waited
            return python_of(root)
        building = root.parent / f"{root.name}.building"
        shutil.rmtree(building, ignore_errors=True)
        log_path = root.parent / f"{root.name}.log"
        t0 = time.time()
        try:
            with open(log_path, "w") as log:
                _run([sys.executable, "-m", "venv", str(building)], log, 600)
                py = str(python_of(building))
                _run([py, "-m", "pip", "install", "-q", TORCH], log, timeout)
                _run([py, "-m", "pip", "install", "-q", "--no-deps", "-r", str(REQUIREMENTS)], log, timeout)
                _run([py, "-c", IMPORT_CHECK], log, 600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            ok, why = _registry_reachable(sys.executable)
            shutil.rmtree(building, ignore_errors=True)
            if not ok:
                raise EnvUnavailable(f"the package registry is unreachable ({why}); the interop environment "
                                     f"needs sae-lens==6.54.12 and sae-bench==0.6.0 from it") from e
            raise RuntimeError(f"building the interop environment failed ({e}); log {log_path}:\n{_tail(log_path)}") from e
        stamp = {"requirements_sha256": requirements_digest(), "python": sys.version.split()[0],
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_seconds": round(time.time() - t0, 1)}
        (building / "vsae-interop.json").write_text(json.dumps(stamp, indent=2))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(building, root)  # a venv run as `bin/python -m ...` does not care that it moved
        return python_of(root)


if __name__ == "__main__":
    t = time.time()
    ready = is_ready()
    py = ensure_env()
    print(f"{py} ({'already there' if ready else f'built in {time.time() - t:.0f} s'})")
