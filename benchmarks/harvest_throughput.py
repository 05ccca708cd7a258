"""Harvest throughput beside a full forward pass, measured in one process on the same tokens.

    .venv/bin/python benchmarks/harvest_throughput.py                  # tokens/s of the bridge and of a plain forward hook
    .venv/bin/python benchmarks/harvest_throughput.py --sweep          # SmolLM2 layers x dtypes
    .venv/bin/python benchmarks/harvest_throughput.py --contexts 128 --batch 32

For each (model, layer, dtype) it times ``LanguageModel.resid`` (the harvest path: bridge forward
with ``stop_at_layer=layer+1``) and ``LanguageModel.logits`` (all layers) on the same batches of
``ctx_len``-token contexts from the offline eval split, after one warm-up batch, and prints tokens/s
and their ratio. It also prints the residual norm at position 0 against the other positions (an
attention-sink outlier inflates the paper's norm factor) and the projected time of harvesting
``--budget`` tokens. Numbers vary +-10% between runs and 2-3x when another job shares the cores:
compare ratios measured in one run (the two paths alternate batch by batch).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vsae.activations import plan_contexts  # noqa: E402
from vsae.lm import load_lm  # noqa: E402
from vsae.profiles import get_profile  # noqa: E402


def _time(fn, batch) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn(batch)``."""
    t, c = time.perf_counter(), time.process_time()
    fn(batch)
    return time.perf_counter() - t, time.process_time() - c


def measure(name: str, layer: int, dtype: str, n_ctx: int, batch: int, ctx_len: int, full: bool = True) -> dict:
    t0 = time.perf_counter()
    lm = load_lm(name, layer, dtype=dtype)
    load_s = time.perf_counter() - t0
    ctx, _, _ = plan_contexts(lm, "offline", "eval", n_ctx * ctx_len, ctx_len)
    toks = torch.from_numpy(ctx.astype(np.int64))
    batches = [toks[i:i + batch] for i in range(0, len(toks), batch)]
    n = toks.numel()
    with torch.no_grad():
        lm.resid(batches[0][:4])  # warm-up
        lm.logits(batches[0][:4]) if full else None
        r = lm.resid(batches[0]).float()
        # alternate the two paths batch by batch so that load from other jobs hits both alike
        t_resid = t_full = c_resid = c_full = 0.0
        for b in batches:
            w, c = _time(lm.resid, b)
            t_resid, c_resid = t_resid + w, c_resid + c
            if full:
                w, c = _time(lm.logits, b)
                t_full, c_full = t_full + w, c_full + c
    norms = r.norm(dim=-1)  # [B, T]
    nan = float("nan")
    return {"model": name, "layer": layer, "dtype": dtype, "tokens": n, "load_s": load_s,
            "resid_tok_s": n / t_resid, "full_tok_s": n / t_full if full else nan,
            "resid_tok_cpu_s": n / c_resid, "full_tok_cpu_s": n / c_full if full else nan,
            "pos0_norm": float(norms[:, 0].mean()), "rest_norm": float(norms[:, 1:].mean())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=64, help="contexts timed per setting (default 64)")
    ap.add_argument("--batch", type=int, default=32, help="contexts per forward pass (default 32)")
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--sweep", action="store_true", help="SmolLM2 at layers 4, 6, 9, 12 in float32 and bfloat16")
    ap.add_argument("--budget", type=float, default=1.5e6, help="tokens for the projected harvest time")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    off = get_profile("offline")
    runs = [("pythia-70m-random", 3, "float32"), ("smollm2-135m", off.layer, off.lm_dtype)]
    if off.lm_dtype != "float32":
        runs.append(("smollm2-135m", off.layer, "float32"))
    if args.sweep:
        runs = [("smollm2-135m", L, dt) for dt in ("float32", "bfloat16") for L in (4, 6, 9, 12)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}; {args.contexts} contexts x {args.ctx_len} tokens, batch {args.batch}")
    print("tok/s: wall clock; tok/CPU-s: per CPU-second of this process (x threads ~ the speed on idle cores)")
    print(f"{'model':18s} {'hook':26s} {'dtype':9s} {'harvest tok/s':>13s} {'full fwd tok/s':>14s} "
          f"{'ratio':>6s} {'harvest tok/CPU-s':>17s} {'full tok/CPU-s':>14s} {'|x| pos0/rest':>14s} "
          f"{'budget (wall)':>14s}")
    for name, layer, dtype in runs:
        r = measure(name, layer, dtype, args.contexts, args.batch, args.ctx_len, full=not args.sweep)
        ratio = r["resid_tok_s"] / r["full_tok_s"]
        print(f"{name:18s} blocks.{layer}.hook_resid_post{'':<{9 - len(str(layer))}} {dtype:9s} "
              f"{r['resid_tok_s']:13,.0f} {r['full_tok_s']:14,.0f} {ratio:6.2f} "
              f"{r['resid_tok_cpu_s']:17,.0f} {r['full_tok_cpu_s']:14,.0f} "
              f"{r['pos0_norm']:6.0f}/{r['rest_norm']:<7.0f} {args.budget / r['resid_tok_s'] / 60:10.1f} min",
              flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
