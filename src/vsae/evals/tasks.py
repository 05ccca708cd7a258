"""Probing, SCR and TPP task construction, and the shared *passage pool* they are views of.

A :class:`TaskSuite` holds a list of passages (token lists of at most ``ctx_len`` tokens, with their
source document and metadata) and three families of task definitions over them, each a set of
classes whose train and test examples are *indices into the passage list*:

* ``probing``: sparse-probing datasets (two classes: one binary probe; more: one-vs-rest per class,
  negatives sampled evenly from the other classes, as SAE Bench's ``prepare_probe_data``);
* ``scr``: spurious-correlation pairs, a target attribute crossed with a spurious one, in SAE
  Bench's six sets (spurious +/-, target +/-, and the perfectly confounded "biased" +/-);
* ``tpp``: multi-class sets for targeted probe perturbation.

The passages are run through the language model once (:func:`harvest_pool`): per-token residual
activations go to disk (SAE codes must be computed per token, then mean-pooled), with the
mean-pooled residual beside them. Every task of every eval is a view of that pool.

Three families:

* ``paper``: SAE Bench's Hugging Face datasets (needs the Hub and the ``datasets`` package; fails
  fast with a clear message offline).
* ``offline``: binary tasks built from the project's offline corpus (:func:`vsae.data.labelled_documents`),
  with train and test passages drawn from *disjoint documents*; see :func:`build_offline_suite`.
* ``smoke``: the offline builders at small sizes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .common import bos_id, encode_sparse, keep_mask, pad_id, right_pad, sae_fingerprint, special_ids_of

# --------------------------------------------------------------------------------------------
# Task definitions
# --------------------------------------------------------------------------------------------

Split = tuple[np.ndarray, np.ndarray]  # (train pool indices, test pool indices)


@dataclass
class ProbeDataset:
    """A labelled set of passages: ``classes[name] = (train_idx, test_idx)`` into the pool."""

    name: str
    family: str
    description: str
    classes: dict[str, Split]

    def sizes(self) -> dict[str, tuple[int, int]]:
        return {c: (len(tr), len(te)) for c, (tr, te) in self.classes.items()}


@dataclass
class BinaryTask:
    dataset: str
    name: str
    train_idx: np.ndarray
    train_y: np.ndarray
    test_idx: np.ndarray
    test_y: np.ndarray


#: SAE Bench's SCR keys, in our neutral names: spurious (gender), target (profession), biased
SCR_SETS = ("spurious_pos", "spurious_neg", "target_pos", "target_neg", "biased_pos", "biased_neg")


@dataclass
class ScrPair:
    """A target attribute crossed with a spurious one (SAE Bench: profession x gender).

    ``sets`` has the six keys of :data:`SCR_SETS`: ``spurious_pos``/``_neg`` are balanced over the
    target, ``target_pos``/``_neg`` balanced over the spurious attribute, and ``biased_pos`` =
    (target +, spurious +), ``biased_neg`` = (target -, spurious -), where the two coincide.
    """

    name: str
    family: str
    description: str
    target: tuple[str, str]
    spurious: tuple[str, str]
    sets: dict[str, Split]


@dataclass
class TaskSuite:
    family: str
    ctx_len: int
    seed: int
    n_train: int
    n_test: int
    #: one row per passage: source, category, doc_id, split, text (decoded), meta (json)
    passages: pd.DataFrame
    #: token ids of each passage (no BOS), at most ``ctx_len`` long
    tokens: list[list[int]]
    probing: list[ProbeDataset] = field(default_factory=list)
    scr: list[ScrPair] = field(default_factory=list)
    tpp: list[ProbeDataset] = field(default_factory=list)
    #: what could not be built and why
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def key(self) -> dict:
        h = hashlib.sha256()
        for t in self.tokens:
            h.update(np.asarray(t, dtype=np.int64).tobytes())
            h.update(b"|")
        return {
            "family": self.family, "ctx_len": self.ctx_len, "seed": self.seed,
            "n_train": self.n_train, "n_test": self.n_test, "n_passages": len(self.tokens),
            "tokens_sha": h.hexdigest()[:16],
        }

    def describe(self) -> pd.DataFrame:
        """One row per task: kind, name, classes, sizes, how it was built."""
        rows = []
        for kind, items in (("probing", self.probing), ("tpp", self.tpp)):
            for d in items:
                s = d.sizes()
                rows.append({"kind": kind, "task": d.name, "classes": " / ".join(s),
                             "n_train": sum(a for a, _ in s.values()), "n_test": sum(b for _, b in s.values()),
                             "description": d.description})
        for p in self.scr:
            rows.append({"kind": "scr", "task": p.name,
                         "classes": f"target {p.target[0]}/{p.target[1]} x spurious {p.spurious[0]}/{p.spurious[1]}",
                         "n_train": sum(len(p.sets[k][0]) for k in SCR_SETS),
                         "n_test": sum(len(p.sets[k][1]) for k in SCR_SETS), "description": p.description})
        return pd.DataFrame(rows)


class InsufficientData(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Binary probing views (SAE Bench's prepare_probe_data, seeded)
# --------------------------------------------------------------------------------------------


def binary_tasks(ds: ProbeDataset, seed: int = 42) -> list[BinaryTask]:
    """Two classes: one task (first class positive). More: one-vs-rest per class.

    For one-vs-rest the negatives are ``ceil(n_pos / n_other)`` samples from each other class,
    then ``n_pos`` of those (SAE Bench's ``prepare_probe_data``), separately for train and test.
    """
    names = list(ds.classes)
    rng = np.random.default_rng(seed + zlib.crc32(ds.name.encode()))
    if len(names) == 2:
        (ptr, pte), (ntr, nte) = ds.classes[names[0]], ds.classes[names[1]]
        return [BinaryTask(ds.name, f"{names[0]}_vs_{names[1]}",
                           np.r_[ptr, ntr], np.r_[np.ones(len(ptr)), np.zeros(len(ntr))].astype(int),
                           np.r_[pte, nte], np.r_[np.ones(len(pte)), np.zeros(len(nte))].astype(int))]
    out = []
    for c in names:
        parts = []
        for j in (0, 1):
            pos = ds.classes[c][j]
            others = [ds.classes[o][j] for o in names if o != c]
            per = math.ceil(len(pos) / max(len(others), 1))
            neg = np.concatenate([rng.permutation(o)[:per] for o in others]) if others else np.array([], int)
            neg = rng.permutation(neg)[: len(pos)]
            parts.append((np.r_[pos, neg].astype(int), np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(int)))
        out.append(BinaryTask(ds.name, c, parts[0][0], parts[0][1], parts[1][0], parts[1][1]))
    return out


# --------------------------------------------------------------------------------------------
# Offline family
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Paper family: SAE Bench's Hugging Face datasets
# --------------------------------------------------------------------------------------------

#: SAE Bench's ``chosen_classes_per_dataset`` for sparse probing
PAPER_PROBING = {
    "LabHC/bias_in_bios_class_set1": ["0", "1", "2", "6", "9"],
    "LabHC/bias_in_bios_class_set2": ["11", "13", "14", "18", "19"],
    "LabHC/bias_in_bios_class_set3": ["20", "21", "22", "25", "26"],
    "canrager/amazon_reviews_mcauley_1and5": ["1", "2", "3", "5", "6"],
    "canrager/amazon_reviews_mcauley_1and5_sentiment": ["1.0", "5.0"],
    "codeparrot/github-code": ["C", "Python", "HTML", "Java", "PHP"],
    "fancyzhx/ag_news": ["0", "1", "2", "3"],
    "Helsinki-NLP/europarl": ["en", "fr", "de", "es", "nl"],
}
PROFESSIONS = ["accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian",
               "dj", "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
               "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
               "software_engineer", "surgeon", "teacher", "yoga_teacher"]
AMAZON_CATEGORIES = ["All_Beauty", "Toys_and_Games", "Cell_Phones_and_Accessories", "Industrial_and_Scientific",
                     "Gift_Cards", "Musical_Instruments", "Electronics", "Handmade_Products", "Arts_Crafts_and_Sewing",
                     "Baby_Products", "Health_and_Household", "Office_Products", "Digital_Music",
                     "Grocery_and_Gourmet_Food", "Sports_and_Outdoors", "Home_and_Kitchen", "Subscription_Boxes",
                     "Tools_and_Home_Improvement", "Pet_Supplies", "Video_Games", "Kindle_Store",
                     "Clothing_Shoes_and_Jewelry", "Patio_Lawn_and_Garden", "Unknown", "Books", "Automotive",
                     "CDs_and_Vinyl", "Beauty_and_Personal_Care", "Amazon_Fashion", "Magazine_Subscriptions",
                     "Software", "Health_and_Personal_Care", "Appliances", "Movies_and_TV"]
#: SAE Bench's SCR class pairs (column 1) and spurious values (column 2)
PAPER_SCR = {
    "LabHC/bias_in_bios_class_set1": ([("professor", "nurse"), ("architect", "journalist"),
                                       ("surgeon", "psychologist"), ("attorney", "teacher")], ("male", "female")),
    "canrager/amazon_reviews_mcauley_1and5": ([("Books", "CDs_and_Vinyl"), ("Software", "Electronics"),
                                               ("Pet_Supplies", "Office_Products"),
                                               ("Industrial_and_Scientific", "Toys_and_Games")], (1.0, 5.0)),
}
PAPER_TPP = {"LabHC/bias_in_bios_class_set1": ["0", "1", "2", "6", "9"],
             "canrager/amazon_reviews_mcauley_1and5": ["1", "2", "3", "5", "6"]}
_TWO_COL = {"bias_in_bios": ("hard_text", "profession", "gender"), "amazon": ("text", "category", "rating")}


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _require_hub():
    try:
        import datasets  # noqa: F401
    except ImportError as e:  # pragma: no cover - datasets is pinned
        raise RuntimeError("the 'paper' probing tasks need the `datasets` package; use the 'offline' profile") from e
    if not _hub_reachable():
        raise RuntimeError(
            "the 'paper' probing/SCR/TPP tasks load SAE Bench's datasets from the Hugging Face Hub, which is not "
            "reachable here (or HF_HUB_OFFLINE=1). Use the 'offline' profile (probe_tasks='offline'), whose tasks "
            "are built from the installed offline corpus."
        )


@functools.lru_cache(maxsize=4)
def _load_frames(hf_name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    import datasets

    ds = datasets.load_dataset(hf_name)
    return pd.DataFrame(ds["train"]), pd.DataFrame(ds["test"])


def _two_column_classes(train_df, test_df, kind: str, chosen: list[str], n_train: int, n_test: int, seed: int):
    """SAE Bench's ``get_balanced_dataset``: per class, n/4 texts of each value of the second column."""
    text, c1, c2 = _TWO_COL[kind]
    out = {}
    for j, (df, n) in enumerate(((train_df, n_train), (test_df, n_test))):
        q = n // 4
        for cls in chosen:
            sub = df[df[c1].astype(str) == str(cls)]
            parts = []
            for _, g in sub.groupby(c2):
                if len(g) < q:
                    raise InsufficientData(f"{kind} class {cls}: a group has {len(g)} < {q} texts")
                parts.extend(g[text].sample(n=q, random_state=seed).tolist())
            out.setdefault(cls, [None, None])[j] = parts
    return {k: tuple(v) for k, v in out.items()}


def _paper_probe_texts(name: str, chosen: list[str], n_train: int, n_test: int, seed: int) -> dict[str, tuple[list, list]]:
    import datasets

    if "bias_in_bios" in name:
        tr, te = _load_frames("LabHC/bias_in_bios")
        return _two_column_classes(tr, te, "bias_in_bios", chosen, n_train, n_test, seed)
    if name == "canrager/amazon_reviews_mcauley_1and5":
        tr, te = _load_frames(name)
        return _two_column_classes(tr, te, "amazon", chosen, n_train, n_test, seed)
    if name.endswith("_sentiment"):
        tr, te = _load_frames("canrager/amazon_reviews_mcauley_1and5")
        out = {}
        for j, (df, n) in enumerate(((tr, n_train), (te, n_test))):
            for r in chosen:
                s = df[df["rating"].astype(float) == float(r)]["text"].sample(n=n // 2, random_state=seed).tolist()
                out.setdefault(r, [None, None])[j] = s
        return {k: tuple(v) for k, v in out.items()}
    if name == "fancyzhx/ag_news":
        tr, te = _load_frames(name)
        out = {}
        for j, (df, n) in enumerate(((tr, n_train), (te, n_test))):
            for c in chosen:
                s = df[df["label"] == int(c)]["text"].sample(n=n // 2, random_state=seed).tolist()
                out.setdefault(c, [None, None])[j] = s
        return {k: tuple(v) for k, v in out.items()}
    rng = np.random.default_rng(seed)
    if name == "codeparrot/github-code":
        # SAE Bench skips ~50 tokens (150 characters) of licence header and keeps long files only
        need = n_train // 2 + n_test // 2
        stream = datasets.load_dataset(name, streaming=True, split="train", languages=chosen, trust_remote_code=True)
        got: dict[str, list[str]] = {c: [] for c in chosen}
        for row in stream:
            c, code = row["language"], row["code"]
            if c in got and len(code) > 128 * 3 + 150 and len(got[c]) <= need:
                got[c].append(code[150:])
            if all(len(v) > need for v in got.values()):
                break
    elif name == "Helsinki-NLP/europarl":
        pairs = {"en": "en-fr", "fr": "fr-it", "de": "de-en", "es": "es-fr", "nl": "nl-pt"}
        need = n_train // 2 + n_test // 2
        got = {}
        for lang in chosen:
            got[lang] = []
            for row in datasets.load_dataset(name, pairs[lang], streaming=True, split="train"):
                got[lang].append(row["translation"][lang])
                if len(got[lang]) > need:
                    break
    else:
        raise ValueError(f"unknown SAE Bench dataset {name!r}")
    out = {}
    for c, texts in got.items():
        texts = [texts[i] for i in rng.permutation(len(texts))]
        if len(texts) < n_train // 2 + n_test // 2:
            raise InsufficientData(f"{name} class {c}: {len(texts)} texts")
        out[c] = (texts[: n_train // 2], texts[n_train // 2 : n_train // 2 + n_test // 2])
    return out


def _scr_texts_from_frames(train_df, test_df, kind, column1_vals, column2_vals, n_train, n_test, seed):
    """SAE Bench's ``get_spurious_corr_data`` on already-loaded frames; our six neutral keys."""
    text, c1, c2 = _TWO_COL[kind]
    m1 = (lambda v: PROFESSIONS.index(v)) if kind == "bias_in_bios" else (lambda v: AMAZON_CATEGORIES.index(v))
    m2 = (lambda v: {"male": 0, "female": 1}[v]) if kind == "bias_in_bios" else float
    tp, tn = (m1(v) for v in column1_vals)
    sp, sn = (m2(v) for v in column2_vals)
    out = {}
    for j, (df, n) in enumerate(((train_df, n_train), (test_df, n_test))):
        q = n // 4
        sel = lambda a, b: df[(df[c1] == a) & (df[c2] == b)][text].tolist()  # noqa: E731
        pos_pos, pos_neg, neg_pos, neg_neg = sel(tp, sp), sel(tp, sn), sel(tn, sp), sel(tn, sn)
        if min(len(pos_pos), len(pos_neg), len(neg_pos), len(neg_neg)) < q or min(len(pos_pos), len(neg_neg)) <= 2 * q:
            raise InsufficientData(f"SCR {column1_vals} x {column2_vals}: too few texts in a quadrant")
        rng = np.random.default_rng(seed)
        sets = {
            "spurious_pos": pos_pos[:q] + neg_pos[:q],
            "spurious_neg": pos_neg[:q] + neg_neg[:q],
            "target_pos": pos_pos[:q] + pos_neg[:q],
            "target_neg": neg_pos[:q] + neg_neg[:q],
            "biased_pos": pos_pos[: 2 * q],
            "biased_neg": neg_neg[: 2 * q],
        }
        for k, v in sets.items():
            out.setdefault(k, [None, None])[j] = [v[i] for i in rng.permutation(len(v))]
    return {k: tuple(v) for k, v in out.items()}


class _TextPool:
    def __init__(self, to_tokens, ctx_len, decode=None):
        self.to_tokens, self.ctx_len = to_tokens, ctx_len
        self.index: dict[str, int] = {}
        self.texts: list[str] = []
        self.rows: list[dict] = []

    def add(self, texts: list[str], source: str, split: str) -> np.ndarray:
        out = []
        for t in texts:
            if t not in self.index:
                self.index[t] = len(self.texts)
                self.texts.append(t)
                self.rows.append({"source": source, "category": source, "doc_id": f"{source}:{split}:{len(self.texts)}",
                                  "split": split, "window": 0, "text": t[:2000], "meta": "{}"})
            out.append(self.index[t])
        return np.asarray(out, dtype=int)

    def tokens(self) -> list[list[int]]:
        return [list(t[: self.ctx_len]) for t in self.to_tokens(self.texts)] if self.texts else []


def build_paper_suite(to_tokens, *, n_train: int = 4000, n_test: int = 1000, ctx_len: int = 128, seed: int = 42,
                      probing_datasets: Iterable[str] | None = None, scr: bool = True, tpp: bool = True) -> TaskSuite:
    """SAE Bench's datasets, sizes and class choices. Needs the Hub (fails fast otherwise)."""
    _require_hub()
    pool = _TextPool(to_tokens, ctx_len)
    probing, scr_pairs, tpp_sets, notes = [], [], [], []
    for name in (probing_datasets or PAPER_PROBING):
        try:
            cls = _paper_probe_texts(name, PAPER_PROBING[name], n_train, n_test, seed)
            probing.append(ProbeDataset(name, "paper", f"SAE Bench sparse-probing dataset {name}",
                                        {c: (pool.add(tr, name, "train"), pool.add(te, name, "test"))
                                         for c, (tr, te) in cls.items()}))
        except Exception as e:  # a script dataset may not load under datasets>=4 (SAE Bench pins <4)
            notes.append(f"probing dataset {name} skipped: {type(e).__name__}: {e}")
    if scr:
        for name, (pairs, col2) in PAPER_SCR.items():
            kind = "bias_in_bios" if "bias_in_bios" in name else "amazon"
            tr, te = _load_frames("LabHC/bias_in_bios" if kind == "bias_in_bios" else name)
            for col1 in pairs:
                sets = _scr_texts_from_frames(tr, te, kind, col1, col2, n_train, n_test, seed)
                scr_pairs.append(ScrPair(f"{name}_scr_{col1[0]}_{col1[1]}", "paper",
                                         f"SAE Bench SCR: {col1[0]} vs {col1[1]} x {col2[0]} vs {col2[1]}",
                                         tuple(map(str, col1)), tuple(map(str, col2)),
                                         {k: (pool.add(a, name, "train"), pool.add(b, name, "test"))
                                          for k, (a, b) in sets.items()}))
    if tpp:
        for name, chosen in PAPER_TPP.items():
            cls = _paper_probe_texts(name, chosen, n_train, n_test, seed)
            tpp_sets.append(ProbeDataset(f"{name}_tpp", "paper", f"SAE Bench TPP classes of {name}",
                                         {c: (pool.add(a, name, "train"), pool.add(b, name, "test"))
                                          for c, (a, b) in cls.items()}))
    return TaskSuite("paper", ctx_len, seed, n_train, n_test, pd.DataFrame(pool.rows), pool.tokens(),
                     probing, scr_pairs, tpp_sets, notes)


# --------------------------------------------------------------------------------------------
# Entry point by family
# --------------------------------------------------------------------------------------------


def build_suite(family: str, lm, *, n_train: int, n_test: int, ctx_len: int = 128, seed: int = 42,
                documents: Sequence | None = None, store=None, **kw) -> TaskSuite:
    """The task suite of a profile's ``probe_tasks`` family (``paper``, ``offline`` or ``smoke``).

    With a ``store`` the suite is kept under kind ``task_suite``, keyed by the family, sizes, seed,
    context length, the LM's name and any builder options (the offline corpus is pinned by version).
    """
    if store is not None:
        key = {"family": family, "n_train": n_train, "n_test": n_test, "ctx_len": ctx_len, "seed": seed,
               "lm": getattr(lm, "name", type(lm).__name__), "options": {k: v for k, v in kw.items()},
               "documents": None if documents is None else len(documents)}
        p = store.path("task_suite", key)
        if store.exists("task_suite", key):
            return pd.read_pickle(p / "suite.pkl")
        suite = build_suite(family, lm, n_train=n_train, n_test=n_test, ctx_len=ctx_len, seed=seed,
                            documents=documents, **kw)
        with store.writing("task_suite", key) as tmp:
            pd.to_pickle(suite, tmp / "suite.pkl")
            suite.describe().to_csv(tmp / "tasks.csv", index=False)
        return suite
    to_tokens = lm.to_tokens
    dec = getattr(getattr(lm, "tokenizer", None), "decode", None)
    if family == "paper":
        return build_paper_suite(to_tokens, n_train=n_train, n_test=n_test, ctx_len=ctx_len, seed=seed, **kw)
    if family in ("offline", "smoke"):
        if documents is None:
            from vsae.data import labelled_documents

            try:  # the Python docs are an optional asset; email bodies without headers
                documents = labelled_documents(include_docs=True, email_headers="none")
            except Exception:  # noqa: BLE001
                documents = labelled_documents(email_headers="none")
        if family == "smoke":
            kw.setdefault("max_passages_per_doc", 8)
            kw.setdefault("max_docs_per_category", {"speech": 140, "novel": 40, "email": 400, "docs": 60})
        else:
            kw.setdefault("max_docs_per_category", {"docs": 400})
        return build_offline_suite(documents, to_tokens, family=family, n_train=n_train, n_test=n_test,
                                   ctx_len=ctx_len, seed=seed, decode=dec, **kw)
    raise ValueError(f"unknown task family {family!r}; choose 'paper', 'offline' or 'smoke'")


def suite_for_profile(profile, lm, store=None, **kw) -> TaskSuite:
    """``build_suite`` with a profile's family (``probe_tasks``), sizes, context length and seed."""
    return build_suite(profile.probe_tasks, lm, n_train=profile.n_probe_train, n_test=profile.n_probe_test,
                       ctx_len=profile.ctx_len, seed=profile.seed, store=store, **kw)


# --------------------------------------------------------------------------------------------
# The passage pool: per-token activations harvested once
# --------------------------------------------------------------------------------------------


class PassagePool:
    """Per-token residual activations of every passage of a suite, and their mean-pooled residual.

    ``acts[offsets[i]:offsets[i+1]]`` are passage ``i``'s tokens (BOS included when the LM
    prepends one); ``keep`` marks the non-special tokens, the only ones pooled (SAE Bench zeroes
    BOS/EOS/PAD and averages over the rest).
    """

    def __init__(self, acts, tokens, offsets, keep, pooled_resid, suite: TaskSuite | None = None,
                 path: Path | None = None):
        self.acts = acts
        self.tokens = tokens
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.keep = np.asarray(keep, dtype=bool)
        self.pooled_resid = np.asarray(pooled_resid, dtype=np.float32)
        self.suite = suite
        self.path = path
        self._codes: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def d_model(self) -> int:
        return int(self.acts.shape[1])

    def passage_of_token(self) -> np.ndarray:
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def clear_codes(self) -> None:
        """Free the pooled codes kept in memory (about 0.1 GB per SAE at d_sae 4608)."""
        self._codes.clear()

    @torch.no_grad()
    def pooled_codes(self, sae, chunk_tokens: int = 4096, cache: bool = True) -> np.ndarray:
        """Mean over each passage's kept tokens of the SAE code: ``[n_passages, d_sae]`` float32.

        Each token is encoded on its own and the codes averaged (SAE Bench's
        ``get_sae_meaned_activations``); kept in memory per SAE weights.
        """
        key = sae_fingerprint(sae)
        if cache and key in self._codes:
            return self._codes[key]
        d_sae = int(sae.W_dec.shape[0])
        pid = torch.as_tensor(self.passage_of_token())
        keep = torch.as_tensor(self.keep)
        out = torch.zeros(len(self), d_sae, dtype=torch.float64)
        n_tok = len(pid)
        for a in range(0, n_tok, chunk_tokens):
            b = min(n_tok, a + chunk_tokens)
            k = keep[a:b]
            if not bool(k.any()):
                continue
            x = torch.from_numpy(np.array(self.acts[a:b], dtype=np.float32))[k]
            vals, idx = encode_sparse(sae, x)
            rows = pid[a:b][k][:, None].expand_as(idx)
            out.index_put_((rows.reshape(-1), idx.reshape(-1)), vals.reshape(-1).double(), accumulate=True)
        counts = np.add.reduceat(self.keep.astype(np.int64), self.offsets[:-1]) if n_tok else np.zeros(len(self))
        counts = torch.as_tensor(np.maximum(counts, 1), dtype=torch.float64)
        res = (out / counts[:, None]).float().numpy()
        if cache:
            self._codes[key] = res
        return res


def _pool_key(lm, suite: TaskSuite, dtype: str) -> dict:
    desc = lm.describe() if hasattr(lm, "describe") else {"name": getattr(lm, "name", type(lm).__name__)}
    return {"lm": desc, "hook": getattr(lm, "hook_name", None), "suite": suite.key(), "dtype": dtype,
            "prepend_bos": bool(getattr(lm, "prepend_bos", False))}


@torch.no_grad()
def harvest_pool(lm, suite: TaskSuite, store=None, *, dtype: str = "float16", batch_size: int = 16,
                 progress: bool = True) -> PassagePool:
    """Run every passage of ``suite`` through ``lm`` up to the hook, once; store it when given a store.

    ``dtype`` is the on-disk dtype of the per-token activations (``float16`` halves the disk use;
    pooled residuals are always computed in float32 from the float32 activations).
    """
    cfg = _pool_key(lm, suite, dtype)
    if store is not None and store.exists("probe_pool", cfg):
        return load_pool(store.path("probe_pool", cfg), suite)
    bos = bos_id(lm)
    seqs = [([bos] + list(t[: suite.ctx_len - 1])) if bos is not None and (not t or t[0] != bos)
            else list(t[: suite.ctx_len]) for t in suite.tokens]
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    n_tok = int(offsets[-1])
    d = int(getattr(lm, "d_model"))
    special = special_ids_of(lm)
    tokens_flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]) if seqs else np.zeros(0, np.int32)
    keep = keep_mask(tokens_flat, special).numpy() if n_tok else np.zeros(0, bool)
    pooled = np.zeros((len(seqs), d), dtype=np.float32)
    np_dtype = np.dtype(dtype)

    def fill(acts_arr):
        order = np.argsort(-lens, kind="stable")
        it = range(0, len(order), batch_size)
        if progress:
            try:
                from tqdm.auto import tqdm

                it = tqdm(it, desc=f"harvest {suite.family} passages", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        for a in it:
            ids = order[a : a + batch_size]
            batch, blens = right_pad([seqs[i] for i in ids], pad_id(lm))
            r = lm.resid(batch).float().cpu()
            for row, i in enumerate(ids):
                x = r[row, : blens[row]]
                acts_arr[offsets[i] : offsets[i + 1]] = x.numpy().astype(np_dtype)
                k = torch.as_tensor(keep[offsets[i] : offsets[i + 1]])
                pooled[i] = x[k].mean(0).numpy() if bool(k.any()) else 0.0

    if store is None:
        acts = np.zeros((n_tok, d), dtype=np_dtype)
        fill(acts)
        return PassagePool(acts, tokens_flat, offsets, keep, pooled, suite)
    with store.writing("probe_pool", cfg) as tmp:
        acts = np.lib.format.open_memmap(tmp / "acts.npy", mode="w+", dtype=np_dtype, shape=(n_tok, d))
        fill(acts)
        acts.flush()
        del acts
        np.save(tmp / "tokens.npy", tokens_flat)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "keep.npy", keep)
        np.save(tmp / "pooled_resid.npy", pooled)
        suite.passages.to_pickle(tmp / "passages.pkl")
        pd.to_pickle(suite, tmp / "suite.pkl")
    return load_pool(store.path("probe_pool", cfg), suite)


def load_pool(path: Path, suite: TaskSuite | None = None) -> PassagePool:
    path = Path(path)
    if suite is None:
        suite = pd.read_pickle(path / "suite.pkl")
    return PassagePool(np.load(path / "acts.npy", mmap_mode="r"), np.load(path / "tokens.npy"),
                       np.load(path / "offsets.npy"), np.load(path / "keep.npy"), np.load(path / "pooled_resid.npy"),
                       suite, path)
