"""The attribution ladder: every rung is what its name says, and the attribution arithmetic."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from vsae import attribution, design, verdicts
from vsae.models import TopKSAEConfig, VSAEConfig
from vsae.models.config import RECIPE_FIELDS, key_dict
from vsae.profiles import get_profile
from vsae.training import SAETrainer, TrainConfig, auto_lr

D_IN, D_SAE, K = 8, 64, 4


@pytest.fixture(scope="module")
def ladder():
    return design.ladder_variants(get_profile("smoke"), D_IN, D_SAE, K, budget_fraction=0.5)


def _by(ladder, side, rung, seed=42):
    return next(v for v in ladder[side] if v.role["rung"] == rung and v.seed == seed)


def test_recipe_defaults_keep_old_store_keys():
    for cfg in (TopKSAEConfig(D_IN, D_SAE, K), VSAEConfig(D_IN, D_SAE, K)):
        assert set(key_dict(cfg)) == set(dataclasses.asdict(cfg)) - set(RECIPE_FIELDS)
        flipped = dataclasses.replace(cfg, unit_norm_decoder=not cfg.unit_norm_decoder)
        assert key_dict(flipped)["unit_norm_decoder"] == flipped.unit_norm_decoder


def test_each_rung_flips_exactly_one_difference(ladder):
    p = get_profile("smoke")
    steps = max(50, int(p.steps * 0.5))
    for side in ("vsae", "topk"):
        runs = ladder[side]
        assert len(runs) == len(p.seeds) * (1 + len(design.LADDER_DIFFERENCES))
        for seed in p.seeds:
            base = _by(ladder, side, "recipe", seed)
            for d, _ in design.LADDER_DIFFERENCES:
                v = _by(ladder, side, d, seed)
                a, b = dataclasses.asdict(base.model_cfg), dataclasses.asdict(v.model_cfg)
                changed = {f for f in a if a[f] != b[f]}
                expect = {"kl": {"kl_coeff"} if side == "vsae" else {"l2_preact_coeff"}, "b_dec": {"subtract_b_dec"},
                          "unit_norm": {"unit_norm_decoder"}, "init": {"init"}, "geomed": {"b_dec_init"},
                          "lr": set()}[d]
                assert changed == expect, (side, d, changed)
                assert v.train_overrides["steps"] == steps and v.seed == seed
                assert ("lr" in v.train_overrides) == (d == "lr")
    assert [v.name for v in ladder["vsae"][:3]] == ["vSAE", "vSAE - kl", "vSAE - b_dec"]
    assert ladder["topk"][1].name == "TopK + kl" and ladder["topk"][-1].name.endswith("_s43")


def _trainer(v, steps=20):
    cfg = TrainConfig(steps=steps, batch_size=32, warmup_steps=2, seed=v.seed,
                      **{k: x for k, x in v.train_overrides.items() if k == "lr"})
    return SAETrainer(v.name, v.model_cfg, cfg)


def _run(tr, n=6):
    torch.manual_seed(0)
    for step in range(n):
        tr.update(torch.randn(32, D_IN) + 2.0, step)
    return tr.model


@pytest.mark.parametrize("side", ["vsae", "topk"])
def test_trained_rungs_obey_their_constraints(ladder, side):
    base = _by(ladder, side, "recipe")
    # decoder constraint: unit-norm rows after training exactly when the config says so
    for v in (base, _by(ladder, side, "unit_norm")):
        norms = _run(_trainer(v)).W_dec.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5) == v.model_cfg.unit_norm_decoder
    # b_dec use: the encoder sees x - b_dec exactly when subtract_b_dec
    for v in (base, _by(ladder, side, "b_dec")):
        m = _run(_trainer(v))
        x = torch.randn(5, D_IN)
        with torch.no_grad():
            before = m.pre_acts(x)
            m.b_dec.add_(1.0)
            moved = not torch.allclose(before, m.pre_acts(x))
        assert moved == v.model_cfg.subtract_b_dec
    # initialisation: TopK rows at unit norm, vSAE rows at norm 0.1
    for v in (base, _by(ladder, side, "init")):
        n0 = _trainer(v).model.W_dec.norm(dim=1)
        assert torch.allclose(n0, torch.full_like(n0, 1.0 if v.model_cfg.init == "topk" else 0.1), atol=1e-5)
    # b_dec init: the geometric median of the first batch, or zero (lr is 0 at step 0 of the warm-up)
    for v in (base, _by(ladder, side, "geomed")):
        m = _run(_trainer(v), n=1)
        assert bool((m.b_dec.abs() > 0.5).all()) == (v.model_cfg.b_dec_init == "geometric_median")
    # learning rate: the other architecture's
    other = "topk" if side == "vsae" else "vsae"
    lr_other = auto_lr(_by(ladder, other, "recipe").model_cfg)
    assert _trainer(_by(ladder, side, "lr")).base_lr == pytest.approx(lr_other)
    assert _trainer(base).base_lr == pytest.approx(auto_lr(base.model_cfg))
    # KL: off in the vSAE without it (loss = MSE), on in TopK + kl (loss > MSE)
    tr = _trainer(_by(ladder, side, "kl"), steps=4)
    out = tr.model(torch.randn(32, D_IN), kl_scale=1.0)
    assert (float(out.loss.detach()) > float(out.mse.detach()) + 1e-6) == (side == "topk")


def _table(values):
    rows = []
    for (side, rung), xs in values.items():
        for seed, x in enumerate(xs):
            rows.append({"side": side, "rung": rung, "seed": seed, "frac_alive": x})
    return pd.DataFrame(rows)


def test_attribution_arithmetic_on_hand_made_numbers():
    t = _table({("topk", "recipe"): [1.0, 1.0, 1.0], ("vsae", "recipe"): [0.2, 0.22, 0.18],
                ("vsae", "kl"): [0.6, 0.62, 0.58],        # closes 0.4 of a 0.8 gap: +50%
                ("vsae", "lr"): [0.2, 0.25, 0.15],        # mean 0.2: no effect
                ("topk", "kl"): [0.8, 0.8, 0.8],          # opens 0.2 of the gap: +25%
                ("topk", "init"): [1.0, 1.0, 1.0]})
    att = attribution.attribute(t, "frac_alive")
    g = att.attrs["gap"]
    assert g["gap"] == pytest.approx(0.8) and g["verdict"] == verdicts.HOLDS
    A = att.set_index(["side", "difference"])
    assert A.loc[("vsae", "kl"), "effect"] == pytest.approx(0.4)
    assert A.loc[("vsae", "kl"), "share"] == pytest.approx(0.5) and A.loc[("vsae", "kl"), "verdict"] == verdicts.HOLDS
    assert A.loc[("vsae", "lr"), "share"] == pytest.approx(0.0) and A.loc[("vsae", "lr"), "verdict"] == verdicts.NOT_SEPARATED
    assert A.loc[("topk", "kl"), "share"] == pytest.approx(0.25) and A.loc[("topk", "kl"), "verdict"] == verdicts.REVERSED
    inter = attribution.interaction(att)
    assert inter["vsae"]["sum_of_shares"] == pytest.approx(0.5) and inter["vsae"]["unexplained"] == pytest.approx(0.5)
    assert inter["topk"]["unexplained"] == pytest.approx(0.75)
    text = attribution.attribution_sentence(att)
    assert "kl (+50% of the gap" in text and "not separated: lr" in text and "do not act additively" in text


def test_attribution_single_seed_uses_the_noise_scale():
    t = _table({("topk", "recipe"): [1.0], ("vsae", "recipe"): [0.2], ("vsae", "kl"): [0.21], ("vsae", "b_dec"): [0.5]})
    att = attribution.attribute(t, "frac_alive", noise=0.02).set_index("difference")
    assert att.loc["kl", "verdict"] == verdicts.NOT_SEPARATED and att.loc["b_dec", "verdict"] == verdicts.HOLDS
    assert np.isnan(att.loc["kl", "half"])


def test_ladder_table_reads_the_roles(ladder):
    names = [v.name for vs in ladder.values() for v in vs]
    summary = pd.DataFrame({"sae": names, "frac_alive": np.linspace(0, 1, len(names))})
    t = attribution.ladder_table(summary, ladder, ["frac_alive"])
    assert set(t.rung) == {"recipe"} | {d for d, _ in design.LADDER_DIFFERENCES}
    assert len(t) == len(names) and set(t.side) == {"vsae", "topk"}


def test_experiment_ladder_joins_core_and_ablation_metrics(monkeypatch):
    """``Experiment.ladder``: core metrics for every run, ablation metrics only for the asked seeds
    (NaN elsewhere), read from the per-SAE evals (faked here: the assembly is what is tested)."""
    from vsae import pipeline

    ex = pipeline.Experiment("smoke")
    monkeypatch.setattr(pipeline.Experiment, "d_model", property(lambda self: D_IN))
    seen = {}

    def fake_core(self, variants):
        seen["core"] = [v.name for v in variants]
        return {"metrics": pd.DataFrame([{"sae": v.name, **{m: float(i) for m in pipeline.LADDER_CORE_METRICS}}
                                         for i, v in enumerate(variants)])}

    def fake_summary(self, variants):
        seen["ablation"] = [v.name for v in variants]
        return pd.DataFrame([{"sae": v.name, **{m: 100.0 + i for m in pipeline.LADDER_ABLATION_METRICS}}
                             for i, v in enumerate(variants)])

    monkeypatch.setattr(pipeline.Experiment, "core", fake_core)
    monkeypatch.setattr(pipeline.Experiment, "variant_summary", fake_summary)
    lad, table = ex.ladder(budget_fraction=0.5, k=K)
    runs = [v.name for vs in lad.values() for v in vs]
    assert seen["core"] == runs and len(table) == len(runs)
    assert table["frac_alive"].tolist() == [float(i) for i in range(len(runs))]
    main = table.seed == ex.profile.main_seed
    assert seen["ablation"] == table.loc[main, "sae"].tolist()
    assert table.loc[main, "tpp_total_20"].tolist() == [100.0 + i for i in range(int(main.sum()))]
    assert table.loc[~main, list(pipeline.LADDER_ABLATION_METRICS)].isna().all().all()
    _, every = ex.ladder(budget_fraction=0.5, k=K, ablation_seeds=ex.profile.seeds)
    assert every[list(pipeline.LADDER_ABLATION_METRICS)].notna().all().all()
