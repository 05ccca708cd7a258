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

Then the book's shapes (the offline profile: d_in 576, d_sae 4608, batch 192, fp32): one
normalised batch fed to :meth:`SAETrainer.update` of each of the eight SAEs in turn (TopK and vSAE
at k in {64, 128, 256, 512}, what :func:`vsae.training.train_saes` does every step), timed
interleaved with single ``[192, 576] @ [576, 4608]`` fp32 matmuls. The floor of that step is
``8 * 4 * d_in * d_sae`` FLOP per token at the matmul's speed; the last line is exactly
``book-shapes: floor_fraction=<floor time / step time>``.

Usage: ``python benchmarks/train_throughput.py [--quick] [--threads N] [--no-memory] [--book-shapes-only]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from vsae.models import TopKSAEConfig, VSAEConfig
from vsae.training import SAETrainer, TrainConfig, _StepRunner, train_workers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive_topk import NaiveTopK, naive_step  # noqa: E402  (shared with peers.py's workers)

__all__ = ["NaiveTopK", "naive_step", "bench_setting", "bench_book_shapes", "floor_fraction", "book_shapes_line"]


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


#: the book's shapes (offline profile: SmolLM2-135M d_model 576, expansion 8, the paper's batch and k)
BOOK_D_IN, BOOK_D_SAE, BOOK_BATCH, BOOK_K = 576, 4608, 192, (64, 128, 256, 512)


def book_specs(d_in: int = BOOK_D_IN, d_sae: int = BOOK_D_SAE, ks=BOOK_K, seed: int = 42) -> dict:
    """The eight runs of one training pass, as :meth:`vsae.pipeline.Experiment.headline_variants`
    builds them: TopK at each k, then the vSAE (fixed variance, KL over all latents) at each k."""
    specs: dict = {f"topk_k{k}": TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed) for k in ks}
    specs.update({f"vsae_k{k}": VSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed) for k in ks})
    return specs


def floor_fraction(step_s: float, mm_s: float, n_saes: int, batch: int, d_in: int, d_sae: int) -> float:
    """Floor time / measured time of one multi-SAE step.

    The floor is ``n_saes * 4 * d_in * d_sae`` FLOP per token (each SAE's encoder matmul and its
    weight gradient) at the speed of one ``[batch, d_in] @ [d_in, d_sae]`` matmul, which does
    ``2 * batch * d_in * d_sae`` FLOP in ``mm_s`` seconds.
    """
    flop_per_s = 2 * batch * d_in * d_sae / mm_s
    floor_s = n_saes * 4 * d_in * d_sae * batch / flop_per_s
    return floor_s / step_s


def book_shapes_line(frac: float) -> str:
    return f"book-shapes: floor_fraction={frac:.3f}"


def bench_book_shapes(reps: int, d_in: int = BOOK_D_IN, d_sae: int = BOOK_D_SAE, batch: int = BOOK_BATCH,
                      ks=BOOK_K, steps: int = 1500, workers: int | None = None) -> dict:
    """Time the book's training step: one normalised batch fed to :meth:`SAETrainer.update` of each
    of the eight SAEs (what :func:`vsae.training.train_saes` does per step: ``workers`` threads, each
    running its SAEs' ops on one core; None = :func:`vsae.training.train_workers`, 1 = the serial loop
    on all cores), fp32, with single ``[batch, d_in] @ [d_in, d_sae]`` matmuls on all cores timed
    between the steps (three per step)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    raw = [torch.randn(batch, d_in, generator=g) * 3 for _ in range(2)]
    norm = float(torch.cat(raw).pow(2).sum(1).mean().sqrt())
    xm, Wm = torch.randn(batch, d_in, generator=g), torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    tc = TrainConfig(steps=steps, batch_size=batch, seed=42)  # the offline book's: 1,500 steps of 192
    torch.manual_seed(tc.seed)
    trainers = [SAETrainer(n, c, tc) for n, c in book_specs(d_in, d_sae, ks).items()]
    n_workers = train_workers(len(trainers)) if workers is None else workers
    all_threads = torch.get_num_threads()
    runner = _StepRunner(trainers, n_workers)

    def one_step(step: int) -> tuple[float, list[float]]:
        if n_workers > 1:
            torch.set_num_threads(1)
        t0 = time.perf_counter()
        x = raw[step % 2] * (1.0 / norm)
        var_x = float((x - x.mean(0, keepdim=True)).pow(2).sum(-1).mean())
        before = [tr.seconds for tr in trainers]
        runner.update(x, step, var_x)
        per = [tr.seconds - b for tr, b in zip(trainers, before)]
        out = time.perf_counter() - t0, per
        torch.set_num_threads(all_threads)  # the floor's matmuls run on every core
        return out

    one_step(0)  # b_dec init (geometric median), lazy optimizer state
    one_step(1)
    torch.mm(xm, Wm)
    mm, step_t, per_sae = [], [], []
    for r in range(reps):
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(xm, Wm)
            mm.append(time.perf_counter() - t0)
        st, per = one_step(2 + r)
        step_t.append(st)
        per_sae.append(per)
    runner.close()
    mm_s, step_s = statistics.median(mm), statistics.median(step_t)
    names = [tr.name for tr in trainers]
    per_med = {n: statistics.median(p[i] for p in per_sae) for i, n in enumerate(names)}
    frac = floor_fraction(step_s, mm_s, len(trainers), batch, d_in, d_sae)
    return {
        "d_in": d_in, "d_sae": d_sae, "batch": batch, "k_values": list(ks), "n_saes": len(trainers), "reps": reps,
        "workers": n_workers,
        "matmul_s": mm_s, "matmul_gflops": 2 * batch * d_in * d_sae / mm_s / 1e9,
        "step_s": step_s, "floor_s": frac * step_s, "floor_fraction": frac,
        "sae_tokens_per_s": len(trainers) * batch / step_s, "per_sae_s": per_med,
    }


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
    ap.add_argument("--book-shapes-only", action="store_true",
                    help="only the book's multi-SAE step (d_in 576, d_sae 4608, 8 SAEs, batch 192, fp32)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d_in {args.d_in}, d_sae {args.d_sae}, k {args.k}")
    results, mem = [], []
    t_all = time.perf_counter()
    if not args.book_shapes_only:
        results, mem = _trainer_settings(args)
    reps = 6 if args.quick else 15
    serial = bench_book_shapes(reps=reps, workers=1)  # the loop of one SAE after another, ops on all cores
    b = bench_book_shapes(reps=reps)                  # what train_saes does (vsae.training.train_workers)
    for tag, r in (("serial loop", serial), (f"{b['workers']} workers (train_saes)", b)):
        per = ", ".join(f"{n} {v * 1e3:.0f}" for n, v in r["per_sae_s"].items())
        print(
            f"book shapes, {tag}: {r['n_saes']} SAEs (TopK + vSAE, k {'/'.join(map(str, r['k_values']))}, "
            f"d_in {r['d_in']}, d_sae {r['d_sae']}) from one batch of {r['batch']}, fp32, median of {r['reps']} steps: "
            f"{r['step_s'] * 1e3:.0f} ms per step (per SAE ms: {per}), {r['sae_tokens_per_s']:,.0f} SAE-tokens/s; "
            f"matmul {r['matmul_gflops']:.0f} GFLOP/s -> floor {r['floor_s'] * 1e3:.0f} ms per step, "
            f"floor fraction {r['floor_fraction']:.3f}"
        )
    print(f"benchmark took {time.perf_counter() - t_all:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "memory": mem, "book_shapes": b, "book_shapes_serial": serial, "threads": torch.get_num_threads()}, f, indent=2)
    print(book_shapes_line(b["floor_fraction"]))


def _trainer_settings(args) -> tuple[list, list]:
    """The single-SAE settings (``--d-in``/``--d-sae``/``--k``, each batch and dtype) and the memory check."""
    hdr = f"{'batch':>6} {'dtype':>9} {'mm GF/s':>8} {'floor':>8} {'naive':>8} {'ours topk':>10} {'ours vsae':>10} {'topk/naive':>10} {'topk/floor':>10} {'vsae/floor':>10}"
    print(hdr)
    results = []
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
    return results, mem


if __name__ == "__main__":
    main()
