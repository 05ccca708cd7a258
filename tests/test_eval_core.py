import math

import numpy as np
import pytest
import torch

from _eval_fixtures import FakeLM, FakeTokenizer, TinySAE, cache_from_lm, perfect_sae, zero_sae
from vsae.evals import core
from vsae.evals.core import CoreConfig, evaluate_core


X = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0], [3.0, 2.0]])  # mean (2, 1); Var per dim 1 and 1


def test_explained_variance_known_vectors():
    assert core.explained_variance(X, X) == pytest.approx(1.0)
    assert core.explained_variance(X, X.mean(0).expand_as(X)) == pytest.approx(0.0)
    err = X + torch.tensor([0.5, 0.0])  # residual 0.25 per token, total variance 2
    assert core.explained_variance(X, err) == pytest.approx(1 - 0.25 / 2)
    assert core.explained_variance_legacy(X, err) == pytest.approx(1 - 0.25 / 2)
    # SAE Bench's coded "corrected" formula: total = E||x||^2 - (mean_d E[x_d^2])^2 = 7 - 3.5^2 = -5.25
    assert core.explained_variance_saebench(X, err) == pytest.approx(1 + 0.25 / 5.25)


def test_explained_variance_differs_from_legacy():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])  # token distances to mean: 5 each
    x_hat = x.clone()
    x_hat[0] += torch.tensor([1.0, 0.0])  # one token off by 1
    assert core.explained_variance(x, x_hat) == pytest.approx(1 - (1 / 4) / 5)
    assert core.explained_variance_legacy(x, x_hat) == pytest.approx(1 - (1 / 5) / 4)


def test_cosine_similarity_known_vectors():
    c = core.cosine_similarity(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]),
                               torch.tensor([[1.0, 1.0], [0.0, -1.0], [0.0, 0.0]]))
    assert c.tolist() == pytest.approx([1 / math.sqrt(2), -1.0, 0.0])


def test_downstream_scores_formula():
    s = core.downstream_scores(ce_clean=2.0, ce_sae=3.0, ce_zero=6.0, kl_sae=0.5, kl_zero=2.0)
    assert s["ce_loss_score"] == pytest.approx(0.75)
    assert s["kl_div_score"] == pytest.approx(0.75)


def test_sparsity_and_reconstruction_perfect_sae_and_special_tokens():
    x = torch.tensor([[1.0, 0.0, -2.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0], [-1.0, 1.0, 0.0]])
    tokens = np.array([7, 8, 0, 9])  # token 0 is special: row 2 is excluded
    m, dens = core.sparsity_and_reconstruction({"p": perfect_sae(3)}, x, tokens=tokens, special_ids=[0])
    r = m["p"]
    assert r["n_tokens"] == 3
    assert r["explained_variance"] == pytest.approx(1.0)
    assert r["cossim"] == pytest.approx(1.0)
    assert r["l2_ratio"] == pytest.approx(1.0)
    assert r["mse"] == pytest.approx(0.0)
    assert r["l0"] == pytest.approx((2 + 1 + 2) / 3)
    # latents: relu(x0), relu(x1), relu(x2), relu(-x0), relu(-x1), relu(-x2)
    assert dens["p"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 0, 1 / 3])
    assert r["frac_alive"] == pytest.approx(5 / 6)
    assert r["relative_reconstruction_bias"] == pytest.approx(1.0)


def test_zero_reconstruction_metrics():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    m, _ = core.sparsity_and_reconstruction({"z": zero_sae(4)}, x)
    assert m["z"]["l2_ratio"] == pytest.approx(0.0)
    assert m["z"]["cossim"] == pytest.approx(0.0)
    assert m["z"]["sse_per_token"] == pytest.approx(float((x.double() ** 2).sum(-1).mean()), rel=1e-5)


def _lm_and_contexts(with_bos=False):
    tok = FakeTokenizer([f" w{i}" for i in range(20)])
    lm = FakeLM(tok, d_model=6, seed=3)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(3, len(tok), (6, 10), generator=g)
    if with_bos:
        ctx[:, 0] = 0
    return lm, ctx


@pytest.mark.parametrize("with_bos", [False, True])
def test_ce_and_kl_scores_perfect_and_zero(with_bos):
    lm, ctx = _lm_and_contexts(with_bos)
    out = core.downstream_metrics({"perfect": perfect_sae(6), "zero": zero_sae(6)}, lm, ctx, batch_size=4)
    assert out["perfect"]["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert out["perfect"]["kl_div_score"] == pytest.approx(1.0, abs=1e-4)
    assert out["perfect"]["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-5)
    if not with_bos:  # zero reconstruction == zero ablation everywhere
        assert out["zero"]["ce_loss_score"] == pytest.approx(0.0, abs=1e-6)
        assert out["zero"]["kl_div_score"] == pytest.approx(0.0, abs=1e-6)
    else:  # the BOS residual is kept in the SAE run: close to, not exactly, zero ablation
        assert abs(out["zero"]["ce_loss_score"]) < 0.5
    assert out["zero"]["ce_loss_with_ablation"] == pytest.approx(out["perfect"]["ce_loss_with_ablation"])


def test_special_tokens_excluded_from_ce_metric():
    lm, ctx = _lm_and_contexts(with_bos=True)
    n_valid = int((ctx[:, :-1] != 0).sum())
    out = core.downstream_metrics({"p": perfect_sae(6)}, lm, ctx)
    assert out["p"]["n_ce_tokens"] == n_valid


def test_evaluate_core_from_cache_one_row_per_sae():
    lm, ctx = _lm_and_contexts()
    cache = cache_from_lm(lm, ctx)
    saes = {"perfect": perfect_sae(6), "zero": zero_sae(6),
            "topk": TinySAE(torch.randn(6, 12), torch.randn(12, 6), k=2)}
    res = evaluate_core(saes, cache, lm, cfg=CoreConfig(n_ce_contexts=4, batch_tokens=16))
    df = res.metrics.set_index("sae")
    assert list(df.index) == ["perfect", "zero", "topk"]
    assert df.loc["topk", "l0"] <= 2
    assert df.loc["perfect", "ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert df.loc["perfect", "n_ce_contexts"] == 4
    assert set(res.density["sae"]) == set(saes)
    assert len(res.density) == 12 + 8 + 12
    assert np.isfinite(df["average_max_decoder_cosine_sim"]).all()


def test_contexts_from_cache_rebuilds_order():
    lm, ctx = _lm_and_contexts()
    cache = cache_from_lm(lm, ctx)
    # shuffle positions inside each context: the rebuild must sort them back
    perm = np.r_[[np.random.default_rng(i).permutation(10) + 10 * i for i in range(6)]].ravel()
    cache.tokens, cache.positions = cache.tokens[perm], cache.positions[perm]
    back = core.contexts_from_cache(cache, 3)
    assert torch.equal(back, ctx[:3])


def test_max_cosine_to_others():
    W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert core.max_cosine_to_others(W, chunk=2).tolist() == pytest.approx([1.0, 1.0, 0.0])


class _DenseOnly(torch.nn.Module):
    """An SAE seen only through ``encode`` / ``decode`` (as a third-party SAE would be)."""

    def __init__(self, sae):
        super().__init__()
        self.sae, self.d_sae, self.W_dec = sae, sae.d_sae, sae.W_dec

    def encode(self, x):
        return self.sae.encode(x)

    def decode(self, f):
        return self.sae.decode(f)


@pytest.mark.parametrize("arch", ["topk", "vsae"])
def test_sparse_and_dense_sparsity_pass_agree(arch):
    """The sparse path (encode_topk / decode_topk, no dense codes) gives the dense path's counts
    exactly (L0, densities, first-firing tokens) and its real-valued metrics to float rounding."""
    from vsae.models import TopKSAE, TopKSAEConfig, VSAE, VSAEConfig

    torch.manual_seed(0)
    cfg = (TopKSAEConfig if arch == "topk" else VSAEConfig)(d_in=16, d_sae=256, k=4, seed=1)
    sae = (TopKSAE if arch == "topk" else VSAE)(cfg).eval()
    x = torch.randn(90, 16) * 3  # 360 picks of 256 latents: some never fire
    sparse_x, dense_x = {}, {}
    ms, ds = core.sparsity_and_reconstruction({"s": sae}, x, batch_tokens=16, extras=sparse_x, n_boot=50)
    md, dd = core.sparsity_and_reconstruction({"s": _DenseOnly(sae)}, x, batch_tokens=16, extras=dense_x, n_boot=50)
    np.testing.assert_array_equal(ds["s"], dd["s"])
    np.testing.assert_array_equal(sparse_x["first_fire"]["s"], dense_x["first_fire"]["s"])
    assert ms["s"]["l0"] == md["s"]["l0"] and ms["s"]["n_alive"] == md["s"]["n_alive"]
    assert 0 < ms["s"]["n_alive"] < 256  # some latents never fire: first_fire = -1 is exercised
    for key, v in md["s"].items():
        assert ms["s"][key] == pytest.approx(v, rel=1e-6, abs=1e-9), key
