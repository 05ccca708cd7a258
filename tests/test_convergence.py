"""The budget comparison of :mod:`vsae.convergence` on hand-made tables, and
:meth:`vsae.pipeline.Experiment.convergence` end to end on the smoke profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vsae import convergence, design, verdicts


def _core(rows):
    return pd.DataFrame(rows, columns=["architecture", "budget", "steps", "seed", "frac_alive", "cossim"])


CORE = _core([
    # headline: TopK clearly more alive; cosine not separated
    ("topk", "headline", 100, 1, 1.00, 0.90), ("topk", "headline", 100, 2, 0.98, 0.92), ("topk", "headline", 100, 3, 0.99, 0.88),
    ("vsae", "headline", 100, 1, 0.40, 0.91), ("vsae", "headline", 100, 2, 0.42, 0.89), ("vsae", "headline", 100, 3, 0.44, 0.90),
    # paper: alive still TopK; cosine now clearly vSAE
    ("topk", "paper", 700, 1, 1.00, 0.90), ("topk", "paper", 700, 2, 1.00, 0.91), ("topk", "paper", 700, 3, 1.00, 0.89),
    ("vsae", "paper", 700, 1, 0.30, 0.95), ("vsae", "paper", 700, 2, 0.31, 0.96), ("vsae", "paper", 700, 3, 0.32, 0.95),
])


def test_budget_comparison_hand_values():
    t = convergence.budget_comparison(CORE, metrics=("frac_alive", "cossim")).set_index(["budget", "metric"])
    r = t.loc[("headline", "frac_alive")]
    assert r["topk"] == pytest.approx(0.99) and r["vsae"] == pytest.approx(0.42) and r["diff"] == pytest.approx(0.57)
    # t-interval of (0.40, 0.42, 0.44): sd 0.02, t(0.975, 2) = 4.303 -> half 0.02 * 4.303 / sqrt(3)
    assert r["vsae_half"] == pytest.approx(0.02 * 4.302653 / np.sqrt(3), rel=1e-5)
    assert r["verdict"] == verdicts.HOLDS and r["n_seeds"] == 3 and r["steps"] == 100
    assert t.loc[("headline", "cossim"), "verdict"] == verdicts.NOT_SEPARATED
    assert t.loc[("paper", "cossim"), "verdict"] == verdicts.REVERSED
    assert t.loc[("paper", "cossim"), "diff"] == pytest.approx(0.90 - 0.9533333)


def test_budget_sentence_names_what_changes():
    t = convergence.budget_comparison(CORE, metrics=("frac_alive", "cossim"))
    s = convergence.budget_sentence(t, "headline", "paper", labels={"frac_alive": "fraction alive"})
    assert s.startswith("From 100 to 700 training steps (3 seeds per run, 95% intervals), ")
    assert "stays the same for fraction alive (TopK − vSAE +0.570 → +0.690; TopK higher → TopK higher)" in s
    assert "**changes** for cossim (TopK − vSAE +0.000 → -0.053; not separated → vSAE higher)" in s
    with pytest.raises(ValueError, match="budget 'long' not in the table"):
        convergence.budget_sentence(t, "headline", "long")


def test_budget_comparison_refuses_missing_columns():
    with pytest.raises(ValueError, match=r"lacks columns \['budget'\]"):
        convergence.budget_comparison(CORE.drop(columns="budget"), metrics=("cossim",))


def test_curves_mean_and_spread():
    logs = pd.DataFrame({"architecture": ["topk"] * 4, "budget": ["paper"] * 4, "seed": [1, 2, 1, 2],
                         "tokens": [10, 10, 20, 20], "ev": [0.1, 0.3, 0.5, 0.7]})
    c = convergence.curves(logs, metrics=("ev", "loss"))
    assert list(c.tokens) == [10, 20] and list(c["mean"]) == pytest.approx([0.2, 0.6])
    assert list(c.lo) == [0.1, 0.5] and list(c.hi) == [0.3, 0.7]


def test_convergence_variants_names_and_budgets():
    from vsae.profiles import get_profile

    p = get_profile("smoke")
    vs = design.convergence_variants(p, 8, 32, 4, {"headline": 96, "paper": 500}, seeds=[p.main_seed, 43])
    assert [v.name for v in vs[:4]] == ["topk_k4_headline", "vsae_k4_headline", "topk_k4_headline_s43", "vsae_k4_headline_s43"]
    assert {v.train_overrides["steps"] for v in vs if v.role["budget"] == "paper"} == {500}
    assert design.PAPER_TRAIN_TOKENS == 1_920_192


@pytest.mark.slow
def test_experiment_convergence_smoke(tmp_path, one_thread):
    from vsae.pipeline import Experiment
    from vsae.store import Store

    ex = Experiment("smoke", store=Store(tmp_path))
    with pytest.raises(ValueError, match="need more than the"):
        ex.convergence(n_train_tokens=96 * 192, budgets={"headline": 96, "paper": 200})
    res = ex.convergence(seeds=[42, 43], n_train_tokens=96 * 192, budgets={"headline": 24, "paper": 96})
    core, logs, comp = res["core"], res["logs"], res["comparison"]
    assert len(core) == 8 and set(core.budget) == {"headline", "paper"}
    assert set(core.loc[core.budget == "paper", "steps"]) == {96}
    assert logs.groupby("run").tokens.max().to_dict() == {n: (96 if "paper" in n else 24) * 192 for n in core.sae}
    assert set(comp.metric) == set(convergence.METRICS) and comp.verdict.isin(verdicts.VERDICTS).all()
    assert (comp.n_seeds == 2).all()
    noise = res["noise"]
    assert set(noise.run) == {"topk headline", "vsae headline", "topk paper", "vsae paper"}
    assert (noise.n_seeds == 2).all() and (noise.eval_half > 0).any()


def test_cli_refuses_a_budget_beyond_the_tokens(capsys):
    from vsae.__main__ import main as cli

    assert cli(["convergence", "--profile", "smoke", "--n-train-tokens", "10000"]) == 1
    err = capsys.readouterr().err
    assert "need more than the 10,000 training tokens" in err and "raise n_train_tokens to at least 18,432" in err


def test_budget_wide_names_the_separated_side():
    t = convergence.budget_comparison(CORE, metrics=("frac_alive", "cossim"))
    w = convergence.budget_wide(t, labels={"frac_alive": "fraction alive"})
    assert list(w.index) == ["fraction alive", "cossim"]
    assert w[("paper (700 steps)", "separated")].tolist() == ["TopK higher", "vSAE higher"]
    assert w[("headline (100 steps)", "separated")].tolist() == ["TopK higher", "not separated"]
    assert w.loc["fraction alive", ("headline (100 steps)", "vSAE")] == "0.420 ± 0.050"
