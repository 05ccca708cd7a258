"""Evaluation noise and size of the core metrics: the after-hook splice, per-context bootstrap,
block bootstrap of the reconstruction metrics and the alive-vs-tokens curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from _eval_fixtures import TinySAE, perfect_sae
from vsae.evals import core
from vsae.evals.core import CoreConfig, evaluate_core


@pytest.fixture(scope="module")
def pythia():
    from vsae.lm import load_lm

    return load_lm("pythia-70m-random", layer=1, n_layers=3)


def test_logits_from_resid_equals_full_forward(pythia):
    tok = torch.randint(10, 2000, (2, 16))
    r = pythia.resid(tok)
    assert torch.equal(pythia.logits_from_resid(r), pythia.logits(tok))
    assert torch.equal(pythia.logits_from_resid(r * 0.5), pythia.logits(tok, replace=lambda x: x * 0.5))
    assert torch.equal(pythia.logits_from_resid(torch.zeros_like(r)), pythia.logits(tok, replace=torch.zeros_like))


def test_last_layer_hook_falls_back_to_full_forward():
    from vsae.lm import load_lm

    lm = load_lm("pythia-70m-random", layer=2, n_layers=3)
    assert not lm.can_start_after_hook
    with pytest.raises(ValueError, match="last block"):
        lm.logits_from_resid(lm.resid(torch.randint(10, 2000, (1, 6))))
    ctx = torch.randint(10, 2000, (2, 8))
    out = core.downstream_metrics({"p": perfect_sae(lm.d_model)}, lm, ctx)
    assert out["p"]["ce_loss_score"] == pytest.approx(1.0, abs=1e-6)


class _FullForwardOnly:
    """The same LM without ``logits_from_resid``: the evaluation falls back to full forwards."""

    def __init__(self, lm):
        self._lm = lm
        self.logits = lm.logits
        self.special_token_ids = lm.special_token_ids
        self.tokenizer = lm.tokenizer


def test_spliced_scores_same_as_full_forward_path(pythia):
    torch.manual_seed(0)
    d = pythia.d_model
    saes = {"a": TinySAE(torch.randn(d, 64) / d ** 0.5, torch.randn(64, d) / 8, k=8), "perfect": perfect_sae(d)}
    ctx = torch.randint(10, 2000, (4, 12))
    fast = core.downstream_metrics(saes, pythia, ctx, batch_size=2)
    slow = core.downstream_metrics(saes, _FullForwardOnly(pythia), ctx, batch_size=2)
    for name in saes:
        for key, v in fast[name].items():
            assert v == slow[name][key], (name, key)  # the same numbers, not merely close
    assert fast["perfect"]["ce_loss_score"] == pytest.approx(1.0, abs=1e-6)


def test_per_context_records_sum_to_the_point_estimate(pythia):
    d = pythia.d_model
    saes = {"a": TinySAE(torch.randn(d, 32) / d ** 0.5, torch.randn(32, d) / 8, k=4)}
    ctx = torch.randint(10, 2000, (5, 10))
    recs: list = []
    out = core.downstream_metrics(saes, pythia, ctx, batch_size=2, per_context=recs)
    pc = pd.DataFrame(recs)
    assert len(pc) == 5 and sorted(pc.context) == list(range(5))
    assert pc.ce_sae.sum() / pc.n_ce.sum() == pytest.approx(out["a"]["ce_loss_with_sae"])
    assert pc.kl_zero.sum() / pc.n_kl.sum() == pytest.approx(out["a"]["kl_div_with_ablation"])


def test_bootstrap_downstream_hand_made():
    # two SAEs, four identical contexts: every resample gives the same score, so no noise
    base = {"ce_clean": 2.0, "ce_zero": 6.0, "kl_zero": 2.0, "n_ce": 10, "n_kl": 10}
    rows = [{"sae": s, "context": c, "ce_sae": 30.0, "kl_sae": 5.0, **{k: v * (10 if k[0] in "ck" and k != "n_ce" else 1)
                                                                       for k, v in base.items()}}
            for s in ("x", "y") for c in range(4)]
    b = core.bootstrap_downstream(pd.DataFrame(rows), n_boot=50)
    assert set(b.metric) == {"ce_loss_score", "kl_div_score"}
    assert np.allclose(b.boot_se, 0) and np.allclose(b.boot_half, 0)
    # one context much worse than the others: the score now varies between resamples
    rows[0]["ce_sae"] = 55.0
    b = core.bootstrap_downstream(pd.DataFrame(rows), n_boot=200, seed=1).set_index(["sae", "metric"])
    assert b.loc[("x", "ce_loss_score"), "boot_se"] > 0.05
    assert b.loc[("y", "ce_loss_score"), "boot_se"] == pytest.approx(0)


def test_alive_curve_and_first_fire():
    x = torch.zeros(6, 2)
    x[2, 0] = 1.0  # latent 0 fires first on token 2; latent 1 on token 4; latent 2 never
    x[4, 1] = 1.0
    sae = TinySAE(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.eye(3, 2), k=2)
    ex: dict = {}
    m, dens = core.sparsity_and_reconstruction({"s": sae}, x, batch_tokens=3, extras=ex, n_boot=20)
    assert ex["first_fire"]["s"].tolist() == [2, 4, -1]
    assert m["s"]["frac_alive"] == pytest.approx(2 / 3)
    curve = core.alive_curve(ex["first_fire"]["s"], 6, points=6).set_index("tokens")["frac_alive"]
    assert curve.loc[2] == 0 and curve.loc[4] == pytest.approx(1 / 3) and curve.loc[6] == pytest.approx(2 / 3)
    rows = {r["metric"]: r for r in ex["bootstrap"]["s"]}
    assert set(rows) == {"explained_variance", "explained_variance_saebench", "cossim"}
    assert rows["cossim"]["n_blocks"] == 2


def test_evaluate_core_reports_noise(pythia):
    from _eval_fixtures import FakeLM  # noqa: F401  (fixtures module on the path)

    d = pythia.d_model
    ctx = torch.randint(10, 2000, (4, 16))
    acts = pythia.resid(ctx).reshape(-1, d).float()
    saes = {"a": TinySAE(torch.randn(d, 32) / d ** 0.5, torch.randn(32, d) / 8, k=4)}
    res = evaluate_core(saes, acts, pythia, contexts=ctx, tokens=ctx.reshape(-1).numpy(),
                        cfg=CoreConfig(n_ce_contexts=4, batch_tokens=16, n_boot=30, weight_metrics=False))
    assert set(res.noise.source) == {"eval tokens (batch blocks)", "CE contexts"}
    assert set(res.noise.metric) >= {"ce_loss_score", "kl_div_score", "explained_variance"}
    assert (res.noise.boot_se >= 0).all()
    assert "first_fire" in res.density.columns


def test_noise_vs_seeds_and_saturation():
    metrics = pd.DataFrame({"sae": ["a1", "a2", "a3"], "run": ["A"] * 3, "ce_loss_score": [0.90, 0.91, 0.92]})
    noise = pd.DataFrame({"sae": ["a1", "a2", "a3"], "metric": ["ce_loss_score"] * 3, "boot_half": [0.001, 0.002, 0.003]})
    t = core.noise_vs_seeds(metrics, noise, scores=("ce_loss_score",)).iloc[0]
    # seed half-width: t_{0.975,2} * 0.01 / sqrt(3) = 0.02484
    assert t["seed_half"] == pytest.approx(4.302653 * 0.01 / 3 ** 0.5, rel=1e-5)
    assert t["eval_half"] == pytest.approx(0.002) and t["ratio"] == pytest.approx(0.002 / t["seed_half"])
    flat = pd.DataFrame({"tokens": [1, 10, 100, 1000], "frac_alive": [0.1, 0.5, 0.8, 0.8]})
    assert core.saturation(flat) == pytest.approx(0.0)
    growing = pd.DataFrame({"tokens": [250, 500, 1000], "frac_alive": [0.2, 0.4, 0.8]})
    assert core.saturation(growing) == pytest.approx(0.5)
    from vsae import verdicts
    assert "every count has saturated" in verdicts.saturation_sentence({"A": 0.0})
    assert "lower bound" in verdicts.saturation_sentence({"A": 0.0, "B": 0.5})
    assert "1 of 1 runs" in verdicts.noise_sentence(core.noise_vs_seeds(metrics, noise, scores=("ce_loss_score",)))


def test_one_log_softmax_per_run_is_bitwise_the_per_metric_ones():
    """The CE and the KL of a run share one log-softmax, and the clean probabilities are exponentiated
    once per batch: the same values, bit for bit, as a log-softmax per metric (of ``logits[:, :-1]``
    for the CE) and an ``exp`` per SAE, which is what the scores were computed with before."""
    import torch.nn.functional as F

    from vsae.evals import downstream as D

    g = torch.Generator().manual_seed(0)
    V = 49_152  # SmolLM2's vocabulary: the offline book's row length
    clean, run = (4 * torch.randn(2, 9, V, generator=g) for _ in range(2))
    tok = torch.randint(0, V, (2, 9), generator=g)
    ce_before = -F.log_softmax(run[:, :-1].float(), dim=-1).gather(-1, tok[:, 1:, None]).squeeze(-1)
    clean_logp = F.log_softmax(clean.float(), dim=-1)
    kl_before = (clean_logp.exp() * (clean_logp - F.log_softmax(run.float(), dim=-1))).sum(-1)
    logp = D._logp(run)
    assert torch.equal(D._ce_per_token(logp, tok), ce_before)
    assert torch.equal(D._kl_per_token(clean_logp.exp(), clean_logp, logp), kl_before)


class _CountingLM:
    """``lm`` with its clean forwards (``resid``) and after-hook runs counted."""

    def __init__(self, lm):
        self._lm, self.n_resid, self.n_after = lm, 0, 0
        self.d_vocab, self.device = lm.d_vocab, lm.device
        self.special_token_ids, self.tokenizer = lm.special_token_ids, lm.tokenizer

    def resid(self, tok):
        self.n_resid += 1
        return self._lm.resid(tok)

    def logits_from_resid(self, r):
        self.n_after += 1
        return self._lm.logits_from_resid(r)


def _saes_for(d):
    torch.manual_seed(0)
    return {"a": TinySAE(torch.randn(d, 64) / d ** 0.5, torch.randn(64, d) / 8, k=8), "perfect": perfect_sae(d)}


def test_stored_clean_runs_give_the_same_scores_bit_for_bit(pythia, tmp_path):
    """The first call with a CleanRuns computes and stores the clean and zero-ablated runs; a later
    call (here: another SAE set, a fresh CleanRuns, as in another process) reads them back and runs
    only its SAEs' spliced passes; every score and every per-context sum is that of the plain path."""
    from vsae.store import Store

    saes = _saes_for(pythia.d_model)
    ctx = torch.randint(10, 2000, (5, 12))
    plain_recs: list = []
    plain = core.downstream_metrics(saes, pythia, ctx, batch_size=2, per_context=plain_recs)
    store, key = Store(tmp_path), {"lm": pythia.describe()}
    first_lm = _CountingLM(pythia)
    first = core.downstream_metrics(saes, first_lm, ctx, batch_size=2, clean_runs=core.CleanRuns(store, key))
    assert (first_lm.n_resid, first_lm.n_after) == (3, 3 * 4)  # 3 batches: clean, zero, 2 SAE runs
    assert len(list((tmp_path / "clean_runs").glob("*/COMPLETE"))) == 1
    later_lm, later_recs = _CountingLM(pythia), []
    later = core.downstream_metrics(saes, later_lm, ctx, batch_size=2, per_context=later_recs,
                                    clean_runs=core.CleanRuns(store, key))
    assert (later_lm.n_resid, later_lm.n_after) == (0, 3 * 2)  # only the SAEs' runs
    for out in (first, later):
        for name in saes:
            for k, v in plain[name].items():
                assert v == out[name][k], (name, k)  # the same numbers, not merely close
    assert pd.DataFrame(later_recs).equals(pd.DataFrame(plain_recs))
    # other contexts, another batching or another thread count are another key: computed afresh
    other = _CountingLM(pythia)
    core.downstream_metrics(saes, other, ctx, batch_size=3, clean_runs=core.CleanRuns(store, key))
    assert other.n_resid == 2 and len(list((tmp_path / "clean_runs").glob("*/COMPLETE"))) == 2


def test_stored_clean_runs_resume_after_a_kill_and_refuse_a_damaged_file(pythia, tmp_path):
    from vsae.store import Store

    saes = _saes_for(pythia.d_model)
    ctx = torch.randint(10, 2000, (6, 10))
    store, key = Store(tmp_path), {"lm": pythia.describe()}
    plain = core.downstream_metrics(saes, pythia, ctx, batch_size=2)

    class Killed(Exception):
        pass

    class DiesInBatch3(TinySAE):
        calls = 0

        def encode(self, x):
            DiesInBatch3.calls += 1
            if DiesInBatch3.calls == 3:
                raise Killed
            return super().encode(x)

    dying = DiesInBatch3(saes["a"].W_enc, saes["a"].W_dec, k=8)
    with pytest.raises(Killed):
        core.downstream_metrics({"d": dying}, pythia, ctx, batch_size=2, clean_runs=core.CleanRuns(store, key))
    assert not list((tmp_path / "clean_runs").glob("*/COMPLETE"))  # not an artifact yet
    staged = sorted(p.name for p in (tmp_path / "clean_runs").glob(".*.staging/batch_*"))
    assert staged == ["batch_00000.safetensors", "batch_00001.safetensors", "batch_00002.safetensors"]
    resumed_lm = _CountingLM(pythia)
    out = core.downstream_metrics(saes, resumed_lm, ctx, batch_size=2, clean_runs=core.CleanRuns(store, key))
    assert resumed_lm.n_resid == 0  # all three batches were staged before the kill (the SAE died after)
    assert all(out[n][k] == plain[n][k] for n in saes for k in plain[n])
    (done,) = (tmp_path / "clean_runs").glob("*/COMPLETE")
    victim = done.parent / "batch_00001.safetensors"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="delete .* and rerun"):
        core.downstream_metrics(saes, pythia, ctx, batch_size=2, clean_runs=core.CleanRuns(store, key))


def test_clean_runs_too_large_to_store_are_recomputed(pythia, tmp_path, monkeypatch):
    from vsae.store import Store

    monkeypatch.setenv("VSAE_CLEAN_RUNS_MAX_GB", "0")
    ctx = torch.randint(10, 2000, (2, 8))
    core.downstream_metrics(_saes_for(pythia.d_model), pythia, ctx, clean_runs=core.CleanRuns(Store(tmp_path), {}))
    assert not (tmp_path / "clean_runs").exists()
