"""Task definitions of the probing / SCR / TPP suites, their binary probing views, and how a suite is
stored (JSON + npz + Parquet).

A :class:`TaskSuite` holds a list of passages (token lists of at most ``ctx_len`` tokens, with their
source document and metadata) and three families of task definitions over them, each a set of
classes whose train and test examples are *indices into the passage list*:

* ``probing``: sparse-probing datasets (two classes: one binary probe; more: one-vs-rest per class,
  negatives sampled evenly from the other classes, as SAE Bench's ``prepare_probe_data``);
* ``scr``: spurious-correlation pairs, a target attribute crossed with a spurious one, in SAE
  Bench's six sets (spurious +/-, target +/-, and the perfectly confounded "biased" +/-);
* ``tpp``: multi-class sets for targeted probe perturbation.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...files import atomic_write, atomic_write_json

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
    """The corpus has too few passages for a task at the requested size."""
    pass


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


# -- persistence: JSON + npz + Parquet, no pickles ------------------------------------------

#: file names of a saved suite
SUITE_FILES = ("suite.json", "splits.npz", "tokens.npz", "passages.parquet")


def _split_items(suite: "TaskSuite"):
    for kind, items in (("probing", suite.probing), ("tpp", suite.tpp)):
        for i, d in enumerate(items):
            for c, (tr, te) in d.classes.items():
                yield f"{kind}|{i}|{c}", tr, te
    for i, p in enumerate(suite.scr):
        for c, (tr, te) in p.sets.items():
            yield f"scr|{i}|{c}", tr, te


def save_suite(suite: "TaskSuite", folder: Path) -> None:
    """Write ``suite`` into ``folder``: metadata and task definitions as JSON, every index array
    (dtype kept) in ``splits.npz``, the passages' tokens flat with offsets, the passage table as Parquet."""
    folder = Path(folder)
    meta = {
        "format": 1, "family": suite.family, "ctx_len": suite.ctx_len, "seed": suite.seed,
        "n_train": suite.n_train, "n_test": suite.n_test, "notes": list(suite.notes),
        "probing": [{"name": d.name, "family": d.family, "description": d.description, "classes": list(d.classes)}
                    for d in suite.probing],
        "tpp": [{"name": d.name, "family": d.family, "description": d.description, "classes": list(d.classes)}
                for d in suite.tpp],
        "scr": [{"name": p.name, "family": p.family, "description": p.description, "target": list(p.target),
                 "spurious": list(p.spurious), "sets": list(p.sets)} for p in suite.scr],
    }
    arrays = {}
    for key, tr, te in _split_items(suite):
        arrays[key + "|train"], arrays[key + "|test"] = np.asarray(tr), np.asarray(te)
    lens = np.array([len(t) for t in suite.tokens], dtype=np.int64)
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in suite.tokens]) if suite.tokens else np.zeros(0, np.int64)
    atomic_write(folder / "splits.npz", lambda f: np.savez(f, **arrays))
    atomic_write(folder / "tokens.npz", lambda f: np.savez(f, flat=flat, offsets=np.r_[0, np.cumsum(lens)]))
    atomic_write(folder / "passages.parquet", lambda f: suite.passages.to_parquet(f))
    atomic_write_json(folder / "suite.json", meta)


def load_suite(folder: Path) -> "TaskSuite":
    """Read a suite written by :func:`save_suite`; a suite stored by an older version as a pickle
    is read once and rewritten in this format."""
    folder = Path(folder)
    if not (folder / "suite.json").exists():
        return _migrate_legacy_suite(folder)
    meta = json.loads((folder / "suite.json").read_text())
    with np.load(folder / "splits.npz") as z:
        arr = {k: z[k] for k in z.files}
    with np.load(folder / "tokens.npz") as z:
        flat, off = z["flat"], z["offsets"]
    tokens = [flat[off[i]: off[i + 1]].tolist() for i in range(len(off) - 1)]

    def split(key):
        return arr[key + "|train"], arr[key + "|test"]

    probing = [ProbeDataset(d["name"], d["family"], d["description"], {c: split(f"probing|{i}|{c}") for c in d["classes"]})
               for i, d in enumerate(meta["probing"])]
    tpp = [ProbeDataset(d["name"], d["family"], d["description"], {c: split(f"tpp|{i}|{c}") for c in d["classes"]})
           for i, d in enumerate(meta["tpp"])]
    scr = [ScrPair(p["name"], p["family"], p["description"], tuple(p["target"]), tuple(p["spurious"]),
                   {c: split(f"scr|{i}|{c}") for c in p["sets"]}) for i, p in enumerate(meta["scr"])]
    return TaskSuite(meta["family"], meta["ctx_len"], meta["seed"], meta["n_train"], meta["n_test"],
                     pd.read_parquet(folder / "passages.parquet"), tokens, probing, scr, tpp, list(meta["notes"]))


def _migrate_legacy_suite(folder: Path) -> "TaskSuite":
    legacy = folder / "suite.pkl"
    if not legacy.exists():
        raise RuntimeError(f"{folder} holds no task suite (no suite.json); delete it and re-run to rebuild it")
    try:
        suite = pd.read_pickle(legacy)
    except Exception as e:
        raise RuntimeError(f"the task suite in {folder} was stored by an older version and cannot be read here "
                           f"({e}); delete {folder} and re-run to rebuild it") from e
    save_suite(suite, folder)
    legacy.unlink()
    (folder / "passages.pkl").unlink(missing_ok=True)
    return suite
