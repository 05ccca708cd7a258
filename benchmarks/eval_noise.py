"""Evaluation noise of the core metrics at the profile's evaluation sizes, on the main-seed SAEs.

Trains (or reads from the store) the headline TopK SAE and vSAE at the given k and seed, runs the
core evaluation and prints, per SAE: the bootstrap 95% half-width of every score (blocks of eval
tokens for the reconstruction metrics, contexts for CE/KL), the alive fraction against evaluation
tokens and its saturation (growth over the last doubling of tokens). Compare the half-widths with the
seed intervals of chapter 4 to size the evaluation sets. The SAEs and tables are the book's own
(same store keys), so a later ``make book`` reuses them.

    python benchmarks/eval_noise.py [--profile offline] [--k 256] [--seed 42]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    from vsae.evals.core import alive_curves, saturation
    from vsae.pipeline import Experiment

    ex = Experiment(a.profile)
    seed = ex.profile.main_seed if a.seed is None else a.seed
    vs = [v for v in ex.headline_variants(k_values=[a.k], seed=seed)]
    t0 = time.time()
    ex.train(vs)
    t1 = time.time()
    core = ex.core(vs)
    t2 = time.time()
    m = core["metrics"].assign(run=lambda d: d["sae"])
    print(core["noise"].pivot(index="metric", columns="sae", values="boot_half").to_string(float_format=lambda x: f"{x:.5f}"))
    print(m.set_index("sae")[["n_tokens", "n_ce_contexts", "frac_alive", "explained_variance",
                              "explained_variance_saebench", "ce_loss_score", "kl_div_score"]].to_string())
    for run, c in alive_curves(m, core["density"]).items():
        print(f"{run}: alive {c.frac_alive.iloc[-1]:.4f} at {c.tokens.iloc[-1]:,} tokens, "
              f"{c.frac_alive.iloc[len(c) // 2]:.4f} at {c.tokens.iloc[len(c) // 2]:,}; saturation {saturation(c):.4f}")
    print(f"eval-noise: train {t1 - t0:.0f} s, core {t2 - t1:.0f} s")


if __name__ == "__main__":
    main()
