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


def test_effects_per_metric_on_hand_made_numbers():
    t = _table({("topk", "recipe"): [1.0, 1.0, 1.0], ("vsae", "recipe"): [0.2, 0.22, 0.18],
                ("vsae", "kl"): [0.6, 0.62, 0.58], ("vsae", "lr"): [0.2, 0.25, 0.15]})
    t["ev"] = t["frac_alive"] * -1.0          # the same numbers, mirrored: effects flip sign
    t["tpp"] = np.where(t.seed == 0, t["frac_alive"], np.nan)  # one seed only (an ablation metric)
    long = attribution.effects(t, ["frac_alive", "ev", "tpp"])
    L = long.set_index(["side", "difference", "metric"])
    assert L.loc[("vsae", "kl", "frac_alive"), "effect"] == pytest.approx(0.4)
    assert L.loc[("vsae", "kl", "frac_alive"), "verdict"] == verdicts.HOLDS
    assert L.loc[("vsae", "kl", "ev"), "effect"] == pytest.approx(-0.4)
    assert L.loc[("vsae", "kl", "ev"), "verdict"] == verdicts.REVERSED
    assert L.loc[("vsae", "lr", "ev"), "verdict"] == verdicts.NOT_SEPARATED
    assert L.loc[("vsae", "kl", "tpp"), "n_seeds"] == 1 and np.isnan(L.loc[("vsae", "kl", "tpp"), "half"])
    assert "share" not in long.columns
    wide = attribution.effects_wide(long)
    assert list(wide.columns) == ["frac_alive", "ev", "tpp"] and list(wide.index) == ["vSAE − kl", "vSAE − lr"]
    assert wide.loc["vSAE − kl", "frac_alive"].startswith("+0.400 ± ") and wide.loc["vSAE − kl", "frac_alive"].endswith(" up")
    assert wide.loc["vSAE − kl", "ev"].endswith(" down") and wide.loc["vSAE − lr", "ev"].endswith(" n.s.")
    assert wide.loc["vSAE − kl", "tpp"] == "+0.400 up"


def _lr_runs(own_topk, own_vsae, topk_at_vsae, vsae_at_topk):
    rows = []
    for arch, lr_of, xs in (("topk", "topk", own_topk), ("vsae", "vsae", own_vsae),
                            ("topk", "vsae", topk_at_vsae), ("vsae", "topk", vsae_at_topk)):
        rows += [{"arch": arch, "lr_of": lr_of, "seed": s, "ev": x} for s, x in enumerate(xs)]
    return pd.DataFrame(rows)


def test_matched_lr_tells_a_learning_rate_effect_from_an_architecture_effect():
    # own rates: vSAE ahead (a "reversal"); both matched rates: TopK ahead -> a learning-rate effect
    runs = _lr_runs([0.87, 0.871, 0.869], [0.90, 0.901, 0.899], [0.93, 0.931, 0.929], [0.80, 0.801, 0.799])
    res = attribution.matched_lr(runs, ["ev"]).set_index("setting")
    assert res.loc["own", "diff"] == pytest.approx(-0.03) and res.loc["own", "verdict"] == verdicts.REVERSED
    assert res.loc["topk", "diff"] == pytest.approx(0.07) and res.loc["topk", "verdict"] == verdicts.HOLDS
    assert res.loc["vsae", "diff"] == pytest.approx(0.03) and res.loc["vsae", "verdict"] == verdicts.HOLDS
    text = attribution.matched_lr_sentence(res.reset_index(), {"ev": "explained variance"})
    assert "**explained variance**" in text and "comes from the learning-rate mismatch" in text
    assert "own rates vSAE higher (-0.030)" in text
    wide = attribution.matched_lr_wide(res.reset_index())
    assert wide.loc["each at its own learning rate", "ev"].endswith("(vSAE higher)")
    # the same verdict everywhere -> independent of the mismatch
    same = attribution.matched_lr(_lr_runs([0.9, 0.91, 0.89], [0.8, 0.81, 0.79], [0.9, 0.91, 0.89], [0.8, 0.81, 0.79]), ["ev"])
    assert "does not depend on the learning-rate mismatch" in attribution.matched_lr_sentence(same)
    # matched rates disagree with each other -> depends on the rate
    dep = attribution.matched_lr(_lr_runs([0.9, 0.91, 0.89], [0.8, 0.81, 0.79], [0.95, 0.96, 0.94], [0.95, 0.96, 0.94]), ["ev"])
    assert "depends on the learning rate" in attribution.matched_lr_sentence(dep)
    # equal rates (the smoke profile): nothing to match
    assert "coincide" in attribution.matched_lr_sentence(dep, lrs={"topk": 8e-4, "vsae": 8e-4})
    assert "coincide" not in attribution.matched_lr_sentence(dep, lrs={"topk": 3.8e-4, "vsae": 8e-4})


def test_ladder_lr_runs_reads_the_four_cells_of_the_ladder():
    t = _table({("topk", "recipe"): [1.0, 1.0], ("vsae", "recipe"): [0.2, 0.3], ("topk", "lr"): [0.9, 0.9],
                ("vsae", "lr"): [0.4, 0.5], ("vsae", "kl"): [0.6, 0.6]})
    r = attribution.ladder_lr_runs(t)
    assert len(r) == 8 and set(zip(r.arch, r.lr_of)) == {("topk", "topk"), ("vsae", "vsae"), ("topk", "vsae"), ("vsae", "topk")}
    assert r[(r.arch == "vsae") & (r.lr_of == "topk")]["frac_alive"].tolist() == [0.4, 0.5]


def test_mechanism_from_ladder_names_the_dominant_cause_and_judges_the_papers_reading():
    base = {("topk", "recipe"): [1.0, 1.0, 1.0], ("vsae", "recipe"): [0.2, 0.22, 0.18]}
    # init closes ~all of the gap, kl a quarter; nothing added to TopK kills latents
    t = _table({**base, ("vsae", "init"): [0.99, 1.0, 0.98], ("vsae", "kl"): [0.52, 0.54, 0.50],
                ("vsae", "b_dec"): [0.2, 0.25, 0.15], ("topk", "kl"): [1.0, 1.0, 1.0], ("topk", "init"): [1.0, 1.0, 1.0]})
    text = attribution.mechanism_from_ladder(attribution.attribute(t, "frac_alive"), "k = 256")
    assert "**init** 99%" in text and "**kl** 40%" in text
    assert "No vSAE difference added to TopK alone kills its latents" in text
    assert "**only partly supported**" in text and "removing the init closes 99%" in text
    assert "the same penalty on TopK kills no latents" in text and "they do not add" in text
    # the KL term closes most of the gap and is the largest: supported
    t2 = _table({**base, ("vsae", "kl"): [0.9, 0.92, 0.88], ("vsae", "init"): [0.3, 0.32, 0.28],
                 ("topk", "kl"): [0.5, 0.52, 0.48]})
    text2 = attribution.mechanism_from_ladder(attribution.attribute(t2, "frac_alive"), "k = 256")
    assert "**supported**" in text2 and "**kl** opens" in text2 and "kills no latents" not in text2
    # removing the KL term does not separate: not supported
    t3 = _table({**base, ("vsae", "kl"): [0.2, 0.25, 0.15], ("vsae", "init"): [0.99, 1.0, 0.98]})
    assert "**not supported**" in attribution.mechanism_from_ladder(attribution.attribute(t3, "frac_alive"), "k")
    # no gap: nothing to attribute
    t4 = _table({("topk", "recipe"): [1.0, 1.0], ("vsae", "recipe"): [1.0, 1.0], ("vsae", "kl"): [1.0, 1.0]})
    assert "no feature death to attribute" in attribution.mechanism_from_ladder(attribution.attribute(t4, "frac_alive"), "k")


def test_runs_that_differ_only_in_lr_train_in_one_pass(monkeypatch, tmp_path):
    """``Experiment.train`` puts runs whose trainer settings differ only in ``lr`` into one pass with
    per-SAE rates (``lr_by_name``); different seeds (data orders) stay separate passes."""
    import types

    from vsae import pipeline, training
    from vsae.store import Store

    ex = pipeline.Experiment("smoke", store=Store(tmp_path / "store"))
    ex.__dict__["train_acts"] = types.SimpleNamespace(manifest={"checksum": "fake", "d_model": D_IN})
    calls = []

    def fake_train_saes(cache, specs, tcfg, work, resume=True, progress=True):
        calls.append((sorted(specs), tcfg))
        for name in specs:
            (work / name).mkdir(parents=True, exist_ok=True)
            for f in ("cfg.json", "sae.safetensors", "log.csv"):
                (work / name / f).write_text("{}")

    monkeypatch.setattr(training, "train_saes", fake_train_saes)
    monkeypatch.setattr("vsae.models.load_sae", lambda d: types.SimpleNamespace(to=lambda dev: types.SimpleNamespace(eval=lambda: d)))
    runs = ex.lr_variants(k=K)
    ex.train(runs)
    assert len(calls) == len(ex.profile.seeds)  # one pass per seed, not one per (seed, lr)
    for names, tcfg in calls:
        assert len(names) == 4 and tcfg.lr is None
        lr_runs = {v.name: v.train_overrides["lr"] for v in runs if "lr" in v.train_overrides and v.name in names}
        assert tcfg.lr_by_name == lr_runs and len(lr_runs) == 2
    ex.train(runs)  # stored now: nothing trains again
    assert len(calls) == len(ex.profile.seeds)


def test_control_comparisons_and_sentence_on_hand_made_numbers():
    rows = []
    vals = {"topk": [0.04, 0.05, 0.045], "vsae": [0.30, 0.31, 0.29], "size_matched": [0.32, 0.30, 0.31],
            "random": [0.01, 0.012, 0.011]}
    for c, xs in vals.items():
        rows += [{"control": c, "seed": s, "tpp": x, "unint": -x} for s, x in enumerate(xs)]
    runs = pd.DataFrame(rows)
    comp = attribution.control_comparisons(runs, ["tpp", "unint"])
    C = comp.set_index(["metric", "a", "b"])
    assert C.loc[("tpp", "vsae", "topk"), "diff"] == pytest.approx(0.255) and C.loc[("tpp", "vsae", "topk"), "verdict"] == verdicts.HOLDS
    assert C.loc[("tpp", "vsae", "size_matched"), "verdict"] == verdicts.NOT_SEPARATED
    assert C.loc[("unint", "vsae", "topk"), "verdict"] == verdicts.REVERSED
    text = attribution.control_sentence(comp, {"tpp": "TPP"}, {"unint": False})
    assert "**TPP** (higher is better): vSAE above TopK (+0.255" in text
    assert "A TopK SAE of the vSAE's live size removes the vSAE's advantage: it goes with the small, dense dictionary." in text
    assert "untrained null" not in text.split("\n")[0]
    # "lower is better": the vSAE's lower value is the advantage; the null (highest) is beaten by all
    line = text.split("\n")[1]
    assert "(lower is better)" in line and "vSAE below TopK" in line and "untrained null" not in line
    # a null that scores best: no trained SAE beats it
    runs3 = runs.copy()
    runs3.loc[runs3.control == "random", "tpp"] = [0.5, 0.52, 0.51]
    t3 = attribution.control_sentence(attribution.control_comparisons(runs3, ["tpp"]))
    assert "Not better than the untrained null: vSAE, TopK, size-matched TopK." in t3
    # an advantage that survives the size-matched control
    runs2 = runs.copy()
    runs2.loc[runs2.control == "size_matched", "tpp"] = [0.05, 0.06, 0.055]
    assert "survives a TopK SAE of its live size" in attribution.control_sentence(attribution.control_comparisons(runs2, ["tpp"]))


def test_ablation_control_variants():
    from vsae.profiles import get_profile

    p = get_profile("offline")
    vs = design.ablation_control_variants(p, 576, 4608, k=256, live=1024)
    assert len(vs) == 4 * len(p.seeds)
    by = {}
    for v in vs:
        by.setdefault(v.role["control"], []).append(v)
    assert set(by) == {c for c, _ in design.ABLATION_CONTROLS}
    assert all(v.model_cfg.d_sae == 1024 and v.architecture == "topk" and v.k == 256 for v in by["size_matched"])
    assert all(v.train_overrides["lr"] == 0.0 and v.train_overrides["steps"] == design.NULL_STEPS for v in by["random"])
    head = {v.name for v in design.seed_variants(p, 576, 4608, k_values=[256])}
    assert {v.name for v in by["topk"] + by["vsae"]} <= head
    with pytest.raises(ValueError, match="k <= live"):
        design.ablation_control_variants(p, 576, 4608, k=256, live=100)
