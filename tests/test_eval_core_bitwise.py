"""Bit-for-bit checks of the core metrics' faster paths: the accumulator (``vsae.evals.core._Acc``)
computes each quantity once and reuses it, and the CE/KL pass reuses one [B, T, V] buffer; both must
give exactly what the plain per-metric formulas give (the reference accumulator below is the one
from before that reuse, kept verbatim)."""

import numpy as np
import pytest
import torch

from vsae.evals.core import _Acc, cosine_similarity


class _PlainAcc(_Acc):
    def update(self, x, x_hat, f=None, *, values=None, indices=None):
        x = x.double()
        x_hat = x_hat.double()
        n = x.shape[0]
        if n == 0:
            return
        r2 = (x - x_hat).pow(2).sum(-1)
        if f is not None:
            nz = f != 0
            new = (self.first_fire < 0) & nz.any(0)
            if bool(new.any()):
                self.first_fire[new] = self.n + nz[:, new].to(torch.int8).argmax(0)
            l0, l1, fires = float(nz.sum()), float(f.double().sum()), nz.sum(0)
        else:
            m = values != 0
            lat = indices[m]
            rows = torch.arange(n).unsqueeze(1).expand_as(indices)[m]
            fires = torch.bincount(lat, minlength=self.fires.shape[0])
            first = torch.full_like(self.first_fire, n).scatter_reduce_(0, lat, rows, "amin")
            new = (self.first_fire < 0) & (first < n)
            self.first_fire[new] = self.n + first[new]
            l0, l1 = float(m.sum()), float(values.double().sum())
        self.n += n
        self.sse += float(r2.sum())
        self.sum_x += x.sum(0)
        self.sum_x2 += x.pow(2).sum(0)
        self.sum_norm2 += float(x.pow(2).sum())
        t = (x - x.mean(0)).pow(2).sum(-1)
        self.ev_legacy += float(torch.where(t > 0, 1 - r2 / t.clamp_min(1e-30), torch.zeros_like(t)).sum())
        cos = float(cosine_similarity(x, x_hat).sum())
        self.cos += cos
        self.b_n.append(n)
        self.b_sum_x.append(x.sum(0))
        self.b_sum_x2.append(x.pow(2).sum(0))
        self.b_cos.append(cos)
        nin = x.norm(dim=-1)
        nout = x_hat.norm(dim=-1)
        self.l2_in += float(nin.sum())
        self.l2_out += float(nout.sum())
        self.l2_ratio += float((nout / torch.where(nin.abs() < 1e-4, torch.ones_like(nin), nin)).sum())
        self.l0 += l0
        self.l1 += l1
        self.fires += fires
        self.b_mss.append(float(x.pow(2).sum(-1).mean()))
        self.b_mad.append(float(x.pow(2).mean(0).mean()))
        self.b_sse.append(float(r2.mean()))
        dot = (x * x_hat).sum(-1).mean()
        self.b_relbias.append(float(x_hat.pow(2).sum(-1).mean() / dot) if dot != 0 else float("nan"))


def _batches(seed, sparse, d_in=24, d_sae=40, k=5):
    g = torch.Generator().manual_seed(seed)
    for n in (64, 3, 37, 64):
        x = torch.randn(n, d_in, generator=g) * 3 + 0.5
        x[0] = 0.0  # a zero input row: cosine 0, legacy EV skipped, L2 ratio's guard
        x_hat = x + 0.3 * torch.randn(n, d_in, generator=g)
        if n > 2:
            x_hat[1] = 0.0  # a zero reconstruction
        idx = torch.stack([torch.randperm(d_sae, generator=g)[:k] for _ in range(n)])
        vals = torch.randn(n, k, generator=g).relu()  # some exact zeros: not fired
        if sparse:
            yield x, x_hat, dict(values=vals, indices=idx)
        else:
            yield x, x_hat, dict(f=torch.zeros(n, d_sae).scatter_(1, idx, vals))


def _plain(v):
    """Tensors, lists and dicts as plain Python values, NaN as the string "nan" (so that == is exact
    equality, NaN included)."""
    if torch.is_tensor(v):
        return _plain(v.tolist())
    if isinstance(v, list):
        return [_plain(t) for t in v]
    if isinstance(v, dict):
        return {key: _plain(t) for key, t in v.items()}
    return "nan" if isinstance(v, float) and np.isnan(v) else v


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_accumulator_is_bitwise_the_plain_formulas(sparse, seed):
    new, ref = _Acc(24, 40), _PlainAcc(24, 40)
    for x, x_hat, codes in _batches(seed, sparse):
        new.update(x, x_hat, **codes)
        ref.update(x, x_hat, **codes)
    assert _plain(vars(new)) == _plain(vars(ref))  # every running sum and per-batch list, exactly
    (m_new, d_new), (m_ref, d_ref) = new.result(), ref.result()
    assert m_new.keys() == m_ref.keys()
    for key in m_ref:
        assert (m_new[key] == m_ref[key]) or (np.isnan(m_new[key]) and np.isnan(m_ref[key])), key
    assert np.array_equal(d_new, d_ref)
    assert _plain(new.bootstrap(200, seed=3)) == _plain(ref.bootstrap(200, seed=3))
    # and the metrics are real: a noisy reconstruction explains most but not all of the variance
    assert 0.9 < m_new["explained_variance"] < 1.0 and m_new["l0"] < 5


def test_downstream_buffers_are_bitwise_the_plain_formulas():
    """The CE/KL pass writes each run's log-probabilities into one reused buffer and its KL terms
    over them (no fresh [B, T, V] temporaries); the values are the plain ones, exactly."""
    from vsae.evals.downstream import _kl_per_token, _logp

    g = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 7, 50, generator=g) * 4
    run = clean + torch.randn(3, 7, 50, generator=g)
    clean_logp = torch.nn.functional.log_softmax(clean, -1)
    clean_p = clean_logp.exp()
    plain_logp = torch.nn.functional.log_softmax(run, -1)
    work = torch.full_like(run, float("nan"))
    logp = _logp(run, out=work)
    assert logp.data_ptr() == work.data_ptr() and torch.equal(logp, plain_logp)
    plain_kl = (clean_p * (clean_logp - plain_logp)).sum(-1)
    kl = _kl_per_token(clean_p, clean_logp, logp, consume=True)
    assert torch.equal(kl, plain_kl) and torch.equal(_kl_per_token(clean_p, clean_logp, plain_logp), plain_kl)
    assert bool((kl > 0).all())  # a KL divergence between different distributions
    # a buffer of another shape is not used
    assert torch.equal(_logp(run[:, :5], out=work), plain_logp[:, :5])
