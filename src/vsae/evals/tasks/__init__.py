"""Probing, SCR and TPP task suites, and the shared *passage pool* they are views of.

- :mod:`.suite`   the task dataclasses (``TaskSuite``, ``ProbeDataset``, ``ScrPair``, ``BinaryTask``),
                  the binary probing views, and storage as JSON + npz + Parquet (no pickles)
- :mod:`.offline` the ``offline`` / ``smoke`` family, built from the project's offline corpus
- :mod:`.paper`   the ``paper`` family: SAE Bench's Hugging Face datasets (needs the Hub)
- :mod:`.pool`    every passage run through the LM once (``harvest_pool``, ``PassagePool``)

:func:`build_suite` picks the family; with a store the suite is kept under kind ``task_suite``.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from .offline import build_offline_suite, categorize, strip_email_headers
from .paper import build_paper_suite
from .pool import PassagePool, harvest_pool, load_pool
from .suite import (SCR_SETS, BinaryTask, InsufficientData, ProbeDataset, ScrPair, TaskSuite, binary_tasks,
                    load_suite, save_suite)

__all__ = [
    "SCR_SETS", "BinaryTask", "InsufficientData", "ProbeDataset", "ScrPair", "TaskSuite", "binary_tasks",
    "load_suite", "save_suite", "build_offline_suite", "categorize", "strip_email_headers", "build_paper_suite",
    "PassagePool", "harvest_pool", "load_pool", "build_suite", "suite_for_profile", "offline_documents",
]


def offline_documents() -> list:
    """The labelled offline documents the offline suites are built from: every corpus, the Python
    docs too when that optional asset is installed; email bodies without headers."""
    from vsae.data import labelled_documents

    try:
        return labelled_documents(include_docs=True, email_headers="none")
    except Exception:  # noqa: BLE001 - the docs asset is optional
        return labelled_documents(email_headers="none")


def _documents_id(documents: Sequence) -> str:
    """Identity of a document list: a hash of every document's id and length, in order."""
    h = hashlib.sha256()
    for d in documents:
        h.update(f"{d.doc_id}|{len(d.text)}\n".encode())
    return f"{len(documents)}:{h.hexdigest()[:16]}"


def build_suite(family: str, lm, *, n_train: int, n_test: int, ctx_len: int = 128, seed: int = 42,
                documents: Sequence | None = None, store=None, **kw) -> TaskSuite:
    """The task suite of a profile's ``probe_tasks`` family (``paper``, ``offline`` or ``smoke``).

    With a ``store`` the suite is kept under kind ``task_suite``, keyed by the family, sizes, seed,
    context length, the LM's name, any builder options and, for the offline families, the identity
    of the documents it was built from (so a suite built without the optional docs asset is never
    read back for a run that has it).
    """
    if family in ("offline", "smoke") and documents is None:
        documents = offline_documents()
    if store is not None:
        key = {"family": family, "n_train": n_train, "n_test": n_test, "ctx_len": ctx_len, "seed": seed,
               "lm": getattr(lm, "name", type(lm).__name__), "options": dict(kw),
               "documents": None if documents is None else _documents_id(documents)}
        if store.exists("task_suite", key):
            return load_suite(store.path("task_suite", key))
        suite = build_suite(family, lm, n_train=n_train, n_test=n_test, ctx_len=ctx_len, seed=seed,
                            documents=documents, **kw)
        with store.writing("task_suite", key) as tmp:
            save_suite(suite, tmp)
            suite.describe().to_csv(tmp / "tasks.csv", index=False)
        return suite
    to_tokens = lm.to_tokens
    dec = getattr(getattr(lm, "tokenizer", None), "decode", None)
    if family == "paper":
        return build_paper_suite(to_tokens, n_train=n_train, n_test=n_test, ctx_len=ctx_len, seed=seed, **kw)
    if family in ("offline", "smoke"):
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
