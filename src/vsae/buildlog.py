"""The whole-book progress line and the end-of-build timing record.

Before each chapter the build prints :func:`progress_line` (chapter i of n, elapsed, estimated remaining
from the previous build's per-chapter times, :func:`estimate_remaining`); at the end
:func:`timing_table` (per-chapter wall time, peak RSS) and the record in
``$VSAE_HOME/timings/<profile>/build.json`` (:func:`write_record`, read back by
:func:`vsae.report.build_record`).

The SAE work of each chapter comes from the work ledger, ``$VSAE_HOME/timings/work.jsonl``: every
training pass and every stored evaluation call appends one line (:func:`record_work`: what, how many
SAEs, SAE-tokens, seconds, when it ended) from whichever process ran it, the chapter's kernel included;
the build credits a chapter with the lines that ended while it ran (:func:`work_between`) and reports
its SAE-tokens trained and evaluated and their throughput (:func:`work_columns`).
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from . import report
from .files import atomic_write_json
from .paths import vsae_home

#: file name of the work ledger under ``$VSAE_HOME/timings/``
WORK_LEDGER = "work.jsonl"


def work_ledger_path() -> Path:
    """``$VSAE_WORK_LEDGER`` if set (the tests point it at a temporary file), else
    ``$VSAE_HOME/timings/work.jsonl``."""
    env = os.environ.get("VSAE_WORK_LEDGER")
    return Path(env) if env else vsae_home() / "timings" / WORK_LEDGER


def record_work(kind: str, n_saes: int, sae_tokens: int | None, seconds: float,
                path: Path | None = None) -> None:
    """Append one unit of SAE work to the ledger: ``kind`` ("train" or an evaluation's store kind),
    ``n_saes`` SAEs, ``sae_tokens`` (SAEs x tokens each processed; None where an evaluation has no
    token count) in ``seconds`` of wall time, ending now.

    Timing only: a failure to write (read-only home, full disk) is ignored rather than losing the work
    it describes. One ``write`` in append mode, so concurrent processes do not interleave; the line
    *starts* with its newline, so a line cut short by a killed process stays a line of its own.
    """
    rec = {"t_end": time.time(), "pid": os.getpid(), "kind": str(kind), "n_saes": int(n_saes),
           "sae_tokens": None if sae_tokens is None else int(sae_tokens), "seconds": round(float(seconds), 3)}
    p = work_ledger_path() if path is None else Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a", encoding="utf-8") as f:
            f.write("\n" + json.dumps(rec))
    except OSError:
        pass


def work_between(t0: float, t1: float, path: Path | None = None) -> dict[str, dict[str, float]]:
    """The ledger's work that ended in ``[t0, t1]``, summed per kind: ``{kind: {"n_saes", "sae_tokens",
    "seconds"}}`` (``sae_tokens`` counts only lines that have one). A line that does not parse (a
    process killed mid-write) is skipped."""
    p = work_ledger_path() if path is None else Path(path)
    out: dict[str, dict[str, float]] = {}
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            t, kind = float(r["t_end"]), str(r["kind"])
        except (ValueError, KeyError, TypeError):
            continue
        if not t0 <= t <= t1:
            continue
        w = out.setdefault(kind, {"n_saes": 0, "sae_tokens": 0, "seconds": 0.0})
        w["n_saes"] += int(r.get("n_saes") or 0)
        w["sae_tokens"] += int(r.get("sae_tokens") or 0)
        w["seconds"] += float(r.get("seconds") or 0.0)
    return out


def work_columns(work: dict[str, dict[str, float]], wall_seconds: float) -> dict[str, float | int | None]:
    """A chapter's row of SAE work from :func:`work_between`: SAEs trained and evaluated, SAE-tokens
    trained and the training throughput (SAE-tokens per second of the training passes themselves),
    SAE-tokens evaluated, and all SAE-tokens per second of the chapter's wall time."""
    train = work.get("train", {"n_saes": 0, "sae_tokens": 0, "seconds": 0.0})
    evals = [w for k, w in work.items() if k != "train"]
    ev_tokens = sum(w["sae_tokens"] for w in evals)
    tokens = train["sae_tokens"] + ev_tokens
    return {
        "saes_trained": int(train["n_saes"]),
        "sae_tokens_trained": int(train["sae_tokens"]),
        "train_sae_tokens_per_s": round(train["sae_tokens"] / train["seconds"], 1) if train["seconds"] > 0 else None,
        "sae_evaluations": int(sum(w["n_saes"] for w in evals)),
        "sae_tokens_evaluated": int(ev_tokens),
        "sae_tokens_per_s": round(tokens / wall_seconds, 1) if wall_seconds > 0 and tokens else None,
    }

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


def _fmt_tokens(n) -> str:
    if not n:
        return "–"
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k" if n >= 1e3 else f"{n:.0f}"


def timing_table(rec: dict) -> str:
    """The end-of-build table: per chapter its wall time, the SAE-tokens it trained (and their training
    throughput) and evaluated, all its SAE-tokens per second of wall time, the kernels' peak RSS so far;
    then the totals."""
    rows = [f"{'chapter':<22}{'wall':>10}{'SAE-tok trained':>17}{'train SAE-tok/s':>17}"
            f"{'SAE-tok evaluated':>19}{'SAE-tok/s':>11}{'kernels peak RSS':>20}"]
    for r in rec["chapters"]:
        tps, aps = r.get("train_sae_tokens_per_s"), r.get("sae_tokens_per_s")
        rows.append(f"{r['chapter']:<22}{r['seconds']:>8.0f} s{_fmt_tokens(r.get('sae_tokens_trained')):>17}"
                    f"{(f'{tps:,.0f}' if tps else '–'):>17}{_fmt_tokens(r.get('sae_tokens_evaluated')):>19}"
                    f"{(f'{aps:,.0f}' if aps else '–'):>11}{r['kernels_peak_rss_mb'] / 1024:>17.2f} GB")
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
