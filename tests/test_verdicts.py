"""The verdict engine on hand-made numbers: claims that hold, reverse and are not separated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vsae import stats, verdicts as V
from vsae.evals.scr_tpp import scr_saebench, scr_saebench_score, tpp_unintended_ratio


def test_welch_interval_matches_hand_computation():
    a, b = [1.0, 2.0, 3.0], [0.0, 0.5, 1.0]
    diff, half = stats.welch_interval(a, b)
    # var_a/3 = 1/3, var_b/3 = 0.25/3; se = sqrt(1.25/3); dof = (1.25/3)^2 / ((1/3)^2/2 + (0.25/3)^2/2) = 2.94
    from scipy import stats as st
    se = np.sqrt(1.25 / 3)
    dof = (1.25 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (0.25 / 3) ** 2 / 2)
    assert diff == pytest.approx(1.5)
    assert half == pytest.approx(st.t.ppf(0.975, dof) * se)
    assert stats.welch_interval([1.0], [2.0, 3.0])[1] != stats.welch_interval([1.0], [2.0, 3.0])[1]  # NaN
    assert stats.welch_interval([1.0, 1.0], [2.0, 2.0]) == (-1.0, 0.0)


@pytest.mark.parametrize("a,b,expect,verdict", [
    ([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], "greater", V.HOLDS),
    ([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], "less", V.REVERSED),
    ([0.80, 0.90, 1.00], [0.85, 0.90, 0.95], "greater", V.NOT_SEPARATED),
    ([0.5, 0.5], [0.4, 0.4], "greater", V.HOLDS),        # constant sides: zero-width interval
])
def test_compare_verdicts(a, b, expect, verdict):
    r = V.compare(a, b, expect)
    assert r["verdict"] == verdict and not r["one_run"]
    if verdict != V.NOT_SEPARATED:
        assert np.sign(r["low"]) == np.sign(r["high"])


def test_compare_single_run_uses_sign_and_noise():
    assert V.compare([0.9], [0.8], "greater")["verdict"] == V.HOLDS
    assert V.compare([0.9], [0.8], "less")["verdict"] == V.REVERSED
    assert V.compare([0.9], [0.8], "less", noise=0.2)["verdict"] == V.NOT_SEPARATED
    assert V.compare([0.9], [0.9], "less")["verdict"] == V.NOT_SEPARATED
    assert V.compare([0.9], [0.8])["one_run"]
    with pytest.raises(ValueError):
        V.compare([1], [2], "bigger")


def test_equivalence_verdicts():
    assert V.equivalent([0.80, 0.801, 0.802], [0.81, 0.811, 0.812], margin=0.03)["verdict"] == V.HOLDS
    assert V.equivalent([0.90, 0.901, 0.902], [0.80, 0.801, 0.802], margin=0.03)["verdict"] == V.REVERSED
    assert V.equivalent([0.80, 0.85, 0.90], [0.80, 0.81, 0.82], margin=0.03)["verdict"] == V.NOT_SEPARATED
    assert V.equivalent([0.8], [0.82], margin=0.03)["verdict"] == V.HOLDS


def _core_runs(rev_at_256=True):
    rows = []
    for seed in (1, 2, 3):
        e = 0.001 * seed
        for k, t, v in ((64, 0.80, 0.72), (256, 0.874, 0.897 if rev_at_256 else 0.85)):
            rows.append({"architecture": "topk", "k": k, "seed": seed, "explained_variance_saebench": t + e,
                         "ce_loss_score": 0.97 + e, "cossim": 0.95, "frac_alive": 1.0})
            rows.append({"architecture": "vsae", "k": k, "seed": seed, "explained_variance_saebench": v + e,
                         "ce_loss_score": 0.97 + 2 * e - 0.002, "cossim": 0.95 - 0.01 * (k == 64) + 0.001 * seed,
                         "frac_alive": 0.05 if k == 64 else 0.2 + e})
    return pd.DataFrame(rows)


def test_claims_per_k_print_the_reversal():
    runs = V.run_table(_core_runs())
    t = V.evaluate_claims(runs).set_index(["key", "k"])
    assert t.loc[("ev", "64"), "verdict"] == V.HOLDS
    assert t.loc[("ev", "256"), "verdict"] == V.REVERSED     # the k = 256 reversal is its own row
    assert t.loc[("ce", "64"), "verdict"] == V.NOT_SEPARATED
    assert t.loc[("alive", "256"), "verdict"] == V.HOLDS
    assert t.loc[("alive_k", "64→256"), "verdict"] == V.HOLDS
    paper = V.run_table(_core_runs(rev_at_256=False).query("seed == 1").drop(columns="seed"))
    table = V.claims_by_k(runs, paper)
    text = V.summarise(table)
    assert "Reversed here:" in text and "explained variance" in text and "k = 256" in text
    row = table[(table.claim.str.contains("explained")) & (table.k == "256")].iloc[0]
    assert row["paper verdict"] == V.HOLDS and row["ours verdict"] == V.REVERSED and row["agrees"] == "no"
    assert "different:" in text


def test_run_table_scalars_from_curves():
    core = pd.DataFrame({"architecture": ["topk", "vsae"], "sae_k": [256, 256], "seed": [1, 1],
                         "ce_loss_score": [0.9, 0.8]})
    tpp = pd.DataFrame({"architecture": ["topk"] * 3 + ["vsae"] * 3, "sae_k": [256] * 6, "seed": [1] * 6,
                        "n": [10, 20, 50] * 2, "tpp_total": [0.1, 0.2, 0.3, 0.0, 0.1, 0.4],
                        "tpp_unintended": [0.02, 0.04, 0.2, 0.0, 0.01, 0.1]})
    scr = pd.DataFrame({"architecture": ["topk", "topk", "vsae", "vsae"], "sae_k": [256] * 4, "seed": [1] * 4,
                        "n": [2, 5, 2, 5], "scr_metric": [0.1, -0.2, 0.05, 0.3]})
    r = V.run_table(core, scr=scr, tpp=tpp).set_index("architecture")
    assert r.loc["topk", "tpp_unintended_small"] == pytest.approx(0.03)
    assert r.loc["vsae", "tpp_total_large"] == pytest.approx(0.4)
    assert r.loc["topk", "scr_best"] == pytest.approx(0.1) and r.loc["vsae", "scr_best"] == pytest.approx(0.3)


def test_scr_saebench_rules():
    assert scr_saebench_score(0.8, 0.6, 0.9) == pytest.approx(2 / 3)
    assert scr_saebench_score(0.8, 0.6, 0.6005) == 0.0       # denominator below 0.001
    assert scr_saebench_score(0.8, 0.6, 0.5) == 0.0          # negative denominator: also 0 (a signed test)
    rows = pd.DataFrame([
        # pair p: biased worse on target -> direction 1
        {"sae": "s", "pair": "p", "n": 2, "ablated_acc_dir1": 0.7, "ablated_acc_dir2": 0.9, "target_probe_acc": 0.9,
         "biased_on_target": 0.6, "spurious_probe_acc": 0.95, "biased_on_spurious": 0.9, "margin_ok": True},
        # pair q fails the oracle check (denominators tiny): SAE Bench still averages it, with S = 0
        {"sae": "s", "pair": "q", "n": 2, "ablated_acc_dir1": 0.7, "ablated_acc_dir2": 0.7, "target_probe_acc": 0.7,
         "biased_on_target": 0.7, "spurious_probe_acc": 0.7, "biased_on_spurious": 0.7, "margin_ok": False},
        {"sae": "s", "pair": "ALL", "n": 2, "scr_metric": 1 / 3},
    ])
    out = scr_saebench(rows)
    per = out[out.pair != "ALL"].set_index("pair")
    assert per.loc["p", "scr_metric"] == pytest.approx(1 / 3)
    assert per.loc["q", "scr_metric"] == 0.0                  # a tie: mean of two zero directions
    all_ = out[out.pair == "ALL"].iloc[0]
    labelled = scr_saebench(rows.assign(run="TopK k=256", seed=1))
    assert set(labelled[labelled.pair == "ALL"][["run", "seed"]].itertuples(index=False)) == {("TopK k=256", 1)}
    assert all_["scr_metric"] == pytest.approx(1 / 6) and all_["n_pairs"] == 2


def test_tpp_ratio_is_a_ratio_of_means():
    t = pd.DataFrame({"architecture": ["topk", "topk", "vsae", "vsae"], "k": [256] * 4, "n": [2, 20, 2, 20],
                      "tpp_unintended": [0.02, 0.10, 0.01, 0.01]})
    # mean of per-N ratios would be (2 + 10) / 2 = 6; the paper's ratio of means is 0.06 / 0.01 = 6 too here:
    assert tpp_unintended_ratio(t) == pytest.approx(6.0)
    t.loc[3, "tpp_unintended"] = 0.05                        # per-N ratios 2 and 2; ratio of means 0.06/0.03
    assert tpp_unintended_ratio(t) == pytest.approx(2.0)
    t.loc[2, "tpp_unintended"] = 0.001                       # per-N mean would be (20 + 2) / 2 = 11
    assert tpp_unintended_ratio(t) == pytest.approx(0.06 / 0.0255)


def test_kl_attribution_and_monotone():
    a = V.kl_attribution(topk_alive=1.0, vsae_alive=0.2, vsae_no_kl_alive=0.4)
    assert a["gap"] == pytest.approx(0.8) and a["kl_part"] == pytest.approx(0.25) and a["rest_part"] == pytest.approx(0.75)
    assert np.isnan(V.kl_attribution(0.5, 0.5, 0.5)["kl_part"])
    assert V.monotone([0.43, 0.37, 0.24, 0.19, 0.36]) == "non-monotone"
    assert V.monotone([0.43, 0.37, 0.24]) == "falling"
    assert V.monotone([0.1, 0.105, 0.3], tol=0.01) == "rising"
    s = V.mechanism_sentence(1.0, 0.36, 0.43, [0.43, 0.37, 0.24, 0.19, 0.36], [0, 0.01, 0.1, 1, 10], "a quarter budget")
    assert "11%" in s and "89%" in s and "a minority" in s and "not a monotone" in s


def test_single_run_effect_uses_noise_scale():
    assert V.single_run_effect(0.50, 0.40, noise_half=0.01) == V.HOLDS
    assert V.single_run_effect(0.41, 0.40, noise_half=0.01) == V.NOT_SEPARATED
    assert V.single_run_effect(0.30, 0.40, noise_half=0.01) == V.REVERSED
