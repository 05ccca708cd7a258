"""Reproducibility facts every executed chapter opens with, and the appendix collects."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from .paths import REPO_ROOT, vsae_home

PACKAGES = ("torch", "transformer-lens", "transformers", "numpy", "pandas", "scikit-learn",
            "matplotlib", "seaborn", "jupyter-book", "papermill", "nbval")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
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
    d = vsae_home() / "timings" / profile_name
    if not d.exists():
        return []
    return sorted((json.loads(p.read_text()) for p in d.glob("*.json")), key=lambda r: r["chapter"])
