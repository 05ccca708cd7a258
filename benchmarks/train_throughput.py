"""Training throughput of the SAE trainer on CPU, against a naive dense step and the matmul floor.

For d_in 512, d_sae 8192, k 256 (the paper's k=256 TopK SAE) it prints tokens/s of

- ``naive``: a straightforward dense TopK step written here (ReLU, topk, scatter to a dense code,
  dense decode, autograd, gradient projection, clip, Adam, decoder renorm), in the given dtype
  (bf16: ``torch.autocast``);
- ``ours topk`` / ``ours vsae``: one :meth:`vsae.training.SAETrainer.update` of the TopK SAE and of
  the vSAE (fixed variance, KL over all latents: needs one extra dense backward matmul);
- ``floor``: 4 * d_in * d_sae FLOPs per token (encoder matmul forward + its weight gradient) at the
  speed of one ``[B, d_in] @ [d_in, d_sae]`` matmul measured in the same run,

at batch 192 and 4096, fp32 and bf16. The measurements of one setting are interleaved (floor,
naive, ours, ours, floor, ...) and the median is reported, so that load from other processes hits
all of them alike. ``--memory`` (default on) also trains the paper's eight SAEs (TopK and vSAE at
k in {64, 128, 256, 512}, d_sae 8192) from one pass in a child process and reports its peak RSS.

Usage: ``python benchmarks/train_throughput.py [--quick] [--threads N] [--no-memory]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

from vsae.models import TopKSAEConfig, VSAEConfig
from vsae.training import SAETrainer, TrainConfig


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


def naive_step(model: NaiveTopK, opt, x, dtype: str) -> None:
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


def bench_setting(batch: int, dtype: str, d_in: int, d_sae: int, k: int, reps: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, d_in)
    W = torch.randn(d_in, d_sae) / d_in**0.5
    cd = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    xm, Wm = x.to(cd), W.to(cd)
    naive = NaiveTopK(d_in, d_sae, k)
    nopt = torch.optim.Adam(naive.parameters(), lr=1e-4)
    tc = TrainConfig(steps=10_000, batch_size=batch, dtype=dtype, warmup_steps=0, kl_warmup_frac=0.0)
    ours = {
        "topk": SAETrainer("topk", TopKSAEConfig(d_in, d_sae, k), tc),
        "vsae": SAETrainer("vsae", VSAEConfig(d_in, d_sae, k), tc),
    }
    for tr in ours.values():  # step 0 (b_dec init, lr 0) and warm-up
        tr.update(x, 0)
        tr.update(x, 1)
    naive_step(naive, nopt, x, dtype)
    torch.mm(xm, Wm)

    times: dict[str, list[float]] = {"floor_mm": [], "naive": [], "topk": [], "vsae": []}
    for r in range(reps):
        t0 = time.perf_counter()
        torch.mm(xm, Wm)
        times["floor_mm"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive_step(naive, nopt, x, dtype)
        times["naive"].append(time.perf_counter() - t0)
        for name, tr in ours.items():
            t0 = time.perf_counter()
            tr.update(x, 2 + r)
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    gflops = 2 * batch * d_in * d_sae / med["floor_mm"] / 1e9
    floor = gflops * 1e9 / (4 * d_in * d_sae)
    res = {
        "batch": batch,
        "dtype": dtype,
        "matmul_gflops": gflops,
        "floor_tok_s": floor,
        "naive_tok_s": batch / med["naive"],
        "topk_tok_s": batch / med["topk"],
        "vsae_tok_s": batch / med["vsae"],
    }
    res["topk_vs_naive"] = res["topk_tok_s"] / res["naive_tok_s"]
    res["topk_vs_floor"] = res["topk_tok_s"] / floor
    res["vsae_vs_floor"] = res["vsae_tok_s"] / floor
    return res


MEMORY_CHILD = r"""
import json, resource, sys, tempfile, torch
from vsae.models import TopKSAEConfig, VSAEConfig
from vsae.training import TrainConfig, train_saes
batch, steps, d_in, d_sae, threads = (int(a) for a in sys.argv[1:6])
if threads:
    torch.set_num_threads(threads)
class Cache:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.acts = torch.randn(batch * 2, d_in, generator=g) * 3
        self.norm_factor = float(self.acts.pow(2).sum(1).mean().sqrt())
        self.manifest = {"d_model": d_in}
    def batches(self, batch_size, seed, start_step=0, n_steps=None):
        for s in range(start_step, start_step + n_steps):
            yield self.acts[(s % 2) * batch_size:(s % 2 + 1) * batch_size].clone()
specs = {}
for k in (64, 128, 256, 512):
    specs[f"topk_k{k}"] = TopKSAEConfig(d_in, d_sae, k)
    specs[f"vsae_k{k}"] = VSAEConfig(d_in, d_sae, k)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as tmp:
    cfg = TrainConfig(steps=steps, batch_size=batch, checkpoint_every=max(1, steps // 2), log_every=1, warmup_steps=0)
    train_saes(Cache(), specs, cfg, tmp, progress=False)
    summ = json.load(open(tmp + "/train_summary.json"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"batch": batch, "steps": steps, "peak_rss_gb": peak / 2**20, "rss_before_gb": before / 2**20,
                  "pass_tok_s": summ["tokens_per_s_pass"],
                  "per_model_tok_s": {n: m["tokens_per_s"] for n, m in summ["per_model"].items()}}))
"""


def memory_check(batch: int, steps: int, d_in: int, d_sae: int, threads: int | None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(batch), str(steps), str(d_in), str(d_sae), str(threads or 0)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    ap.add_argument("--batches", default="192,4096")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=8192)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d_in {args.d_in}, d_sae {args.d_sae}, k {args.k}")
    hdr = f"{'batch':>6} {'dtype':>9} {'mm GF/s':>8} {'floor':>8} {'naive':>8} {'ours topk':>10} {'ours vsae':>10} {'topk/naive':>10} {'topk/floor':>10} {'vsae/floor':>10}"
    print(hdr)
    results = []
    t_all = time.perf_counter()
    for batch in (int(b) for b in args.batches.split(",")):
        for dtype in args.dtypes.split(","):
            reps = (3 if args.quick else 4) if batch >= 2048 else (8 if args.quick else 12)
            r = bench_setting(batch, dtype, args.d_in, args.d_sae, args.k, reps)
            results.append(r)
            print(
                f"{batch:>6} {dtype:>9} {r['matmul_gflops']:>8.0f} {r['floor_tok_s']:>8,.0f} {r['naive_tok_s']:>8,.0f} "
                f"{r['topk_tok_s']:>10,.0f} {r['vsae_tok_s']:>10,.0f} {r['topk_vs_naive']:>10.2f} "
                f"{r['topk_vs_floor']:>10.2f} {r['vsae_vs_floor']:>10.2f}",
                flush=True,
            )
    print("(tokens/s; floor = 4*d_in*d_sae FLOP/token at the measured matmul speed; medians of interleaved runs)")
    mem = []
    if not args.no_memory:
        for batch, steps in ((4096, 2 if args.quick else 3), (192, 10 if args.quick else 30)):
            m = memory_check(batch, steps, args.d_in, args.d_sae, args.threads)
            mem.append(m)
            per = ", ".join(f"{n} {v:,.0f}" for n, v in m["per_model_tok_s"].items())
            print(
                f"8 SAEs (TopK + vSAE, k 64-512, d_sae {args.d_sae}) from one pass, batch {batch}, {steps} steps "
                f"with a checkpoint: peak RSS {m['peak_rss_gb']:.2f} GB (goal < 6 GB); "
                f"{m['pass_tok_s']:,.0f} tokens/s per pass (per SAE: {per})"
            )
    print(f"benchmark took {time.perf_counter() - t_all:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "memory": mem, "threads": torch.get_num_threads()}, f, indent=2)


if __name__ == "__main__":
    main()
