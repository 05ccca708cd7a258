"""Compute every stored artifact of the offline book without executing the chapters.

Trains all headline and "beyond" SAEs and runs the core, pooled (probing / SCR / TPP) and absorption
evaluations into the artifact store, in the order the chapters need them, printing the wall time of
each stage. A later ``make book`` then only reads them back (plus the feature and latent-space work
the chapters do themselves). Useful to prepare a store on a spare machine or in the background.

    python benchmarks/warm_store.py [--profile offline]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from vsae.pipeline import Experiment

    ex = Experiment(a.profile, device=a.device)
    t0 = time.time()

    def stage(name, fn):
        t = time.time()
        fn()
        print(f"[warm] {name}: {time.time() - t:.0f} s (total {(time.time() - t0) / 60:.1f} min)", flush=True)

    seeds = ex.seed_variants()
    stage("train activations", lambda: ex.train_acts)
    stage("eval activations", lambda: ex.eval_acts)
    stage("headline SAEs", lambda: ex.train(seeds))
    stage("core metrics", lambda: ex.core(seeds))
    stage("probing / SCR / TPP", lambda: ex.pool_evals(seeds))
    stage("beyond-the-paper runs", ex.beyond)
    headline = [v for v in ex.headline_variants() if v.k == ex.showcase_k()]
    stage("absorption", lambda: ex.absorption(headline, min_probe_f1=0.3, n_words=ex.profile.absorption_words))
    print(f"[warm] store ready in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
