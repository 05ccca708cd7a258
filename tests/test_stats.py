import math

import pandas as pd
import pytest

from vsae import stats


def test_t_interval_by_hand():
    # mean 2, sample sd 1, n 3: half = t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051
    mean, half, n = stats.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # a 90% interval is narrower: t_{0.95, 2} = 2.919986
    assert stats.t_interval([1.0, 2.0, 3.0], 0.90)[1] == pytest.approx(2.919986 / math.sqrt(3), rel=1e-6)


def test_t_interval_edge_cases():
    m, h, n = stats.t_interval([0.5])
    assert (m, n) == (0.5, 1) and math.isnan(h)  # one seed: no interval, not +-0
    m, h, n = stats.t_interval([float("nan"), 1.0, 3.0])  # non-finite values are dropped
    assert (m, n) == (2.0, 2) and h == pytest.approx(12.706205, rel=1e-6)  # sd sqrt(2), n 2
    assert stats.t_interval([])[2] == 0
    assert stats.t_interval([4.0, 4.0, 4.0])[1] == 0.0
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1, 2], confidence=95)


def test_fmt():
    assert stats.fmt(0.91234, 0.00412) == "0.9123 ± 0.0041"
    assert stats.fmt(0.5, float("nan"), digits=2) == "0.50"
    assert stats.fmt(float("nan"), 0.1) == "n/a"


def _runs():
    return pd.DataFrame({"architecture": ["topk"] * 3 + ["vsae"] * 3, "k": [64] * 6, "seed": [1, 2, 3] * 2,
                         "ev": [0.8, 0.9, 1.0, 0.5, 0.5, 0.5], "alive": [1.0, 1.0, 1.0, 0.1, 0.2, 0.3]})


def test_seed_summary_and_tables():
    s = stats.seed_summary(_runs(), ["architecture", "k"], ["ev", "alive"]).set_index(["architecture", "metric"])
    assert s.loc[("topk", "ev"), "mean"] == pytest.approx(0.9)
    assert s.loc[("topk", "ev"), "half"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert s.loc[("vsae", "ev"), "half"] == 0.0 and s.loc[("vsae", "alive"), "n_runs"] == 3
    assert s.loc[("vsae", "alive"), "low"] == pytest.approx(0.2 - 4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    t = stats.metrics_ci_table(_runs(), "architecture", ["ev", "alive"], digits=2)
    assert list(t.index) == ["ev", "alive"] and list(t.columns) == ["topk", "vsae"]
    assert t.loc["ev", "topk"] == "0.90 ± 0.25" and t.loc["alive", "vsae"] == "0.20 ± 0.25"
    w = stats.ci_table(_runs(), "k", "architecture", "ev", digits=3)
    assert w.loc[64, "vsae"] == "0.500 ± 0.000"
    with pytest.raises(KeyError, match="nope"):
        stats.seed_summary(_runs(), ["architecture"], ["nope"])


def test_interval_separated_welch():
    # diff 10, se sqrt(2/3), Welch dof 4: half = 2.776445 * 0.8165 = 2.267 -> separated
    assert stats.interval_separated([1, 2, 3], [11, 12, 13])
    assert not stats.interval_separated([1, 2, 3], [2, 3, 4])  # diff 1 < 2.267
    assert not stats.interval_separated([1.0], [5.0])  # one seed each: no evidence
    assert stats.interval_separated([1, 1, 1], [2, 2, 2])  # no spread at all


def test_grouping_column_named_n_is_kept():
    # SCR/TPP tables group by "n" (latents ablated): the run count must not overwrite it
    df = pd.DataFrame({"n": [2, 2, 5, 5], "run": ["a"] * 4, "m": [1.0, 3.0, 2.0, 2.0]})
    t = stats.ci_table(df, "n", "run", "m", digits=1)
    assert list(t.index) == [2, 5] and t.loc[5, "a"] == "2.0 ± 0.0"
