"""The ``paper`` task family: SAE Bench's Hugging Face datasets, sizes and class choices (its
``chosen_classes_per_dataset``, SCR class pairs and TPP classes). Needs the Hub and the ``datasets``
package; fails fast, with a message naming the ``offline`` profile, when the Hub is unreachable.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
import pandas as pd

from ...hub import HubUnavailableError, hub_reachable
from .suite import InsufficientData, ProbeDataset, ScrPair, TaskSuite

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


def _require_hub():
    try:
        import datasets  # noqa: F401
    except ImportError as e:  # pragma: no cover - datasets is pinned
        raise RuntimeError("the 'paper' probing tasks need the `datasets` package; use the 'offline' profile") from e
    ok, why = hub_reachable(path="api/datasets/LabHC/bias_in_bios")
    if not ok:
        raise HubUnavailableError(
            f"the 'paper' probing/SCR/TPP tasks load SAE Bench's datasets from the Hugging Face Hub, which is not "
            f"reachable here ({why}). Use the 'offline' profile (probe_tasks='offline'), whose tasks "
            f"are built from the installed offline corpus."
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
