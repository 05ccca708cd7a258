"""Unit tests of vsae.models: hand-computed forward passes and losses, a dense autograd reference
for every variant (values and gradients), sparse kernels, TopK selection, geometric median,
decoder constraint, save / load, folding of the activation norm factor, decoder normalisation."""

from __future__ import annotations

import math

import pytest
import torch

import vsae.models as M
from vsae.models import kernels
from vsae.models import (
    SAEOutput,
    SparsePattern,
    TopKSAE,
    TopKSAEConfig,
    VSAE,
    VSAEConfig,
    decoder_normalization_effect,
    gather_dot,
    gather_sum,
    geometric_median,
    load_sae,
    scatter_rows,
    topk_select,
)


pytestmark = [pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad"),
              pytest.mark.usefixtures("one_thread")]



def _set(p: torch.nn.Parameter, value) -> None:
    with torch.no_grad():
        p.copy_(torch.as_tensor(value, dtype=p.dtype))


S2 = 1 / math.sqrt(2)


def _tiny_topk(**kw) -> TopKSAE:
    """d_in 2, d_sae 3 with hand-picked weights."""
    sae = TopKSAE(TopKSAEConfig(d_in=2, d_sae=3, k=2, **kw))
    _set(sae.W_enc, [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    _set(sae.b_enc, [0.0, 0.0, -0.5])
    _set(sae.W_dec, [[1.0, 0.0], [0.0, 1.0], [S2, S2]])
    _set(sae.b_dec, [0.5, 0.0])
    return sae


# ---------------------------------------------------------------------------------------------
# hand-computed forward passes and losses
# ---------------------------------------------------------------------------------------------


def test_topk_forward_by_hand():
    sae = _tiny_topk()
    x = torch.tensor([[1.5, 2.0]])
    out = sae(x)
    assert isinstance(out, SAEOutput)
    # x - b_dec = (1, 2); pre = (1, 2, 3 - 0.5) -> top-2 = latents 2 (2.5) and 1 (2.0)
    got = dict(zip(out.indices[0].tolist(), out.latents[0].tolist()))
    assert got == pytest.approx({2: 2.5, 1: 2.0})
    x_hat = [0.5 + 2.5 * S2, 2.0 + 2.5 * S2]
    assert out.x_hat[0].tolist() == pytest.approx(x_hat, abs=1e-6)
    mse = (1.5 - x_hat[0]) ** 2 + (2.0 - x_hat[1]) ** 2
    assert float(out.mse) == pytest.approx(mse, rel=1e-6)
    assert float(out.loss) == pytest.approx(mse, rel=1e-6)  # nothing dead -> AuxK 0
    assert float(out.auxk) == 0.0 and float(out.kl) == 0.0 and float(out.l0) == 2.0
    # pre_acts / encode / decode agree
    assert sae.pre_acts(x)[0].tolist() == pytest.approx([1.0, 2.0, 2.5])
    f = sae.encode(x)
    assert f[0].tolist() == pytest.approx([0.0, 2.0, 2.5])
    assert sae.decode(f)[0].tolist() == pytest.approx(x_hat, abs=1e-6)


def test_topk_relu_zero_latents_do_not_count():
    sae = _tiny_topk()
    x = torch.tensor([[0.5, -3.0]])  # x - b_dec = (0, -3): pre = (0, -3, -3.5): nothing positive
    out = sae(x)
    assert float(out.l0) == 0.0
    assert out.x_hat[0].tolist() == pytest.approx([0.5, 0.0])


def test_topk_l2_preact_by_hand():
    sae = _tiny_topk(l2_preact_coeff=0.2)
    x = torch.tensor([[1.5, 2.0], [0.5, 1.0]])
    out = sae(x, kl_scale=0.5)
    # relu pre-acts: token 1 (1, 2, 2.5); token 2 (0, 1, 0.5)
    l2 = 0.5 * ((1 + 4 + 6.25) + (0 + 1 + 0.25)) / 2
    assert float(out.l2_preact) == pytest.approx(l2)
    assert float(out.loss) == pytest.approx(float(out.mse) + 0.2 * 0.5 * l2, rel=1e-6)


def test_topk_auxk_by_hand():
    sae = _tiny_topk(auxk_alpha=0.5, dead_tokens_threshold=5, k_aux=1)
    sae.cfg.k = 1
    x = torch.tensor([[1.5, 2.0], [2.5, 0.5]])
    tsf = torch.zeros(3, dtype=torch.long)
    out = sae(x, tokens_since_fired=tsf)
    assert float(out.auxk) == 0.0 and tsf.tolist() != [0, 0, 0]
    # x - b_dec: (1, 2) and (2, 0.5); pre: (1, 2, 2.5) and (2, 0.5, 2.0) -> top-1: latent 2 and latent 0 or 2
    # make latent 1 dead: it did not fire in this batch and has been silent for long
    tsf = torch.tensor([0, 100, 0])
    out = sae(x, tokens_since_fired=tsf)
    fired = set(out.indices.flatten().tolist())
    assert 1 not in fired and tsf[1] == 102
    # residuals e = x - x_hat; AuxK: latent 1 (value relu(pre_1)) reconstructs e with W_dec[1] = (0, 1)
    e = (x - out.x_hat).detach()
    a1 = torch.tensor([2.0, 0.5])
    num = ((e - a1[:, None] * torch.tensor([0.0, 1.0])) ** 2).sum(1).mean()
    den = ((e - e.mean(0)) ** 2).sum(1).mean()
    assert float(out.auxk) == pytest.approx(float(num / den), rel=1e-5)
    assert float(out.loss) == pytest.approx(float(out.mse) + 0.5 * float(num / den), rel=1e-5)
    assert float(out.frac_dead) == pytest.approx(1 / 3)


def _tiny_vsae(**kw) -> VSAE:
    sae = VSAE(VSAEConfig(d_in=2, d_sae=3, k=1, **kw))
    _set(sae.W_enc, [[1.0, 0.0, 2.0], [0.0, 1.0, 20.0]])
    _set(sae.b_enc, [0.0, -1.0, 0.0])
    _set(sae.W_dec, [[2.0, 0.0], [0.0, 1.0], [0.1, 0.1]])
    _set(sae.b_dec, [0.0, 1.0])
    return sae


@pytest.mark.parametrize("scope", ["all", "topk"])
def test_vsae_fixed_by_hand(scope):
    sae = _tiny_vsae(kl_scope=scope, kl_coeff=0.5)
    x = torch.tensor([[1.0, 0.25], [3.0, -1.0]])
    out = sae(x, kl_scale=0.5)
    # no b_dec subtraction: pre = (x0, x1 - 1, 2 x0 + 20 x1)
    # token 1: mu = (1, 0, 7)   -> top-1 latent 2 (7); token 2: mu = (3, 0, 0) (pre_2 = -14) -> latent 0
    assert out.indices[:, 0].tolist() == [2, 0]
    assert out.latents[:, 0].tolist() == pytest.approx([7.0, 3.0])
    x_hat = torch.tensor([[0.7, 1.7], [6.0, 1.0]])
    assert torch.allclose(out.x_hat, x_hat, atol=1e-6)
    mse = float(((x - x_hat) ** 2).sum(1).mean())
    if scope == "all":
        kl = 0.5 * ((1 + 0 + 49) + (9 + 0 + 0)) / 2
    else:
        kl = 0.5 * (49 + 9) / 2
    assert float(out.kl) == pytest.approx(kl)
    assert float(out.loss) == pytest.approx(mse + 0.5 * 0.5 * kl, rel=1e-6)


def test_vsae_kl_clamp_by_hand():
    sae = _tiny_vsae()
    x = torch.tensor([[1.0, 1.0]])  # mu = (1, 0, 22): the KL clamps 22 to 10
    out = sae(x)
    assert float(out.kl) == pytest.approx(0.5 * (1 + 0 + 100))
    assert out.latents[0].tolist() == pytest.approx([22.0])  # the code itself is not clamped


def _train_forward_with_noise(sae, x):
    """A training-mode forward and the standard-normal draws it sampled (replayed from the SAE's
    noise generator)."""
    sae.train()
    state = sae.noise_generator.get_state()
    out = sae(x)
    g = torch.Generator()
    g.set_state(state)
    return out, torch.randn(x.shape[0], sae.cfg.d_sae, generator=g)


def test_vsae_unit_samples_only_in_training():
    sae = _tiny_vsae(var_mode="unit", kl_scope="all")
    x = torch.tensor([[1.0, 0.25], [3.0, -1.0]])
    sae.eval()
    ev = sae(x)
    assert ev.latents[:, 0].tolist() == pytest.approx([7.0, 3.0])  # eval: z = mu
    out, eps = _train_forward_with_noise(sae, x)
    z = torch.tensor([[1.0, 0.0, 7.0], [3.0, 0.0, 0.0]]) + eps
    top = z.abs().argmax(1)
    assert out.indices[:, 0].tolist() == top.tolist()
    assert out.latents[:, 0].tolist() == pytest.approx(z.gather(1, top[:, None])[:, 0].tolist())  # sign kept
    # analytic KL(N(mu, 1) || N(0, 1)) = 0.5 sum mu^2, independent of the noise
    assert float(out.kl) == pytest.approx(0.5 * (50 + 9) / 2)


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_vsae_unit_noise_scale_by_hand(sigma):
    """``noise_scale`` is the sampling sigma: z = mu + sigma * eps, TopK on |z|; the KL stays 0.5 sum mu^2."""
    sae = _tiny_vsae(var_mode="unit", kl_scope="all", noise_scale=sigma)
    x = torch.tensor([[1.0, 0.25], [3.0, -1.0]])
    sae.train()
    state = sae.noise_generator.get_state()
    out = sae(x)
    g = torch.Generator()
    g.set_state(state)
    z = torch.tensor([[1.0, 0.0, 7.0], [3.0, 0.0, 0.0]]) + sigma * torch.randn(2, 3, generator=g)
    top = z.abs().argmax(1)
    assert out.indices[:, 0].tolist() == top.tolist()
    assert out.latents[:, 0].tolist() == pytest.approx(z.gather(1, top[:, None])[:, 0].tolist())
    assert float(out.kl) == pytest.approx(0.5 * (50 + 9) / 2)


def test_noise_scale_is_validated_and_kept_out_of_old_store_keys():
    from vsae.models.config import key_dict

    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="noise_scale"):
            VSAEConfig(d_in=2, d_sae=3, k=1, var_mode="unit", noise_scale=bad)
    assert "noise_scale" not in key_dict(VSAEConfig(d_in=2, d_sae=3, k=1))  # default: the key of old SAEs
    assert key_dict(VSAEConfig(d_in=2, d_sae=3, k=1, noise_scale=0.1))["noise_scale"] == 0.1


@pytest.mark.parametrize("scope", ["all", "topk"])
def test_vsae_learned_kl_by_hand(scope):
    sae = _tiny_vsae(var_mode="learned", kl_scope=scope)
    _set(sae.W_var, torch.zeros(2, 3))
    _set(sae.b_var, [-2.0, 0.5, 5.0])  # 5 is clamped to 2
    sae.eval()
    x = torch.tensor([[1.0, 0.25], [3.0, -1.0]])
    out = sae(x)

    def kv(lv):
        return 0.5 * (math.exp(lv) - 1 - lv)

    if scope == "all":
        kl = 0.5 * (50 + 9) / 2 + (kv(-2.0) + kv(0.5) + kv(2.0))
    else:  # token 1 keeps latent 2, token 2 latent 0
        kl = 0.5 * (49 + 9) / 2 + (kv(2.0) + kv(-2.0)) / 2
    assert float(out.kl) == pytest.approx(kl, rel=1e-6)
    # training mode: z = mu + exp(lv / 2) * eps
    out, eps = _train_forward_with_noise(sae, x)
    sd = torch.exp(0.5 * torch.tensor([-2.0, 0.5, 2.0]))
    z = torch.tensor([[1.0, 0.0, 7.0], [3.0, 0.0, 0.0]]) + sd * eps
    top = z.abs().argmax(1)
    assert out.indices[:, 0].tolist() == top.tolist()
    assert out.latents[:, 0].tolist() == pytest.approx(z.gather(1, top[:, None])[:, 0].tolist(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# dense autograd reference: values and gradients of every variant
# ---------------------------------------------------------------------------------------------


def _ref_topk(m: TopKSAE, x, kl_scale, dead):
    cfg = m.cfg
    a = ((x - m.b_dec) @ m.W_enc + m.b_enc).relu()
    v, idx = a.topk(cfg.k)
    x_hat = torch.zeros_like(a).scatter(1, idx, v) @ m.W_dec + m.b_dec
    e = x - x_hat
    mse = e.pow(2).sum(-1).mean()
    aux = torch.zeros(())
    if dead is not None and bool(dead.any()) and cfg.auxk_alpha > 0:
        av, ai = torch.where(dead[None], a, -torch.inf).topk(min(cfg.k_aux, int(dead.sum())))
        ed = e.detach()
        rec = torch.zeros_like(a).scatter(1, ai, av) @ m.W_dec
        aux = (ed - rec).pow(2).sum(-1).mean() / (ed - ed.mean(0)).pow(2).sum(-1).mean()
    l2 = 0.5 * a.pow(2).sum(-1).mean()
    return mse + cfg.auxk_alpha * aux + cfg.l2_preact_coeff * kl_scale * l2, mse, aux, l2


def _ref_vsae(m: VSAE, x, kl_scale, eps):
    cfg = m.cfg
    mu = (x @ m.W_enc + m.b_enc).relu()
    lv = (x @ m.W_var + m.b_var).clamp(*cfg.log_var_clamp) if cfg.var_mode == "learned" else None
    z = mu
    if eps is not None:
        z = mu + (eps if lv is None else torch.exp(0.5 * lv) * eps)
    _, idx = z.abs().topk(cfg.k)
    x_hat = torch.zeros_like(z).scatter(1, idx, z.gather(1, idx)) @ m.W_dec + m.b_dec
    mse = (x - x_hat).pow(2).sum(-1).mean()
    terms = 0.5 * mu.clamp(-cfg.kl_clamp, cfg.kl_clamp).pow(2)
    if lv is not None:
        terms = terms + 0.5 * (lv.exp() - 1 - lv)
    kl = (terms if cfg.kl_scope == "all" else terms.gather(1, idx)).sum(-1).mean()
    return mse + cfg.kl_coeff * kl_scale * kl, mse, kl


def _grads(m, loss):
    return torch.autograd.grad(loss, list(m.parameters()))


TOPK_VARIANTS = [dict(), dict(l2_preact_coeff=0.3), dict(auxk_alpha=0.5), dict(auxk_alpha=0.5, l2_preact_coeff=0.3)]


@pytest.mark.parametrize("kw", TOPK_VARIANTS)
@pytest.mark.parametrize("dead_frac", [0.0, 0.5])
def test_topk_matches_dense_reference(kw, dead_frac):
    torch.manual_seed(0)
    d, n_lat, k, n = 16, 64, 4, 32
    sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=n_lat, k=k, dead_tokens_threshold=50, **kw))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(n, d)
    tsf = torch.zeros(n_lat, dtype=torch.long)
    tsf[: int(dead_frac * n_lat)] = 100
    out = sae(x, kl_scale=0.7, tokens_since_fired=tsf)
    assert (tsf >= 50).float().mean() == pytest.approx(float(out.frac_dead))
    ref = _ref_topk(sae, x, 0.7, tsf >= 50)
    assert float(out.loss) == pytest.approx(float(ref[0]), rel=1e-5)
    assert float(out.mse) == pytest.approx(float(ref[1]), rel=1e-5)
    assert float(out.auxk) == pytest.approx(float(ref[2]), rel=1e-5, abs=1e-7)
    if sae.cfg.auxk_alpha > 0 and dead_frac > 0:
        assert float(out.auxk) > 0
    else:
        assert float(out.auxk) == 0.0
    if kw.get("l2_preact_coeff"):
        assert float(out.l2_preact) == pytest.approx(float(ref[3]), rel=1e-5)
    for g1, g2 in zip(_grads(sae, out.loss), _grads(sae, ref[0])):
        assert torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["fixed", "unit", "learned"])
@pytest.mark.parametrize("scope", ["all", "topk"])
def test_vsae_matches_dense_reference(mode, scope):
    torch.manual_seed(1)
    d, n_lat, k, n = 16, 64, 4, 32
    sae = VSAE(VSAEConfig(d_in=d, d_sae=n_lat, k=k, var_mode=mode, kl_scope=scope, kl_coeff=0.8))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_()
        sae.W_enc.mul_(30)  # some mu above the KL clamp
    x = torch.randn(n, d)
    sae.train()
    state = sae.noise_generator.get_state()
    out = sae(x, kl_scale=0.5)
    eps = None
    if mode != "fixed":
        g = torch.Generator()
        g.set_state(state)
        eps = torch.randn(n, n_lat, generator=g)
    ref = _ref_vsae(sae, x, 0.5, eps)
    assert float(out.loss) == pytest.approx(float(ref[0]), rel=1e-5)
    assert float(out.mse) == pytest.approx(float(ref[1]), rel=1e-5)
    assert float(out.kl) == pytest.approx(float(ref[2]), rel=1e-5)
    for g1, g2 in zip(_grads(sae, out.loss), _grads(sae, ref[0])):
        assert torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)


def test_vsae_auxk_matches_reference():
    torch.manual_seed(2)
    d, n_lat, k, n = 16, 64, 4, 32
    sae = VSAE(VSAEConfig(d_in=d, d_sae=n_lat, k=k, auxk_alpha=0.25, dead_tokens_threshold=10, kl_coeff=0.0))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(n, d)
    tsf = torch.zeros(n_lat, dtype=torch.long)
    tsf[::2] = 100
    out = sae(x, tokens_since_fired=tsf)
    dead = tsf >= 10
    mu = (x @ sae.W_enc + sae.b_enc).relu()
    e = (x - out.x_hat).detach()
    av, ai = torch.where(dead[None], mu, -torch.inf).topk(d // 2)
    rec = torch.zeros_like(mu).scatter(1, ai, av) @ sae.W_dec
    ref = (e - rec).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(-1).mean()
    assert float(out.auxk) == pytest.approx(float(ref), rel=1e-5) and float(out.auxk) > 0


def test_leading_dims_and_encode_decode_consistency():
    torch.manual_seed(3)
    for sae in (TopKSAE(TopKSAEConfig(8, 32, 3)), VSAE(VSAEConfig(8, 32, 3))):
        sae.eval()
        x = torch.randn(2, 5, 8)
        out = sae(x)
        assert out.x_hat.shape == (2, 5, 8) and out.latents.shape == (2, 5, 3) and out.indices.shape == (2, 5, 3)
        f = sae.encode(x)
        assert f.shape == (2, 5, 32) and int((f != 0).sum(-1).max()) <= 3
        assert torch.allclose(sae.decode(f), out.x_hat, atol=1e-5)
        v, i = sae.encode_topk(x)
        assert torch.allclose(sae.decode_topk(v, i), out.x_hat, atol=1e-5)


def test_float64_sae_computes_in_float64():
    """``.double()`` makes evaluation float64 end to end (the SAE Bench cross-check runs so); float32
    inputs of a float32 SAE are untouched (``working_precision`` returns them as they are)."""
    torch.manual_seed(5)
    x = torch.randn(6, 16)
    assert M.base.working_precision(x) is x
    assert M.base.working_precision(x.to(torch.bfloat16)).dtype == torch.float32
    for sae in (TopKSAE(TopKSAEConfig(16, 64, 4)), VSAE(VSAEConfig(16, 64, 4, var_mode="learned"))):
        sae.eval()
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.1 * torch.randn(p.shape))
            f32 = sae.encode(x)
            f64 = sae.double().encode(x.double())
            v, i = sae.encode_topk(x.double())
            assert f64.dtype == v.dtype == sae.decode(f64).dtype == sae.decode_topk(v, i).dtype == torch.float64
            assert torch.equal(f64 != 0, f32 != 0)  # the same latents selected
            assert torch.allclose(f64, f32.double(), atol=1e-5)
            assert torch.allclose(sae.decode_topk(v, i), sae.decode(f64), atol=1e-12)


def test_bf16_compute_close_to_fp32():
    torch.manual_seed(4)
    x = torch.randn(64, 32)
    for sae in (TopKSAE(TopKSAEConfig(32, 128, 8)), VSAE(VSAEConfig(32, 128, 8))):
        ref = sae(x)
        sae.compute_dtype = torch.bfloat16
        out = sae(x)
        assert float(out.loss) == pytest.approx(float(ref.loss), rel=0.03)
        out.loss.backward()  # dense bf16 backward path runs (vSAE KL over all latents)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in sae.parameters())


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aten", [True, False])
@pytest.mark.parametrize("csr", [True, False])
@pytest.mark.parametrize("dense_scatter", [True, False])
def test_sparse_kernels_match_dense(monkeypatch, aten, csr, dense_scatter):
    if aten and not kernels.aten_kernels_available():
        pytest.skip("ATen kernels unavailable")
    if csr and not kernels.csr_available():
        pytest.skip("CSR product unavailable")
    monkeypatch.setattr(kernels.SWITCHES, "aten", aten)
    monkeypatch.setattr(kernels.SWITCHES, "csr", csr)
    monkeypatch.setattr(kernels.SWITCHES, "dense_scatter", dense_scatter)
    torch.manual_seed(5)
    n, k, rows, d = 40, 6, 50, 7
    idx = torch.randint(0, rows, (n, k))
    idx[:, 1] = idx[:, 0]  # duplicates in a row add up
    w = torch.randn(n, k)
    y = torch.randn(n, d)
    Wm = torch.randn(rows, d)
    dense = torch.zeros(n, rows).index_put_((torch.arange(n)[:, None].expand(n, k), idx), w, accumulate=True)
    assert torch.allclose(gather_sum(Wm, idx, w), dense @ Wm, atol=1e-5)
    assert torch.allclose(gather_dot(Wm, idx, y), (y @ Wm.t()).gather(1, idx), atol=1e-5)
    assert torch.allclose(scatter_rows(idx, w, y, rows), dense.t() @ y, atol=1e-5)
    pat = SparsePattern(idx, rows)
    assert torch.allclose(pat.scatter_rows(w, y), dense.t() @ y, atol=1e-5)
    assert torch.equal(pat.scatter_rows(w, y), pat.scatter_rows(w, y))  # deterministic


def test_topk_select_matches_torch_topk():
    torch.manual_seed(6)
    for width, k in [(8192, 256), (4096, 64), (1024, 16), (1000, 10), (64, 4)]:
        a = torch.randn(37, width)
        a[:, ::7] = 0.0  # ties
        v, i = topk_select(a, k)
        ref = a.topk(k, dim=-1).values
        assert torch.equal(v.sort(-1, descending=True).values, ref)
        assert torch.equal(a.gather(1, i), v)
        assert min(row.unique().numel() for row in i) == k


def test_geometric_median_matches_brute_force():
    torch.manual_seed(7)
    pts = torch.randn(15, 2) * torch.tensor([3.0, 1.0]) + torch.tensor([1.0, -2.0])
    pts[0] = torch.tensor([30.0, 30.0])  # an outlier moves the mean, not the median
    gm = geometric_median(pts)

    def cost(c):
        return (pts.double() - c).norm(dim=-1).sum(-1)

    # brute force: fine grid around the best point of a coarse grid
    best = None
    for span, centre in [(8.0, torch.zeros(2, dtype=torch.float64)), (0.2, None), (0.005, None)]:
        c0 = centre if centre is not None else best
        g = torch.linspace(-span, span, 201, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2) + c0
        costs = (pts.double()[None] - grid[:, None]).norm(dim=-1).sum(-1)
        best = grid[costs.argmin()]
    assert torch.allclose(gm.double(), best, atol=1e-3)
    assert float(cost(gm.double())) <= float(cost(best)) + 1e-6
    assert float(cost(gm.double())) < float(cost(pts.double().mean(0)))


def test_topk_init_and_b_dec_geometric_median():
    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=4, seed=3))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    assert float(sae.b_enc.abs().max()) == 0.0
    x = torch.randn(50, 16) + 3.0
    sae.init_b_dec(x)
    assert torch.allclose(sae.b_dec, geometric_median(x))
    # same seed, same init; another seed, another
    assert torch.equal(TopKSAE(TopKSAEConfig(16, 64, 4, seed=3)).W_dec, TopKSAE(TopKSAEConfig(16, 64, 4, seed=3)).W_dec)
    assert not torch.equal(TopKSAE(TopKSAEConfig(16, 64, 4, seed=4)).W_dec, sae.W_dec)


def test_vsae_init():
    sae = VSAE(VSAEConfig(d_in=16, d_sae=64, k=4, var_mode="learned"))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), 0.1), atol=1e-6)
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    assert float(sae.b_enc.abs().max()) == 0.0 and float(sae.b_dec.abs().max()) == 0.0
    assert torch.equal(sae.b_var, torch.full((64,), -2.0))
    bound = math.sqrt(2 / (1 + 0.01**2)) * math.sqrt(3 / 16)
    assert float(sae.W_var.abs().max()) <= bound and sae.W_var.shape == (16, 64)
    assert not hasattr(VSAE(VSAEConfig(16, 64, 4)), "W_var")


def test_gradient_projection_removes_exactly_the_parallel_component():
    torch.manual_seed(8)
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2))
    g = torch.randn(16, 8)
    sae.W_dec.grad = g.clone()
    sae.project_decoder_grad()
    u = sae.W_dec.detach()
    par = (g * u).sum(1, keepdim=True) * u
    assert torch.allclose(sae.W_dec.grad, g - par, atol=1e-6)
    assert float((sae.W_dec.grad * u).sum(1).abs().max()) < 1e-6
    assert torch.allclose(sae.W_dec.grad + par, g, atol=1e-6)  # nothing else changed
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(16, 1) + 0.5)
    sae.normalize_decoder_rows_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# configs, save / load, folding, decoder normalisation
# ---------------------------------------------------------------------------------------------


def test_config_validation_and_defaults():
    c = TopKSAEConfig(d_in=512, d_sae=8192, k=64)
    assert c.k_aux == 256 and c.auxk_alpha == 1 / 32 and c.dead_tokens_threshold == 10_000_000
    v = VSAEConfig(d_in=512, d_sae=8192, k=64)
    assert (v.var_mode, v.kl_scope, v.kl_coeff, v.log_var_init, v.auxk_alpha) == ("fixed", "all", 1.0, -2.0, 0.0)
    for bad in (dict(k=0), dict(k=10_000), dict(var_mode="x"), dict(kl_scope="x"), dict(log_var_clamp=(2, -6))):
        with pytest.raises(ValueError):
            VSAEConfig(**{**dict(d_in=8, d_sae=32, k=2), **bad})
    with pytest.raises(ValueError):
        M.config_from_dict({"architecture": "relu", "d_in": 2})


def _all_variants():
    yield TopKSAE(TopKSAEConfig(8, 32, 3, l2_preact_coeff=0.1))
    for mode in ("fixed", "unit", "learned"):
        yield VSAE(VSAEConfig(8, 32, 3, var_mode=mode, kl_scope="all" if mode != "unit" else "topk"))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(9)
    x = torch.randn(20, 8)
    for i, sae in enumerate(_all_variants()):
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.01 * torch.randn_like(p))
        sae.cfg.meta["note"] = "x"
        sae.save(tmp_path / str(i))
        assert (tmp_path / str(i) / "cfg.json").exists() and (tmp_path / str(i) / "sae.safetensors").exists()
        back = load_sae(tmp_path / str(i))
        assert type(back) is type(sae) and back.cfg == sae.cfg and not back.training
        for (n1, p1), (n2, p2) in zip(sae.named_parameters(), back.named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
        sae.eval()
        assert torch.equal(sae(x).x_hat, back(x).x_hat)


def test_fold_norm_factor_raw_equals_normalised_times_factor(tmp_path):
    torch.manual_seed(10)
    s = 7.5
    x_raw = torch.randn(40, 8) * s
    for i, sae in enumerate(_all_variants()):
        with torch.no_grad():
            sae.b_enc.normal_(0, 0.1)
            sae.b_dec.normal_()
            if hasattr(sae, "b_var"):
                sae.W_var.normal_(0, 0.3)
        sae.eval()
        ref = sae(x_raw / s)
        folded = sae.copy().fold_activation_scale(s)
        folded.save(tmp_path / str(i))
        raw = load_sae(tmp_path / str(i))
        assert raw.cfg.act_scale == s
        out = raw(x_raw)
        assert torch.equal(out.indices, ref.indices)
        assert torch.allclose(out.x_hat, ref.x_hat * s, rtol=1e-4, atol=1e-4)
        assert torch.allclose(out.latents, ref.latents * s, rtol=1e-4, atol=1e-4)
        assert float(out.mse) == pytest.approx(float(ref.mse) * s * s, rel=1e-4)
        # training-only terms are still those of the trained units
        assert float(out.kl) == pytest.approx(float(ref.kl), rel=1e-4)
        assert float(out.l2_preact) == pytest.approx(float(ref.l2_preact), rel=1e-4)
        if isinstance(sae, VSAE) and sae.cfg.var_mode != "fixed":
            sae.train()
            raw.train()
            raw.noise_generator.set_state(sae.noise_generator.get_state())
            a, b = sae(x_raw / s), raw(x_raw)
            assert torch.equal(a.indices, b.indices)
            assert torch.allclose(b.latents, a.latents * s, rtol=1e-4, atol=1e-4)
            assert float(b.kl) == pytest.approx(float(a.kl), rel=1e-4)


def test_normalize_decoder_export_and_code_change(tmp_path):
    torch.manual_seed(11)
    sae = VSAE(VSAEConfig(16, 64, 4))
    x = torch.randn(300, 16)
    # equal decoder norms: ranking unchanged
    eff = decoder_normalization_effect(sae, x)
    assert eff["frac_changed_indices"] == 0.0 and eff["rel_code_change"] < 1e-5
    assert eff["rel_recon_change"] < 1e-5
    # unequal norms (as after unconstrained training): TopK selection changes
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1) * 3 + 0.1)
        sae.b_enc.normal_(0, 0.1)
    norm = sae.normalized_decoder()
    assert norm.cfg.decoder_normalized and not sae.cfg.decoder_normalized
    assert torch.allclose(norm.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    n = sae.W_dec.norm(dim=1)
    assert torch.allclose(norm.pre_acts(x), sae.pre_acts(x) * n, rtol=1e-4, atol=1e-5)
    # each latent's contribution mu_i W_dec[i] is unchanged
    assert torch.allclose((norm.pre_acts(x)[:, :, None] * norm.W_dec)[:5], (sae.pre_acts(x)[:, :, None] * sae.W_dec)[:5], atol=1e-4)
    eff = decoder_normalization_effect(sae, x)
    assert 0.0 < eff["frac_changed_indices"] <= 1.0 and eff["rel_code_change"] > 0
    assert 0.0 < eff["frac_tokens_changed"] <= 1.0
    sae.save(tmp_path / "as_trained")
    sae.save(tmp_path / "normalized", normalize_decoder=True)
    a, b = load_sae(tmp_path / "as_trained"), load_sae(tmp_path / "normalized")
    assert not a.cfg.decoder_normalized and b.cfg.decoder_normalized
    assert torch.allclose(b.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    assert torch.equal(a.W_dec, sae.W_dec)
