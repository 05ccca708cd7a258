"""The naive dense TopK SAE step that every trainer benchmark is normalised by.

It depends on torch alone, so that :mod:`benchmarks.peer_worker` can time it in the peers' own
environments (which do not have ``vsae``) exactly as ``train_throughput.py`` times it in ours.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class NaiveTopK(nn.Module):
    """The textbook dense TopK SAE step (dictionary_learning's maths, no sparse kernels)."""

    def __init__(self, d_in: int, d_sae: int, k: int):
        super().__init__()
        w = torch.randn(d_sae, d_in)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.k = k

    def loss(self, x):
        a = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        v, i = a.topk(self.k, dim=-1, sorted=False)
        f = torch.zeros_like(a).scatter(-1, i, v)
        x_hat = f @ self.W_dec + self.b_dec
        return (x - x_hat).float().pow(2).sum(-1).mean()


def naive_step(model: NaiveTopK, opt, x, dtype: str = "float32") -> None:
    """One training step: loss, backward, decoder-gradient projection, clip 1.0, Adam, decoder renorm."""
    opt.zero_grad(set_to_none=True)
    if dtype == "bfloat16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.loss(x)
    else:
        loss = model.loss(x)
    loss.backward()
    with torch.no_grad():
        g, w = model.W_dec.grad, model.W_dec
        g -= (g * w).sum(1, keepdim=True) * w
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        model.W_dec /= model.W_dec.norm(dim=1, keepdim=True)
