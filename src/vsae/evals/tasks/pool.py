"""The passage pool: every passage of a suite run through the language model once.

Per-token residual activations go to disk (SAE codes must be computed per token, then mean-pooled),
with the mean-pooled residual beside them. Every task of every eval is a view of that pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..common import bos_id, encode_sparse, keep_mask, pad_id, right_pad, sae_fingerprint, special_ids_of
from .suite import TaskSuite, load_suite, save_suite

class PassagePool:
    """Per-token residual activations of every passage of a suite, and their mean-pooled residual.

    ``acts[offsets[i]:offsets[i+1]]`` are passage ``i``'s tokens (BOS included when the LM
    prepends one); ``keep`` marks the non-special tokens, the only ones pooled (SAE Bench zeroes
    BOS/EOS/PAD and averages over the rest).
    """

    def __init__(self, acts, tokens, offsets, keep, pooled_resid, suite: TaskSuite | None = None,
                 path: Path | None = None):
        self.acts = acts
        self.tokens = tokens
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.keep = np.asarray(keep, dtype=bool)
        self.pooled_resid = np.asarray(pooled_resid, dtype=np.float32)
        self.suite = suite
        self.path = path
        self._codes: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def d_model(self) -> int:
        return int(self.acts.shape[1])

    def passage_of_token(self) -> np.ndarray:
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def clear_codes(self) -> None:
        """Free the pooled codes kept in memory (about 0.1 GB per SAE at d_sae 4608)."""
        self._codes.clear()

    @torch.no_grad()
    def pooled_codes(self, sae, chunk_tokens: int = 4096, cache: bool = True) -> np.ndarray:
        """Mean over each passage's kept tokens of the SAE code: ``[n_passages, d_sae]`` float32.

        Each token is encoded on its own and the codes averaged (SAE Bench's
        ``get_sae_meaned_activations``); kept in memory per SAE weights.
        """
        key = sae_fingerprint(sae)
        if cache and key in self._codes:
            return self._codes[key]
        d_sae = int(sae.W_dec.shape[0])
        pid = torch.as_tensor(self.passage_of_token())
        keep = torch.as_tensor(self.keep)
        out = torch.zeros(len(self), d_sae, dtype=torch.float64)
        n_tok = len(pid)
        for a in range(0, n_tok, chunk_tokens):
            b = min(n_tok, a + chunk_tokens)
            k = keep[a:b]
            if not bool(k.any()):
                continue
            x = torch.from_numpy(np.array(self.acts[a:b], dtype=np.float32))[k]
            vals, idx = encode_sparse(sae, x)
            rows = pid[a:b][k][:, None].expand_as(idx)
            out.index_put_((rows.reshape(-1), idx.reshape(-1)), vals.reshape(-1).double(), accumulate=True)
        counts = np.add.reduceat(self.keep.astype(np.int64), self.offsets[:-1]) if n_tok else np.zeros(len(self))
        counts = torch.as_tensor(np.maximum(counts, 1), dtype=torch.float64)
        res = (out / counts[:, None]).float().numpy()
        if cache:
            self._codes[key] = res
        return res


def _pool_key(lm, suite: TaskSuite, dtype: str) -> dict:
    desc = lm.describe() if hasattr(lm, "describe") else {"name": getattr(lm, "name", type(lm).__name__)}
    return {"lm": desc, "hook": getattr(lm, "hook_name", None), "suite": suite.key(), "dtype": dtype,
            "prepend_bos": bool(getattr(lm, "prepend_bos", False))}


@torch.no_grad()
def harvest_pool(lm, suite: TaskSuite, store=None, *, dtype: str = "float16", batch_size: int = 16,
                 progress: bool = True) -> PassagePool:
    """Run every passage of ``suite`` through ``lm`` up to the hook, once; store it when given a store.

    ``dtype`` is the on-disk dtype of the per-token activations (``float16`` halves the disk use;
    pooled residuals are always computed in float32 from the float32 activations).
    """
    cfg = _pool_key(lm, suite, dtype)
    if store is not None and store.exists("probe_pool", cfg):
        return load_pool(store.path("probe_pool", cfg), suite)
    bos = bos_id(lm)
    seqs = [([bos] + list(t[: suite.ctx_len - 1])) if bos is not None and (not t or t[0] != bos)
            else list(t[: suite.ctx_len]) for t in suite.tokens]
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    n_tok = int(offsets[-1])
    d = int(getattr(lm, "d_model"))
    special = special_ids_of(lm)
    tokens_flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]) if seqs else np.zeros(0, np.int32)
    keep = keep_mask(tokens_flat, special).numpy() if n_tok else np.zeros(0, bool)
    pooled = np.zeros((len(seqs), d), dtype=np.float32)
    np_dtype = np.dtype(dtype)

    def fill(acts_arr):
        order = np.argsort(-lens, kind="stable")
        it = range(0, len(order), batch_size)
        if progress:
            try:
                from tqdm.auto import tqdm

                it = tqdm(it, desc=f"harvest {suite.family} passages", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        for a in it:
            ids = order[a : a + batch_size]
            batch, blens = right_pad([seqs[i] for i in ids], pad_id(lm))
            r = lm.resid(batch).float().cpu()
            for row, i in enumerate(ids):
                x = r[row, : blens[row]]
                acts_arr[offsets[i] : offsets[i + 1]] = x.numpy().astype(np_dtype)
                k = torch.as_tensor(keep[offsets[i] : offsets[i + 1]])
                pooled[i] = x[k].mean(0).numpy() if bool(k.any()) else 0.0

    if store is None:
        acts = np.zeros((n_tok, d), dtype=np_dtype)
        fill(acts)
        return PassagePool(acts, tokens_flat, offsets, keep, pooled, suite)
    with store.writing("probe_pool", cfg) as tmp:
        acts = np.lib.format.open_memmap(tmp / "acts.npy", mode="w+", dtype=np_dtype, shape=(n_tok, d))
        fill(acts)
        acts.flush()
        del acts
        np.save(tmp / "tokens.npy", tokens_flat)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "keep.npy", keep)
        np.save(tmp / "pooled_resid.npy", pooled)
        (tmp / "suite").mkdir()
        save_suite(suite, tmp / "suite")
    return load_pool(store.path("probe_pool", cfg), suite)


def load_pool(path: Path, suite: TaskSuite | None = None) -> PassagePool:
    path = Path(path)
    if (path / "suite.pkl").exists():  # stored by an older version: rewrite the suite without pickles
        (path / "suite").mkdir(exist_ok=True)
        (path / "suite.pkl").rename(path / "suite" / "suite.pkl")
        load_suite(path / "suite")
        (path / "passages.pkl").unlink(missing_ok=True)
    if suite is None:
        suite = load_suite(path / "suite")
    return PassagePool(np.load(path / "acts.npy", mmap_mode="r"), np.load(path / "tokens.npy"),
                       np.load(path / "offsets.npy"), np.load(path / "keep.npy"), np.load(path / "pooled_resid.npy"),
                       suite, path)
