"""Content-addressed artifact store shared by every chapter.

An artifact is a folder ``<root>/<kind>/<key>/`` where ``key`` is the first 16 hex digits of the
sha256 of the canonical JSON of the config that produced it. A folder is *complete* once it holds
``COMPLETE``; it is written under a temporary name and renamed into place, so a killed run never
leaves a half-written artifact that reads as whole. Re-running with the same config reuses it; a new
config computes only what is missing.

Tables are stored as Parquet (``<name>.parquet``, with a ``<name>.csv`` copy for people), never as
pickles, which a pandas upgrade or a renamed class would break. A store written before that (tables
as ``<name>.pkl``) is read once and migrated in place; a pickle that cannot be read is refused with
the folder to delete.
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

from .files import atomic_write
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

    def work_dir(self, kind: str, key: str) -> Path:
        """A stable scratch folder ``<root>/<kind>/<key>`` for long work that resumes after a kill
        (training runs keep their checkpoints there); never read as an artifact."""
        p = self.root / kind / key
        p.mkdir(parents=True, exist_ok=True)
        return p

    # -- tables -----------------------------------------------------------------------------
    def get_table(self, kind: str, cfg: Any, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Return the stored DataFrame for ``(kind, cfg)``, computing and storing it if missing."""
        if self.exists(kind, cfg):
            return read_tables(self.path(kind, cfg))["table"]
        df = compute()
        with self.writing(kind, cfg) as tmp:
            write_tables(tmp, {"table": df})
        return df


def write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write each table as ``<name>.parquet`` (what is read back) and ``<name>.csv`` (for people)."""
    for name, df in tables.items():
        atomic_write(folder / f"{name}.parquet", lambda f, df=df: df.to_parquet(f))
        df.to_csv(folder / f"{name}.csv", index=False)


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every table of an artifact folder, by name; legacy pickles are migrated to Parquet first."""
    for legacy in sorted(folder.glob("*.pkl")):
        _migrate_pickle(legacy)
    out = {}
    for p in sorted(folder.glob("*.parquet")):
        try:
            out[p.stem] = pd.read_parquet(p)
        except Exception as e:  # corrupt artifact: say what to delete
            raise RuntimeError(f"stored table {p} is unreadable ({e}); delete {folder} and re-run to recompute it") from e
    return out


def _migrate_pickle(p: Path) -> None:
    """Turn a table stored by an older version (``<name>.pkl``) into ``<name>.parquet``."""
    target = p.with_suffix(".parquet")
    if not target.exists():
        try:
            df = pd.read_pickle(p)
        except Exception as e:
            raise RuntimeError(
                f"stored table {p} was written by an older version and cannot be read here ({e}); "
                f"delete {p.parent} and re-run to recompute it") from e
        if not isinstance(df, pd.DataFrame):
            raise RuntimeError(f"{p} is not a table; delete {p.parent} and re-run to recompute it")
        atomic_write(target, lambda f: df.to_parquet(f))
    p.unlink()
