"""Per-SAE cost of the three evaluation passes the book runs for every SAE, at the offline shapes.

    .venv/bin/python benchmarks/eval_throughput.py            # 327,680 reconstruction tokens, 64 CE/KL contexts
    .venv/bin/python benchmarks/eval_throughput.py --quick    # a quarter of each, scaled up

Times, on the offline profile's LM at its hook (SmolLM2-135M, layer 9 of 30, d_model 576) and seeded
random SAEs at its shapes (TopK and vSAE, d_sae = expansion x d_model = 4608, k 256):

- the core metrics' reconstruction pass (``sparsity_and_reconstruction`` over standard-normal
  activations, batches of 2048 tokens, with its 1,000-replicate bootstrap), in seconds per SAE for
  the profile's 327,680 evaluation tokens;
- the CE/KL pass (``downstream_metrics`` on random-token contexts of 128 tokens, batches of 8),
  split into the part shared by all SAEs of a call (clean and zero-ablation runs) and the part
  each SAE adds (one spliced run of the layers after the hook), from calls with one and with three
  SAEs, per the profile's 64 contexts; and the shared part again when a ``CleanRuns`` stored by an
  earlier call serves it (the book's path since the clean and zero-ablated runs are stored: the
  first call on the contexts computes and writes them, every later call reads them back);
- the pooled codes of the probing/SCR/TPP pool (``PassagePool.pooled_codes``), in seconds per SAE
  per 100,000 pool tokens.

Random inputs cost what real ones cost here (the same dense matmuls, selections and gathers); the
numbers are timings only. The parts run one after the other, nothing interleaved: compare figures
measured on the same machine at about the same load (printed at start and end); to compare two
commits, run this script from each checkout in turn, twice. The last line reads
``eval: recon_s_per_sae=<a> cekl_s_per_sae=<b> cekl_s_shared=<c> pooled_s_per_100k=<d>
cekl_s_shared_stored=<e>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vsae.evals.core import sparsity_and_reconstruction  # noqa: E402
from vsae.evals.downstream import CleanRuns, downstream_metrics  # noqa: E402
from vsae.evals.tasks.pool import PassagePool  # noqa: E402
from vsae.lm import D_MODEL, load_lm  # noqa: E402
from vsae.models import TopKSAEConfig, VSAEConfig, build_sae  # noqa: E402
from vsae.profiles import get_profile  # noqa: E402
from vsae.store import Store  # noqa: E402

PROFILE = get_profile("offline")
D_IN = D_MODEL[PROFILE.lm]
D_SAE, K = D_IN * PROFILE.expansion, 256
EVAL_TOKENS, CE_CONTEXTS, CTX_LEN = PROFILE.n_eval_tokens, PROFILE.n_ce_contexts, PROFILE.ctx_len


def _saes(n: int) -> dict:
    torch.manual_seed(0)
    out = {}
    for i in range(n):
        cfg = TopKSAEConfig(D_IN, D_SAE, K) if i % 2 == 0 else VSAEConfig(D_IN, D_SAE, K)
        out[f"{cfg.architecture}_{i}"] = build_sae(cfg).eval()
    return out


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def recon(n_tokens: int) -> float:
    """Seconds per SAE of the reconstruction pass, scaled to EVAL_TOKENS."""
    acts = torch.randn(n_tokens, D_IN, generator=torch.Generator().manual_seed(1))
    saes = _saes(2)
    sparsity_and_reconstruction(saes, acts[:4096], n_boot=0)  # warm-up
    t = _wall(lambda: sparsity_and_reconstruction(saes, acts, n_boot=1000))
    return t / len(saes) * EVAL_TOKENS / n_tokens


def cekl(n_contexts: int) -> tuple[float, float, float, float]:
    """Seconds, scaled to CE_CONTEXTS: (per SAE, shared per call, shared by the call that computes and
    stores the clean runs, shared per call once they are stored) of the CE/KL pass."""
    lm = load_lm(PROFILE.lm, PROFILE.layer)
    ctx = torch.randint(100, 20_000, (n_contexts, CTX_LEN), generator=torch.Generator().manual_seed(2))
    saes = _saes(3)
    one = {"topk_0": saes["topk_0"]}
    downstream_metrics({"w": saes["topk_0"]}, lm, ctx[:8])  # warm-up
    t1 = _wall(lambda: downstream_metrics(one, lm, ctx))
    t3 = _wall(lambda: downstream_metrics(saes, lm, ctx))
    per = (t3 - t1) / 2
    with tempfile.TemporaryDirectory() as d:
        runs = CleanRuns(Store(d), {"lm": lm.describe(), "benchmark": True})
        t_write = _wall(lambda: downstream_metrics(one, lm, ctx, clean_runs=runs))
        t_read = _wall(lambda: downstream_metrics(one, lm, ctx, clean_runs=runs))
    scale = CE_CONTEXTS / n_contexts
    return per * scale, (t1 - per) * scale, (t_write - per) * scale, (t_read - per) * scale


def pooled(n_tokens: int) -> float:
    """Seconds per SAE per 100,000 pool tokens of the pooled codes."""
    g = np.random.default_rng(3)
    acts = g.standard_normal((n_tokens, D_IN), dtype=np.float32)
    lens = g.integers(40, 160, size=n_tokens // 40)
    offsets = np.r_[0, np.cumsum(lens)]
    offsets = offsets[offsets <= n_tokens]
    n = int(offsets[-1])
    keep = np.ones(n, dtype=bool)
    keep[offsets[:-1]] = False  # the BOS of each passage is not pooled
    pool = PassagePool(acts[:n], np.zeros(n, np.int32), offsets, keep, np.zeros((len(offsets) - 1, D_IN)))
    saes = _saes(2)
    pool.pooled_codes(saes["topk_0"], cache=False)  # warm-up
    t = _wall(lambda: [pool.pooled_codes(s, cache=False) for s in saes.values()])
    return t / len(saes) * 100_000 / n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the tokens and contexts, scaled up")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    f = 4 if a.quick else 1
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {PROFILE.lm} layer {PROFILE.layer}, "
          f"d_sae {D_SAE}, k {K}; load average at start {os.getloadavg()[0]:.2f}")
    r = recon(EVAL_TOKENS // f)
    print(f"reconstruction pass ({EVAL_TOKENS // f:,} tokens, scaled to {EVAL_TOKENS:,}): {r:.1f} s per SAE")
    per, shared, written, stored = cekl(CE_CONTEXTS // f)
    print(f"CE/KL pass ({CE_CONTEXTS // f} contexts of {CTX_LEN}, scaled to {CE_CONTEXTS}): "
          f"{per:.1f} s per SAE + {shared:.1f} s shared per call; with stored clean runs: "
          f"{written:.1f} s shared by the call that stores them, {stored:.1f} s by each later call")
    p = pooled(400_000 // f)
    print(f"pooled codes ({400_000 // f:,} pool tokens): {p:.1f} s per SAE per 100,000 tokens")
    print(f"benchmark took {time.perf_counter() - t0:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    print(f"eval: recon_s_per_sae={r:.1f} cekl_s_per_sae={per:.1f} cekl_s_shared={shared:.1f} "
          f"pooled_s_per_100k={p:.1f} cekl_s_shared_stored={stored:.1f}")


if __name__ == "__main__":
    main()
