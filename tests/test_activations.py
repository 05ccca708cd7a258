"""The activation cache: exact round trip, resumable atomic harvests, refusal of corrupt caches,
deterministic shuffled batches. Uses a 3-layer ``pythia-70m-random`` (hook ``blocks.1``) and the
smoke corpus with 64-token contexts so each harvest takes seconds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vsae import activations as A
from vsae.activations import ActivationCache, CacheError
from vsae.lm import load_lm
from vsae.store import Store

N, CTX, BATCH = 2000, 64, 4  # 32 contexts (the last one partly used), 8 batches


@pytest.fixture(scope="module")
def lm():
    return load_lm("pythia-70m-random", 1, n_layers=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def cache(lm, store):
    return A.harvest(lm, "smoke", "train", N, CTX, store, batch_size=BATCH, progress=False)


def _copy(cache, tmp_path) -> "Path":
    dst = tmp_path / "acts" / cache.path.name
    shutil.copytree(cache.path, dst)
    return dst


def test_round_trip_exact(lm, cache):
    assert len(cache) == N and cache.d_model == 512 and cache.dtype == "float32"
    ctx = np.asarray(cache.contexts)
    assert ctx.shape == (-(-N // CTX), CTX)
    direct = torch.cat([lm.resid(torch.from_numpy(ctx[i:i + BATCH].astype(np.int64))).reshape(-1, 512)
                        for i in range(0, len(ctx), BATCH)])[:N]
    got = cache.get(np.arange(N))
    assert torch.equal(got, direct)  # bit-exact
    assert np.array_equal(cache.tokens, ctx.reshape(-1)[:N])
    assert np.array_equal(cache.ctx_index, np.repeat(np.arange(len(ctx)), CTX)[:N])
    assert np.array_equal(cache.positions, np.tile(np.arange(CTX), len(ctx))[:N])
    assert cache.tokens.dtype == np.int32 and cache.ctx_index.dtype == np.int32 and cache.positions.dtype == np.int16
    idx = np.array([5, N - 1, 0, 5])
    assert torch.equal(cache.get(idx), direct[idx])  # any order, repeats allowed
    # contexts map back to smoke documents
    ids = cache.context_doc_ids()
    assert len(ids) == len(ctx) and all(i.split("/")[0] in ("speech", "novel", "email") for i in ids)


def test_manifest_contents(lm, cache):
    m = cache.manifest
    assert m["model"] == lm.describe() and m["hook"] == "blocks.1.hook_resid_post"
    assert (m["corpus"], m["split"], m["n_tokens"], m["d_model"], m["dtype"]) == ("smoke", "train", N, 512, "float32")
    assert m["prepend_bos"] is False and m["config"]["corpus"]["resolved"] == "smoke"
    assert set(m["files"]) == set(A.DATA_FILES) and all(len(v["sha256"]) == 64 for v in m["files"].values())
    assert m["harvest"]["peak_rss_bytes"] < 4e9
    x = cache.get(np.arange(N)).double()
    assert m["norm_factor"] == pytest.approx(float(x.pow(2).sum(-1).mean().sqrt()), rel=1e-9)
    assert (cache.get(np.arange(N)) / cache.norm_factor).pow(2).sum(-1).mean().item() == pytest.approx(1.0, rel=1e-5)
    cache.verify()  # full re-hash passes


def test_second_harvest_reuses(lm, store, cache, capfd):
    again = A.harvest(lm, "smoke", "train", N, CTX, store, batch_size=BATCH, progress=False)
    assert again.path == cache.path
    assert "harvested" not in capfd.readouterr().err  # nothing recomputed


def test_summary_line(lm, tmp_path, capfd):
    A.harvest(lm, "smoke", "eval", 256, CTX, Store(tmp_path), batch_size=BATCH, progress=False)
    err = capfd.readouterr().err
    assert "harvested 256 tokens" in err and "tok/s" in err and "MB" in err and "peak RSS" in err


def test_killed_harvest_resumes_byte_identical(lm, cache, tmp_path):
    st = Store(tmp_path)
    cfg = A.harvest_config(lm, "smoke", "train", N, CTX, BATCH)
    with pytest.raises(A._SimulatedKill):  # dies after writing batch 3's rows, before committing them
        A.harvest(lm, "smoke", "train", N, CTX, st, batch_size=BATCH, progress=False, _kill_after_batches=3)
    staging = st.staging_path("acts", cfg)
    assert not st.exists("acts", cfg) and not st.path("acts", cfg).exists()  # nothing reads as whole
    assert json.loads((staging / "progress.json").read_text())["batches_done"] == 2
    with pytest.raises(CacheError, match="incomplete"):
        ActivationCache(staging)
    with pytest.raises(A._SimulatedKill):  # a second kill, after one more committed batch
        A.harvest(lm, "smoke", "train", N, CTX, st, batch_size=BATCH, progress=False, _kill_after_batches=2)
    resumed = A.harvest(lm, "smoke", "train", N, CTX, st, batch_size=BATCH, progress=False)
    assert resumed.manifest["harvest"]["resumed"] is True
    for f in A.DATA_FILES:
        assert (resumed.path / f).read_bytes() == (cache.path / f).read_bytes(), f
    assert resumed.norm_factor == cache.norm_factor
    assert not staging.exists()


def test_corrupt_manifest_refused(cache, tmp_path):
    p = _copy(cache, tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    m["norm_factor"] *= 1.01
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError) as e:
        ActivationCache(p)
    assert "manifest.json was modified or is corrupt" in str(e.value)
    assert f"Delete {p}" in str(e.value) and "re-run" in str(e.value)
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="unreadable"):
        ActivationCache(p)


def test_corrupt_data_refused(cache, tmp_path):
    p = _copy(cache, tmp_path)
    raw = bytearray((p / "acts.npy").read_bytes())
    raw[-7] ^= 0xFF  # same size, one flipped byte: only the full check sees it
    (p / "acts.npy").write_bytes(bytes(raw))
    ActivationCache(p)  # quick check passes
    with pytest.raises(CacheError, match="sha256"):
        ActivationCache(p, verify="full")
    (p / "acts.npy").write_bytes(bytes(raw[:-512]))
    with pytest.raises(CacheError, match="truncated"):
        ActivationCache(p)


def test_mismatched_config_refused(lm, cache, store):
    other = A.harvest_config(lm, "smoke", "train", N + 1, CTX, BATCH)
    with pytest.raises(CacheError, match="different config"):
        ActivationCache(cache.path, expect=other)
    with pytest.raises(CacheError, match="no activation cache"):
        A.open_cache(lm, "smoke", "train", N + 1, CTX, store, batch_size=BATCH)
    assert A.open_cache(lm, "smoke", "train", N, CTX, store, batch_size=BATCH).path == cache.path


def test_existing_corrupt_cache_not_silently_reused(lm, tmp_path, cache):
    st = Store(tmp_path)
    cfg = A.harvest_config(lm, "smoke", "train", N, CTX, BATCH)
    dst = st.path("acts", cfg)
    shutil.copytree(cache.path, dst)
    (dst / "manifest.json").write_text((dst / "manifest.json").read_text().replace('"smoke"', '"offline"', 1))
    with pytest.raises(CacheError, match="Delete"):
        A.harvest(lm, "smoke", "train", N, CTX, st, batch_size=BATCH, progress=False)


def test_batches_deterministic_and_resumable(cache):
    full = list(cache.batches(192, seed=7, n_steps=20))
    assert len(full) == 20 and full[0].shape == (192, 512) and full[0].dtype == torch.float32
    again = list(cache.batches(192, seed=7, start_step=12, n_steps=8))
    assert all(torch.equal(a, b) for a, b in zip(full[12:], again))
    other = next(cache.batches(192, seed=8))
    assert not torch.equal(other, full[0])
    # one epoch covers every row exactly once (2000 = 10 * 200); the next epoch reshuffles
    idx = np.concatenate([cache.batch_indices(s, 200, seed=7) for s in range(10)])
    assert np.array_equal(np.sort(idx), np.arange(N))
    assert not np.array_equal(cache.batch_indices(10, 200, seed=7), cache.batch_indices(0, 200, seed=7))
    # a batch straddling the epoch boundary
    straddle = cache.batch_indices(2, 1400, seed=7)
    assert len(straddle) == 1400 and len(set(straddle[:200].tolist())) == 200
    assert len(list(cache.batches(600, seed=1))) == 3  # n_steps=None: one epoch (2000 // 600)


def test_bfloat16_cache(tmp_path):
    lm16 = load_lm("pythia-70m-random", 1, n_layers=3, dtype="bfloat16")
    c = A.harvest(lm16, "smoke", "train", 512, CTX, Store(tmp_path), batch_size=BATCH, progress=False)
    assert c.dtype == "bfloat16" and c.acts.dtype == np.uint16 and c.manifest["storage_dtype"] == "<u2"
    ctx = torch.from_numpy(np.asarray(c.contexts, dtype=np.int64))
    direct = torch.cat([lm16.resid(ctx[i:i + BATCH]).reshape(-1, 512) for i in range(0, len(ctx), BATCH)])
    assert direct.dtype == torch.bfloat16
    assert torch.equal(c.get(np.arange(512)), direct.float())


def test_harvest_contexts(lm, tmp_path):
    ctx = np.arange(2 * 32, dtype=np.int32).reshape(2, 32) + 1000
    c = A.harvest_contexts(lm, ctx, Store(tmp_path), key={"task": "unit-test"}, doc_ids=["a", "b"],
                           ctx_doc=np.array([1, 0]), progress=False)
    assert len(c) == 64 and c.context_doc_ids() == ["b", "a"]
    # the first stored context is ctx[0]'s residual; harvesting runs both contexts in one batch, and a
    # matmul over 64 rows may round differently from one over 32 (seen on some CPUs), hence allclose
    one = lm.resid(torch.from_numpy(ctx[:1].astype(np.int64)))[0]
    torch.testing.assert_close(c.get(np.arange(32)), one, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(c.get(np.arange(32, 64)), one, atol=1e-2)  # and not ctx[1]'s


def test_cli_verify(cache, tmp_path, capsys):
    from vsae.__main__ import main

    assert main(["verify", str(cache.path), "--full"]) == 0
    p = _copy(cache, tmp_path)
    (p / "ctx_doc.npy").write_bytes(b"garbage")
    assert main(["verify", str(p)]) == 1
    assert "Delete" in capsys.readouterr().err
