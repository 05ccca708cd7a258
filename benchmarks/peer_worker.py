"""One timing process of ``benchmarks/peers.py``: a TopK training step of one implementation,
alternated with the naive dense step of ``benchmarks/naive_topk.py``, in this interpreter's
environment.

Usage: ``python benchmarks/peer_worker.py {ours,dictionary_learning,sae_lens} --batch B --threads T
--steps N [--d-in 576 --d-sae 4608 --k 256 --seed 0]``

Prints one JSON line: tokens/s of the implementation's step and of the naive step (medians over
the N alternating timed steps, after two untimed warm-up steps: step 0 initialises b_dec from the
geometric median in all three), the torch version and thread count, and the first and last
training losses (a check that the step really trains).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive_topk import NaiveTopK, naive_step  # noqa: E402

TOTAL_STEPS = 10_000  # schedule length given to every trainer (lr warm-up/decay never reach the timed steps' cost)


def make_ours(d_in: int, d_sae: int, k: int, batch: int) -> Callable[[int, torch.Tensor], float]:
    from vsae.models import TopKSAEConfig
    from vsae.training import SAETrainer, TrainConfig

    tc = TrainConfig(steps=TOTAL_STEPS, batch_size=batch, warmup_steps=0, kl_warmup_frac=0.0)
    tr = SAETrainer("topk", TopKSAEConfig(d_in, d_sae, k), tc)
    return lambda step, x: tr.update(x, step)["loss"]


def make_dictionary_learning(d_in: int, d_sae: int, k: int, batch: int) -> Callable[[int, torch.Tensor], float]:
    from dictionary_learning.trainers.top_k import TopKTrainer

    tr = TopKTrainer(
        steps=TOTAL_STEPS, activation_dim=d_in, dict_size=d_sae, k=k, layer=0, lm_name="benchmark",
        device="cpu", seed=0,
    )
    return lambda step, x: tr.update(step, x)


def make_sae_lens(d_in: int, d_sae: int, k: int, batch: int) -> Callable[[int, torch.Tensor], float]:
    """SAELens's ``TopKTrainingSAE`` (default config) stepped by its own ``SAETrainer``, as the body
    of ``SAETrainer.fit`` does it: ``maybe_reset_sparsity()``, ``step(batch)`` (activation scaler,
    ``_train_step``: ``training_forward_pass`` with the dead-neuron mask and the TopK aux loss,
    firing statistics, backward, clip 1.0, Adam, lr scheduler), then ``n_training_steps += 1``.
    Wandb logging is off (the default); SAELens 6 has no decoder renorm step for TopK (it rescales
    by the decoder norm in the forward) and initialises b_dec to zero, not a geometric median."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device="cpu", dtype="float32"))
    lr = 2e-4 / (d_sae / 2**14) ** 0.5
    tcfg = SAETrainerConfig(  # lr_end: what its runner config's __post_init__ sets (lr / 10)
        total_training_samples=TOTAL_STEPS * batch, train_batch_size_samples=batch, lr=lr, lr_end=lr / 10,
        device="cpu",
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))
    sae.to("cpu")

    def step(i: int, x: torch.Tensor) -> float:
        trainer.maybe_reset_sparsity()
        out = trainer.step(x)
        trainer.n_training_steps += 1
        return float(out.loss.detach())

    return step


MAKERS = {"ours": make_ours, "dictionary_learning": make_dictionary_learning, "sae_lens": make_sae_lens}


def bench(peer: str, batch: int, threads: int, steps: int, d_in: int, d_sae: int, k: int, seed: int = 0) -> dict:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    # the same random activations in every process (same torch, same seed): rows of unit expected
    # squared norm, as the trainers see normalised activations; two batches alternate
    xs = [torch.randn(batch, d_in, generator=g) / d_in**0.5 for _ in range(2)]
    torch.manual_seed(seed)
    step = MAKERS[peer](d_in, d_sae, k, batch)
    naive = NaiveTopK(d_in, d_sae, k)
    nopt = torch.optim.Adam(naive.parameters(), lr=1e-4)
    losses = [step(0, xs[0]), step(1, xs[1])]  # untimed: b_dec init, lazy state
    naive_step(naive, nopt, xs[0])
    t_step, t_naive = [], []
    for i in range(steps):
        x = xs[i % 2]
        t0 = time.perf_counter()
        naive_step(naive, nopt, x)
        t_naive.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        losses.append(step(2 + i, x))
        t_step.append(time.perf_counter() - t0)
    ms, mn = statistics.median(t_step), statistics.median(t_naive)
    return {
        "peer": peer, "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "d_in": d_in, "d_sae": d_sae, "k": k,
        "step_s": ms, "naive_s": mn, "step_tok_s": batch / ms, "naive_tok_s": batch / mn,
        "loss_first": losses[0], "loss_last": losses[-1],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=sorted(MAKERS))
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(json.dumps(bench(a.peer, a.batch, a.threads, a.steps, a.d_in, a.d_sae, a.k, a.seed)))


if __name__ == "__main__":
    main()
