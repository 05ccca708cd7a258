"""Reproducibility facts every executed chapter opens with, and the appendix collects."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from .paths import REPO_ROOT, vsae_home

PACKAGES = ("torch", "transformer-lens", "transformers", "numpy", "pandas", "scikit-learn",
            "matplotlib", "seaborn", "jupyter-book", "papermill", "nbval")


#: environment variable through which ``python -m vsae.book build`` hands every chapter kernel the commit
#: it recorded once at the start of the build (so all chapters of one build show the same commit)
COMMIT_ENV = "VSAE_BOOK_COMMIT"

#: tracked paths the book build itself rewrites (executed chapters, their figures, the paired .ipynb of
#: the jupytext sources); changes there are the build's output, not a change of the code that produced it
GENERATED = ("book/chapters/", "notebooks/*.ipynb")


def _is_generated(path: str) -> bool:
    from fnmatch import fnmatch

    return any(path.startswith(g) if g.endswith("/") else fnmatch(path, g) for g in GENERATED)


def dirty_files(root: Path | str = REPO_ROOT, porcelain: str | None = None) -> list[str]:
    """Tracked files modified in the work tree or index of ``root``, leaving out :data:`GENERATED`.

    Uses ``git status --porcelain --untracked-files=no`` (or parses ``porcelain``, for tests).
    Raises ``RuntimeError`` when ``root`` is not a git work tree.
    """
    if porcelain is None:
        r = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode:
            raise RuntimeError(f"git status failed in {root}: {r.stderr.strip()}")
        porcelain = r.stdout
    out = []
    for line in porcelain.splitlines():
        if len(line) < 4:
            continue
        path = line[3:]
        if " -> " in path:  # renamed: "old -> new"
            path = path.split(" -> ", 1)[1]
        path = path.strip('"')
        if not _is_generated(path):
            out.append(path)
    return out


def head_commit(root: Path | str = REPO_ROOT) -> str:
    """Short sha of ``HEAD`` in ``root`` (``"unknown"`` outside a git work tree)."""
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def tree_commit(root: Path | str = REPO_ROOT) -> str:
    """``HEAD``'s short sha, with ``+dirty`` when tracked source files (not :data:`GENERATED`) are modified."""
    sha = head_commit(root)
    try:
        dirty = dirty_files(root)
    except Exception:
        return sha
    return sha + ("+dirty" if dirty else "")


def git_commit() -> str:
    """The commit the chapter headers show.

    Inside ``python -m vsae.book build`` this is the value the build recorded once at its start
    (environment variable :data:`COMMIT_ENV`), so every chapter of one build carries the same commit even
    if ``HEAD`` moves meanwhile; otherwise the current ``HEAD`` (``+dirty`` for modified tracked sources).
    """
    env = os.environ.get(COMMIT_ENV)
    if env:
        return env
    try:
        return tree_commit(REPO_ROOT)
    except Exception:
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def header(profile, **extra) -> str:
    """Markdown block: profile, model, hook, token budgets, commit; extra key/values appended."""
    lines = [
        f"**Profile** `{profile.name}` · **model** `{profile.lm}` · **hook** `{profile.hook_name}` · "
        f"**train tokens** {profile.n_train_tokens:,} · **eval tokens** {profile.n_eval_tokens:,} · "
        f"**d_sae** {profile.expansion}×d_model · **k** {list(profile.k_values)} · **SAE seeds** {list(profile.seeds)} · "
        f"**commit** `{git_commit()}`"
    ]
    for k, v in extra.items():
        lines.append(f"**{k}** {v}")
    return "  \n".join(lines)


class ChapterTimer:
    """Records a chapter's wall time to ``$VSAE_HOME/timings/<profile>/<chapter>.json`` for the appendix."""

    def __init__(self, chapter: str, profile_name: str):
        self.chapter, self.profile_name, self.t0 = chapter, profile_name, time.time()

    def finish(self) -> float:
        dt = time.time() - self.t0
        d = vsae_home() / "timings" / self.profile_name
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{self.chapter}.json").write_text(json.dumps({"chapter": self.chapter, "seconds": dt,
                                                            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                            "host": platform.node()}))
        return dt


def chapter_timings(profile_name: str) -> list[dict]:
    """Per-chapter wall times recorded by :class:`ChapterTimer` (kernel time, from ``chapter.start``)."""
    d = vsae_home() / "timings" / profile_name
    if not d.exists():
        return []
    recs = (json.loads(p.read_text()) for p in d.glob("*.json") if p.name != BUILD_RECORD)
    return sorted((r for r in recs if "chapter" in r), key=lambda r: r["chapter"])


#: file name of the whole-book build record under ``$VSAE_HOME/timings/<profile>/``
BUILD_RECORD = "build.json"


def build_record_path(profile_name: str) -> Path:
    return vsae_home() / "timings" / profile_name / BUILD_RECORD


def build_record(profile_name: str) -> dict:
    """The record of the latest ``python -m vsae.book build --profile <profile_name>``, or ``{}`` if none.

    Written by :func:`vsae.book.build` to ``$VSAE_HOME/timings/<profile>/build.json`` after every chapter
    (so the appendix, executed as the last chapter, already sees the chapters before it) and once more at
    the end. Keys:

    ``profile``, ``device``, ``commit`` (what every chapter header shows), ``host``, ``started`` and
    ``finished`` (local time ``YYYY-MM-DD HH:MM:SS``; ``finished`` is ``None`` while the build runs),
    ``complete`` (every chapter and the site built), ``chapters`` (list, in book order, of
    ``{"chapter", "seconds", "kernels_peak_rss_mb"}``: the build's wall time for the chapter, kernel
    start-up and saving included, and the peak RSS of the largest kernel that had finished by then),
    ``chapters_seconds`` (their sum), ``site_seconds``, ``total_seconds``, ``peak_rss_build_mb`` (the build
    process itself), ``peak_rss_kernels_mb`` (largest child: chapter kernels, jupyter-book),
    ``tree_changed`` (``None``, or what changed in the git tree during the build).
    """
    p = build_record_path(profile_name)
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {}


def timings_table(profile_name: str):
    """The appendix's wall-time table: one row per chapter of the latest build (:func:`build_record`),
    with the build's commit and total; falls back to the per-chapter timer records
    (:func:`chapter_timings`) when no build was recorded. Returns a DataFrame or a message string."""
    import pandas as pd

    rec = build_record(profile_name)
    if rec.get("chapters"):
        t = pd.DataFrame(rec["chapters"])
        t.attrs["build"] = {k: rec.get(k) for k in ("commit", "started", "finished", "total_seconds", "complete")}
        total = {"chapter": "total (chapters + site)", "seconds": rec.get("total_seconds")}
        t = pd.concat([t, pd.DataFrame([total])], ignore_index=True)
        t.insert(0, "build commit", rec.get("commit"))
        return t.round(1)
    t = pd.DataFrame(chapter_timings(profile_name))
    return t[["chapter", "seconds", "finished"]].round(1) if len(t) else "no timings recorded yet"
