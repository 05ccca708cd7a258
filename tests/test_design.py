"""The experimental design: pure functions of a profile (no training, no store)."""

from vsae import design
from vsae.profiles import get_profile


def test_headline_variants_are_the_papers_eight_runs():
    p = get_profile("offline")
    vs = design.headline_variants(p, 576, 4608)
    assert [v.name for v in vs] == [f"{a}_k{k}" for a in ("topk", "vsae") for k in (64, 128, 256, 512)]
    assert {(v.architecture, v.model_cfg.d_in, v.model_cfg.d_sae, v.seed) for v in vs} == \
        {(a, 576, 4608, 42) for a in ("topk", "vsae")}
    vsae = [v for v in vs if v.architecture == "vsae"]
    assert all((v.model_cfg.var_mode, v.model_cfg.kl_scope, v.model_cfg.kl_coeff) == ("fixed", "all", 1.0) for v in vsae)
    other = design.headline_variants(p, 576, 4608, k_values=[128], seed=43)
    assert [v.name for v in other] == ["topk_k128_s43", "vsae_k128_s43"] and {v.seed for v in other} == {43}


def test_seed_variants_main_seed_first():
    p = get_profile("smoke")
    vs = design.seed_variants(p, 16, 64)
    assert len(vs) == 8 * len(p.seeds) and vs[0].seed == p.main_seed
    assert len({v.name for v in vs}) == len(vs)


def test_beyond_variants_share_runs_and_say_what_they_change():
    p = get_profile("offline")
    g = design.beyond_variants(p, 576, 4608, k=256, budget_fraction=0.25)
    assert g["control"][1] is g["text_vs_code"][0] is g["kl_scope"][0]
    assert g["auxk"][0] is g["control"][0]
    assert {v.train_overrides["steps"] for vs in g.values() for v in vs} == {375}
    by = {v.name: v.model_cfg for vs in g.values() for v in vs}
    assert by["vSAE unit var (blog)"].var_mode == "unit" and by["vSAE KL on top-k only"].kl_scope == "topk"
    assert by["TopK + L2 pre-act penalty"].l2_preact_coeff == 1.0
    assert by["TopK + AuxK (dead after 3,600 tokens)"].dead_tokens_threshold == 3_600
    assert [getattr(v.model_cfg, "kl_coeff") for v in g["kl_sweep"]] == list(design.KL_WEIGHTS)


def test_slug_and_showcase_k():
    v = design.beyond_variants(get_profile("offline"), 8, 32, k=4)["auxk"][1]
    assert v.slug == "topk_auxk_dead_after_3_600_tokens"
    assert design.showcase_k(get_profile("offline")) == 256
    assert design.showcase_k(get_profile("smoke")) == 32


def test_ablation_ks_are_the_two_largest():
    assert design.ablation_ks(get_profile("offline")) == [256, 512]
    assert design.ablation_ks(get_profile("smoke")) == sorted(get_profile("smoke").k_values)[-2:]
    assert design.ablation_ks(get_profile("offline", k_values=(64,))) == [64]


def test_run_label_names_runs_as_the_paper_does():
    import pandas as pd

    from vsae import paper

    df = pd.DataFrame({"architecture": ["topk", "vsae"], "sae_k": [256, 64], "k": [1, 2]})
    assert paper.run_label(df).tolist() == ["TopK k=256", "vSAE k=64"]
    assert paper.run_label(df, "k").tolist() == ["TopK k=1", "vSAE k=2"]


def test_lr_variants_are_both_architectures_at_both_rates():
    from vsae.training import auto_lr

    p = get_profile("offline")
    vs = design.lr_variants(p, 576, 4608, k=256)
    assert len(vs) == 4 * len(p.seeds)
    head = {v.name: v for v in design.seed_variants(p, 576, 4608, k_values=[256])}
    topk_lr, vsae_lr = 2e-4 / (4608 / 2**14) ** 0.5, 8e-4
    for v in vs:
        arch, lr_of = v.role["arch"], v.role["lr_of"]
        assert v.architecture == arch and v.k == 256
        if lr_of == arch:  # the headline run itself: the same name, config and trainer settings
            assert v.name in head and v.model_cfg == head[v.name].model_cfg
            assert v.train_overrides == head[v.name].train_overrides and "lr" not in v.train_overrides
            assert auto_lr(v.model_cfg) == (topk_lr if arch == "topk" else vsae_lr)
        else:  # the same model at the other architecture's rate, full budget (no steps override)
            assert v.train_overrides["lr"] == (topk_lr if lr_of == "topk" else vsae_lr)
            assert "steps" not in v.train_overrides and v.name.startswith(f"{arch}_k256_lr_{lr_of}")
            twin = head[v.name.replace(f"_lr_{lr_of}", "")]
            assert v.model_cfg == twin.model_cfg and v.seed == twin.seed
    assert len({v.name for v in vs}) == len(vs)


def test_sigma_sweep_samples_at_each_noise_scale_and_shares_the_blog_run():
    p = get_profile("offline")
    g = design.beyond_variants(p, 576, 4608, k=256, budget_fraction=0.25)
    sweep = g["sigma_sweep"]
    assert sweep[0] is g["text_vs_code"][0] and sweep[0].model_cfg.var_mode == "fixed"
    assert [v.model_cfg.noise_scale for v in sweep[1:]] == list(design.NOISE_SCALES)
    assert all(v.model_cfg.var_mode == "unit" for v in sweep[1:])
    assert g["text_vs_code"][1] in sweep and g["text_vs_code"][1].model_cfg.noise_scale == 1.0
    names = [v.name for grp in g.values() for v in grp]
    assert len({v.name: id(v) for grp in g.values() for v in grp}) == len(set(names))  # a name is one variant


def test_learned_variance_init_sweep_shares_the_abstract_run():
    p = get_profile("offline")
    g = design.beyond_variants(p, 576, 4608, k=256, budget_fraction=0.25)
    sweep = g["learned_init"]
    assert sweep[0] is g["text_vs_code"][0] and sweep[0].model_cfg.var_mode == "fixed"
    assert [v.model_cfg.log_var_init for v in sweep[1:]] == list(design.LOG_VAR_INITS)
    assert all(v.model_cfg.var_mode == "learned" for v in sweep[1:])
    assert g["text_vs_code"][2] in sweep and g["text_vs_code"][2].model_cfg.log_var_init == -2.0
    assert [v.name for v in sweep[1:]] == ["vSAE learned var init -6", "vSAE learned var init -4",
                                          "vSAE learned var (abstract)", "vSAE learned var init 0"]
