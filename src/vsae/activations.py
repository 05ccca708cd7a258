"""Residual-stream activations harvested to an on-disk, memory-mapped cache.

:func:`harvest` runs the LM only up to its hook (``stop_at_layer``) over ``ctx_len``-token contexts
of a corpus split and writes, into one content-addressed store folder (kind ``acts``)::

    acts.npy       [n_tokens, d_model]  float32, or bfloat16 bits as uint16 (manifest "dtype")
    tokens.npy     [n_tokens] int32     token id at each activation
    ctx_index.npy  [n_tokens] int32     context (row of contexts.npy) each activation came from
    positions.npy  [n_tokens] int16     position within its context (0 = first token, never a BOS)
    contexts.npy   [n_ctx, ctx_len] int32   the contexts themselves
    ctx_doc.npy    [n_ctx] int32        index into doc_ids.json of each context's document
    doc_ids.json   document ids
    manifest.json  model describe(), hook, corpus, split, n_tokens, d_model, dtype, norm_factor,
                   sha256 + size of every data file, harvest path and timings, its own sha256
    config.json, COMPLETE

Robustness:

* **Atomic.** Everything is written into a fixed staging folder ``.<key>.staging`` next to the
  artifact and renamed into place only when complete (with ``COMPLETE`` and the manifest); a
  half-written cache is never read as whole.
* **Resumable.** Activations are appended batch by batch (``batch_size`` contexts); after each
  batch the file is flushed and fsync'ed and ``progress.json`` is replaced atomically. A killed
  harvest, re-run with the same arguments, truncates any rows past the last committed batch and
  continues from there; batch boundaries are fixed by the key, so the result is byte-identical to
  an uninterrupted run. A lock file prevents two processes writing the same cache.
* **Verified.** Opening a cache checks the manifest's own sha256, that the manifest's config is
  the requested one, and every file's size and ``.npy`` header; ``verify="full"`` also re-hashes
  the data files. Any mismatch raises :class:`CacheError` naming the folder to delete and the
  command to re-run.
* **Bounded memory.** Rows are written with plain file writes (no growing memmap, whose dirty
  pages would count as resident), checksums and the norm factor are computed by streaming the
  files in 64 MB chunks: peak RSS is the model plus one batch plus the plan's index arrays
  (14 bytes per token: 27 MB for the paper's 1.92M tokens), far below 4 GB; the summary line and
  the manifest report it.

The normalisation factor is the paper's: activations are scaled by one scalar so that their mean
squared norm is 1, ``norm_factor = sqrt(mean_i ||x_i||^2)``, estimated here over *all* cached
tokens (the paper used 100 batches of 192). Training divides by it; saved SAEs fold it back.
"""

from __future__ import annotations

import fcntl
import json
import hashlib
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .files import atomic_write_json
from .store import Store, canonical_json, config_key

FORMAT_VERSION = 1
KIND = "acts"
DATA_FILES = ("acts.npy", "tokens.npy", "ctx_index.npy", "positions.npy", "contexts.npy", "ctx_doc.npy")
DEFAULT_BATCH = 32  # contexts per forward pass
STORAGE = {"float32": "<f4", "bfloat16": "<u2", "float16": "<f2"}
HARVEST_PATH = "transformer-lens TransformerBridge forward with stop_at_layer=layer+1 (eager attention), no BOS"


class CacheError(RuntimeError):
    """An activation cache is corrupt, incomplete or not the one asked for."""


class _SimulatedKill(BaseException):
    """Raised by the test hook ``_kill_after_batches`` (a BaseException, like KeyboardInterrupt)."""


def _hint(path: Path) -> str:
    return (f"Delete {path} and re-run the harvest (`python -m vsae harvest ...` or re-execute the chapter); "
            "it will be recomputed.")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _npy_header(shape: tuple, dtype: str) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _bf16_bits_to_f32(u: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << 16).view(np.float32)


def _to_storage(x: torch.Tensor, dtype: str) -> np.ndarray:
    """``[N, d]`` tensor in the model dtype -> contiguous numpy rows in the storage dtype."""
    x = x.detach().cpu().contiguous()
    if dtype == "bfloat16":
        return x.view(torch.int16).numpy().view(np.uint16)
    if dtype == "float16":
        return x.to(torch.float16).numpy()
    return x.to(torch.float32).numpy()


def _manifest_digest(m: dict) -> str:
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------------------------
class ActivationCache:
    """A complete, read-only activation cache (one store folder), memory-mapped.

    ``acts``: ``np.memmap [n_tokens, d_model]`` (float32, or uint16 bfloat16 bits when
    ``manifest["dtype"] == "bfloat16"``); ``tokens``, ``ctx_index`` int32 and ``positions`` int16
    ``[n_tokens]``; ``contexts`` ``[n_ctx, ctx_len]`` int32. Use :meth:`get` / :meth:`batches` for
    float32 torch tensors.
    """

    def __init__(self, path: str | os.PathLike, verify: str = "quick", expect: dict | None = None):
        self.path = Path(path)
        if verify not in ("none", "quick", "full"):
            raise ValueError("verify must be 'none', 'quick' or 'full'")
        if not (self.path / "COMPLETE").exists():
            raise CacheError(f"activation cache {self.path} is incomplete (no COMPLETE marker). {_hint(self.path)}")
        try:
            self.manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"activation cache {self.path}: manifest.json is unreadable ({e}). {_hint(self.path)}") from e
        m = self.manifest
        if verify != "none":
            self._check_manifest(expect)
        self.n_tokens = int(m["n_tokens"])
        self.d_model = int(m["d_model"])
        self.dtype = m["dtype"]
        self.norm_factor = float(m["norm_factor"])
        self.hook = m["hook"]
        if verify != "none":
            self._check_files(full=(verify == "full"))
        try:
            mm = {f: np.load(self.path / f, mmap_mode="r") for f in DATA_FILES}
        except (OSError, ValueError) as e:
            raise CacheError(f"activation cache {self.path}: a data file is unreadable ({e}). {_hint(self.path)}") from e
        self.acts, self.tokens, self.ctx_index, self.positions = (
            mm["acts.npy"], mm["tokens.npy"], mm["ctx_index.npy"], mm["positions.npy"])
        self.contexts, self.ctx_doc = mm["contexts.npy"], mm["ctx_doc.npy"]
        if verify != "none":
            self._check_shapes()
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    # -- verification ---------------------------------------------------------------------------
    def _check_manifest(self, expect: dict | None) -> None:
        m = self.manifest
        need = ("format", "config", "n_tokens", "d_model", "dtype", "norm_factor", "files", "manifest_sha256", "hook")
        missing = [k for k in need if k not in m]
        if missing:
            raise CacheError(f"activation cache {self.path}: manifest lacks {missing}. {_hint(self.path)}")
        if m["manifest_sha256"] != _manifest_digest(m):
            raise CacheError(f"activation cache {self.path}: manifest.json was modified or is corrupt "
                             f"(its sha256 does not match). {_hint(self.path)}")
        if m["format"] != FORMAT_VERSION:
            raise CacheError(f"activation cache {self.path} has format {m['format']}, this code reads "
                             f"{FORMAT_VERSION}. {_hint(self.path)}")
        if config_key(m["config"]) != self.path.name and self.path.parent.name == KIND:
            raise CacheError(f"activation cache {self.path}: its config does not hash to its folder name "
                             f"({config_key(m['config'])}). {_hint(self.path)}")
        if expect is not None and canonical_json(expect) != canonical_json(m["config"]):
            diff = sorted(k for k in set(expect) | set(m["config"]) if expect.get(k) != m["config"].get(k))
            raise CacheError(f"activation cache {self.path} was made with a different config (fields {diff} "
                             f"differ). {_hint(self.path)}")

    def _check_files(self, full: bool) -> None:
        for f, spec in self.manifest["files"].items():
            p = self.path / f
            if not p.exists():
                raise CacheError(f"activation cache {self.path}: {f} is missing. {_hint(self.path)}")
            if p.stat().st_size != spec["bytes"]:
                raise CacheError(f"activation cache {self.path}: {f} has {p.stat().st_size} bytes, the manifest "
                                 f"says {spec['bytes']} (truncated or corrupt). {_hint(self.path)}")
            if full and _sha256_file(p) != spec["sha256"]:
                raise CacheError(f"activation cache {self.path}: {f} fails its sha256 checksum. {_hint(self.path)}")
        if set(self.manifest["files"]) != set(DATA_FILES):
            raise CacheError(f"activation cache {self.path}: the manifest lists {sorted(self.manifest['files'])}, "
                             f"expected {sorted(DATA_FILES)}. {_hint(self.path)}")

    def _check_shapes(self) -> None:
        if self.acts.shape != (self.n_tokens, self.d_model) or self.acts.dtype != np.dtype(STORAGE[self.dtype]):
            raise CacheError(f"activation cache {self.path}: acts.npy is {self.acts.shape} {self.acts.dtype}, "
                             f"manifest says ({self.n_tokens}, {self.d_model}) {self.dtype}. {_hint(self.path)}")
        for a in (self.tokens, self.ctx_index, self.positions):
            if a.shape != (self.n_tokens,):
                raise CacheError(f"activation cache {self.path}: an index file has shape {a.shape}, expected "
                                 f"({self.n_tokens},). {_hint(self.path)}")

    def verify(self) -> None:
        """Re-hash every data file against the manifest (raises :class:`CacheError`)."""
        self._check_files(full=True)
        self._check_shapes()

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        m = self.manifest
        return (f"ActivationCache({m['model']['name']} {self.hook}, {m['corpus']}/{m['split']}, "
                f"{self.n_tokens:,} tokens x {self.d_model} {self.dtype}, norm_factor={self.norm_factor:.4g})")

    def _rows_f32(self, idx: np.ndarray) -> np.ndarray:
        rows = self.acts[idx]
        if self.dtype == "bfloat16":
            return _bf16_bits_to_f32(rows)
        return rows.astype(np.float32, copy=False)

    def get(self, idx) -> torch.Tensor:
        """Raw (unnormalised) activations of rows ``idx``: float32 ``[len(idx), d_model]``.

        Rows are read in sorted order (memmap locality) and returned in the order asked.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim == 0:
            idx = idx[None]
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), self.d_model), dtype=np.float32)
        out[order] = self._rows_f32(idx[order])
        return torch.from_numpy(out)

    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        key = (int(seed), int(epoch))
        if key not in self._perm_cache:
            if len(self._perm_cache) >= 2:
                self._perm_cache.pop(next(iter(self._perm_cache)))
            self._perm_cache[key] = np.random.default_rng([int(seed), int(epoch)]).permutation(self.n_tokens)
        return self._perm_cache[key]

    def batch_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Row indices of training batch ``step``: positions ``[step*B, (step+1)*B)`` of the stream
        formed by concatenating one seeded permutation per epoch (epoch ``e`` uses ``(seed, e)``)."""
        start = int(step) * int(batch_size)
        out = np.empty(batch_size, dtype=np.int64)
        filled = 0
        while filled < batch_size:
            p = start + filled
            epoch, off = divmod(p, self.n_tokens)
            take = min(batch_size - filled, self.n_tokens - off)
            out[filled:filled + take] = self._perm(seed, epoch)[off:off + take]
            filled += take
        return out

    def batches(self, batch_size: int, seed: int, start_step: int = 0, n_steps: int | None = None
                ) -> Iterator[torch.Tensor]:
        """Shuffled training batches of raw activations, float32 ``[batch_size, d_model]``.

        Deterministic given ``(seed, step)``: resuming at ``start_step`` yields exactly the batches
        an uninterrupted run would have seen from that step. ``n_steps=None`` runs to the end of
        one epoch's worth of steps (``len(self) // batch_size`` in total); more steps continue into
        the next epoch with a fresh permutation. Reads only the rows needed (memmap).
        """
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if n_steps is None:
            n_steps = max(0, self.n_tokens // batch_size - start_step)
        for step in range(start_step, start_step + n_steps):
            yield self.get(self.batch_indices(step, batch_size, seed))

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """``x / norm_factor`` (unit mean squared norm over the cache)."""
        return x / self.norm_factor

    def context_doc_ids(self) -> list[str]:
        """Document id of every context (``contexts`` row)."""
        ids = json.loads((self.path / "doc_ids.json").read_text())
        return [ids[i] for i in self.ctx_doc]


def _sha256_file(path: Path) -> str:
    from .assets import sha256_file

    return sha256_file(path)


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------
def plan_contexts(lm, corpus: str, split: str, n_tokens: int, ctx_len: int
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Contexts for ``n_tokens`` tokens of ``corpus``/``split``: ``(contexts [n_ctx, ctx_len] int32,
    ctx_doc [n_ctx] int32, doc_ids)``, taken in the corpus order until enough tokens are found."""
    from . import data

    mode = data.chunk_mode(corpus, split)
    need = -(-int(n_tokens) // int(ctx_len))
    ctx_parts, doc_parts, doc_ids = [], [], []
    have = 0
    pending: list = []

    def flush() -> None:
        nonlocal have
        if not pending:
            return
        toks = data.document_tokens(lm, pending)
        ctx, di = data.chunk_contexts(toks, ctx_len, mode=mode, return_doc_index=True)
        base = len(doc_ids)
        doc_ids.extend(d.doc_id for d in pending)
        ctx_parts.append(ctx)
        doc_parts.append(di + base)
        have += len(ctx)
        pending.clear()

    for doc in data.iter_documents(corpus, split):
        pending.append(doc)
        if len(pending) >= 64:
            flush()
            if have >= need:
                break
    flush()
    if have < need:
        raise ValueError(f"{corpus}/{split} yields only {have:,} contexts of {ctx_len} tokens "
                         f"({have * ctx_len:,} tokens) for {lm.name}; {n_tokens:,} tokens were requested")
    ctx = np.concatenate(ctx_parts)[:need]
    cdoc = np.concatenate(doc_parts)[:need].astype(np.int32)
    used = int(cdoc.max()) + 1 if len(cdoc) else 0
    return ctx, cdoc, doc_ids[:used]


def harvest_config(lm, corpus: str, split: str, n_tokens: int, ctx_len: int, batch_size: int = DEFAULT_BATCH) -> dict:
    """The store key of a corpus harvest (everything that determines the bytes)."""
    from .data import corpus_identity

    return {"format": FORMAT_VERSION, "model": lm.describe(), "hook": lm.hook_name,
            "corpus": corpus_identity(corpus, split), "n_tokens": int(n_tokens), "ctx_len": int(ctx_len),
            "batch_size": int(batch_size), "path": HARVEST_PATH}


# --------------------------------------------------------------------------------------------
# harvesting
# --------------------------------------------------------------------------------------------
def harvest(lm, corpus: str, split: str, n_tokens: int, ctx_len: int, store: Store | None = None, *,
            batch_size: int = DEFAULT_BATCH, progress: bool = True, verify: str = "quick",
            _kill_after_batches: int | None = None) -> ActivationCache:
    """Activations of ``lm`` at its hook over the first ``n_tokens`` tokens of ``corpus``/``split``.

    Returns the cached result when present (the same config, verified); otherwise harvests into
    the store, resuming a killed run. ``batch_size`` contexts go through the model at once.
    """
    store = store or Store()
    cfg = harvest_config(lm, corpus, split, n_tokens, ctx_len, batch_size)
    if store.exists(KIND, cfg):
        return ActivationCache(store.path(KIND, cfg), verify=verify, expect=cfg)

    def plan():
        return plan_contexts(lm, corpus, split, n_tokens, ctx_len)

    labels = {"corpus": corpus, "split": split}
    return _run(lm, cfg, plan, store, n_tokens, ctx_len, batch_size, progress, labels, _kill_after_batches)


def harvest_contexts(lm, contexts: np.ndarray, store: Store | None = None, *, key: dict | None = None,
                     doc_ids: list[str] | None = None, ctx_doc: np.ndarray | None = None,
                     batch_size: int = DEFAULT_BATCH, progress: bool = True) -> ActivationCache:
    """Harvest given ``contexts [n_ctx, ctx_len]`` (e.g. probing passages) into the store.

    The key is ``key`` (anything JSON, describing where the contexts came from) plus the model,
    hook and the sha256 of the contexts themselves.
    """
    store = store or Store()
    contexts = np.ascontiguousarray(contexts, dtype=np.int32)
    n_ctx, ctx_len = contexts.shape
    cfg = {"format": FORMAT_VERSION, "model": lm.describe(), "hook": lm.hook_name, "corpus": key or {},
           "contexts_sha256": hashlib.sha256(contexts.tobytes()).hexdigest(), "n_tokens": int(n_ctx * ctx_len),
           "ctx_len": int(ctx_len), "batch_size": int(batch_size), "path": HARVEST_PATH}
    if store.exists(KIND, cfg):
        return ActivationCache(store.path(KIND, cfg), expect=cfg)
    if ctx_doc is None:
        ctx_doc = np.arange(n_ctx, dtype=np.int32)
        doc_ids = doc_ids or [f"ctx/{i}" for i in range(n_ctx)]

    def plan():
        return contexts, np.asarray(ctx_doc, dtype=np.int32), list(doc_ids)

    labels = {"corpus": (key or {}).get("corpus", "contexts"), "split": (key or {}).get("split", "")}
    return _run(lm, cfg, plan, store, n_ctx * ctx_len, ctx_len, batch_size, progress, labels, None)


def _run(lm, cfg, plan, store: Store, n_tokens: int, ctx_len: int, batch_size: int, progress: bool,
         labels: dict, kill_after: int | None) -> ActivationCache:
    from tqdm.auto import tqdm

    staging = store.staging_path(KIND, cfg)
    staging.mkdir(parents=True, exist_ok=True)
    lock = open(staging / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise CacheError(f"another process is harvesting into {staging}; wait for it or, if none is running, "
                         f"delete {staging}")
    try:
        return _run_locked(lm, cfg, plan, store, staging, n_tokens, ctx_len, batch_size, progress, labels,
                           kill_after, tqdm)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _run_locked(lm, cfg, plan, store, staging: Path, n_tokens, ctx_len, batch_size, progress, labels,
                kill_after, tqdm) -> ActivationCache:
    # One function in three numbered phases (plan, append, checksum), long on purpose: the staging
    # folder, its lock and the resume state belong to all three, and the kill/resume tests exercise
    # every boundary between them.
    t_start = time.time()
    dtype = str(lm.dtype).replace("torch.", "")
    if dtype not in STORAGE:
        raise ValueError(f"cannot cache activations of dtype {dtype}")
    sdt = np.dtype(STORAGE[dtype])
    d = int(lm.d_model)
    row_bytes = d * sdt.itemsize

    # 1. the plan (contexts and index files), written once; a resumed run reuses it
    cfg_file = staging / "config.json"
    if cfg_file.exists() and json.loads(cfg_file.read_text()) != json.loads(canonical_json(cfg)):
        raise CacheError(f"staging folder {staging} belongs to another config. Delete {staging} and re-run.")
    if not (staging / "plan.done").exists():
        contexts, ctx_doc, doc_ids = plan()
        n_ctx = len(contexts)
        tokens = contexts.reshape(-1)[:n_tokens].astype(np.int32)
        ctx_index = np.repeat(np.arange(n_ctx, dtype=np.int32), ctx_len)[:n_tokens]
        positions = np.tile(np.arange(ctx_len, dtype=np.int16), n_ctx)[:n_tokens]
        for name, arr in (("contexts.npy", contexts), ("ctx_doc.npy", ctx_doc), ("tokens.npy", tokens),
                          ("ctx_index.npy", ctx_index), ("positions.npy", positions)):
            np.save(staging / name, np.ascontiguousarray(arr))
        (staging / "doc_ids.json").write_text(json.dumps(doc_ids))
        cfg_file.write_text(json.dumps(json.loads(canonical_json(cfg)), indent=2, sort_keys=True))
        with open(staging / "acts.npy", "wb") as f:
            f.write(_npy_header((n_tokens, d), sdt.str))
        atomic_write_json(staging / "progress.json", {"rows_done": 0, "batches_done": 0}, default=float)
        (staging / "plan.done").write_text("")
    contexts = np.load(staging / "contexts.npy", mmap_mode="r")
    n_ctx = len(contexts)
    header_len = len(_npy_header((n_tokens, d), sdt.str))

    # 2. activations, appended batch by batch; progress committed after each
    prog = json.loads((staging / "progress.json").read_text())
    rows_done, b0 = int(prog["rows_done"]), int(prog["batches_done"])
    resumed, rows_at_start = rows_done > 0, rows_done
    n_batches = -(-n_ctx // batch_size)
    bar = tqdm(total=n_tokens, initial=rows_done, unit="tok", unit_scale=True, disable=not progress,
               desc=f"harvest {lm.name} {lm.hook_name} {labels.get('corpus')}/{labels.get('split')}")
    t_loop = time.time()
    with open(staging / "acts.npy", "r+b") as f:
        f.truncate(header_len + rows_done * row_bytes)  # drop rows of an uncommitted batch
        f.seek(header_len + rows_done * row_bytes)
        for b in range(b0, n_batches):
            c0, c1 = b * batch_size, min(n_ctx, (b + 1) * batch_size)
            toks = torch.from_numpy(np.array(contexts[c0:c1], dtype=np.int64))
            resid = lm.resid(toks)  # [B, T, d_model]
            rows = _to_storage(resid.reshape(-1, d), dtype)[: n_tokens - rows_done]
            f.write(rows.tobytes())
            if kill_after is not None and b + 1 - b0 >= kill_after:
                raise _SimulatedKill(f"simulated kill after batch {b}")
            f.flush()
            os.fsync(f.fileno())
            rows_done += len(rows)
            atomic_write_json(staging / "progress.json", {"rows_done": rows_done, "batches_done": b + 1}, default=float)
            bar.update(len(rows))
    bar.close()
    loop_s = time.time() - t_loop
    if rows_done != n_tokens:
        raise CacheError(f"harvest into {staging} ended with {rows_done} of {n_tokens} rows. Delete it and re-run.")

    # 3. checksums and the norm factor, streaming the files
    files, sq_sum = {}, 0.0
    chunk_rows = max(1, (64 << 20) // row_bytes)
    with open(staging / "acts.npy", "rb") as f:
        h = hashlib.sha256()
        head = f.read(header_len)
        h.update(head)
        left = n_tokens
        while left:
            n = min(left, chunk_rows)
            buf = f.read(n * row_bytes)
            h.update(buf)
            x = np.frombuffer(buf, dtype=sdt).reshape(n, d)
            x = _bf16_bits_to_f32(x) if dtype == "bfloat16" else x.astype(np.float32)
            sq_sum += float(np.einsum("ij,ij->", x, x, dtype=np.float64))
            left -= n
        files["acts.npy"] = {"sha256": h.hexdigest(), "bytes": (staging / "acts.npy").stat().st_size,
                             "shape": [n_tokens, d], "dtype": sdt.str}
    for name in DATA_FILES[1:]:
        p = staging / name
        arr = np.load(p, mmap_mode="r")
        files[name] = {"sha256": _sha256_file(p), "bytes": p.stat().st_size, "shape": list(arr.shape),
                       "dtype": arr.dtype.str}
    mean_sq = sq_sum / n_tokens
    total_s = time.time() - t_start
    peak = _peak_rss_bytes()
    manifest = {
        "format": FORMAT_VERSION,
        "config": json.loads(canonical_json(cfg)),
        "config_key": config_key(cfg),
        "model": lm.describe(),
        "hook": lm.hook_name,
        "corpus": labels.get("corpus"),
        "split": labels.get("split"),
        "n_tokens": int(n_tokens),
        "n_contexts": int(n_ctx),
        "ctx_len": int(ctx_len),
        "d_model": d,
        "dtype": dtype,
        "storage_dtype": sdt.str,
        "prepend_bos": bool(lm.prepend_bos),
        "norm_factor": float(np.sqrt(mean_sq)),
        "mean_squared_norm": float(mean_sq),
        "norm_factor_tokens": int(n_tokens),
        "files": files,
        "harvest": {"path": HARVEST_PATH, "batch_size": int(batch_size), "resumed": resumed,
                    "forward_seconds": round(loop_s, 2), "total_seconds": round(total_s, 2),
                    "rows_this_run": int(n_tokens - rows_at_start),
                    "tokens_per_second": round((n_tokens - rows_at_start) / max(loop_s, 1e-9), 1),
                    "peak_rss_bytes": peak, "torch_threads": torch.get_num_threads(),
                    "machine": platform.machine(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    atomic_write_json(staging / "manifest.json", manifest, default=float)
    for junk in ("progress.json", "plan.done", ".lock"):
        (staging / junk).unlink(missing_ok=True)
    final = store.commit(KIND, cfg, staging)
    nbytes = sum(v["bytes"] for v in files.values())
    rate = (n_tokens - rows_at_start) / max(loop_s, 1e-9)
    print(f"harvested {n_tokens:,} tokens of {lm.name} {lm.hook_name} ({labels.get('corpus')}/{labels.get('split')}, "
          f"{dtype}) in {total_s:.1f} s ({rate:,.0f} tok/s{' this run, resumed' if resumed else ''}), "
          f"{nbytes / 1e6:,.1f} MB, peak RSS {peak / 1e9:.2f} GB -> {final}", file=sys.stderr, flush=True)
    return ActivationCache(final, verify="quick", expect=cfg)


def open_cache(lm, corpus: str, split: str, n_tokens: int, ctx_len: int, store: Store | None = None,
               batch_size: int = DEFAULT_BATCH, verify: str = "quick") -> ActivationCache:
    """The existing cache for these arguments (raises :class:`CacheError` when it is absent)."""
    store = store or Store()
    cfg = harvest_config(lm, corpus, split, n_tokens, ctx_len, batch_size)
    p = store.path(KIND, cfg)
    if not store.exists(KIND, cfg):
        raise CacheError(f"no activation cache at {p}; run the harvest first")
    return ActivationCache(p, verify=verify, expect=cfg)
