"""In-memory stand-ins shared by the interop tests: what training records, and an activation source."""

from __future__ import annotations

import torch


def train_meta(layer: int = 3) -> dict:
    """What training records in cfg.meta (vsae.training), for a pythia-70m-random hook."""
    return {"name": "x", "norm_factor": 3.7, "tokens": 1000,
            "cache": {"checksum": "0" * 16, "hook": f"blocks.{layer}.hook_resid_post",
                      "model": {"name": "pythia-70m-random", "layer": layer, "prepend_bos": True}}}


class MemoryActs:
    """An in-memory activation source for vsae.training (what ActivationCache offers the trainer)."""

    def __init__(self, acts: torch.Tensor):
        self.acts = acts
        self.norm_factor = float(acts.pow(2).sum(1).mean().sqrt())
        self.manifest = {"d_model": acts.shape[1], "n_tokens": acts.shape[0], "checksum": "mem",
                         "hook": "blocks.3.hook_resid_post", **{"model": train_meta()["cache"]["model"]}}

    def batches(self, batch_size, seed, start_step=0, n_steps=None):
        g = torch.Generator().manual_seed(seed)
        step = start_step
        while n_steps is None or step < start_step + n_steps:
            yield self.acts[torch.randint(0, len(self.acts), (batch_size,), generator=g)]
            step += 1
