"""What training with bf16 encoder matmuls (``TrainConfig(dtype="bfloat16")``) costs in accuracy.

    .venv/bin/python benchmarks/bf16_accuracy.py            # 1,500 steps (the headline budget), k 64 and 256
    .venv/bin/python benchmarks/bf16_accuracy.py --quick    # 300 steps, k 64

On real activations of the offline profile's LM at its hook (SmolLM2-135M, layer 9; harvested here
from the offline training and evaluation corpora, special tokens dropped, scaled so that the mean
squared norm is d_in, the trainer's input convention), it trains each SAE (TopK and vSAE at each k,
d_sae 4608, batch 192, the trainer's defaults) twice from the same initialisation on the same
batches: once in float32 and once with the dense encoder matmuls in bfloat16 (fp32 master weights,
optimizer and sparse parts). It prints, per SAE:

- the relative error of the first step's gradients (bf16 against fp32, same weights, same batch);
- explained variance, L0 and the alive fraction of both trained SAEs on held-out tokens, evaluated
  in float32, and their differences;
- the median cosine between matching decoder rows of the two runs (how far the weights drifted);
- the step time of each.

The last line reads ``bf16: max_abs_ev_diff=<x> max_rel_grad_err=<y>``. bf16 keeps 8 bits of
mantissa, so a first-step gradient error of ~1e-2 is its rounding, not a bug; the question is
whether it moves the trained SAE's metrics by more than the seed-to-seed spread the book reports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vsae.activations import plan_contexts  # noqa: E402
from vsae.evals.common import keep_mask, special_ids_of  # noqa: E402
from vsae.lm import D_MODEL, load_lm  # noqa: E402
from vsae.models import TopKSAEConfig, VSAEConfig  # noqa: E402
from vsae.profiles import get_profile  # noqa: E402
from vsae.training import SAETrainer, TrainConfig  # noqa: E402

PROFILE = get_profile("offline")
D_IN = D_MODEL[PROFILE.lm]
D_SAE = D_IN * PROFILE.expansion
BATCH = PROFILE.batch_size


def harvest(lm, split: str, n_tokens: int) -> torch.Tensor:
    """Residuals [n, d_in] (float32) of ``n_tokens`` tokens of the offline corpus, special tokens dropped."""
    ctx, _, _ = plan_contexts(lm, "offline", split, n_tokens, PROFILE.ctx_len)
    toks = torch.from_numpy(ctx.astype(np.int64))
    special = special_ids_of(lm)
    out = []
    with torch.no_grad():
        for i in range(0, len(toks), 32):
            t = toks[i : i + 32]
            r = lm.resid(t).float()
            out.append(r[keep_mask(t, special)])
    return torch.cat(out)[:n_tokens]


def specs(ks) -> dict:
    out = {}
    for k in ks:
        out[f"topk_k{k}"] = TopKSAEConfig(D_IN, D_SAE, k)
        out[f"vsae_k{k}"] = VSAEConfig(D_IN, D_SAE, k)
    return out


@torch.no_grad()
def metrics(sae, x: torch.Tensor) -> dict:
    sae.compute_dtype = torch.float32
    sae.eval()
    sse, l0, fired = 0.0, 0.0, torch.zeros(D_SAE, dtype=torch.bool)
    for a in range(0, len(x), 2048):
        xb = x[a : a + 2048]
        vals, idx = sae.encode_topk(xb)
        xh = sae.decode_topk(vals, idx)
        sse += float((xb - xh).double().pow(2).sum())
        nz = vals != 0
        l0 += float(nz.sum())
        fired[idx[nz]] = True
    total = float((x.double() - x.double().mean(0)).pow(2).sum())
    return {"ev": 1 - sse / total, "l0": l0 / len(x), "alive": float(fired.float().mean())}


def first_step_grad_error(name: str, cfg, x: torch.Tensor, steps: int) -> float:
    """max over weight matrices of ||g_bf16 - g_fp32|| / ||g_fp32|| on the first batch, same weights."""
    grads = {}
    for dt in ("float32", "bfloat16"):
        tr = SAETrainer(name, cfg, TrainConfig(steps=steps, batch_size=BATCH, dtype=dt))
        tr.model.init_b_dec(x)
        out = tr.model(x, kl_scale=1.0, tokens_since_fired=tr.tokens_since_fired)
        out.loss.backward()
        grads[dt] = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters()
                     if p.grad is not None and p.dim() == 2}
    return max(float((grads["bfloat16"][n] - g).norm() / g.norm().clamp_min(1e-30))
               for n, g in grads["float32"].items())


def train(name: str, cfg, dtype: str, xs: torch.Tensor, steps: int) -> tuple[SAETrainer, float]:
    tr = SAETrainer(name, cfg, TrainConfig(steps=steps, batch_size=BATCH, dtype=dtype))
    order = torch.randperm(len(xs) // BATCH * BATCH, generator=torch.Generator().manual_seed(0)).view(-1, BATCH)
    times = []
    for step in range(steps):
        t = time.perf_counter()
        tr.update(xs[order[step % len(order)]], step)
        times.append(time.perf_counter() - t)
    return tr, statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 steps, k 64 only")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 1,500; --quick 300)")
    ap.add_argument("--k", default=None, help="comma-separated k values (default 64,256; --quick 64)")
    ap.add_argument("--eval-tokens", type=int, default=40_000)
    a = ap.parse_args(argv)
    steps = a.steps or (300 if a.quick else 1500)
    ks = [int(k) for k in (a.k or ("64" if a.quick else "64,256")).split(",")]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    lm = load_lm(PROFILE.lm, PROFILE.layer)
    n_train = min(steps * BATCH, 288_000)
    x_train = harvest(lm, "train", n_train)
    x_eval = harvest(lm, "eval", a.eval_tokens)
    del lm
    scale = float(x_train.pow(2).sum(-1).mean().sqrt()) / D_IN**0.5
    x_train, x_eval = x_train / scale, x_eval / scale
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {PROFILE.lm} layer {PROFILE.layer}: "
          f"{len(x_train):,} training and {len(x_eval):,} held-out tokens (harvest {time.perf_counter() - t0:.0f} s); "
          f"{steps} steps of {BATCH}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'sae':>10} {'grad err':>9} {'ev fp32':>8} {'ev bf16':>8} {'d ev':>8} {'l0 fp32':>8} {'l0 bf16':>8} "
          f"{'alive fp32':>10} {'alive bf16':>10} {'dec cos':>8} {'ms fp32':>8} {'ms bf16':>8}")
    worst_ev = worst_grad = 0.0
    for name, cfg in specs(ks).items():
        g = first_step_grad_error(name, cfg, x_train[:BATCH], steps)
        t32, s32 = train(name, cfg, "float32", x_train, steps)
        t16, s16 = train(name, cfg, "bfloat16", x_train, steps)
        m32, m16 = metrics(t32.model, x_eval), metrics(t16.model, x_eval)
        cos = torch.nn.functional.cosine_similarity(t32.model.W_dec.detach(), t16.model.W_dec.detach(), dim=1)
        d_ev = m16["ev"] - m32["ev"]
        worst_ev, worst_grad = max(worst_ev, abs(d_ev)), max(worst_grad, g)
        print(f"{name:>10} {g:9.2e} {m32['ev']:8.4f} {m16['ev']:8.4f} {d_ev:+8.4f} {m32['l0']:8.1f} {m16['l0']:8.1f} "
              f"{m32['alive']:10.3f} {m16['alive']:10.3f} {float(cos.median()):8.3f} {1000 * s32:8.1f} {1000 * s16:8.1f}")
    print(f"(grad err: first step, max over W_enc/W_dec/W_var of the relative L2 error; dec cos: median cosine of "
          f"matching decoder rows; ms: median step time) benchmark took {time.perf_counter() - t0:.0f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"bf16: max_abs_ev_diff={worst_ev:.4f} max_rel_grad_err={worst_grad:.2e}")


if __name__ == "__main__":
    main()
