"""Seed statistics: means and Student-t confidence intervals over repeated runs.

Every headline metric of the book is measured on ``profile.seeds`` independent trainings (each seed
sets the SAE initialisation and the order of the training batches). With n seeds the interval is

    mean ± t_{(1+c)/2, n-1} · s / sqrt(n),

with s the sample standard deviation (ddof = 1): the exact interval for the mean of normal draws,
and much wider than the normal approximation (1.96) for n = 3 (t = 4.30). With one seed the
half-width is NaN: there is no interval, and the tables say so instead of printing ± 0.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half_width, n)`` of the finite values; half-width NaN when n < 2."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return mean, half, n


def seed_summary(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], confidence: float = 0.95) -> pd.DataFrame:
    """Tidy mean and interval of each metric per group.

    ``df`` has one row per run (e.g. per SAE and seed); returns one row per (group, metric) with
    columns ``by + [metric, mean, half, low, high, n_runs]``.
    """
    missing = [c for c in list(by) + list(metrics) if c not in df.columns]
    if missing:
        raise KeyError(f"seed_summary: columns {missing} not in the table (has {list(df.columns)})")
    rows = []
    for key, g in df.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            mean, half, n = t_interval(g[m], confidence)
            rows.append({**dict(zip(by, key)), "metric": m, "mean": mean, "half": half,
                         "low": mean - half, "high": mean + half, "n_runs": n})
    return pd.DataFrame(rows)


def fmt(mean: float, half: float, digits: int | None = None) -> str:
    """``"0.9123 ± 0.0041"``; just the mean when there is no interval (one seed).

    ``digits=None`` (the tables' default) rounds the half-width to 2 significant digits and the
    mean to the same decimal place (``0.8974 ± 0.0014``, ``0.96 ± 0.012`` → ``0.959 ± 0.012``), at
    most 6 decimals; without an interval the mean gets 3 significant digits after the point.
    """
    if not np.isfinite(mean):
        return "n/a"
    if digits is None:
        digits = _auto_digits(half)
    if not np.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _auto_digits(half: float) -> int:
    if not np.isfinite(half) or half <= 0:
        return 3
    return int(min(6, max(0, 1 - np.floor(np.log10(half)))))


def _order(df: pd.DataFrame, cols: list[str]) -> list:
    order = df[cols].drop_duplicates()
    return [tuple(r) if len(cols) > 1 else r[0] for r in order.itertuples(index=False)]


def _texts(s: pd.DataFrame, digits: int | None) -> pd.DataFrame:
    return s.assign(text=[fmt(m, h, digits) for m, h in zip(s["mean"], s["half"])])


def ci_table(df: pd.DataFrame, index: str | Sequence[str], columns: str | Sequence[str], metric: str,
             digits: int | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """``index`` x ``columns`` table of ``"mean ± half"`` strings of one metric (rows of a cell: seeds)."""
    idx = [index] if isinstance(index, str) else list(index)
    cols = [columns] if isinstance(columns, str) else list(columns)
    s = _texts(seed_summary(df, idx + cols, [metric], confidence), digits)
    return s.pivot(index=idx, columns=cols, values="text")[_order(df, cols)]


def metrics_ci_table(df: pd.DataFrame, columns: str | Sequence[str], metrics: Sequence[str], digits: int | None = None,
                     confidence: float = 0.95) -> pd.DataFrame:
    """metrics x ``columns`` table of ``"mean ± half"`` strings (rows of a column group: seeds)."""
    cols = [columns] if isinstance(columns, str) else list(columns)
    s = _texts(seed_summary(df, cols, metrics, confidence), digits)
    return s.pivot(index="metric", columns=cols, values="text").loc[list(metrics), _order(df, cols)]


def runs_ci_table(df: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str], digits: int | None = None,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Rows = runs (groups of ``by``, in order of appearance), columns = metrics, cells ``"mean ± half"``
    over the seeds: the book's layout for wide interval tables (a metric per column reads down)."""
    by_ = [by] if isinstance(by, str) else list(by)
    s = _texts(seed_summary(df, by_, metrics, confidence), digits)
    t = s.pivot(index=by_, columns="metric", values="text")
    return t.loc[_order(df, by_), list(metrics)].rename_axis(columns=None)


def welch_interval(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """``(mean(a) - mean(b), half-width)`` of the Welch t-interval of the difference (scipy's
    ``ttest_ind(equal_var=False)``); half-width NaN with fewer than 2 values on a side, 0 when both
    sides are constant."""
    from scipy import stats

    a = np.asarray(list(a), dtype=float)
    b = np.asarray(list(b), dtype=float)
    diff = float(a.mean() - b.mean()) if a.size and b.size else float("nan")
    if a.size < 2 or b.size < 2:
        return diff, float("nan")
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return diff, 0.0
    import warnings

    with warnings.catch_warnings():  # nearly constant sides (e.g. frac_alive = 1 at every seed) are fine here
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return diff, float((ci.high - ci.low) / 2)


def interval_separated(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> bool:
    """Whether the Welch t-interval of mean(a) - mean(b) excludes zero (False with < 2 values each)."""
    diff, half = welch_interval(a, b, confidence)
    if not np.isfinite(half):
        return False
    return bool(abs(diff) > half) if half > 0 else bool(diff != 0)
