import pandas as pd

from vsae import claims


def test_paper_claims_hold_on_the_papers_own_tables():
    t = claims.claims_table(*claims.paper_tables())
    assert t["reproduced"].all()
    row = t.set_index("claim").loc["TopK keeps several times more latents alive (min ratio over k)"]
    assert row["paper holds"] and row["paper"] == "2.7×"  # 0.9830 / 0.3678 at k = 512


def test_claims_flip_when_the_results_do():
    core, pr, scr, tpp = claims.paper_tables()
    swapped = core.assign(architecture=core.architecture.map({"topk": "vsae", "vsae": "topk"}))
    ours = claims.claim_values(swapped, pr, scr, tpp)
    assert not ours["TopK keeps several times more latents alive (min ratio over k)"][1]
    assert not ours["vSAE below TopK on explained variance (k values)"][1]
    t = claims.claims_table(swapped, pr, scr, tpp)
    assert not t.set_index("claim").loc["vSAE below TopK on CE-loss score (k values)", "reproduced"]


def _with_seeds(tables, noise_by_seed):
    """Copies of the paper's tables, one per seed, with metric columns shifted by that seed's noise."""
    out = []
    for t in tables:
        frames = []
        for seed, shift in noise_by_seed.items():
            f = t.copy()
            f["seed"] = seed
            if "frac_alive" in f.columns:  # only the feature-death numbers move
                f.loc[f.architecture == "vsae", "frac_alive"] += shift
            frames.append(f)
        out.append(pd.concat(frames, ignore_index=True))
    return out


def test_claims_are_checked_on_seed_means_and_on_each_seed():
    # three seeds whose vSAE alive fractions differ by -0.2 / 0 / +0.2: at k=512 the paper's vSAE
    # keeps 0.3678 alive against TopK's 0.9830, so the +0.2 seed (0.5678) breaks the "2x" claim,
    # while the mean (0.3678, ratio 2.7) and the other two seeds keep it
    core, pr, scr, tpp = _with_seeds(claims.paper_tables(), {1: -0.2, 2: 0.0, 3: 0.2})
    t = claims.claims_table(core, pr, scr, tpp).set_index("claim")
    row = t.loc["TopK keeps several times more latents alive (min ratio over k)"]
    assert row["ours holds"] and row["ours (seed mean)"] == "2.7×"
    assert row["seeds agreeing"] == "2 of 3" and not row["survives seeds"]
    # a claim that no seed moves survives
    assert t.loc["vSAE below TopK on CE-loss score (k values)", "survives seeds"]
    assert t.loc["vSAE below TopK on CE-loss score (k values)", "seeds agreeing"] == "3 of 3"


def test_scr_best_is_taken_from_the_seed_mean_curve():
    # two seeds, TopK: 0.1 / 0.5 at one N, 0.3 / 0.3 at another: best of the mean curve is 0.3, not 0.5
    scr = pd.DataFrame({"architecture": ["topk"] * 4 + ["vsae"] * 2, "k": [256] * 6, "n": [5, 5, 10, 10, 5, 5],
                        "seed": [1, 2, 1, 2, 1, 2], "scr_metric": [0.1, 0.5, 0.3, 0.3, 0.35, 0.35]})
    core, pr, _, tpp = claims.paper_tables()
    v = claims.claim_values(core, pr, scr, tpp)["vSAE reaches a higher best SCR metric over N"]
    assert v == ("vSAE 0.350 vs TopK 0.300", True)
