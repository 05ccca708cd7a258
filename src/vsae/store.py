"""Content-addressed artifact store shared by every chapter.

An artifact is a folder ``<root>/<kind>/<key>/`` where ``key`` is the first 16 hex digits of the
sha256 of the canonical JSON of the config that produced it. A folder is *complete* once it holds
``COMPLETE``; it is written under a temporary name and renamed into place, so a killed run never
leaves a half-written artifact that reads as whole. Re-running with the same config reuses it; a new
config computes only what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from .paths import store_dir


def canonical_json(cfg: Any) -> str:
    """JSON with sorted keys and no whitespace; tuples become lists, paths strings."""

    def default(o):
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        if isinstance(o, Path):
            return str(o)
        if hasattr(o, "to_dict"):
            return o.to_dict()
        raise TypeError(f"cannot key an artifact on {type(o).__name__}: {o!r}")

    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=default)


def config_key(cfg: Any) -> str:
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:16]


class Store:
    """The artifact store. ``Store()`` uses ``$VSAE_STORE`` (default ``$VSAE_HOME/store``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else store_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, cfg: Any) -> Path:
        return self.root / kind / config_key(cfg)

    def exists(self, kind: str, cfg: Any) -> bool:
        return (self.path(kind, cfg) / "COMPLETE").exists()

    @contextlib.contextmanager
    def writing(self, kind: str, cfg: Any) -> Iterator[Path]:
        """Yield a temporary folder; on success it becomes the artifact for ``cfg`` atomically."""
        final = self.path(kind, cfg)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(json.loads(canonical_json(cfg)), indent=2, sort_keys=True))
            yield tmp
            (tmp / "COMPLETE").write_text("")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- resumable artifacts ----------------------------------------------------------------
    def staging_path(self, kind: str, cfg: Any) -> Path:
        """A fixed (not random) work folder for ``cfg``, so that a killed writer can resume.

        Never read as an artifact: only :meth:`commit` turns it into one.
        """
        final = self.path(kind, cfg)
        return final.parent / f".{final.name}.staging"

    def commit(self, kind: str, cfg: Any, staging: Path) -> Path:
        """Mark ``staging`` complete and rename it atomically to the artifact folder of ``cfg``."""
        final = self.path(kind, cfg)
        (staging / "COMPLETE").write_text("")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        return final

    # -- tables -----------------------------------------------------------------------------
    def get_table(self, kind: str, cfg: Any, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Return the stored DataFrame for ``(kind, cfg)``, computing and storing it if missing."""
        p = self.path(kind, cfg) / "table.pkl"
        if self.exists(kind, cfg):
            try:
                return pd.read_pickle(p)
            except Exception as e:  # corrupt artifact: say so, recompute
                raise RuntimeError(
                    f"stored table {p} is unreadable ({e}); delete {p.parent} and re-run to recompute it"
                ) from e
        df = compute()
        with self.writing(kind, cfg) as tmp:
            df.to_pickle(tmp / "table.pkl")
            df.to_csv(tmp / "table.csv", index=False)
        return df

    def get_json(self, kind: str, cfg: Any, compute: Callable[[], dict]) -> dict:
        p = self.path(kind, cfg) / "result.json"
        if self.exists(kind, cfg):
            return json.loads(p.read_text())
        out = compute()
        with self.writing(kind, cfg) as tmp:
            (tmp / "result.json").write_text(json.dumps(out, indent=2, sort_keys=True, default=float))
        return out
