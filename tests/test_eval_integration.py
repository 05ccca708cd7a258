"""The evals on the real language model and SAE classes (pythia-70m architecture, random weights, 2 layers)."""

import numpy as np
import pytest
import torch

from _eval_fixtures import fake_documents

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real():
    try:
        from vsae import lm as lm_mod
        from vsae import models
    except ImportError as e:  # pragma: no cover - the other modules are built in parallel
        pytest.skip(f"vsae.lm / vsae.models not importable yet: {e}")
    try:
        lm = lm_mod.load_lm("pythia-70m-random", layer=1, n_layers=2)
    except Exception as e:  # pragma: no cover - needs the fetched tokenizer asset
        pytest.skip(f"pythia-70m-random unavailable (run `python -m vsae fetch`): {e}")
    d = lm.d_model
    saes = {"topk": models.TopKSAE(models.TopKSAEConfig(d_in=d, d_sae=128, k=8)),
            "vsae": models.VSAE(models.VSAEConfig(d_in=d, d_sae=128, k=8))}
    for s in saes.values():
        s.eval()
    return lm, saes


def test_core_probing_scr_tpp_on_the_real_modules(real, tmp_path):
    from vsae.evals import (CoreConfig, ScrTppConfig, SparseProbingConfig, build_suite, evaluate_core, harvest_pool,
                            run_scr, run_sparse_probing, run_tpp)
    from vsae.store import Store

    lm, saes = real
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(2, 50000, (4, 24), generator=g)
    acts = lm.resid(ctx).reshape(-1, lm.d_model)
    res = evaluate_core(saes, acts, lm, contexts=ctx, tokens=ctx.reshape(-1).numpy(),
                        cfg=CoreConfig(n_ce_contexts=4, ce_batch_size=2))
    m = res.metrics.set_index("sae")
    assert (m["l0"] <= 8).all() and np.isfinite(m[["ce_loss_score", "kl_div_score", "explained_variance"]]).all().all()

    store = Store(tmp_path)
    suite = build_suite("smoke", lm, n_train=20, n_test=10, ctx_len=32, documents=fake_documents(), store=store,
                        max_passages_per_doc=4)
    assert len(suite.probing) >= 5 and suite.scr and suite.tpp
    pool = harvest_pool(lm, suite, store, progress=False)
    assert pool.acts.shape == (int(pool.offsets[-1]), lm.d_model)
    sp = run_sparse_probing(saes, pool, cfg=SparseProbingConfig(full_probe="sklearn"))
    assert set(sp["sae"]) == set(saes) and sp["accuracy"].between(0, 1).all()
    cfg = ScrTppConfig(n_values=(2, 500), probe_epochs=3)
    scr = run_scr(saes, pool, cfg=cfg)
    assert {"scr_dir1", "scr_dir2", "scr_metric", "margin_ok"} <= set(scr)
    assert scr[scr["pair"] != "ALL"]["n_ablated_dir1"].max() <= 128  # N clipped to d_sae
    tpp = run_tpp(saes, pool, cfg=cfg)
    assert np.isfinite(tpp[tpp["dataset"] == "ALL"]["tpp_total"]).all()


def test_absorption_interp_latent_on_the_real_modules(real):
    from vsae import interp, latent
    from vsae.evals import AbsorptionConfig, run_absorption

    lm, saes = real
    cfg = AbsorptionConfig(n_words=150, max_icl_examples=2, probe_epochs=3, k_sparse_epochs=3, max_k_value=2,
                           min_probe_f1=0.0, min_feats_for_eval=1)
    res = run_absorption(saes, lm, cfg)
    assert len(res.summary) == 2 and len(res.letters) == 52
    sae = saes["topk"]
    syn = interp.synthetic_maximiser(sae, lm, latent=3, seq_len=8, steps=3)
    assert len(syn.tokens) == 8 and max(syn.tokens) < len(lm.tokenizer)
    assert not set(syn.tokens) & set(lm.special_token_ids)
    eff = interp.logit_effects(sae, lm, latent=3, k=3)
    assert len(eff) == 6 and eff["token_id"].max() < len(lm.tokenizer)
    x = lm.resid(torch.randint(2, 50000, (2, 40))).reshape(-1, lm.d_model)
    s = latent.collect_codes(sae, x, n_tokens=80, min_density=0.0)
    assert s.codes.shape[0] == 80 and latent.decoder_cosine_stats(sae)["n_latents"] == 128


def test_pooled_evals_one_sae_at_a_time_equal_all_at_once(real, tmp_path):
    """What :meth:`vsae.pipeline.Experiment.pool_evals` does (residual probes trained once, one SAE per
    call, its pooled codes freed after its three evals) gives every SAE exactly the rows of one call
    over all SAEs."""
    import pandas as pd

    from vsae.evals import (ScrTppConfig, SparseProbingConfig, build_suite, harvest_pool, run_scr,
                            run_sparse_probing, run_tpp, train_scr_probes, train_tpp_probes)
    from vsae.store import Store

    lm, saes = real
    store = Store(tmp_path)
    suite = build_suite("smoke", lm, n_train=20, n_test=10, ctx_len=32, documents=fake_documents(), store=store,
                        max_passages_per_doc=4)
    pool = harvest_pool(lm, suite, store, progress=False)
    pcfg, acfg = SparseProbingConfig(full_probe="sklearn"), ScrTppConfig(n_values=(2, 500), probe_epochs=3)

    def evals(group, probes=None):
        out = {"probing": run_sparse_probing(group, pool, cfg=pcfg),
               "scr": run_scr(group, pool, cfg=acfg, probes=None if probes is None else probes[0]),
               "tpp": run_tpp(group, pool, cfg=acfg, probes=None if probes is None else probes[1])}
        pool.clear_codes()
        return out

    together = evals(saes)
    shared = ([train_scr_probes(pool, p, acfg) for p in suite.scr], [train_tpp_probes(pool, d, acfg) for d in suite.tpp])
    for name, sae in saes.items():
        alone = evals({name: sae}, shared)
        assert not pool._codes  # freed before the next SAE
        for t, df in together.items():
            pd.testing.assert_frame_equal(alone[t].reset_index(drop=True),
                                          df[df["sae"] == name].reset_index(drop=True))
