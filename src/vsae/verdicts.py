"""The verdict engine: every comparison or conclusion the book states is computed here.

A *claim* says that one group of runs has a larger (or smaller) value of a metric than another, or
that two groups are equivalent within a margin. It is evaluated **per k** on the per-seed values:

* two groups with at least two runs each: the 95% Welch interval of the difference of the means
  (:func:`vsae.stats.welch_interval`). The verdict is ``holds`` when the interval lies on the claimed
  side of zero, ``reversed`` when it lies entirely on the other side, ``not separated`` otherwise;
  an equivalence claim holds when the interval lies inside ``(-margin, margin)`` and is reversed
  when it lies entirely outside it.
* a single run on either side (the paper's tables; one-seed controls): the sign of the difference
  decides, unless ``|difference|`` is within ``noise`` (a measured noise scale, e.g. the seed
  interval of the same metric), when the verdict is ``not separated``; the row says ``one run``.

No threshold lives in a notebook: the margins below are the engine's, with their reasons, and the
tests check each verdict function on cases that hold, reverse and are not separated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import stats

HOLDS, REVERSED, NOT_SEPARATED = "holds", "reversed", "not separated"
VERDICTS = (HOLDS, REVERSED, NOT_SEPARATED)
#: the verdict of "TopK is higher than the vSAE" (``compare(topk, vsae)``) as the tables name the side
#: separated above the other
LEADER = {HOLDS: "TopK higher", REVERSED: "vSAE higher", NOT_SEPARATED: "not separated"}

#: "sparse probing is comparable": the paper's largest |Δ accuracy| over k is 0.011; we call two
#: probing accuracies equivalent when they differ by less than 0.03 (three points of accuracy)
PROBING_MARGIN = 0.03
#: single-run controls (chapter 11) are "not separated" when they differ by less than this many
#: half-widths of the headline runs' seed interval of the same metric
SINGLE_RUN_NOISE_FACTOR = 2.0


def _difference(a: Iterable[float], b: Iterable[float], confidence: float) -> dict:
    """The shared part of every verdict: each side's mean and t-interval half-width, and the
    difference ``mean(a) - mean(b)`` with its Welch interval (NaN half-width for a single run)."""
    a, b = _finite(a), _finite(b)
    out = {"mean_a": _mean(a), "mean_b": _mean(b), "n_a": int(a.size), "n_b": int(b.size),
           "half_a": stats.t_interval(a, confidence)[1], "half_b": stats.t_interval(b, confidence)[1]}
    diff = out["mean_a"] - out["mean_b"] if a.size and b.size else np.nan
    half = stats.welch_interval(a, b, confidence)[1] if a.size >= 2 and b.size >= 2 else np.nan
    return {**out, "diff": diff, "half": half, "low": diff - half, "high": diff + half, "one_run": not np.isfinite(half)}


def compare(a: Iterable[float], b: Iterable[float], expect: str = "greater", noise: float = 0.0,
            confidence: float = 0.95) -> dict:
    """Whether ``mean(a) > mean(b)`` (``expect="greater"``) or ``<`` (``"less"``), with its interval.

    Returns ``mean_a, mean_b, n_a, n_b, half_a, half_b, diff, half, low, high, verdict, one_run``.
    """
    if expect not in ("greater", "less"):
        raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")
    r = _difference(a, b, confidence)
    sign = 1.0 if expect == "greater" else -1.0
    if not np.isfinite(r["diff"]):
        v = NOT_SEPARATED
    elif not r["one_run"]:
        lo, hi = sign * r["low"], sign * r["high"]
        v = HOLDS if lo > 0 and hi > 0 else REVERSED if lo < 0 and hi < 0 else NOT_SEPARATED
    elif abs(r["diff"]) <= noise or r["diff"] == 0:
        v = NOT_SEPARATED
    else:
        v = HOLDS if sign * r["diff"] > 0 else REVERSED
    return {**r, "verdict": v}


def equivalent(a: Iterable[float], b: Iterable[float], margin: float, confidence: float = 0.95) -> dict:
    """Whether ``|mean(a) - mean(b)| < margin`` (an equivalence claim), with the Welch interval."""
    r = _difference(a, b, confidence)
    if not np.isfinite(r["diff"]):
        v = NOT_SEPARATED
    elif not r["one_run"]:
        v = (HOLDS if -margin < r["low"] and r["high"] < margin
             else REVERSED if r["low"] >= margin or r["high"] <= -margin else NOT_SEPARATED)
    else:
        v = HOLDS if abs(r["diff"]) < margin else REVERSED
    return {**r, "verdict": v}


def _finite(v) -> np.ndarray:
    v = np.asarray(list(v), dtype=float)
    return v[np.isfinite(v)]


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else float("nan")


# --------------------------------------------------------------------------------------------
# The paper's claims, per k
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims about vSAE (``a``) against TopK (``b``), checked per k."""

    key: str
    text: str
    #: column of the per-run table (:func:`run_table`)
    metric: str
    #: "greater" / "less": the claimed sign of vSAE - TopK; "equivalent": |vSAE - TopK| < margin
    expect: str
    margin: float = 0.0
    #: compare vSAE at consecutive k with each other instead of with TopK
    across_k: bool = False


CLAIMS: tuple[Claim, ...] = (
    Claim("ce", "vSAE below TopK on CE-loss score", "ce_loss_score", "less"),
    Claim("ev", "vSAE below TopK on explained variance (SAE Bench's formula)", "explained_variance_saebench", "less"),
    Claim("cos", "vSAE below TopK on cosine similarity", "cossim", "less"),
    Claim("alive", "vSAE keeps fewer latents alive than TopK", "frac_alive", "less"),
    Claim("alive_k", "vSAE keeps more latents alive as k grows (this k vs the previous)", "frac_alive", "greater",
          across_k=True),
    Claim("probe", f"sparse probing comparable (|Δ accuracy| < {PROBING_MARGIN}, all latents)", "sae_test_accuracy",
          "equivalent", margin=PROBING_MARGIN),
    Claim("probe1", "vSAE better top-1 sparse-probing accuracy", "sae_top_1_test_accuracy", "greater"),
    Claim("scr", "vSAE reaches a higher best SCR metric over N (SAE Bench's aggregation)", "scr_best", "greater"),
    Claim("tpp_u", "vSAE has smaller unintended TPP effects (mean over N ≤ 20)", "tpp_unintended_small", "less"),
    Claim("tpp_t", "vSAE has the higher best TPP total at large N (N ≥ 50)", "tpp_total_large", "greater"),
)


def run_table(core: pd.DataFrame, probing: pd.DataFrame | None = None, scr: pd.DataFrame | None = None,
              tpp: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run (architecture, k, seed) with every scalar a claim reads.

    ``core``: one row per SAE with ``architecture``, ``k`` and the core metrics (``seed`` optional).
    ``probing``: one row per SAE with ``sae_test_accuracy``, ``sae_top_1_test_accuracy``.
    ``scr``: the ``ALL`` rows per (SAE, n) with ``scr_metric`` (SAE Bench's aggregation for our runs).
    ``tpp``: the ``ALL`` rows per (SAE, n) with ``tpp_total`` and ``tpp_unintended``.
    Per run, ``scr_best`` is the best SCR metric over N, ``tpp_unintended_small`` the mean unintended
    effect over N ≤ 20 and ``tpp_total_large`` the best total over N ≥ 50.
    """
    key = ["architecture", "k", "seed"]

    def norm(df):
        df = df.copy()
        if "k" not in df.columns and "sae_k" in df.columns:
            df["k"] = df["sae_k"]
        if "seed" not in df.columns:
            df["seed"] = 0
        return df

    cols = [c for c in ("ce_loss_score", "kl_div_score", "explained_variance", "explained_variance_saebench",
                        "cossim", "frac_alive", "l0") if c in core.columns]
    out = norm(core).groupby(key, as_index=False)[cols].mean()
    if probing is not None and len(probing):
        p = norm(probing)
        pc = [c for c in ("sae_test_accuracy", "sae_top_1_test_accuracy") if c in p.columns]
        out = out.merge(p.groupby(key, as_index=False)[pc].mean(), on=key, how="left")
    if scr is not None and len(scr):
        s = norm(scr).groupby(key + ["n"], as_index=False)["scr_metric"].mean()
        out = out.merge(s.groupby(key, as_index=False)["scr_metric"].max().rename(columns={"scr_metric": "scr_best"}),
                        on=key, how="left")
    if tpp is not None and len(tpp):
        t = norm(tpp).groupby(key + ["n"], as_index=False)[["tpp_total", "tpp_unintended"]].mean()
        small = t[t.n <= 20].groupby(key, as_index=False)["tpp_unintended"].mean()
        large = t[t.n >= 50].groupby(key, as_index=False)["tpp_total"].max()
        out = out.merge(small.rename(columns={"tpp_unintended": "tpp_unintended_small"}), on=key, how="left")
        out = out.merge(large.rename(columns={"tpp_total": "tpp_total_large"}), on=key, how="left")
    return out


#: the paper's tables are bf16-quantised: its explained variance, cosine and CE-loss score are
#: multiples of 1/256, so a single-run difference of one quantum or less is not a difference
PAPER_QUANTUM = 1 / 256
PAPER_NOISE = {"explained_variance_saebench": PAPER_QUANTUM, "cossim": PAPER_QUANTUM, "ce_loss_score": PAPER_QUANTUM}


def evaluate_claims(runs: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, noise: dict | None = None) -> pd.DataFrame:
    """One row per (claim, k): vSAE and TopK means, the difference with its interval, the verdict.

    ``noise``: metric -> noise scale for single-run comparisons (e.g. :data:`PAPER_NOISE`)."""
    rows = []
    ks = sorted(runs["k"].unique())
    claims = list(claims)
    for c in claims:
        if c.metric not in runs.columns:
            continue
        for i, k in enumerate(ks):
            if c.across_k:
                if i == 0:
                    continue
                a = runs.loc[(runs.architecture == "vsae") & (runs.k == k), c.metric]
                b = runs.loc[(runs.architecture == "vsae") & (runs.k == ks[i - 1]), c.metric]
                k_label = f"{ks[i - 1]}→{k}"
            else:
                a = runs.loc[(runs.architecture == "vsae") & (runs.k == k), c.metric]
                b = runs.loc[(runs.architecture == "topk") & (runs.k == k), c.metric]
                k_label = str(k)
            if a.dropna().empty or b.dropna().empty:
                continue
            r = (equivalent(a, b, c.margin) if c.expect == "equivalent"
                 else compare(a, b, c.expect, noise=(noise or {}).get(c.metric, 0.0)))
            rows.append({"claim": c.text, "key": c.key, "metric": c.metric, "k": k_label, **r})
    return pd.DataFrame(rows)


def claims_by_k(ours_runs: pd.DataFrame, paper_runs: pd.DataFrame, digits: int = 3,
                keys: Sequence[str] | None = None) -> pd.DataFrame:
    """The discussion's table: every claim per k, the paper's one-run verdict beside ours.

    Columns: claim, k, paper (vSAE vs TopK), paper verdict, ours vSAE, ours TopK, difference
    (mean ± 95% Welch half-width), ours verdict, agrees (same verdict as the paper). ``keys``
    restricts it to some claims (:data:`CLAIMS` keys).
    """
    claims = [c for c in CLAIMS if keys is None or c.key in keys]
    ours = evaluate_claims(ours_runs, claims)
    theirs = evaluate_claims(paper_runs, claims, noise=PAPER_NOISE).set_index(["key", "k"])
    rows = []
    for r in ours.itertuples(index=False):
        p = theirs.loc[(r.key, r.k)] if (r.key, r.k) in theirs.index else None
        rows.append({
            "claim": r.claim, "k": r.k,
            "paper (vSAE vs TopK)": "—" if p is None else f"{p.mean_a:.{digits}f} vs {p.mean_b:.{digits}f}",
            "paper verdict": "—" if p is None else (p.verdict + (" (tie)" if p.verdict == NOT_SEPARATED else "")),
            "ours vSAE": stats.fmt(r.mean_a, r.half_a, digits),
            "ours TopK": stats.fmt(r.mean_b, r.half_b, digits),
            "difference": stats.fmt(r.diff, r.half, digits),
            "ours verdict": r.verdict,
            "agrees": "—" if p is None else ("yes" if p.verdict == r.verdict else "no"),
            "n seeds": f"{r.n_a}+{r.n_b}",
        })
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> str:
    """Markdown sentences from a :func:`claims_by_k` table: counts per verdict, then every reversal and
    every non-separated comparison by name, then where our verdict differs from the paper's."""
    n = len(table)
    counts = table["ours verdict"].value_counts()
    lines = [f"Of **{n}** per-k comparisons, **{counts.get(HOLDS, 0)}** hold, **{counts.get(REVERSED, 0)}** are "
             f"reversed and **{counts.get(NOT_SEPARATED, 0)}** are not separated by the seed spread (95% Welch "
             f"interval of the difference)."]

    def items(df):
        return "; ".join(f"{r['claim']} at k = {r['k']} (vSAE {r['ours vSAE']} vs TopK {r['ours TopK']})"
                         if "→" not in str(r["k"]) else
                         f"{r['claim']} at k = {r['k']} ({r['ours TopK']} → {r['ours vSAE']})"
                         for _, r in df.iterrows())

    rev = table[table["ours verdict"] == REVERSED]
    lines.append(f"* **Reversed here:** {items(rev)}." if len(rev) else "* **Reversed here:** none.")
    ns = table[table["ours verdict"] == NOT_SEPARATED]
    lines.append(f"* **Not separated:** {items(ns)}." if len(ns) else "* **Not separated:** none.")
    both = table[table["agrees"] != "—"]
    dis = both[both["agrees"] == "no"]
    lines.append(f"* **Same verdict as the paper's single run:** {len(both) - len(dis)} of {len(both)} comparisons the "
                 f"paper also reports" + ("; different: " + "; ".join(f"{r['claim']} at k = {r['k']} (paper "
                                                                        f"{r['paper verdict']}, ours {r['ours verdict']})"
                                                                        for _, r in dis.iterrows()) + "."
                                          if len(dis) else "."))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Mechanism: what the controls say about feature death
# --------------------------------------------------------------------------------------------


def monotone(values: Sequence[float], tol: float = 0.0) -> str:
    """``"falling"``, ``"rising"`` or ``"non-monotone"`` (steps within ``tol`` count as flat)."""
    d = np.diff(np.asarray(values, dtype=float))
    if np.all(d <= tol):
        return "falling"
    if np.all(d >= -tol):
        return "rising"
    return "non-monotone"


def kl_attribution(topk_alive: float, vsae_alive: float, vsae_no_kl_alive: float) -> dict:
    """How much of the TopK-vSAE alive-fraction gap the KL term accounts for at one budget.

    ``gap = topk - vsae``; removing the KL term (weight 0, all else the vSAE recipe) recovers
    ``vsae_no_kl - vsae`` of it. Returns ``gap``, ``kl_part`` and ``rest_part`` as fractions of the gap
    (``rest``: the death that remains without any KL term, from the recipe's other differences).
    """
    gap = topk_alive - vsae_alive
    if not np.isfinite(gap) or abs(gap) < 1e-12:
        return {"gap": gap, "kl_part": np.nan, "rest_part": np.nan}
    kl = (vsae_no_kl_alive - vsae_alive) / gap
    return {"gap": float(gap), "kl_part": float(kl), "rest_part": float(1 - kl)}


def mechanism_sentence(topk_alive: float, vsae_alive: float, vsae_no_kl_alive: float, sweep_alive: Sequence[float],
                       sweep_weights: Sequence[float], budget: str) -> str:
    """The book's one statement on what kills the vSAE's features, computed from the KL-weight controls."""
    att = kl_attribution(topk_alive, vsae_alive, vsae_no_kl_alive)
    shape = monotone(sweep_alive, tol=0.01)
    seq = ", ".join(f"{a:.2f} (weight {w:g})" for w, a in zip(sweep_weights, sweep_alive))
    if not np.isfinite(att["kl_part"]):
        return f"At {budget}, TopK and the vSAE keep the same fraction of latents alive: there is no death to attribute."
    main = "most" if att["kl_part"] > 0.5 else ("about half" if att["kl_part"] > 0.4 else "a minority")
    return (f"At {budget}, the TopK SAE keeps {topk_alive:.3f} of its latents alive and the vSAE {vsae_alive:.3f}. "
            f"A vSAE with **no KL term** keeps {vsae_no_kl_alive:.3f}: removing the KL term closes "
            f"{att['kl_part']:.0%} of the gap, so the KL term accounts for {main} of the death at this budget and "
            f"{att['rest_part']:.0%} of it is there without any KL term (from the vSAE recipe's other differences "
            f"from TopK: learning rate, decoder constraint, initialisation, no b_dec subtraction). Across KL weights "
            f"the alive fraction is {seq}: {'it falls as the weight grows' if shape == 'falling' else 'not a monotone function of the weight' if shape == 'non-monotone' else 'it rises with the weight'}. "
            f"These are single runs at the main seed.")


def mechanism_from_runs(summary: pd.DataFrame, topk: str, sweep: Sequence[str], default_weight: float,
                        budget: str) -> str:
    """:func:`mechanism_sentence` from the "beyond the paper" summary table (columns ``sae``,
    ``kl_coeff``, ``frac_alive``): ``topk`` names the TopK run, ``sweep`` the vSAE runs over KL weights
    (one of them at weight 0 and one at ``default_weight``)."""
    S = summary.set_index("sae")
    sw = S.loc[list(sweep)].sort_values("kl_coeff")
    w = sw["kl_coeff"].to_numpy(float)
    if 0.0 not in w or default_weight not in w:
        return "The KL-weight sweep has no run at weight 0 or at the default weight: nothing to attribute."
    by_w = dict(zip(w, sw["frac_alive"]))
    return mechanism_sentence(float(S.loc[topk, "frac_alive"]), float(by_w[default_weight]), float(by_w[0.0]),
                              list(sw["frac_alive"]), list(w), budget)


def single_run_effect(a: float, b: float, noise_half: float, expect: str = "greater") -> str:
    """Verdict for two single runs (a control against its reference), with the headline seed
    interval ``noise_half`` of the same metric as the noise scale (:data:`SINGLE_RUN_NOISE_FACTOR`)."""
    return compare([a], [b], expect, noise=SINGLE_RUN_NOISE_FACTOR * (noise_half if np.isfinite(noise_half) else 0.0))["verdict"]


# --------------------------------------------------------------------------------------------
# Evaluation sizes and score bounds (chapter 4)
# --------------------------------------------------------------------------------------------

#: eval noise is "well below" seed noise when its 95% half-width is under a third of the seed interval's
EVAL_NOISE_FRACTION = 1 / 3
#: the alive count has saturated when the last doubling of evaluation tokens adds under 1% of it
SATURATION_TOLERANCE = 0.01


def noise_sentence(table: pd.DataFrame) -> str:
    """From :func:`vsae.evals.core.noise_vs_seeds`: how often the evaluation noise is below a third of
    the seed interval, per score, and the worst case."""
    t = table[np.isfinite(table["ratio"])]
    if t.empty:
        return "No seed interval to compare the evaluation noise with (one seed)."
    parts = []
    for m, g in t.groupby("metric", sort=False):
        ok = int((g["ratio"] < EVAL_NOISE_FRACTION).sum())
        parts.append(f"{m}: {ok} of {len(g)} runs (median ratio {g['ratio'].median():.2f})")
    worst = t.loc[t["ratio"].idxmax()]
    first = t.columns[0]
    return (f"Evaluation noise (bootstrap 95% half-width) is below {EVAL_NOISE_FRACTION:.2g} of the seed "
            f"interval for — " + "; ".join(parts) + f". The worst case is {worst['metric']} of {worst[first]} "
            f"(evaluation {worst['eval_half']:.2g} vs seeds {worst['seed_half']:.2g}). Where the ratio is not "
            f"small, differences below the evaluation noise are not read as results.")


def saturation_sentence(values: dict[str, float]) -> str:
    """``values``: run -> :func:`vsae.evals.core.saturation`. Whether every alive count has saturated."""
    v = {k: x for k, x in values.items() if np.isfinite(x)}
    if not v:
        return "No alive-fraction curve to judge."
    bad = {k: x for k, x in v.items() if x >= SATURATION_TOLERANCE}
    worst = max(v, key=v.get)
    head = (f"The last doubling of evaluation tokens adds at most {v[worst]:.1%} to any run's alive count "
            f"({worst})")
    if not bad:
        return head + f": every count has saturated (below {SATURATION_TOLERANCE:.0%})."
    return (head + f"; {len(bad)} of {len(v)} runs still grow by {SATURATION_TOLERANCE:.0%} or more "
            f"({', '.join(sorted(bad))}): their fraction alive is a lower bound.")


def score_bounds_sentence(metrics: pd.DataFrame) -> str:
    """Where our CE-loss and KL scores lie against [0, 1] (the paper reports 1.0294 and -1)."""
    lo, hi = metrics["ce_loss_score"].min(), metrics["ce_loss_score"].max()
    kl_lo, kl_hi = metrics["kl_div_score"].min(), metrics["kl_div_score"].max()
    notes = []
    if hi > 1:
        top = metrics.loc[metrics["ce_loss_score"].idxmax()]
        notes.append(f"the largest CE-loss score exceeds 1 by {hi - 1:.4f} ({top['sae']}: its reconstruction changes "
                     f"the CE loss by {top['ce_loss_with_sae'] - top['ce_loss_without_sae']:+.4f} nats), against the "
                     f"paper's 0.0294")
    if lo < 0 or kl_lo < 0 or kl_hi > 1:
        notes.append("some scores fall outside [0, 1] (see the table above)")
    return (f"Over all {len(metrics)} SAEs, our CE-loss scores lie in [{lo:.4f}, {hi:.4f}] and our KL scores in "
            f"[{kl_lo:.4f}, {kl_hi:.4f}]: " + ("; ".join(notes) or "all within [0, 1]") + ".")


# --------------------------------------------------------------------------------------------
# Single-run controls (chapter 11)
# --------------------------------------------------------------------------------------------


def control_table(summary: pd.DataFrame, reference: str, others: Sequence[str], metrics: Sequence[str],
                  noise: dict[str, float]) -> pd.DataFrame:
    """Each control against its reference run, per metric: values, difference and a verdict.

    ``summary``: one row per run (``sae`` and the metrics); ``noise``: metric -> the 95% seed
    half-width of the headline runs at the same k (the noise scale of one run; see
    :func:`single_run_effect`). ``verdict`` is ``higher`` / ``lower`` (the control against the
    reference) or ``not separated`` when the difference is within
    :data:`SINGLE_RUN_NOISE_FACTOR` × that half-width.
    """
    S = summary.set_index("sae")
    rows = []
    for o in others:
        for m in metrics:
            a, b = float(S.loc[o, m]), float(S.loc[reference, m])
            n = noise.get(m, float("nan"))
            v = single_run_effect(a, b, n, "greater")
            rows.append({"control": o, "reference": reference, "metric": m, "control value": a, "reference value": b,
                         "difference": a - b, "noise (seed half-width)": n,
                         "verdict": {HOLDS: "higher", REVERSED: "lower"}.get(v, NOT_SEPARATED)})
    return pd.DataFrame(rows)


def control_sentence(table: pd.DataFrame) -> str:
    """One line per control from :func:`control_table`: which metrics move, and which stay put."""
    lines = []
    for (ctrl, ref), g in table.groupby(["control", "reference"], sort=False):
        moved = [f"{r['metric']} {r['verdict']} ({r['control value']:.3f} vs {r['reference value']:.3f})"
                 for _, r in g.iterrows() if r["verdict"] != NOT_SEPARATED]
        same = [r["metric"] for _, r in g.iterrows() if r["verdict"] == NOT_SEPARATED]
        lines.append(f"* **{ctrl}** against {ref}: " + ("; ".join(moved) if moved else "no metric moves beyond the noise")
                     + (f"; within the noise: {', '.join(same)}" if same else "") + ".")
    return "\n".join(lines)


def closer_to(value: float, a: float, b: float, labels: tuple[str, str]) -> str:
    """Which of two reference values ``value`` is closer to (``"neither"`` on a tie)."""
    da, db = abs(value - a), abs(value - b)
    return labels[0] if da < db else labels[1] if db < da else "neither"


def auxk_sentence(peak_dead: float, final_dead: float, alive_off: float, alive_on: float) -> str:
    """Whether the TopK baseline's AuxK had anything to revive (``peak_dead``: largest logged dead fraction)."""
    if peak_dead > 0:
        return (f"With the reachable threshold up to {peak_dead:.1%} of the latents were dead at a logged step and AuxK "
                f"trained them ({final_dead:.1%} dead at the end); fraction alive {alive_off:.3f} without effective "
                f"AuxK, {alive_on:.3f} with it.")
    same = "identical" if abs(alive_on - alive_off) < 1e-12 else "different"
    return (f"Even with the reachable threshold no latent of the TopK SAE stays silent that long (0 dead at every "
            f"logged step), so AuxK never has anything to revive and the two runs are {same} (fraction alive "
            f"{alive_off:.3f} and {alive_on:.3f}): at this budget the paper's baseline loses nothing to its "
            f"unreachable dead threshold.")


def seed_lines(seeds: pd.DataFrame, metrics: Sequence[str], expect: dict[str, str] | None = None) -> str:
    """Per metric, the headline vSAE against TopK over seeds with the verdict of :func:`compare`."""
    lines = []
    for m in metrics:
        a = seeds.loc[seeds.architecture == "vsae", m]
        b = seeds.loc[seeds.architecture == "topk", m]
        r = compare(a, b, (expect or {}).get(m, "greater"))
        sep = "separated" if r["verdict"] != NOT_SEPARATED else "not separated"
        lines.append(f"* {m}: vSAE {stats.fmt(r['mean_a'], r['half_a'])}, TopK {stats.fmt(r['mean_b'], r['half_b'])}; "
                     f"difference {stats.fmt(r['diff'], r['half'])}: **{sep}** by the seed spread (95% Welch).")
    return "\n".join(lines)
