"""The whole-book progress line and the end-of-build timing record.

Before each chapter the build prints :func:`progress_line` (chapter i of n, elapsed, estimated remaining
from the previous build's per-chapter times, :func:`estimate_remaining`); at the end
:func:`timing_table` (per-chapter wall time, peak RSS) and the record in
``$VSAE_HOME/timings/<profile>/build.json`` (:func:`write_record`, read back by
:func:`vsae.report.build_record`).
"""

from __future__ import annotations

import resource

from . import report
from .files import atomic_write_json

def previous_times(profile: str) -> dict[str, float]:
    """Per-chapter seconds of the previous build of ``profile`` (its build record, else the chapters'
    own :class:`vsae.report.ChapterTimer` records)."""
    times = {r["chapter"]: float(r["seconds"]) for r in report.chapter_timings(profile) if "seconds" in r}
    rec = report.build_record(profile)
    times.update({r["chapter"]: float(r["seconds"]) for r in rec.get("chapters", []) if r.get("seconds")})
    return times


def estimate_remaining(remaining: list[str], previous: dict[str, float],
                       done: dict[str, float] | None = None) -> float | None:
    """Seconds the chapters ``remaining`` (the current one included) should take, from ``previous``.

    Scaled by how fast this build has been so far on the chapters it shares with ``previous`` (ratio
    clipped to [0.25, 4]); a chapter without a previous time counts as the mean known one. ``None``
    when nothing is known.
    """
    if not remaining:
        return 0.0
    known = [previous[c] for c in remaining if c in previous]
    if not previous:
        return None
    mean = sum(previous.values()) / len(previous)
    est = sum(known) + mean * (len(remaining) - len(known))
    shared = [c for c in (done or {}) if c in previous and previous[c] > 0]
    if shared:
        ratio = sum(done[c] for c in shared) / sum(previous[c] for c in shared)
        est *= min(4.0, max(0.25, ratio))
    return est


def _fmt_min(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds < 1200 else f"{seconds / 60:.0f} min"


def progress_line(i: int, n: int, name: str, elapsed: float, remaining: float | None) -> str:
    """``[vsae.book] chapter 4/12 04_core · elapsed 12.3 min · est. remaining 40 min``"""
    return (f"[vsae.book] chapter {i}/{n} {name} · elapsed {_fmt_min(elapsed)} · "
            f"est. remaining {_fmt_min(remaining) if remaining is not None else '? (no previous build)'}")


def maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def timing_table(rec: dict) -> str:
    """The end-of-build table: per-chapter wall time, kernels' peak RSS so far, totals."""
    rows = [f"{'chapter':<22}{'wall':>10}{'kernels peak RSS':>20}"]
    for r in rec["chapters"]:
        rows.append(f"{r['chapter']:<22}{r['seconds']:>8.0f} s{r['kernels_peak_rss_mb'] / 1024:>17.2f} GB")
    if rec.get("browser_seconds") is not None:
        rows.append(f"{'feature browser':<22}{rec['browser_seconds']:>8.0f} s")
    if rec.get("tables_seconds") is not None:
        rows.append(f"{'result tables':<22}{rec['tables_seconds']:>8.0f} s")
    if rec.get("site_seconds") is not None:
        rows.append(f"{'site (jupyter-book)':<22}{rec['site_seconds']:>8.0f} s")
    rows.append(f"{'total':<22}{_fmt_min(rec['total_seconds']):>10}   peak RSS: build "
                f"{rec['peak_rss_build_mb'] / 1024:.2f} GB, largest kernel {rec['peak_rss_kernels_mb'] / 1024:.2f} GB")
    return "\n".join("[vsae.book] " + r for r in rows)


def write_record(profile: str, rec: dict) -> None:
    p = report.build_record_path(profile)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, rec, indent=1)
