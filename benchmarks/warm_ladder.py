"""Train and evaluate the attribution ladder of the offline book into the artifact store, in chunks
(a killed run loses at most one chunk of core evaluations; training resumes from its checkpoints).

    python benchmarks/warm_ladder.py [--profile offline] [--chunk 6]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-fraction", type=float, default=0.25)
    ap.add_argument("--chunk", type=int, default=6, help="SAEs per core-evaluation call")
    a = ap.parse_args()
    from vsae.pipeline import Experiment

    ex = Experiment(a.profile, device=a.device)
    t0 = time.time()
    runs = [v for vs in ex.ladder_variants(budget_fraction=a.budget_fraction).values() for v in vs]
    ex.train(runs)
    print(f"[ladder] {len(runs)} runs trained: {time.time() - t0:.0f} s", flush=True)
    for i in range(0, len(runs), a.chunk):
        ex.core(runs[i:i + a.chunk])
        print(f"[ladder] core {min(i + a.chunk, len(runs))}/{len(runs)}: {time.time() - t0:.0f} s", flush=True)
    ex.ladder(a.budget_fraction)
    print(f"[ladder] store ready in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
