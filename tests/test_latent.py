import numpy as np
import pytest
import torch

from _eval_fixtures import TinySAE, perfect_sae
from vsae import latent


def _clustered_acts(n=120, d=6, seed=0):
    """Tokens from three groups, each lighting up its own two dimensions."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.05, size=(n, d))
    g = np.arange(n) % 3
    for k in range(3):
        X[g == k, 2 * k: 2 * k + 2] += rng.uniform(1, 2, size=((g == k).sum(), 2))
    return torch.as_tensor(X, dtype=torch.float32), g


def test_collect_codes_keeps_latents_above_min_density():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    s = latent.collect_codes(perfect_sae(2), x, n_tokens=4, min_density=0.3, sample=False)
    assert s.density.tolist() == pytest.approx([0.75, 0.25, 0, 0])
    assert s.latents.tolist() == [0]
    assert s.codes.shape == (4, 1) and s.codes[:, 0].tolist() == [1, 1, 1, 0]
    s2 = latent.collect_codes(perfect_sae(2), x, n_tokens=3, min_density=0.0, seed=0)
    assert len(s2.token_index) == 3 and s2.codes.shape[0] == 3


def test_token_tsne_shapes():
    x, g = _clustered_acts()
    s = latent.collect_codes(perfect_sae(6), x, n_tokens=120, min_density=0.01, sample=False)
    df = latent.token_tsne(s, perplexity=30, max_iter=250, seed=0)
    assert df.shape[0] == 120 and {"x", "y", "token_index", "l0"} <= set(df)
    assert df.attrs["pca_dim"] == len(s.latents) and np.isfinite(df[["x", "y"]].to_numpy()).all()
    # the three token groups separate in the embedding
    cent = np.array([df[g == k][["x", "y"]].mean().to_numpy() for k in range(3)])
    spread = np.mean([df[g == k][["x", "y"]].std().mean() for k in range(3)])
    assert np.min([np.linalg.norm(cent[i] - cent[j]) for i in range(3) for j in range(i)]) > spread


def test_feature_tsne_clusters_and_utilisation():
    x, _ = _clustered_acts(n=150)
    W = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    sae = TinySAE(W, torch.randn(40, 6), k=4)
    s = latent.collect_codes(sae, x, n_tokens=150, min_density=0.0, sample=False)
    m = len(s.latents)
    df = latent.feature_tsne(s, max_iter=250)
    assert len(df) == m and df["latent"].tolist() == s.latents.tolist()
    assert df.attrs["perplexity"] == min(30, (m - 1) // 3)
    assert df["cluster"].nunique() == min(10, max(2, m // 10))
    u = latent.cluster_utilisation(df)
    assert u["n_latents"].sum() == m
    np.testing.assert_allclose(u["mean_utilization"], df.groupby("cluster")["utilization"].mean().to_numpy())
    assert (df["utilization"] > 0).all()


def test_decoder_cosine_stats_values():
    ortho = TinySAE(torch.eye(3), torch.eye(3))
    st = latent.decoder_cosine_stats(ortho)
    assert st["n_latents"] == 3 and st["mean"] == pytest.approx(0) and st["max"] == pytest.approx(0)
    W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sae = TinySAE(W.T, W)
    st = latent.decoder_cosine_stats(sae)
    c = 1 / np.sqrt(2)
    pairs = [1.0, 0.0, c, 0.0, c, c]
    assert st["mean"] == pytest.approx(np.mean(pairs)) and st["max"] == pytest.approx(1.0)
    assert st["q0.5"] == pytest.approx(np.quantile(pairs, 0.5))
    assert st["mean_max_cos"] == pytest.approx(np.mean([1, 1, c, c]))
    # only alive latents count
    st_alive = latent.decoder_cosine_stats(sae, alive=np.array([False, True, True, False]))
    assert st_alive["n_latents"] == 2 and st_alive["max"] == pytest.approx(0.0)
    assert np.sort(latent.pairwise_decoder_cosines(W, chunk=3)).tolist() == pytest.approx(sorted(pairs))


def test_decoder_cosine_table_and_histogram():
    W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    saes = {"a": TinySAE(W.T, W), "b": TinySAE(torch.eye(2), torch.eye(2))}
    t = latent.decoder_cosine_table(saes, alive={"a": np.array([0.1, 0.0, 0.2, 0.3])})
    assert t.set_index("sae").loc["a", "n_latents"] == 3 and t.set_index("sae").loc["b", "n_latents"] == 2
    h = latent.decoder_cosine_histogram(saes["a"], bins=4, name="a")
    assert h["count"].sum() == 6 and h["fraction"].sum() == pytest.approx(1.0)


def test_token_sources_from_cache_records():
    from vsae.latent import token_sources

    class Cache:
        ctx_index = np.array([0, 0, 1, 1, 2, 2])

        def context_doc_ids(self):
            return ["speech/a", "email/b", "novel/c"]

    assert list(token_sources(Cache(), [0, 3, 5])) == ["speech", "email", "novel"]
    assert list(token_sources(np.zeros((3, 2)), [0, 1])) == ["unknown", "unknown"]
