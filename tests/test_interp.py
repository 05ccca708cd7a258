import numpy as np
import pandas as pd
import pytest
import torch

from _eval_fixtures import FakeCache, FakeLM, FakeTokenizer, TinySAE
from vsae import interp


def _sae2():
    # latent 0 = relu(x0), latent 1 = relu(x1), latent 2 = relu(-x0); decoder rows of norms 1, 2, 1
    return TinySAE(torch.tensor([[1.0, 0, -1], [0, 1, 0]]), torch.tensor([[1.0, 0], [0, 2], [-1, 0]]))


def test_latent_stats_by_hand():
    x = torch.tensor([[2.0, 0.0], [1.0, 3.0], [-1.0, 0.0], [0.0, 0.0]])
    s = interp.latent_stats(_sae2(), x, batch_tokens=3).set_index("latent")
    assert s["density"].tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert s["sparsity"].tolist() == pytest.approx([0.5, 0.75, 0.75])
    assert s["mean_activation"].tolist() == pytest.approx([1.5, 3.0, 1.0])
    assert s["mean_activation_all"].tolist() == pytest.approx([0.75, 0.75, 0.25])
    assert s["max_activation"].tolist() == pytest.approx([2.0, 3.0, 1.0])
    assert s["decoder_norm"].tolist() == pytest.approx([1.0, 2.0, 1.0])
    v = interp.latent_activations(_sae2(), x, [1, 0])
    assert v[:, 0].tolist() == [0, 3, 0, 0] and v[:, 1].tolist() == [2, 1, 0, 0]


def test_activation_histogram():
    h = interp.activation_histogram([0, 0, 1, 2, 2, 3], bins=3)
    assert h["count"].tolist() == [1, 2, 1]
    assert interp.activation_histogram([0, 0]).empty


def _cache():
    tok = FakeTokenizer([" a", " b", " <script>", " c"])
    tokens = np.array([3, 4, 5, 6, 3, 4, 5, 6])
    ctx = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    cache = FakeCache(np.zeros((8, 2), np.float32), tokens, ctx, np.tile(np.arange(4), 2))
    return tok, cache


def test_top_contexts_windows_stay_in_their_context():
    tok, cache = _cache()
    vals = np.array([0, 0, 0, 5.0, 4.0, 0, 0, 0])  # peaks at the end of ctx 0 and the start of ctx 1
    df = interp.top_contexts(cache, vals, k=5, left=3, right=3)
    assert df["activation"].tolist() == [5.0, 4.0]
    assert df.loc[0, "tokens"] == [3, 4, 5, 6] and df.loc[0, "peak"] == 3
    assert df.loc[1, "tokens"] == [3, 4, 5, 6] and df.loc[1, "peak"] == 0
    both = interp.top_contexts(cache, np.array([0, 0, 2.0, 5.0, 0, 0, 0, 0]), k=5, unique_contexts=False)
    assert len(both) == 2


def test_contexts_html_escapes_and_highlights():
    tok, cache = _cache()
    df = interp.top_contexts(cache, np.array([0, 0, 3.0, 0, 0, 0, 0, 0]), k=1, left=2, right=1)
    html = interp.contexts_html(df, tok, title="latent <7>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "latent &lt;7&gt;" in html
    assert "font-weight: bold" in html


def test_logit_effects():
    tok = FakeTokenizer([" x", " y"])
    lm = FakeLM(tok, d_model=2)
    with torch.no_grad():
        lm.U.copy_(torch.tensor([[0.0, 0, 0, 5, -2], [0, 0, 0, 0, 0]]))
    df = interp.logit_effects(_sae2(), lm, latent=0, k=1)
    boosted = df[df["direction"] == "boosted"].iloc[0]
    suppressed = df[df["direction"] == "suppressed"].iloc[0]
    assert boosted["token"] == " x" and boosted["effect"] == pytest.approx(5.0)
    assert suppressed["token"] == " y" and suppressed["effect"] == pytest.approx(-2.0)


def test_synthetic_maximiser_raises_the_activation_and_avoids_special_tokens():
    tok = FakeTokenizer([f" w{i}" for i in range(30)])
    lm = FakeLM(tok, d_model=8, seed=1)
    sae = TinySAE(torch.randn(8, 6, generator=torch.Generator().manual_seed(2)), torch.randn(6, 8), b_enc=-torch.ones(6))
    res = interp.synthetic_maximiser(sae, lm, latent=3, seq_len=8, steps=40, seed=0)
    h = res.history
    assert len(h) == 40 and h["objective"].iloc[-5:].mean() > h["objective"].iloc[:5].mean()
    assert not set(res.tokens) & {0, 1}
    assert res.activations.shape == (8,) and np.isfinite(res.max_activation)
    # the optimised tokens beat random ones
    rnd = torch.randint(2, len(tok), (1, 8), generator=torch.Generator().manual_seed(5))
    base = sae.encode(lm.resid(rnd)[0])[:, 3].mean().item()
    assert res.mean_activation >= base


def test_comparable_latents_match_density():
    a = pd.DataFrame({"latent": np.arange(6), "density": [1e-4, 2e-3, 1e-2, 5e-2, 0.3, 0.5]})
    b = pd.DataFrame({"latent": np.arange(5), "density": [2.2e-3, 0.2, 9e-3, 4e-2, 1e-5]})
    df = interp.comparable_latents(a, b, n=3, density_range=(1e-3, 1e-1))
    assert len(df) == 3
    assert df["density_a"].between(1e-3, 1e-1).all() and df["density_b"].between(1e-3, 1e-1).all()
    assert df["latent_a"].is_unique and df["latent_b"].is_unique
    assert (np.abs(np.log(df["density_a"] / df["density_b"])) < np.log(3)).all()
    assert interp.comparable_latents(a, b.assign(density=0.9)).empty
