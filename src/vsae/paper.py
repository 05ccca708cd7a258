"""The paper's reported numbers, read from ``data/paper_results.csv`` (never typed into a chapter).

Citation: Z. Baker and Y. Li, *Analysis of Variational Sparse Autoencoders*, arXiv:2509.22994 (2025);
values from the authors' repository ZachData/SPAR-Variational-Sparse-Autoencoders @ 8e1581a.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from .paths import REPO_ROOT

CITATION = (
    "Baker & Li, Analysis of Variational Sparse Autoencoders, arXiv:2509.22994 (2025); "
    "authors' SAE Bench tables at ZachData/SPAR-Variational-Sparse-Autoencoders@8e1581a"
)
PAPER_CSV = REPO_ROOT / "data" / "paper_results.csv"
ARCH_LABEL = {"topk": "TopK", "vsae": "vSAE"}


def run_label(df: pd.DataFrame, k: str = "sae_k") -> pd.Series:
    """Each row's run as the book's tables and the paper's name it: ``"TopK k=256"``, from its
    ``architecture`` and its k column ``k`` (``sae_k`` in our eval tables, ``k`` in the paper's)."""
    return df.architecture.map(ARCH_LABEL) + " k=" + df[k].astype(str)


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    if not PAPER_CSV.exists():
        raise FileNotFoundError(f"{PAPER_CSV} is missing: it ships with the repository; restore it with git checkout")
    df = pd.read_csv(PAPER_CSV)
    df["n_ablated"] = df["n_ablated"].astype("Int64")
    return df


def paper_results(eval: str | None = None, model: str = "pythia-70m-deduped") -> pd.DataFrame:
    """Tidy paper values: columns model, eval, metric, architecture, k, n_ablated, value."""
    df = _load()
    df = df[df["model"] == model]
    if eval is not None:
        if eval not in set(df["eval"]):
            raise ValueError(f"unknown eval {eval!r}; the paper reports {sorted(set(df['eval']))}")
        df = df[df["eval"] == eval]
    return df.reset_index(drop=True).copy()


def paper_value(eval: str, metric: str, architecture: str, k: int, n_ablated: int | None = None,
                model: str = "pythia-70m-deduped") -> float:
    """One reported number (raises ``KeyError`` if the paper does not report it)."""
    df = paper_results(eval, model)
    sel = (df.metric == metric) & (df.architecture == architecture) & (df.k == k)
    if n_ablated is not None:
        sel &= df.n_ablated == n_ablated
    hit = df[sel]
    if len(hit) != 1:
        raise KeyError(f"paper reports no single value for {eval}/{metric}/{architecture}/k={k}/N={n_ablated}")
    return float(hit["value"].iloc[0])


def core_table(model: str = "pythia-70m-deduped") -> pd.DataFrame:
    """The paper's core table: metrics as rows, one column per SAE (e.g. ``TopK k=64``)."""
    df = paper_results("core", model)
    df["sae"] = run_label(df, "k")
    order = [f"{ARCH_LABEL[a]} k={k}" for a in ("topk", "vsae") for k in sorted(df.k.unique())]
    return df.pivot(index="metric", columns="sae", values="value")[order]


# --------------------------------------------------------------------------------------------
# Like for like: our numbers computed the way the paper's were
# --------------------------------------------------------------------------------------------

#: paper metric -> our column computed with the same formula. The paper's explained variance comes
#: from SAE Bench 0.4.2's coded "corrected" formula (variance taken about zero; see
#: :mod:`vsae.evals.core`), not from the conventional one our ``explained_variance`` uses.
COMPARABLE = {"explained_variance": "explained_variance_saebench"}

#: axis and table labels of the metrics set beside the paper's
METRIC_LABEL = {
    "explained_variance": "explained variance (SAE Bench's formula)",
    "explained_variance_saebench": "explained variance (SAE Bench's formula)",
    "explained_variance_conventional": "explained variance (conventional)",
    "ce_loss_score": "CE-loss score",
    "kl_div_score": "KL-divergence score",
    "cossim": "cosine similarity",
    "frac_alive": "fraction of latents alive",
    "l0": "L0",
}


def comparable(ours: pd.DataFrame) -> pd.DataFrame:
    """``ours`` with every column the paper reports holding our value *computed the paper's way*.

    ``explained_variance`` becomes SAE Bench's coded formula; our conventional value is kept as
    ``explained_variance_conventional``. Use this frame wherever a paper value sits beside ours.
    """
    out = ours.copy()
    for paper_col, our_col in COMPARABLE.items():
        if our_col in out.columns:
            if paper_col in out.columns:
                out[f"{paper_col}_conventional"] = out[paper_col]
            out[paper_col] = out[our_col]
    return out


def run_tables(model: str = "pythia-70m-deduped") -> dict[str, pd.DataFrame]:
    """The paper's tables in the per-run shape :func:`vsae.verdicts.run_table` reads (one run per
    configuration, no seed): ``core``, ``probing``, ``scr`` and ``tpp``. The paper's explained
    variance is stored under ``explained_variance_saebench``, the formula that produced it."""
    core = paper_results("core", model).pivot_table(index=["architecture", "k"], columns="metric",
                                                    values="value").reset_index()
    core = core.rename(columns={src: dst for src, dst in COMPARABLE.items()})
    pr = paper_results("sparse_probing", model).pivot_table(index=["architecture", "k"], columns="metric",
                                                           values="value").reset_index()
    scr = paper_results("scr", model).rename(columns={"n_ablated": "n", "value": "scr_metric"})
    tpp = paper_results("tpp", model).pivot_table(index=["architecture", "k", "n_ablated"], columns="metric",
                                                  values="value").reset_index().rename(columns={"n_ablated": "n"})
    return {"core": core, "probing": pr, "scr": scr[["architecture", "k", "n", "scr_metric"]], "tpp": tpp}


# --------------------------------------------------------------------------------------------
# Where this book's setting departs from the paper's
# --------------------------------------------------------------------------------------------

#: the paper's setting (paper-recipe §2 and §4: the authors' code at 8e1581a)
PAPER_SETTING = {
    "model": "Pythia-70M-deduped (bf16 weights, base model)",
    "layer": "3 of 6 (resid_post), relative depth 0.50",
    "d_model / d_sae": "512 / 8,192 (16 × d_model)",
    "training tokens": "1,920,192 (10,001 steps × 192)",
    "batch": "192 tokens",
    "training dtype": "bfloat16 parameters and autocast (pure bf16)",
    "training data": "TinyStories",
    "evaluation data": "SAE Bench defaults (core: 2,000 × 16 contexts of 128 tokens of code/web text)",
    "fraction-alive tokens": "about 4.1M",
    "CE/KL contexts": "200 × 16 = 3,200",
    "probing tasks": "SAE Bench's datasets (bias in bios, Amazon reviews, Europarl, GitHub code, AG News)",
    "SCR / TPP data": "bias in bios and Amazon reviews, 4,000 / 1,000 passages per class",
    "seeds": "1 per configuration",
}


def deviations(profile, lm_info: dict | None = None) -> pd.DataFrame:
    """One row per aspect: the paper's setting, this profile's, and whether they differ.

    Generated from the profile (and ``lm_info = LanguageModel.describe()`` when given) so it cannot
    drift from what was run.
    """
    p = profile
    n_layers = (lm_info or {}).get("n_layers")
    d_model = (lm_info or {}).get("d_model")
    lm_text = {"smollm2-135m": "SmolLM2-135M-Instruct, Q4_1-quantised GGUF dequantised to fp32 (instruction-tuned)",
               "pythia-70m-deduped": "Pythia-70M-deduped (Hugging Face Hub)",
               "pythia-70m-random": "Pythia-70M architecture with random weights (plumbing only)"}.get(p.lm, p.lm)
    depth = f"{p.layer} of {n_layers} (resid_post), relative depth {p.layer / n_layers:.2f}" if n_layers else f"{p.layer}"
    dsae = f"{d_model} / {p.expansion * d_model:,} ({p.expansion} × d_model)" if d_model else f"{p.expansion} × d_model"
    probe = {"offline": "offline analogues built from installed corpora (chapter 5)",
             "smoke": "tiny synthetic tasks", "paper": PAPER_SETTING["probing tasks"]}.get(p.probe_tasks, p.probe_tasks)
    ours = {
        "model": lm_text + f", LM dtype {p.lm_dtype}",
        "layer": depth,
        "d_model / d_sae": dsae,
        "training tokens": f"{p.n_train_tokens:,} ({p.steps:,} steps × {p.batch_size})",
        "batch": f"{p.batch_size} tokens",
        "training dtype": "float32 (SAE parameters, activations and Adam)",
        "training data": {"offline": "public-domain text installed by package name (chapter 2)",
                          "tinystories": "TinyStories"}.get(p.train_corpus, p.train_corpus),
        "evaluation data": f"held-out documents of the {p.eval_corpus} corpus",
        "fraction-alive tokens": f"{p.n_eval_tokens:,}",
        "CE/KL contexts": f"{p.n_ce_contexts:,} of {p.ctx_len} tokens",
        "probing tasks": probe,
        "SCR / TPP data": f"{probe}; {p.n_probe_train:,} / {p.n_probe_test:,} passages per class",
        "seeds": f"{len(p.seeds)} per configuration ({', '.join(map(str, p.seeds))})",
    }
    rows = [{"aspect": k, "paper": PAPER_SETTING[k], f"this book ({p.name})": ours[k],
             "differs": PAPER_SETTING[k] != ours[k]} for k in PAPER_SETTING]
    return pd.DataFrame(rows)
