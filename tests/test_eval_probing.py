import numpy as np
import pandas as pd
import torch

from _eval_fixtures import TinySAE, perfect_sae
from vsae.evals.common import top_k_mean_diff, train_sklearn_probe, train_torch_probe
from vsae.evals.probing import SparseProbingConfig, probe_accuracies, run_sparse_probing, summarise_sparse_probing
from vsae.evals.tasks import PassagePool, ProbeDataset, TaskSuite


def _pool(X: np.ndarray, datasets, tokens_per_passage: int = 1) -> PassagePool:
    """A pool whose passages have ``tokens_per_passage`` identical tokens equal to ``X[i]``."""
    n, d = X.shape
    acts = np.repeat(X, tokens_per_passage, axis=0).astype(np.float32)
    offsets = np.arange(n + 1) * tokens_per_passage
    suite = TaskSuite("test", 8, 0, 0, 0, pd.DataFrame(index=range(n)), [[5] * tokens_per_passage] * n, datasets)
    return PassagePool(acts, np.full(len(acts), 5), offsets, np.ones(len(acts), bool), X.astype(np.float32), suite)


def _separable(n=80, d=6, seed=0, shuffle=False):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    X = rng.normal(size=(2 * n, d))
    X[:, 0] += np.where(y == 1, 4.0, -4.0)
    if shuffle:
        y = rng.permutation(y)
    idx = np.arange(2 * n)
    tr, te = idx[::2], idx[1::2]
    ds = ProbeDataset("sep", "test", "", {"pos": (tr[y[tr] == 1], te[y[te] == 1]), "neg": (tr[y[tr] == 0], te[y[te] == 0])})
    return X, ds


FAST = SparseProbingConfig(full_probe="torch", full_epochs=30)


def test_top_k_mean_diff_picks_the_separating_dims():
    X = np.array([[0, 5, 1.0], [0, 6, 1.0], [1, 0, 1.0], [1, 1, 1.0]])
    assert top_k_mean_diff(X, [1, 1, 0, 0], 1).tolist() == [1]
    assert top_k_mean_diff(X, [1, 1, 0, 0], 2).tolist() == [1, 0]


def test_separable_data_gets_accuracy_one():
    X, ds = _separable()
    pool = _pool(X, [ds])
    df = run_sparse_probing({"perfect": perfect_sae(6)}, pool, cfg=FAST)
    task = df[df["dataset"] == "sep"]
    assert (task["accuracy"] == 1.0).all()
    assert (task["llm_accuracy"] == 1.0).all()
    assert set(task["k"].dropna().astype(int)) == {1, 2, 5}
    assert task["k"].isna().sum() == 1  # the all-latents probe


def test_shuffled_labels_are_near_chance():
    X, ds = _separable(n=300, shuffle=True)
    acc = probe_accuracies(X[ds.classes["pos"][0].tolist() + ds.classes["neg"][0].tolist()],
                           [1] * len(ds.classes["pos"][0]) + [0] * len(ds.classes["neg"][0]),
                           X[ds.classes["pos"][1].tolist() + ds.classes["neg"][1].tolist()],
                           [1] * len(ds.classes["pos"][1]) + [0] * len(ds.classes["neg"][1]),
                           SparseProbingConfig(full_probe="sklearn"))
    for k, a in acc.items():
        assert 0.38 < a < 0.62, (k, a)


def test_sae_code_pooling_is_per_token():
    # two tokens per passage, +x and -x: the mean residual is 0 but the mean code is not
    X = np.array([[2.0, 0.0], [0.0, 3.0]])
    acts = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 3.0], [0.0, -3.0]], dtype=np.float32)
    pool = PassagePool(acts, np.array([5, 5, 5, 5]), np.array([0, 2, 4]), np.ones(4, bool), np.zeros((2, 2)), None)
    Z = pool.pooled_codes(perfect_sae(2))
    np.testing.assert_allclose(Z, [[1.0, 0, 1.0, 0], [0, 1.5, 0, 1.5]])
    # tokens not kept (special) are left out of the mean
    pool2 = PassagePool(acts, np.array([0, 5, 5, 5]), np.array([0, 2, 4]), np.array([False, True, True, True]),
                        np.zeros((2, 2)), None)
    np.testing.assert_allclose(pool2.pooled_codes(perfect_sae(2))[0], [0, 0, 2.0, 0])


def test_aggregate_rows_and_summary():
    X, ds = _separable()
    X2, ds2 = _separable(seed=1)
    ds2.name = "sep2"
    offs = len(X)
    ds2.classes = {c: (a + offs, b + offs) for c, (a, b) in ds2.classes.items()}
    pool = _pool(np.r_[X, X2], [ds, ds2])
    sae = TinySAE(np.eye(6), np.eye(6))  # relu(x): keeps only the positive side
    df = run_sparse_probing({"relu": sae}, pool, cfg=FAST)
    agg = df[df["dataset"] == "ALL"]
    assert len(agg) == 4
    per = df[df["dataset"] != "ALL"].groupby("k", dropna=False)["accuracy"].mean()
    np.testing.assert_allclose(sorted(agg["accuracy"]), sorted(per.values))
    s = summarise_sparse_probing(df)
    assert {"sae_test_accuracy", "sae_top_1_test_accuracy", "llm_top_5_test_accuracy", "preservation_top_2"} <= set(s)


def test_torch_probe_selects_best_test_epoch_and_is_seeded():
    X, ds = _separable()
    tr = np.r_[ds.classes["pos"][0], ds.classes["neg"][0]]
    te = np.r_[ds.classes["pos"][1], ds.classes["neg"][1]]
    ytr = torch.as_tensor(np.r_[np.ones(len(ds.classes["pos"][0])), np.zeros(len(ds.classes["neg"][0]))]).long()
    yte = torch.as_tensor(np.r_[np.ones(len(ds.classes["pos"][1])), np.zeros(len(ds.classes["neg"][1]))]).long()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    p1, a1 = train_torch_probe(Xt[tr], ytr, Xt[te], yte, epochs=5, lr=1e-2, batch_size=16, seed=3)
    p2, a2 = train_torch_probe(Xt[tr], ytr, Xt[te], yte, epochs=5, lr=1e-2, batch_size=16, seed=3)
    assert a1 == a2 == p1.accuracy(Xt[te], yte)
    assert torch.equal(p1.weight, p2.weight)
    assert train_sklearn_probe(X[tr], ytr.numpy(), X[te], yte.numpy()) == 1.0
