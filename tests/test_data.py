"""Corpora: document-disjoint splits, clean labelled metadata, contexts without padding."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from vsae import data
from vsae.hub import HubUnavailableError


@pytest.fixture(scope="module")
def labelled():
    return data.labelled_documents()


def test_offline_splits_disjoint_and_complete(labelled):
    train = data.load_documents("offline", "train")
    ev = data.load_documents("offline", "eval")
    tr_ids, ev_ids = {d.doc_id for d in train}, {d.doc_id for d in ev}
    assert not tr_ids & ev_ids
    assert len(tr_ids) == len(train) and len(ev_ids) == len(ev)  # no duplicates within a split
    assert tr_ids | ev_ids == {d.doc_id for d in labelled}
    # every source is in both splits, eval is ~10%
    for split_docs in (train, ev):
        assert {d.source for d in split_docs} == {"speech", "novel", "email"}
    assert 0.07 < len(ev) / (len(ev) + len(train)) < 0.13
    # the split is a function of the doc id alone
    assert all(data.split_of(d.doc_id) == "eval" for d in ev)


def test_sources_interleaved():
    train = data.load_documents("offline", "train")
    head = collections.Counter(d.source for d in train[:200])
    assert set(head) == {"speech", "novel", "email"}  # a short harvest already sees every source
    chars = collections.Counter()
    for d in train[:200]:
        chars[d.source] += len(d.text)
    assert max(chars.values()) / min(chars.values()) < 3


def test_smoke_is_small_disjoint_subset():
    tr, ev = data.load_documents("smoke", "train"), data.load_documents("smoke", "eval")
    assert not {d.doc_id for d in tr} & {d.doc_id for d in ev}
    assert all(d.meta["split"] == "train" for d in tr) and all(d.meta["split"] == "eval" for d in ev)
    assert collections.Counter(d.source for d in tr) == {"email": 120, "speech": 4, "novel": 4}
    assert data.load_documents("smoke", "train") == tr  # deterministic


def test_labelled_metadata(labelled):
    by = collections.defaultdict(list)
    for d in labelled:
        by[d.source].append(d)
    assert len(by["speech"]) == 233 and len(by["novel"]) >= 135
    assert 5500 < len(by["email"]) <= 6046  # duplicates across groups removed
    parties = collections.Counter(d.meta["party"] for d in by["speech"])
    assert parties["Republican"] == 92 and parties["Democratic"] == 90
    assert all(isinstance(d.meta["year"], int) and 1790 <= d.meta["year"] <= 2021 for d in by["speech"])
    spam = collections.Counter(d.meta["spam"] for d in by["email"])
    assert spam[True] > 1500 and spam[False] > 3500
    routing = re.compile(r"^(Received|Return-Path|Delivered-To|Message-Id|X-[\w-]+):", re.I | re.M)
    assert all(d.text.startswith("Subject: ") or d.meta["subject"] == "" for d in by["email"])
    # the routing header block is gone; a few bodies still quote headers (forwarded or broken
    # messages, threads on the SpamAssassin lists): 2 of 6,046 in their first lines, 20 anywhere
    at_top = sum(bool(routing.search("\n".join(d.text.splitlines()[:3]))) for d in by["email"])
    anywhere = sum(bool(routing.search(d.text)) for d in by["email"])
    assert at_top <= 0.001 * len(by["email"]) and anywhere < 0.01 * len(by["email"])
    assert all(d.doc_id.startswith(d.source + "/") for d in labelled)
    assert all(d.text.strip() for d in labelled)


def test_email_header_options():
    raw = ("Received: from relay.example (1.2.3.4)\nFrom: a@b.example\nSubject: Hello there\n"
           "Content-Type: text/html\n\n<html><body><p>Buy <b>now</b> &amp; save</p><script>x()</script></body></html>")
    text, facts = data.parse_email(raw, "subject")
    assert text.startswith("Subject: Hello there") and "Buy now & save" in text
    assert "Received" not in text and "x()" not in text and facts["content_type"] == "html"
    assert data.parse_email(raw, "none")[0] == "Buy now & save"
    assert data.parse_email(raw, "all")[0] == raw


def test_chunking_drops_padding():
    lists = [list(range(2, 302)), list(range(5, 55)), [], list(range(7, 135))]
    ctx, di = data.chunk_contexts(lists, 128, return_doc_index=True)
    assert ctx.shape == (3, 128) and ctx.dtype == np.int32
    assert di.tolist() == [0, 0, 3]  # the 50-token list and the 44-token tail are dropped, never padded
    assert ctx[0].tolist() == list(range(2, 130)) and ctx[1].tolist() == list(range(130, 258))
    assert ctx[2].tolist() == list(range(7, 135))
    first = data.chunk_contexts(lists, 128, mode="first")
    assert first.shape == (2, 128)
    assert data.chunk_contexts([[1, 2]], 4).shape == (0, 4)


def test_contexts_from_real_text_have_no_pad_or_bos():
    from vsae.lm import pythia_tokenizer

    tok = pythia_tokenizer()
    docs = data.load_documents("smoke", "eval")
    ids = tok([d.text for d in docs], add_special_tokens=False)["input_ids"]
    ctx = data.chunk_contexts(ids, 128)
    assert len(ctx) > 50
    assert not np.isin(ctx, [tok.pad_token_id]).any()
    assert (ctx[:, 0] != tok.bos_token_id).mean() > 0.99


def test_token_counts_report():
    df = data.token_counts("smoke")
    assert set(df.columns) >= {"corpus", "split", "source", "docs", "tokens", "contexts", "context_tokens"}
    assert set(df["split"]) == {"train", "eval"} and (df["tokens"] > 0).all()
    assert (df["context_tokens"] <= df["tokens"]).all()


def test_corpus_identity_pins_assets():
    ident = data.corpus_identity("offline", "train")
    assert ident["assets"]["stdlib-data"] and ident["data_version"] == data.DATA_VERSION
    assert data.resolve_corpus("paper", "train") == "tinystories"
    assert data.resolve_corpus("paper", "eval") == "c4-code"
    with pytest.raises(ValueError, match="unknown corpus"):
        data.load_documents("wikipedia", "train")


def test_paper_corpora_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t = time.time()
    with pytest.raises(HubUnavailableError, match="offline"):
        data.load_documents("tinystories", "train", max_docs=1)
    assert time.time() - t < 10


def test_datasets_imported_lazily():
    code = "import sys, vsae.data; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_paper_corpora_mapping_with_a_stub_hub(monkeypatch):
    """The streamed corpora's row -> Document mapping, with ``datasets`` and the Hub stubbed out."""
    import types

    calls = []

    def load_dataset(repo, split, streaming):
        calls.append((repo, split, streaming))
        if repo == "roneneldan/TinyStories":
            return iter([{"text": " Once upon a time. "}, {"text": "  "}, {"text": "Tom had a dog."}])
        return iter([{"tokens": list(range(i, i + 300))} for i in range(40)])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(data.hub, "hub_reachable", lambda timeout=3.0, path=None: (True, "stub"))
    stories = data.load_documents("tinystories", "eval")
    assert calls[-1] == ("roneneldan/TinyStories", "validation", True)
    assert [d.text for d in stories] == ["Once upon a time.", "Tom had a dog."]
    assert stories[0].source == "story" and stories[0].doc_id == "story/validation/0"
    tr, ev = data.load_documents("c4-code", "train"), data.load_documents("c4-code", "eval")
    assert calls[-1] == ("NeelNanda/c4-code-tokenized-2b", "train", True)
    assert len(tr) + len(ev) == 40 and not {d.doc_id for d in tr} & {d.doc_id for d in ev}
    assert all(d.tokens is not None and len(d.tokens) == 300 and d.text == "" for d in tr)
    assert data.chunk_mode("paper", "train") == "first" and data.chunk_mode("paper", "eval") == "windows"
