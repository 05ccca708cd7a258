"""The ``offline`` (and ``smoke``) task family: binary probing, SCR and TPP tasks built from the
project's offline corpus (:func:`vsae.data.labelled_documents`), with train and test passages drawn
from *disjoint documents*; see :func:`build_offline_suite`.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .suite import InsufficientData, ProbeDataset, ScrPair, TaskSuite

_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:")
_HEADER_START = re.compile(r"^(From |Return-Path:|Received:|Delivered-To:|Message-I[Dd]:|Subject:|Date:|To:|From:|X-)")
_HTML = re.compile(r"<\s*(html|body|table|td|tr|font|div|p|br|a\s|img|center|b>|i>)", re.IGNORECASE)


def strip_email_headers(text: str) -> str:
    """Drop an RFC-822 header block (everything before the first blank line) when there is one."""
    t = text.replace("\r\n", "\n")
    if not _HEADER_START.match(t):
        return t
    head, sep, body = t.partition("\n\n")
    lines = [l for l in head.split("\n") if l.strip()]
    if sep and lines and sum(bool(_HEADER_LINE.match(l)) or l[:1] in " \t" for l in lines) >= 0.8 * len(lines):
        return body
    return t


def _party(meta: dict) -> str | None:
    p = str(meta.get("party", "")).strip().lower()
    if p in ("democratic", "democrat", "democratic party", "d"):
        return "Democratic"
    if p in ("republican", "republican party", "r"):
        return "Republican"
    return None


def _year(meta: dict) -> int | None:
    y = meta.get("year")
    try:
        return int(str(y)[:4])
    except (TypeError, ValueError):
        return None


def _spam(meta: dict) -> bool | None:
    v = meta.get("spam")
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "spam", "yes")
    return None if v is None else bool(v)


def categorize(doc) -> str:
    """speech / novel / email / docs / other, from the document's source name and metadata."""
    src = str(getattr(doc, "source", "")).lower()
    meta = getattr(doc, "meta", {}) or {}
    if "party" in meta or "sotu" in src or "union" in src or "speech" in src:
        return "speech"
    if "spam" in meta or "spam" in src or "email" in src or "mail" in src:
        return "email"
    if "moby" in src or "novel" in src or meta.get("novel"):
        return "novel"
    if "doc" in src or "python" in src or "rst" in src:
        return "docs"
    return "other"


@dataclass
class _Candidate:
    cat: str
    doc_id: str
    split: str
    window: int
    tokens: list[int]
    attrs: dict


class _Selector:
    """Shared, seeded candidate orders; tasks take passages in that order so they overlap."""

    def __init__(self, cands: list[_Candidate], seed: int):
        self.cands = cands
        self.order: dict[str, list[int]] = {}
        rng = np.random.default_rng(seed)
        by_cat: dict[str, list[int]] = {}
        for i, c in enumerate(cands):
            by_cat.setdefault(c.cat, []).append(i)
        for cat, ids in by_cat.items():
            self.order[cat] = [ids[j] for j in rng.permutation(len(ids))]
        self.pool: dict[int, int] = {}  # candidate index -> pool index

    def count(self, cat: str, pred: Callable[[dict], bool], split: str) -> int:
        return sum(1 for i in self.order.get(cat, []) if self.cands[i].split == split and pred(self.cands[i].attrs))

    def take(self, cat: str, pred: Callable[[dict], bool], split: str, m: int, what: str) -> np.ndarray:
        got = []
        for i in self.order.get(cat, []):
            c = self.cands[i]
            if c.split == split and pred(c.attrs):
                got.append(i)
                if len(got) == m:
                    break
        if len(got) < m:
            raise InsufficientData(f"{what}: {len(got)} {split} passages available, {m} needed")
        out = []
        for i in got:
            if i not in self.pool:
                self.pool[i] = len(self.pool)
            out.append(self.pool[i])
        return np.asarray(out, dtype=int)


#: characters of each document read before tokenising (a passage is ~5 characters per token)
DEFAULT_MAX_CHARS = {"speech": 60_000, "novel": 60_000, "email": 4_000, "docs": 20_000}


def _passage_candidates(documents, to_tokens, ctx_len, seed, test_fraction, max_passages_per_doc,
                        max_chars, min_tokens, max_docs_per_category) -> list[_Candidate]:
    docs = []
    for d in documents:
        cat = categorize(d)
        if cat == "other":
            continue
        meta = dict(getattr(d, "meta", {}) or {})
        text = d.text
        attrs = {"cat": cat}
        if cat == "email":
            text = strip_email_headers(text)
            sp = _spam(meta)
            src = str(getattr(d, "source", "")).lower()
            attrs["spam"] = sp if sp is not None else ("spam" in src and "ham" not in src)
            attrs["html"] = bool(meta["has_html"]) if "has_html" in meta else bool(_HTML.search(text))
        if cat == "speech":
            attrs["party"] = _party(meta)
            y = _year(meta)
            attrs["year"] = y
            attrs["era"] = None if y is None else ("pre1900" if y < 1900 else "1900on")
        mc = max_chars.get(cat, 60_000) if isinstance(max_chars, dict) else int(max_chars)
        docs.append((cat, str(d.doc_id), text[:mc], attrs))
    # an optional seeded cap on the number of documents per category (before tokenising)
    if max_docs_per_category:
        keep_docs = []
        for cat in sorted({c for c, *_ in docs}):
            ds = [x for x in docs if x[0] == cat]
            cap = max_docs_per_category.get(cat) if isinstance(max_docs_per_category, dict) else max_docs_per_category
            if cap is not None and len(ds) > cap:
                rng = np.random.default_rng(seed + 7 + zlib.crc32(cat.encode()))
                ds = [ds[i] for i in sorted(rng.permutation(len(ds))[:cap].tolist())]
            keep_docs.extend(ds)
        docs = keep_docs
    # document-disjoint split, per category
    split_of: dict[tuple[str, str], str] = {}
    for cat in sorted({c for c, *_ in docs}):
        ids = sorted({i for c, i, *_ in docs if c == cat})
        rng = np.random.default_rng(seed + zlib.crc32(cat.encode()))
        perm = rng.permutation(len(ids))
        n_test = int(round(test_fraction * len(ids)))
        for j, p in enumerate(perm):
            split_of[(cat, ids[p])] = "test" if j < n_test else "train"
    toks = to_tokens([x[2] for x in docs]) if docs else []
    cands: list[_Candidate] = []
    for (cat, doc_id, _text, attrs), tk in zip(docs, toks):
        tk = list(tk)
        wins = [tk[s : s + ctx_len] for s in range(0, len(tk), ctx_len)]
        wins = [w for w in wins if len(w) >= min_tokens]
        if len(wins) > max_passages_per_doc:  # evenly spread over the document
            pick = np.linspace(0, len(wins) - 1, max_passages_per_doc).round().astype(int)
            wins = [wins[i] for i in sorted(set(pick.tolist()))]
        for w_i, w in enumerate(wins):
            cands.append(_Candidate(cat, doc_id, split_of[(cat, doc_id)], w_i, w, attrs))
    return cands


def _probe_specs():
    is_ = lambda k, v: (lambda a: a.get(k) == v)  # noqa: E731
    any_ = lambda a: True  # noqa: E731
    return [
        ("spam_vs_ham",
         "SpamAssassin emails with their RFC-822 headers stripped: spam (positive) vs ham passages.",
         [("spam", "email", is_("spam", True)), ("ham", "email", is_("spam", False))]),
        ("sotu_party",
         "State of the Union addresses: passages of Democratic (positive) vs Republican presidents.",
         [("Democratic", "speech", is_("party", "Democratic")), ("Republican", "speech", is_("party", "Republican"))]),
        ("sotu_era",
         "State of the Union addresses: passages of speeches from 1900 on (positive) vs before 1900, any party.",
         [("1900on", "speech", is_("era", "1900on")), ("pre1900", "speech", is_("era", "pre1900"))]),
        ("speech_vs_novel",
         "Source of a passage: a State of the Union address (positive) vs a chapter of Moby-Dick.",
         [("speech", "speech", any_), ("novel", "novel", any_)]),
        ("email_vs_speech",
         "Source of a passage: an email body, spam or ham (positive) vs a State of the Union address.",
         [("email", "email", any_), ("speech", "speech", any_)]),
        ("email_vs_novel",
         "Source of a passage: an email body, spam or ham (positive) vs a chapter of Moby-Dick.",
         [("email", "email", any_), ("novel", "novel", any_)]),
        ("docs_vs_speech",
         "Source of a passage: Python documentation (positive) vs a State of the Union address.",
         [("docs", "docs", any_), ("speech", "speech", any_)]),
    ]


def _scr_specs():
    return [
        ("sotu_party_x_era",
         "State of the Union passages. Target: the president's party (Republican vs Democratic); spurious: "
         "the era (1900 on vs before 1900). The biased probe sees only Republican-1900on vs Democratic-pre1900.",
         ("Republican", "Democratic"), ("1900on", "pre1900"), "speech",
         lambda a, t: a.get("party") == t, lambda a, s: a.get("era") == s),
        ("email_spam_x_html",
         "Email bodies. Target: spam vs ham; spurious: HTML markup vs plain text. The biased probe sees only "
         "spam-with-HTML vs plain-text ham.",
         ("spam", "ham"), ("html", "plain"), "email",
         lambda a, t: a.get("spam") == (t == "spam"), lambda a, s: a.get("html") == (s == "html")),
    ]


def _tpp_classes():
    return [
        ("speech_pre1900", "speech", lambda a: a.get("era") == "pre1900"),
        ("speech_1900on", "speech", lambda a: a.get("era") == "1900on"),
        ("novel", "novel", lambda a: True),
        ("email_ham", "email", lambda a: a.get("spam") is False),
        ("email_spam", "email", lambda a: a.get("spam") is True),
        ("docs", "docs", lambda a: True),
    ]


def build_offline_suite(
    documents: Sequence,
    to_tokens: Callable[[list[str]], list[list[int]]],
    *,
    family: str = "offline",
    n_train: int = 800,
    n_test: int = 400,
    ctx_len: int = 128,
    seed: int = 42,
    test_fraction: float = 0.3,
    max_passages_per_doc: int = 32,
    max_chars: int | dict = None,
    min_tokens: int = 16,
    max_docs_per_category: int | dict | None = None,
    decode: Callable[[list[int]], str] | None = None,
    probing_tasks: Sequence[str] | None = None,
    scr_pairs: Sequence[str] | None = None,
    tpp_classes: Sequence[str] | None = None,
) -> TaskSuite:
    """Build the offline probing, SCR and TPP tasks from labelled documents.

    (Long on purpose: every task takes its passages from one seeded, shared candidate order, so
    that the tasks overlap in passages as SAE Bench's do; splitting it would thread that state
    through every helper.)

    How the tasks are made:

    * Every document is categorised (speech: State of the Union, with party and year; novel:
      Moby-Dick chapters; email: SpamAssassin, headers stripped, with spam/ham and HTML flags;
      docs: Python documentation) and assigned, per category, to the train or the test split
      (``test_fraction`` of the documents, seeded), so **no document contributes to both splits**.
    * Each document is tokenised and cut into consecutive ``ctx_len``-token passages (shorter than
      ``min_tokens``: dropped; at most ``max_passages_per_doc``, spread evenly over the document).
    * Per category the passages get one seeded order, and every task takes its passages in that
      order, so tasks share passages and the pool to harvest stays small.
    * Probing tasks are binary and balanced: ``n_train // 2`` train and ``n_test // 2`` test
      passages per class (:func:`_probe_specs` lists them). A task without enough data is skipped
      and noted.
    * SCR pairs cross a target and a spurious attribute with ``n_train // 4`` (``n_test // 4``)
      passages per quadrant and twice that for the two confounded quadrants, like SAE Bench.
    * TPP: one multi-class set of passage sources (speeches before / from 1900, novel, ham, spam,
      docs), ``n_train // 2`` and ``n_test // 2`` per class.

    ``probing_tasks``, ``scr_pairs`` and ``tpp_classes`` restrict the suite to the named tasks
    (default: all), which shrinks the passage pool to harvest.
    """
    cands = _passage_candidates(documents, to_tokens, ctx_len, seed, test_fraction, max_passages_per_doc,
                                DEFAULT_MAX_CHARS if max_chars is None else max_chars, min_tokens,
                                max_docs_per_category)
    sel = _Selector(cands, seed)
    notes: list[str] = []
    probing: list[ProbeDataset] = []
    m_tr, m_te = n_train // 2, n_test // 2
    for name, desc, classes in _probe_specs():
        if probing_tasks is not None and name not in probing_tasks:
            continue
        try:
            cls = {}
            for cname, cat, pred in classes:
                # check availability before taking, so a failed task leaves no passages behind
                for split, m in (("train", m_tr), ("test", m_te)):
                    if sel.count(cat, pred, split) < m:
                        raise InsufficientData(f"class {cname}: {sel.count(cat, pred, split)} {split} passages, {m} needed")
            for cname, cat, pred in classes:
                cls[cname] = (sel.take(cat, pred, "train", m_tr, f"{name}/{cname}"),
                              sel.take(cat, pred, "test", m_te, f"{name}/{cname}"))
            probing.append(ProbeDataset(name, family, desc + _SPLIT_NOTE.format(m_tr=m_tr, m_te=m_te, ctx=ctx_len), cls))
        except InsufficientData as e:
            notes.append(f"probing task {name} skipped: {e}")

    scr: list[ScrPair] = []
    q_tr, q_te = n_train // 4, n_test // 4
    for name, desc, target, spurious, cat, tpred, spred in _scr_specs():
        if scr_pairs is not None and name not in scr_pairs:
            continue

        def quad(t, s):
            return lambda a, t=t, s=s: tpred(a, t) and spred(a, s)
        (tp, tn), (sp, sn) = target, spurious
        need = {(tp, sp): 2, (tn, sn): 2, (tp, sn): 1, (tn, sp): 1}
        try:
            for (t, s), mult in need.items():
                for split, m in (("train", q_tr * mult), ("test", q_te * mult)):
                    have = sel.count(cat, quad(t, s), split)
                    if have < m:
                        raise InsufficientData(f"quadrant ({t}, {s}): {have} {split} passages, {m} needed")
            Q = {}
            for (t, s), mult in need.items():
                Q[(t, s)] = tuple(sel.take(cat, quad(t, s), split, m * mult, f"{name}/{t},{s}")
                                  for split, m in (("train", q_tr), ("test", q_te)))
            sets = {}
            for j in (0, 1):
                q = q_tr if j == 0 else q_te
                a = lambda t, s: Q[(t, s)][j]  # noqa: E731
                sets.setdefault("spurious_pos", [None, None])[j] = np.r_[a(tp, sp)[:q], a(tn, sp)[:q]]
                sets.setdefault("spurious_neg", [None, None])[j] = np.r_[a(tp, sn)[:q], a(tn, sn)[:q]]
                sets.setdefault("target_pos", [None, None])[j] = np.r_[a(tp, sp)[:q], a(tp, sn)[:q]]
                sets.setdefault("target_neg", [None, None])[j] = np.r_[a(tn, sp)[:q], a(tn, sn)[:q]]
                sets.setdefault("biased_pos", [None, None])[j] = a(tp, sp)[: 2 * q]
                sets.setdefault("biased_neg", [None, None])[j] = a(tn, sn)[: 2 * q]
            scr.append(ScrPair(name, family, desc + f" {q_tr} train / {q_te} test passages per quadrant (twice that in the "
                               f"two confounded quadrants), at most {ctx_len} tokens; documents disjoint between splits.", target, spurious,
                               {k: (v[0].astype(int), v[1].astype(int)) for k, v in sets.items()}))
        except InsufficientData as e:
            notes.append(f"SCR pair {name} skipped: {e}")

    tpp: list[ProbeDataset] = []
    cls = {}
    for cname, cat, pred in _tpp_classes():
        if tpp_classes is not None and cname not in tpp_classes:
            continue
        if sel.count(cat, pred, "train") >= m_tr and sel.count(cat, pred, "test") >= m_te:
            cls[cname] = (sel.take(cat, pred, "train", m_tr, cname), sel.take(cat, pred, "test", m_te, cname))
        else:
            notes.append(f"TPP class {cname} skipped: not enough passages")
    if len(cls) >= 3:
        tpp.append(ProbeDataset("offline_sources", family,
                                "Passage source as a multi-class set (speeches before / from 1900, Moby-Dick, ham "
                                "and spam emails, Python docs where present); one-vs-rest probes as SAE Bench's TPP."
                                + _SPLIT_NOTE.format(m_tr=m_tr, m_te=m_te, ctx=ctx_len), cls))
    else:
        notes.append("TPP set skipped: fewer than 3 classes with enough passages")

    # materialise the pool in pool order
    inv = sorted(sel.pool.items(), key=lambda kv: kv[1])
    rows, tokens = [], []
    for ci, _pi in inv:
        c = cands[ci]
        tokens.append(list(c.tokens))
        rows.append({"source": c.cat, "category": c.cat, "doc_id": c.doc_id, "split": c.split, "window": c.window,
                     "text": decode(c.tokens) if decode else "",
                     "meta": json.dumps({k: v for k, v in c.attrs.items() if k != "cat"}, default=str)})
    return TaskSuite(family, ctx_len, seed, n_train, n_test, pd.DataFrame(rows), tokens, probing, scr, tpp, notes)


_SPLIT_NOTE = (" {m_tr} train / {m_te} test passages per class, each at most {ctx} tokens, train and test from "
               "disjoint documents.")
