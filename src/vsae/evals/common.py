"""Helpers shared by the evaluations: SAE calls, special-token masks, probes, stored tables.

Everything here talks to an SAE only through the interface fixed in ``DESIGN.md`` (``encode``,
``encode_topk`` when present, ``decode``, ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``) and to a
language model only through ``vsae.lm.LanguageModel``'s methods, so the unit tests can use tiny
hand-made stand-ins.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------------------------
# SAE helpers
# --------------------------------------------------------------------------------------------


def sae_param(sae) -> torch.Tensor:
    """A parameter of the SAE, to read its device and dtype."""
    return sae.W_dec


def d_sae_of(sae) -> int:
    d = getattr(sae, "d_sae", None)
    return int(d) if d is not None else int(sae.W_dec.shape[0])


def to_sae(sae, x: torch.Tensor) -> torch.Tensor:
    p = sae_param(sae)
    return x.to(device=p.device, dtype=p.dtype)


@torch.no_grad()
def encode(sae, x: torch.Tensor) -> torch.Tensor:
    """Dense sparse codes in float32 on the CPU."""
    return sae.encode(to_sae(sae, x)).float().cpu()


@torch.no_grad()
def encode_sparse(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [n, k], indices [n, k]) of the active latents; entries with value 0 are inactive.

    Uses ``encode_topk`` when the SAE has it (no dense ``d_sae``-wide tensor), else ``encode``.
    """
    x = to_sae(sae, x)
    if hasattr(sae, "encode_topk"):
        vals, idx = sae.encode_topk(x)
        return vals.float().cpu(), idx.long().cpu()
    f = sae.encode(x).float().cpu()
    k = int((f != 0).sum(-1).max().item()) if f.numel() else 0
    k = max(k, 1)
    vals, idx = f.abs().topk(k, dim=-1)
    return f.gather(-1, idx), idx


@torch.no_grad()
def decode(sae, f: torch.Tensor) -> torch.Tensor:
    return sae.decode(to_sae(sae, f)).float().cpu()


def decoder_matrix(sae) -> torch.Tensor:
    """``W_dec`` as a float32 CPU tensor ``[d_sae, d_in]``."""
    return sae.W_dec.detach().float().cpu()


# --------------------------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------------------------


def special_ids_of(lm) -> list[int]:
    """BOS / EOS / PAD (and any other special) token ids of an LM, as SAE Bench masks them."""
    ids = set(int(i) for i in (getattr(lm, "special_token_ids", None) or []))
    tok = getattr(lm, "tokenizer", None)
    if tok is not None:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(tok, name, None)
            if v is not None:
                ids.add(int(v))
    return sorted(ids)


def keep_mask(tokens: torch.Tensor | np.ndarray, special_ids: Iterable[int]) -> torch.Tensor:
    """True where a token is *not* special (BOS, EOS, PAD): the positions SAE Bench scores."""
    t = tokens if isinstance(tokens, torch.Tensor) else torch.from_numpy(np.array(tokens))
    keep = torch.ones(t.shape, dtype=torch.bool)
    for s in special_ids:
        keep &= t != int(s)
    return keep


def bos_id(lm) -> int | None:
    if not getattr(lm, "prepend_bos", False):
        return None
    tok = getattr(lm, "tokenizer", None)
    v = getattr(tok, "bos_token_id", None) if tok is not None else None
    return None if v is None else int(v)


def pad_id(lm) -> int:
    tok = getattr(lm, "tokenizer", None)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(tok, name, None) if tok is not None else None
        if v is not None:
            return int(v)
    return 0


def right_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``[B, T]`` with right padding; also return the lengths."""
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    T = int(lens.max()) if len(seqs) else 0
    out = torch.full((len(seqs), T), int(pad), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out, lens


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


@contextlib.contextmanager
def few_threads(n: int = 1):
    """Run small-tensor loops (probe training) on ``n`` threads: intra-op parallelism only adds
    synchronisation cost there (a 16-element BCE took 12 ms on 2 busy cores, 0.01 ms on one)."""
    old = torch.get_num_threads()
    torch.set_num_threads(min(n, old))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class LinearProbe(nn.Module):
    """``logit = x @ w + b``: the probe SAE Bench trains with torch for SCR/TPP and full-width probing."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Linear(dim, 1)

    def forward(self, x):
        return self.net(x).squeeze(-1)

    @property
    def weight(self) -> torch.Tensor:
        return self.net.weight.detach()[0]

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if len(y) == 0:
            return float("nan")
        pred = (self(x.float()) > 0).long()
        return float((pred == y.long()).float().mean())


def train_torch_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l1_penalty: float | None = None,
    patience: int = 10,
    seed: int = 42,
) -> tuple[LinearProbe, float]:
    """SAE Bench's ``train_probe_gpu``: AdamW, BCE, optional L1 on the weights, early stopping.

    As in SAE Bench, the probe kept is the one with the best *test* accuracy over the epochs and
    that accuracy is returned (SAE Bench selects on the test split; we reproduce that choice).
    """
    x_train = x_train.float()
    x_test = x_test.float()
    y_train_f = y_train.float()
    with _seeded(seed), few_threads(1 if x_train.shape[1] * batch_size < 2_000_000 else 2):
        probe = LinearProbe(x_train.shape[1])
        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.AdamW(probe.parameters(), lr=lr)
        crit = nn.BCEWithLogitsLoss()
        best_acc, best_state, bad = -1.0, None, 0
        with torch.enable_grad():
            for _ in range(int(epochs)):
                perm = torch.randperm(len(x_train), generator=gen)
                for i in range(0, len(perm), batch_size):
                    b = perm[i : i + batch_size]
                    loss = crit(probe(x_train[b]), y_train_f[b])
                    if l1_penalty:
                        loss = loss + l1_penalty * probe.net.weight.abs().sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                acc = probe.accuracy(x_test, y_test)
                if acc > best_acc:
                    best_acc, best_state, bad = acc, copy.deepcopy(probe.state_dict()), 0
                else:
                    bad += 1
                if bad >= patience:
                    break
    probe.load_state_dict(best_state)
    probe.eval()
    return probe, float(best_acc)


def train_sklearn_probe(x_train, y_train, x_test, y_test, *, max_iter: int = 1000, C: float = 1.0) -> float:
    """SAE Bench's ``train_sklearn_probe``: L2 logistic regression (C=1, max_iter=1000); test accuracy."""
    from sklearn.linear_model import LogisticRegression

    xtr = np.asarray(x_train, dtype=np.float32)
    xte = np.asarray(x_test, dtype=np.float32)
    ytr = np.asarray(y_train).astype(int)
    yte = np.asarray(y_test).astype(int)
    if len(np.unique(ytr)) < 2:
        return float("nan")
    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(C=C, max_iter=max_iter)
    # a few features: threads only add synchronisation (lbfgs slowed ~20x on two busy cores)
    with threadpool_limits(1 if xtr.shape[1] < 256 else None):
        clf.fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def top_k_mean_diff(x: torch.Tensor | np.ndarray, y, k: int) -> np.ndarray:
    """Indices of the ``k`` dimensions with the largest |mean(pos) - mean(neg)| (SAE Bench's selection)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    diff = np.abs(x[y].mean(0) - x[~y].mean(0))
    order = np.argsort(-diff, kind="stable")
    return order[: int(k)]


def sae_fingerprint(sae) -> str:
    """A short content hash of an SAE's weights, to key stored results on the SAE itself."""
    import hashlib

    h = hashlib.sha256()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        t = getattr(sae, name, None)
        if t is not None:
            a = t.detach().float().cpu().contiguous().numpy()
            h.update(name.encode())
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    k = getattr(getattr(sae, "cfg", None), "k", None)
    h.update(str(k).encode())
    return h.hexdigest()[:16]
