"""SAE Bench's spurious correlation removal (SCR) and targeted probe perturbation (TPP).

Both follow ``sae_bench/evals/scr_and_tpp/main.py``:

* Linear probes (torch: AdamW lr 1e-3, batch 16, 20 epochs, L1 penalty 1e-3, early stopping with
  patience 20, best test epoch kept) are trained on the **mean-pooled residual stream** and never
  retrained.
* A latent's attribution to a probe is ``(mean pooled code on positives - on negatives) * (w . W_dec[i])``:
  the change of the probe's logit if the latent were removed, on average. SCR takes its absolute
  value; TPP clamps the mean difference at 0 first (only latents more active on the class count).
* Ablating the top-N latents means replacing every token's residual ``x`` by
  ``decode(f with those latents zeroed) + (x - decode(f))``: the SAE's error term is kept, so the
  residual changes by exactly ``-sum_i f_i W_dec[i]``. Because the decoder is affine and the probes
  see the passage mean, the ablated pooled residual is ``mean(x) - mean(f)[top] @ W_dec[top]``, which is
  what we compute (SAE Bench computes it token by token; its sum also runs over masked positions,
  whose zeroed activations it still encodes, a small difference we do not reproduce).

SCR (one target x spurious pair; SAE Bench: profession x gender). Three probes: ``spurious``
(balanced over the target), ``target`` (balanced over the spurious attribute) and ``biased`` (trained
where the two coincide). Direction 1 ablates the top-N latents for the *spurious* probe and scores
the biased probe on target data; direction 2 ablates those for the *target* probe and scores it on
spurious data. ``S = (A_ablated - A_biased) / (A_oracle - A_biased)``, the oracle being the probe
trained on the attribute scored; ``scr_metric`` takes the direction in which the biased probe is
worse on clean data (the attribute it did not learn). We also record the oracle check: the oracle
must beat the biased probe on that attribute by a clear margin, else ``S`` means nothing.

TPP (a multi-class set): one-vs-rest probes per class; ablating class i's top-N latents should hurt
probe i (``intended``) and not the others (``unintended``: mean accuracy drop of the other probes);
``total = intended - unintended``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .common import LinearProbe, d_sae_of, decoder_matrix, few_threads, train_torch_probe
from .tasks import BinaryTask, PassagePool, ProbeDataset, ScrPair, binary_tasks


@dataclass(frozen=True)
class ScrTppConfig:
    n_values: tuple[int, ...] = (2, 5, 10, 20, 50, 100, 500)
    probe_epochs: int = 20
    probe_lr: float = 1e-3
    probe_batch_size: int = 16
    probe_l1: float = 1e-3
    probe_patience: int = 20
    seed: int = 42
    #: SCR: the oracle must beat the biased probe by this much on the scored attribute
    min_oracle_margin: float = 0.05
    #: SCR aggregate ("ALL" rows) over the pairs that pass the oracle check only
    aggregate_valid_only: bool = True

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["n_values"] = list(self.n_values)
        return d


# --------------------------------------------------------------------------------------------
# Building blocks (pure; tested directly)
# --------------------------------------------------------------------------------------------


def latent_effects(codes_pos: np.ndarray, codes_neg: np.ndarray, probe_w, W_dec, mode: str) -> np.ndarray:
    """Attribution of each latent to a probe: ``(mean_pos - mean_neg) * (W_dec @ w)``.

    ``mode="scr"``: absolute value. ``mode="tpp"``: the mean difference is clamped at 0 first.
    """
    diff = np.asarray(codes_pos, np.float64).mean(0) - np.asarray(codes_neg, np.float64).mean(0)
    if mode == "tpp":
        diff = np.clip(diff, 0.0, None)
    dot = np.asarray(W_dec, np.float64) @ np.asarray(probe_w, np.float64)
    eff = diff * dot
    if mode == "scr":
        eff = np.abs(eff)
    elif mode != "tpp":
        raise ValueError("mode must be 'scr' or 'tpp'")
    return eff


def select_top_n(effects: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` latents of largest effect among those with a non-zero effect (SAE Bench's rule)."""
    effects = np.asarray(effects)
    n = min(int(n), effects.size)
    k = min(n, int(np.count_nonzero(effects)))
    if k == 0:
        return np.zeros(0, dtype=int)
    return np.argsort(-effects, kind="stable")[:k]


def ablate_pooled(pooled_resid: np.ndarray, pooled_codes: np.ndarray, W_dec: np.ndarray, latents,
                  rows=None) -> np.ndarray:
    """Mean-pooled residual after zero-ablating ``latents`` with the SAE error term kept; of the
    passages ``rows`` only when given (``ablate_pooled(X, Z, W, L, rows)`` equals
    ``ablate_pooled(X[rows], Z[rows], W, L)`` without copying whole rows of the codes)."""
    resid = pooled_resid if rows is None else np.asarray(pooled_resid)[rows]
    latents = np.asarray(latents, dtype=int)
    if latents.size == 0:
        return np.asarray(resid, np.float32)
    # select the ablated entries before widening to float64 (exact either way: float32 -> float64 is
    # lossless), so a call costs O(n * |latents|) instead of converting the whole [n, d_sae] codes
    Z = np.asarray(pooled_codes)
    codes = (Z[:, latents] if rows is None else Z[np.ix_(np.asarray(rows), latents)]).astype(np.float64)
    return (np.asarray(resid, np.float64) - codes @ np.asarray(W_dec)[latents].astype(np.float64)).astype(np.float32)


def scr_score(ablated_acc: float, biased_acc: float, oracle_acc: float) -> float:
    """``(A_ablated - A_biased) / (A_oracle - A_biased)`` (NaN when the oracle ties the biased probe)."""
    den = oracle_acc - biased_acc
    return float((ablated_acc - biased_acc) / den) if abs(den) > 1e-12 else float("nan")


def _acc(probe: LinearProbe, X: np.ndarray, y: np.ndarray) -> float:
    # one thread: a [n, d] @ [d] probe is far too small for intra-op parallelism; on two cores busy
    # with other work its synchronisation made this call ~1.6 ms instead of ~0.07 (thousands per SAE)
    with few_threads(1):
        return probe.accuracy(torch.as_tensor(np.asarray(X, np.float32)), torch.as_tensor(np.asarray(y)))


def _train(cfg: ScrTppConfig, Xtr, ytr, Xte, yte, seed_offset: int = 0) -> tuple[LinearProbe, float]:
    return train_torch_probe(
        torch.as_tensor(np.asarray(Xtr, np.float32)), torch.as_tensor(np.asarray(ytr)),
        torch.as_tensor(np.asarray(Xte, np.float32)), torch.as_tensor(np.asarray(yte)),
        epochs=cfg.probe_epochs, lr=cfg.probe_lr, batch_size=cfg.probe_batch_size, l1_penalty=cfg.probe_l1,
        patience=cfg.probe_patience, seed=cfg.seed + seed_offset,
    )


def _pair_xy(sets: dict, pos: str, neg: str, j: int) -> tuple[np.ndarray, np.ndarray]:
    p, n = sets[pos][j], sets[neg][j]
    return np.r_[p, n].astype(int), np.r_[np.ones(len(p)), np.zeros(len(n))].astype(int)


# --------------------------------------------------------------------------------------------
# SCR
# --------------------------------------------------------------------------------------------


@dataclass
class ScrProbes:
    pair: ScrPair
    probes: dict[str, LinearProbe]
    #: clean accuracies: spurious / target / biased on their own data, biased on target / spurious data
    clean: dict[str, float]
    data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def check(self, min_margin: float) -> dict:
        c = self.clean
        m1 = c["target"] - c["biased_on_target"]
        m2 = c["spurious"] - c["biased_on_spurious"]
        d1 = c["biased_on_target"] < c["biased_on_spurious"] or c["biased_on_target"] == c["biased_on_spurious"]
        margin = m1 if d1 else m2
        return {"pair": self.pair.name, "target_probe_acc": c["target"], "spurious_probe_acc": c["spurious"],
                "biased_probe_acc": c["biased"], "biased_on_target": c["biased_on_target"],
                "biased_on_spurious": c["biased_on_spurious"], "margin_dir1": m1, "margin_dir2": m2,
                "selected_dir": 1 if d1 else 2, "oracle_margin": margin, "margin_ok": bool(margin >= min_margin)}


def train_scr_probes(pool: PassagePool, pair: ScrPair, cfg: ScrTppConfig = ScrTppConfig()) -> ScrProbes:
    """The three residual-stream probes of one SCR pair and their clean accuracies."""
    X = pool.pooled_resid
    probes, clean, data = {}, {}, {}
    for off, (name, pos, neg) in enumerate((("spurious", "spurious_pos", "spurious_neg"),
                                            ("target", "target_pos", "target_neg"),
                                            ("biased", "biased_pos", "biased_neg"))):
        itr, ytr = _pair_xy(pair.sets, pos, neg, 0)
        ite, yte = _pair_xy(pair.sets, pos, neg, 1)
        probes[name], _ = _train(cfg, X[itr], ytr, X[ite], yte, seed_offset=off)
        clean[name] = _acc(probes[name], X[ite], yte)
        data[name] = (itr, ytr, ite, yte)
    clean["biased_on_target"] = _acc(probes["biased"], X[data["target"][2]], data["target"][3])
    clean["biased_on_spurious"] = _acc(probes["biased"], X[data["spurious"][2]], data["spurious"][3])
    return ScrProbes(pair, probes, clean, data)


def scr_oracle_check(pool: PassagePool, pairs: Sequence[ScrPair] | None = None, cfg: ScrTppConfig = ScrTppConfig(),
                     probes: Sequence[ScrProbes] | None = None) -> pd.DataFrame:
    """Per pair: clean probe accuracies and whether the oracle beats the biased probe clearly."""
    if probes is None:
        pairs = pool.suite.scr if pairs is None else pairs
        probes = [train_scr_probes(pool, p, cfg) for p in pairs]
    return pd.DataFrame([p.check(cfg.min_oracle_margin) for p in probes])


def _per_sae(saes: dict[str, Any], pool: PassagePool):
    """``(name, pooled codes, decoder matrix, d_sae)`` of each SAE in turn: what SCR and TPP start from."""
    for name, sae in saes.items():
        yield name, pool.pooled_codes(sae), decoder_matrix(sae).numpy(), d_sae_of(sae)


def run_scr(saes: dict[str, Any], pool: PassagePool, pairs: Sequence[ScrPair] | None = None,
            cfg: ScrTppConfig = ScrTppConfig(), probes: Sequence[ScrProbes] | None = None) -> pd.DataFrame:
    """SCR for every SAE, pair and N: one row each, plus ``pair == "ALL"`` means over pairs.

    Columns: ``scr_dir1``, ``scr_dir2``, ``scr_metric`` (SAE Bench's ``scr_dir{1,2}_threshold_N`` and
    ``scr_metric_threshold_N``), the ablated accuracies, and the pair's oracle check.
    """
    if probes is None:
        pairs = pool.suite.scr if pairs is None else pairs
        probes = [train_scr_probes(pool, p, cfg) for p in pairs]
    X = pool.pooled_resid
    rows = []
    for name, Z, W, d_sae in _per_sae(saes, pool):
        for pr in probes:
            chk = pr.check(cfg.min_oracle_margin)
            s, c = pr.pair.sets, pr.clean
            eff = {
                1: latent_effects(Z[s["spurious_pos"][0]], Z[s["spurious_neg"][0]], pr.probes["spurious"].weight, W, "scr"),
                2: latent_effects(Z[s["target_pos"][0]], Z[s["target_neg"][0]], pr.probes["target"].weight, W, "scr"),
            }
            # dir 1 scores on target data against the target oracle; dir 2 on spurious data
            evald = {1: (pr.data["target"][2], pr.data["target"][3], c["target"], c["biased_on_target"]),
                     2: (pr.data["spurious"][2], pr.data["spurious"][3], c["spurious"], c["biased_on_spurious"])}
            for n in cfg.n_values:
                r = {"sae": name, "pair": pr.pair.name, "n": int(n)}
                for dr in (1, 2):
                    top = select_top_n(eff[dr], min(n, d_sae))
                    idx, y, oracle, biased = evald[dr]
                    a = _acc(pr.probes["biased"], ablate_pooled(X, Z, W, top, rows=idx), y)
                    r[f"scr_dir{dr}"] = scr_score(a, biased, oracle)
                    r[f"ablated_acc_dir{dr}"] = a
                    r[f"n_ablated_dir{dr}"] = int(len(top))
                r["scr_metric"] = r[f"scr_dir{chk['selected_dir']}"]
                r.update({k: v for k, v in chk.items() if k != "pair"})
                rows.append(r)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    use = df[df["margin_ok"]] if cfg.aggregate_valid_only else df
    if len(use):
        agg = use.groupby(["sae", "n"], as_index=False).agg(
            scr_dir1=("scr_dir1", "mean"), scr_dir2=("scr_dir2", "mean"), scr_metric=("scr_metric", "mean"),
            n_pairs=("pair", "nunique"))
    else:  # no pair passes the oracle check: the aggregate is undefined
        agg = df[["sae", "n"]].drop_duplicates().reset_index(drop=True)
        for col in ("scr_dir1", "scr_dir2", "scr_metric"):
            agg[col] = np.nan
        agg["n_pairs"] = 0
    agg["pair"] = "ALL"
    return pd.concat([df, agg], ignore_index=True)


# --------------------------------------------------------------------------------------------
# TPP
# --------------------------------------------------------------------------------------------


@dataclass
class TppProbes:
    dataset: ProbeDataset
    tasks: list[BinaryTask]
    probes: dict[str, LinearProbe]
    clean: dict[str, float]


def train_tpp_probes(pool: PassagePool, ds: ProbeDataset, cfg: ScrTppConfig = ScrTppConfig()) -> TppProbes:
    X = pool.pooled_resid
    tasks = binary_tasks(ds, cfg.seed)
    probes, clean = {}, {}
    for off, t in enumerate(tasks):
        probes[t.name], _ = _train(cfg, X[t.train_idx], t.train_y, X[t.test_idx], t.test_y, seed_offset=off)
        clean[t.name] = _acc(probes[t.name], X[t.test_idx], t.test_y)
    return TppProbes(ds, tasks, probes, clean)


def tpp_scores(clean: dict[str, float], ablated: dict[str, float], target: str) -> dict[str, float]:
    """TPP for one ablated class: the accuracy drop of its own probe (``tpp_intended``), the mean drop
    of every other class's probe (``tpp_unintended``, 0 with no other class) and their difference
    (``tpp_total``). ``clean`` / ``ablated``: each class's probe accuracy before / after ablating the
    ``target`` class's top-N latents (SAE Bench's ``create_tpp_plotting_dict``, one class and N)."""
    drops = {c: clean[c] - ablated[c] for c in clean}
    others = [v for c, v in drops.items() if c != target]
    unintended = float(np.mean(others)) if others else 0.0
    return {"tpp_total": drops[target] - unintended, "tpp_intended": drops[target], "tpp_unintended": unintended}


def run_tpp(saes: dict[str, Any], pool: PassagePool, datasets: Sequence[ProbeDataset] | None = None,
            cfg: ScrTppConfig = ScrTppConfig(), probes: Sequence[TppProbes] | None = None) -> pd.DataFrame:
    """TPP for every SAE, dataset, class and N.

    One row per (sae, dataset, class, n) with ``tpp_total``, ``tpp_intended`` and ``tpp_unintended``
    (SAE Bench's ``tpp_threshold_N_total_metric``, ``..._intended_diff_only``,
    ``..._unintended_diff_only``), plus ``class == "ALL"`` rows (mean over classes) and
    ``dataset == "ALL"`` rows (mean over datasets).
    """
    if probes is None:
        datasets = pool.suite.tpp if datasets is None else datasets
        probes = [train_tpp_probes(pool, d, cfg) for d in datasets]
    X = pool.pooled_resid
    rows = []
    for name, Z, W, d_sae in _per_sae(saes, pool):
        for tp in probes:
            eff = {}
            for t in tp.tasks:
                pos = t.train_idx[t.train_y == 1]
                neg = t.train_idx[t.train_y == 0]
                eff[t.name] = latent_effects(Z[pos], Z[neg], tp.probes[t.name].weight, W, "tpp")
            for n in cfg.n_values:
                for t in tp.tasks:
                    top = select_top_n(eff[t.name], min(n, d_sae))
                    ablated = {u.name: _acc(tp.probes[u.name], ablate_pooled(X, Z, W, top, rows=u.test_idx), u.test_y)
                               for u in tp.tasks}
                    rows.append({"sae": name, "dataset": tp.dataset.name, "class": t.name, "n": int(n),
                                 **tpp_scores(tp.clean, ablated, t.name), "n_ablated": int(len(top)),
                                 "clean_acc": tp.clean[t.name]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    cols = ["tpp_total", "tpp_intended", "tpp_unintended"]
    per_ds = df.groupby(["sae", "dataset", "n"], as_index=False)[cols].mean()
    per_ds["class"] = "ALL"
    overall = per_ds.groupby(["sae", "n"], as_index=False)[cols].mean()
    overall["dataset"], overall["class"] = "ALL", "ALL"
    return pd.concat([df, per_ds, overall], ignore_index=True)


# --------------------------------------------------------------------------------------------
# Aggregations as SAE Bench codes them (for every comparison with the paper)
# --------------------------------------------------------------------------------------------

#: SAE Bench sets a direction's S to 0 when its denominator (oracle minus biased accuracy) is below this
SAEBENCH_MIN_DENOMINATOR = 0.001


def scr_saebench_score(ablated_acc: float, biased_acc: float, oracle_acc: float) -> float:
    """``S`` as SAE Bench computes it: 0 when ``oracle - biased < 0.001`` (a signed test), else the ratio."""
    den = oracle_acc - biased_acc
    return 0.0 if den < SAEBENCH_MIN_DENOMINATOR else float((ablated_acc - biased_acc) / den)


def scr_saebench(scr: pd.DataFrame) -> pd.DataFrame:
    """SCR under SAE Bench's own rules, from the per-pair rows of :func:`run_scr`.

    Per pair and N: ``scr_dir{1,2}`` by :func:`scr_saebench_score`; ``scr_metric`` is direction 1 when
    the biased probe is worse on the target than on the spurious attribute, direction 2 when it is
    better, and their mean on a tie. The ``pair == "ALL"`` rows average **all** pairs (SAE Bench drops
    none; :func:`run_scr`'s own aggregate keeps only pairs that pass the oracle check). Returns the
    per-pair rows followed by the ``ALL`` rows, with ``aggregation = "saebench"``.
    """
    pairs = scr[scr["pair"] != "ALL"].copy()
    if pairs.empty:
        return pairs.assign(aggregation="saebench")
    d1 = [scr_saebench_score(a, b, o) for a, b, o in
          zip(pairs["ablated_acc_dir1"], pairs["biased_on_target"], pairs["target_probe_acc"])]
    d2 = [scr_saebench_score(a, b, o) for a, b, o in
          zip(pairs["ablated_acc_dir2"], pairs["biased_on_spurious"], pairs["spurious_probe_acc"])]
    pairs["scr_dir1"], pairs["scr_dir2"] = d1, d2
    bt, bs = pairs["biased_on_target"], pairs["biased_on_spurious"]
    pairs["scr_metric"] = np.where(bt < bs, pairs["scr_dir1"],
                                   np.where(bt > bs, pairs["scr_dir2"], 0.5 * (pairs["scr_dir1"] + pairs["scr_dir2"])))
    keep = [c for c in ("architecture", "sae_k", "seed", "run") if c in pairs.columns]  # per-SAE labels
    agg = pairs.groupby(["sae", "n"] + keep, as_index=False, sort=False).agg(
        scr_dir1=("scr_dir1", "mean"), scr_dir2=("scr_dir2", "mean"), scr_metric=("scr_metric", "mean"),
        n_pairs=("pair", "nunique"))
    agg["pair"] = "ALL"
    return pd.concat([pairs, agg], ignore_index=True).assign(aggregation="saebench")


def tpp_unintended_ratio(tpp_all: pd.DataFrame, max_n: int = 20, ks=None) -> float:
    """The paper's TPP ratio: mean TopK unintended effect over ``N <= max_n`` (and the given ``k``)
    divided by the vSAE's, a ratio of means (not a mean of per-N ratios). ``tpp_all``: the ``ALL``
    rows with columns ``architecture``, ``k``, ``n``, ``tpp_unintended`` (several seeds are averaged)."""
    d = tpp_all[tpp_all["n"] <= max_n]
    if ks is not None:
        d = d[d["k"].isin(list(ks))]
    m = d.groupby("architecture")["tpp_unintended"].mean()
    return float(m["topk"] / m["vsae"]) if m.get("vsae", 0) != 0 else float("nan")
