import json

import numpy as np
import pandas as pd
import pytest
import torch

from _eval_fixtures import fake_documents, fake_lm_for_docs, perfect_sae
from vsae.evals import tasks
from vsae.evals.tasks import paper as paper_tasks
from vsae.evals.tasks import SCR_SETS, ProbeDataset, binary_tasks, build_offline_suite, build_suite, harvest_pool
from vsae.store import Store


@pytest.fixture(scope="module")
def lm():
    return fake_lm_for_docs()


@pytest.fixture(scope="module")
def suite(lm):
    return build_offline_suite(fake_documents(), lm.to_tokens, n_train=40, n_test=20, ctx_len=32,
                               max_passages_per_doc=8, decode=lm.tokenizer.decode)


def _doc_ids(suite, idx):
    return set(suite.passages["doc_id"].iloc[np.asarray(idx)])


def test_offline_suite_has_five_balanced_document_disjoint_tasks(suite):
    assert len(suite.probing) >= 5
    names = {d.name for d in suite.probing}
    assert {"spam_vs_ham", "sotu_party", "sotu_era", "speech_vs_novel", "email_vs_speech"} <= names
    for d in suite.probing:
        assert len(d.classes) == 2
        assert all(sz == (20, 10) for sz in d.sizes().values()), d.name
        train = set().union(*(_doc_ids(suite, tr) for tr, _ in d.classes.values()))
        test = set().union(*(_doc_ids(suite, te) for _, te in d.classes.values()))
        assert not train & test, d.name
        assert "disjoint documents" in d.description
    assert not suite.notes


def test_offline_labels_follow_metadata(suite):
    meta = suite.passages["meta"].map(json.loads)
    d = {x.name: x for x in suite.probing}["sotu_party"]
    for cls, (tr, te) in d.classes.items():
        assert {meta.iloc[i]["party"] for i in np.r_[tr, te]} == {cls}
    d = {x.name: x for x in suite.probing}["spam_vs_ham"]
    assert all(meta.iloc[i]["spam"] for i in np.r_[d.classes["spam"]])
    assert not any(meta.iloc[i]["spam"] for i in np.r_[d.classes["ham"]])
    # passages of email documents never contain the stripped headers
    assert not suite.passages["text"].str.contains("Subject").any()


def test_scr_pairs_have_the_sae_bench_structure(suite):
    meta = suite.passages["meta"].map(json.loads)
    pair = {p.name: p for p in suite.scr}["sotu_party_x_era"]
    (tp, tn), (sp, sn) = pair.target, pair.spurious
    assert set(pair.sets) == set(SCR_SETS)
    for j in (0, 1):
        bp = pair.sets["biased_pos"][j]
        assert all(meta.iloc[i]["party"] == tp and meta.iloc[i]["era"] == sp for i in bp)
        bn = pair.sets["biased_neg"][j]
        assert all(meta.iloc[i]["party"] == tn and meta.iloc[i]["era"] == sn for i in bn)
        tpos = pair.sets["target_pos"][j]
        assert {meta.iloc[i]["party"] for i in tpos} == {tp}
        assert sorted(meta.iloc[i]["era"] for i in tpos).count(sp) == len(tpos) // 2  # balanced over era
        spos = pair.sets["spurious_pos"][j]
        assert {meta.iloc[i]["era"] for i in spos} == {sp}
    assert len(pair.sets["biased_pos"][0]) == len(pair.sets["target_pos"][0]) == 20
    assert not _doc_ids(suite, np.concatenate([pair.sets[k][0] for k in SCR_SETS])) & \
        _doc_ids(suite, np.concatenate([pair.sets[k][1] for k in SCR_SETS]))


def test_tpp_set_and_one_vs_rest_tasks(suite):
    (ds,) = suite.tpp
    assert len(ds.classes) >= 4
    ts = binary_tasks(ds, seed=0)
    assert [t.name for t in ts] == list(ds.classes)
    for t in ts:
        pos = set(ds.classes[t.name][0])
        assert set(t.train_idx[t.train_y == 1]) == pos
        neg = t.train_idx[t.train_y == 0]
        assert len(neg) == len(pos) and not set(neg) & pos


def test_insufficient_data_is_skipped_with_a_note(lm):
    docs = [d for d in fake_documents() if d.source != "moby-dick"]
    s = build_offline_suite(docs, lm.to_tokens, n_train=40, n_test=20, ctx_len=32, max_passages_per_doc=8)
    assert "speech_vs_novel" not in {d.name for d in s.probing}
    assert any("speech_vs_novel" in n for n in s.notes)


def test_strip_email_headers():
    assert tasks.strip_email_headers("From: a\nTo: b\n\nHello there\n\nBye") == "Hello there\n\nBye"
    assert tasks.strip_email_headers("No headers here\n\nSecond paragraph").startswith("No headers")


def test_harvest_pool_pools_non_special_tokens_and_round_trips(lm, suite, tmp_path):
    store = Store(tmp_path)
    pool = harvest_pool(lm, suite, store, dtype="float32", progress=False)
    assert len(pool) == len(suite)
    i = 5
    toks = torch.as_tensor(suite.tokens[i])[None]
    r = lm.resid(toks)[0].detach().numpy()
    np.testing.assert_allclose(np.asarray(pool.acts[pool.offsets[i]:pool.offsets[i + 1]]), r, atol=1e-6)
    np.testing.assert_allclose(pool.pooled_resid[i], r.mean(0), atol=1e-5)
    # second call reads the stored artifact
    again = harvest_pool(lm, suite, store, dtype="float32", progress=False)
    assert again.path is not None and np.array_equal(again.offsets, pool.offsets)
    # pooled SAE codes = mean over tokens of per-token codes
    sae = perfect_sae(lm.d_model)
    Z = again.pooled_codes(sae)
    f = sae.encode(torch.as_tensor(r)).detach().numpy()
    np.testing.assert_allclose(Z[i], f.mean(0), atol=1e-5)


def test_harvest_pool_with_bos_excludes_it_from_pooling(suite):
    lm = fake_lm_for_docs()
    lm.prepend_bos = True
    pool = harvest_pool(lm, suite, None, progress=False)
    i = 3
    assert pool.tokens[pool.offsets[i]] == 0 and not pool.keep[pool.offsets[i]]
    seg = np.asarray(pool.acts[pool.offsets[i] + 1: pool.offsets[i + 1]], dtype=np.float32)
    np.testing.assert_allclose(pool.pooled_resid[i], seg.mean(0), atol=2e-3)


def test_build_suite_caches_in_store(lm, tmp_path):
    store = Store(tmp_path)
    docs = fake_documents(n_email=90)
    a = build_suite("smoke", lm, n_train=20, n_test=10, ctx_len=32, documents=docs, store=store)
    b = build_suite("smoke", lm, n_train=20, n_test=10, ctx_len=32, documents=docs, store=store)
    assert a.key() == b.key()
    assert (store.path("task_suite", {"family": "smoke", "n_train": 20, "n_test": 10, "ctx_len": 32, "seed": 42,
                                      "lm": "fake-lm", "options": {},
                                      "documents": tasks._documents_id(docs)}) / "tasks.csv").exists()
    assert not list(tmp_path.rglob("*.pkl"))


def _assert_same_suite(a, b):
    assert (a.family, a.ctx_len, a.seed, a.n_train, a.n_test, a.notes, a.tokens) == \
           (b.family, b.ctx_len, b.seed, b.n_train, b.n_test, b.notes, b.tokens)
    pd.testing.assert_frame_equal(a.passages, b.passages)
    for xs, ys in ((a.probing, b.probing), (a.tpp, b.tpp), (a.scr, b.scr)):
        assert len(xs) == len(ys)
        for x, y in zip(xs, ys):
            assert (x.name, x.family, x.description) == (y.name, y.family, y.description)
            gx, gy = (x.classes, y.classes) if hasattr(x, "classes") else (x.sets, y.sets)
            assert list(gx) == list(gy)
            for c in gx:
                for u, v in zip(gx[c], gy[c]):
                    assert u.dtype == v.dtype and np.array_equal(u, v)
            if hasattr(x, "target"):
                assert (x.target, x.spurious) == (y.target, y.spurious)


def test_suite_round_trips_without_pickles(lm, tmp_path):
    suite = build_suite("smoke", lm, n_train=20, n_test=10, ctx_len=32, documents=fake_documents(n_email=90))
    tasks.save_suite(suite, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(tasks.suite.SUITE_FILES)
    _assert_same_suite(suite, tasks.load_suite(tmp_path))


def test_legacy_pickled_suite_is_read_and_migrated(lm, tmp_path):
    suite = build_suite("smoke", lm, n_train=20, n_test=10, ctx_len=32, documents=fake_documents(n_email=90))
    pd.to_pickle(suite, tmp_path / "suite.pkl")  # how an older version stored it
    _assert_same_suite(suite, tasks.load_suite(tmp_path))
    assert not (tmp_path / "suite.pkl").exists() and (tmp_path / "suite.json").exists()
    (tmp_path / "suite.json").unlink()
    (tmp_path / "suite.pkl").write_bytes(b"not a pickle")
    with pytest.raises(RuntimeError, match="delete"):
        tasks.load_suite(tmp_path)


def test_paper_family_fails_fast_offline(monkeypatch, lm):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline"):
        build_suite("paper", lm, n_train=40, n_test=20)


def test_paper_scr_sets_from_frames():
    rows = []
    for prof in ("professor", "nurse"):
        for g in (0, 1):
            for i in range(12):
                rows.append({"hard_text": f"{prof}-{g}-{i}", "profession": paper_tasks.PROFESSIONS.index(prof), "gender": g})
    df = pd.DataFrame(rows)
    sets = paper_tasks._scr_texts_from_frames(df, df, "bias_in_bios", ("professor", "nurse"), ("male", "female"), 16, 16, 0)
    tr = sets["biased_pos"][0]
    assert len(tr) == 8 and all(t.startswith("professor-0") for t in tr)
    assert all(t.split("-")[1] == "0" for t in sets["spurious_pos"][0])  # male
    assert {t.split("-")[0] for t in sets["target_neg"][0]} == {"nurse"}


def test_binary_tasks_two_classes_is_one_task():
    ds = ProbeDataset("d", "x", "", {"a": (np.arange(4), np.arange(4, 6)), "b": (np.arange(6, 10), np.arange(10, 12))})
    (t,) = binary_tasks(ds)
    assert t.train_y.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert t.test_idx.tolist() == [4, 5, 10, 11]


def test_task_selection_shrinks_the_pool(lm, suite):
    small = build_offline_suite(fake_documents(), lm.to_tokens, n_train=40, n_test=20, ctx_len=32,
                                max_passages_per_doc=8, probing_tasks=["sotu_party", "spam_vs_ham"], scr_pairs=[],
                                tpp_classes=["novel", "email_ham", "email_spam"])
    assert [d.name for d in small.probing] == ["spam_vs_ham", "sotu_party"]
    assert not small.scr and list(small.tpp[0].classes) == ["novel", "email_ham", "email_spam"]
    assert len(small) < len(suite)
