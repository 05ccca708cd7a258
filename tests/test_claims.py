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
