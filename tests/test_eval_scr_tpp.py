import math

import numpy as np
import pandas as pd
import pytest
import torch

from _eval_fixtures import TinySAE, perfect_sae
from vsae.evals.scr_tpp import (ScrTppConfig, _acc, ablate_pooled, latent_effects, run_scr, run_tpp, scr_oracle_check,
                                scr_score, select_top_n, tpp_scores, train_scr_probes, train_tpp_probes)
from vsae.evals.tasks import PassagePool, ProbeDataset, ScrPair, TaskSuite


def _pool_from(X, scr=(), tpp=()):
    n = len(X)
    suite = TaskSuite("test", 8, 0, 0, 0, pd.DataFrame(index=range(n)), [[5]] * n, [], list(scr), list(tpp))
    return PassagePool(X.astype(np.float32), np.full(n, 5), np.arange(n + 1), np.ones(n, bool), X.astype(np.float32), suite)


def _scr_case(q=60, noise=0.3, seed=0):
    """dim 0 carries the target (+-1), dim 1 the spurious attribute (+-1), dims 2-3 noise."""
    rng = np.random.default_rng(seed)
    rows, quad = [], {}
    for j in (0, 1):
        for t in (1, -1):
            for s in (1, -1):
                m = 2 * q if t == s else q
                ids = list(range(len(rows), len(rows) + m))
                for _ in range(m):
                    rows.append([t + rng.normal(0, noise), s + rng.normal(0, noise), rng.normal(), rng.normal()])
                quad[(j, t, s)] = np.array(ids)
    X = np.array(rows)
    sets = {}
    for j in (0, 1):
        Q = lambda t, s, k=q: quad[(j, t, s)][:k]  # noqa: E731
        sets.setdefault("spurious_pos", [0, 0])[j] = np.r_[Q(1, 1), Q(-1, 1)]
        sets.setdefault("spurious_neg", [0, 0])[j] = np.r_[Q(1, -1), Q(-1, -1)]
        sets.setdefault("target_pos", [0, 0])[j] = np.r_[Q(1, 1), Q(1, -1)]
        sets.setdefault("target_neg", [0, 0])[j] = np.r_[Q(-1, 1), Q(-1, -1)]
        sets.setdefault("biased_pos", [0, 0])[j] = Q(1, 1, 2 * q)
        sets.setdefault("biased_neg", [0, 0])[j] = Q(-1, -1, 2 * q)
    pair = ScrPair("toy", "test", "", ("t+", "t-"), ("s+", "s-"), {k: tuple(v) for k, v in sets.items()})
    return X, pair


CFG = ScrTppConfig(n_values=(2,), probe_epochs=20, probe_lr=1e-2)


def test_building_blocks_by_hand():
    eff = latent_effects(np.array([[2.0, 0.0, 1.0]]), np.array([[0.0, 1.0, 1.0]]), np.array([1.0, 0.0]),
                         np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]]), "scr")
    assert eff.tolist() == pytest.approx([2.0, 2.0, 0.0])
    eff_tpp = latent_effects(np.array([[2.0, 0.0, 1.0]]), np.array([[0.0, 1.0, 1.0]]), np.array([1.0, 0.0]),
                             np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]]), "tpp")
    assert eff_tpp.tolist() == pytest.approx([2.0, 0.0, 0.0])  # negative mean difference clamped
    assert select_top_n(np.array([0.0, 3.0, 1.0, 0.0]), 3).tolist() == [1, 2]  # only non-zero effects
    assert select_top_n(np.array([0.5, 3.0]), 10).tolist() == [1, 0]
    out = ablate_pooled(np.array([[1.0, 1.0]]), np.array([[0.5, 2.0]]), np.array([[2.0, 0.0], [0.0, 1.0]]), [1])
    np.testing.assert_allclose(out, [[1.0, -1.0]])
    assert scr_score(0.9, 0.6, 1.0) == pytest.approx(0.75)
    assert math.isnan(scr_score(0.9, 0.8, 0.8))


def test_ablation_with_error_term_matches_token_level_sae():
    sae = TinySAE(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), torch.randn(5, 3), k=3)
    x = torch.randn(4, 3)
    f = sae.encode(x)
    err = x - sae.decode(f)
    f2 = f.clone()
    f2[:, [1, 3]] = 0
    token_level = (sae.decode(f2) + err).mean(0)
    pooled = ablate_pooled(x.mean(0, keepdim=True).numpy(), f.mean(0, keepdim=True).detach().numpy(),
                           sae.W_dec.detach().numpy(), [1, 3])
    np.testing.assert_allclose(pooled[0], token_level.detach().numpy(), atol=1e-5)


def test_scr_positive_when_the_spurious_latents_are_ablated():
    X, pair = _scr_case()
    pool = _pool_from(X, scr=[pair])
    sae = perfect_sae(4)  # latents 0-3: relu(x_d); 4-7: relu(-x_d)
    probes = train_scr_probes(pool, pair, CFG)
    chk = scr_oracle_check(pool, cfg=CFG, probes=[probes]).iloc[0]
    assert chk["margin_ok"] and chk["target_probe_acc"] > 0.95 and chk["biased_on_target"] < 0.9
    # the right latents: the spurious dimension's two latents rank first for direction 1
    Z = pool.pooled_codes(sae)
    W = sae.W_dec.detach().numpy()
    s = pair.sets
    eff = latent_effects(Z[s["spurious_pos"][0]], Z[s["spurious_neg"][0]], probes.probes["spurious"].weight, W, "scr")
    assert set(select_top_n(eff, 2).tolist()) == {1, 5}
    df = run_scr({"disentangled": sae}, pool, cfg=CFG, probes=[probes])
    row = df[(df["pair"] == "toy")].iloc[0]
    assert row["scr_dir1"] > 0.6 and row["scr_dir2"] > 0.6 and row["scr_metric"] > 0.6
    assert df[df["pair"] == "ALL"]["n_pairs"].iloc[0] == 1
    # the wrong latents (the target's) make it negative
    idx, y = probes.data["target"][2], probes.data["target"][3]
    a = _acc(probes.probes["biased"], ablate_pooled(X[idx], Z[idx], W, [0, 4]), y)
    assert scr_score(a, probes.clean["biased_on_target"], probes.clean["target"]) < 0


def test_scr_lower_for_an_entangled_sae():
    X, pair = _scr_case()
    pool = _pool_from(X, scr=[pair])
    c = 1 / math.sqrt(2)
    R = torch.tensor([[c, c, 0, 0], [c, -c, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # mixes target and spurious
    tangled = TinySAE(torch.cat([R, -R], 1), torch.cat([R.T, -R.T], 0))
    df = run_scr({"disentangled": perfect_sae(4), "entangled": tangled}, pool, cfg=CFG).set_index(["sae", "pair"])
    assert df.loc[("entangled", "toy"), "scr_dir1"] < df.loc[("disentangled", "toy"), "scr_dir1"] - 0.3


def test_scr_aggregate_skips_pairs_failing_the_oracle_check():
    X, pair = _scr_case()
    # make the target unlearnable: the oracle cannot beat the biased probe
    X[:, 0] = np.random.default_rng(1).normal(size=len(X))
    pool = _pool_from(X, scr=[pair])
    df = run_scr({"p": perfect_sae(4)}, pool, cfg=CFG)
    assert not df[df["pair"] == "toy"]["margin_ok"].iloc[0]
    agg = df[df["pair"] == "ALL"].iloc[0]
    assert agg["n_pairs"] == 0 and np.isnan(agg["scr_metric"])


def test_tpp_scores_by_hand():
    clean = {"a": 0.9, "b": 0.8, "c": 0.7}
    ablated = {"a": 0.6, "b": 0.75, "c": 0.72}  # a's latents ablated: a drops 0.3, b 0.05, c -0.02
    s = tpp_scores(clean, ablated, "a")
    assert s["tpp_intended"] == pytest.approx(0.3)
    assert s["tpp_unintended"] == pytest.approx(0.015)  # mean(0.05, -0.02)
    assert s["tpp_total"] == pytest.approx(0.285)
    assert tpp_scores({"a": 0.9}, {"a": 0.5}, "a") == pytest.approx(
        {"tpp_total": 0.4, "tpp_intended": 0.4, "tpp_unintended": 0.0})  # no other class


def _tpp_case(n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows, cls = [], {}
    for c in range(3):
        for j in (0, 1):
            ids = list(range(len(rows), len(rows) + n))
            for _ in range(n):
                x = rng.normal(0, 0.3, size=4)
                x[c] += 2.0
                rows.append(x)
            cls.setdefault(f"c{c}", [0, 0])[j] = np.array(ids)
    return np.array(rows), ProbeDataset("toy3", "test", "", {k: tuple(v) for k, v in cls.items()})


def test_tpp_signs_on_a_constructed_case():
    X, ds = _tpp_case()
    pool = _pool_from(X, tpp=[ds])
    cfg = ScrTppConfig(n_values=(1, 2), probe_epochs=20, probe_lr=1e-2)
    sae = perfect_sae(4)
    (tp,) = [train_tpp_probes(pool, ds, cfg)]
    Z, W = pool.pooled_codes(sae), sae.W_dec.detach().numpy()
    for c, t in enumerate(tp.tasks):  # the right latent: relu(x_c) for class c
        eff = latent_effects(Z[t.train_idx[t.train_y == 1]], Z[t.train_idx[t.train_y == 0]],
                             tp.probes[t.name].weight, W, "tpp")
        assert select_top_n(eff, 1).tolist() == [c]
    c = 1 / math.sqrt(2)
    R = torch.tensor([[c, c, 0, 0], [c, -c, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # latents mix classes 0 and 1
    saes = {"disentangled": sae, "entangled": TinySAE(torch.cat([R, -R], 1), torch.cat([R.T, -R.T], 0))}
    df = run_tpp(saes, pool, cfg=cfg, probes=[tp])
    allr = df[(df["dataset"] == "ALL")].set_index(["sae", "n"])
    d1 = allr.loc[("disentangled", 1)]
    assert d1["tpp_intended"] > 0.3 and d1["tpp_unintended"] < 0.1 and d1["tpp_total"] > 0.25
    assert d1["tpp_total"] == pytest.approx(d1["tpp_intended"] - d1["tpp_unintended"])
    assert allr.loc[("entangled", 2), "tpp_unintended"] > allr.loc[("disentangled", 2), "tpp_unintended"]
    per = df[(df["dataset"] == "toy3") & (df["class"] != "ALL") & (df["sae"] == "disentangled") & (df["n"] == 1)]
    assert len(per) == 3 and (per["n_ablated"] == 1).all()
