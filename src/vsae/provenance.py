"""Which commit the book's chapters come from: the build refuses a dirty tree for the committed profile.

:func:`provenance_commit` is recorded once at the start of a build and handed to every chapter kernel
(``$VSAE_BOOK_COMMIT``, read by :func:`vsae.report.git_commit`); :func:`tree_snapshot` and
:func:`tree_change` let the build say at its end whether the tree moved while it ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import report
from .paths import REPO_ROOT
from .profiles import DEFAULT_PROFILE

DIRTY_HINT = ("commit or stash your changes first (git stash), or pass --allow-dirty "
              "(make book BOOK_FLAGS=--allow-dirty) to record the chapters as <sha>+dirty")


def banner(lines: list[str]) -> str:
    bar = "!" * 100
    return "\n".join([bar, *("!! " + ln for ln in lines), bar])


def provenance_commit(profile: str, allow_dirty: bool = False, root: Path = REPO_ROOT) -> str:
    """The commit string every chapter of this build records; refuses a dirty tree for the default profile.

    Default profile (its chapters are committed): modified tracked sources raise ``SystemExit`` naming
    them, unless ``allow_dirty`` (then a loud warning, and the commit reads ``<sha>+dirty``). Staged
    profiles never refuse; they record ``+dirty`` when the tree is dirty.
    """
    sha = report.head_commit(root)
    try:
        dirty = report.dirty_files(root)
    except RuntimeError as e:
        if profile == DEFAULT_PROFILE and not allow_dirty:
            raise SystemExit(f"[vsae.book] cannot tell which commit the chapters come from ({e}); "
                             "run from a git checkout or pass --allow-dirty") from None
        return "unknown"
    if not dirty:
        return sha
    listed = dirty[:15] + ([f"... and {len(dirty) - 15} more"] if len(dirty) > 15 else [])
    if profile == DEFAULT_PROFILE and not allow_dirty:
        raise SystemExit("[vsae.book] refusing to build the committed chapters (profile "
                         f"{DEFAULT_PROFILE}) from a dirty git tree: {len(dirty)} tracked file(s) modified:\n  "
                         + "\n  ".join(listed) + f"\n{DIRTY_HINT}.")
    if profile == DEFAULT_PROFILE:
        print(banner([f"WARNING: building the committed chapters from a DIRTY tree (--allow-dirty): "
                       f"{len(dirty)} modified tracked file(s):", *("  " + f for f in listed),
                       f"every chapter header will record commit {sha}+dirty; do not commit these chapters",
                       "as results: rebuild from a clean tree."]), file=sys.stderr, flush=True)
    return sha + "+dirty"


def tree_snapshot(root: Path = REPO_ROOT) -> dict:
    """``{"head": sha, "dirty": [...]}`` of the tracked sources (the build's own outputs left out)."""
    try:
        dirty = report.dirty_files(root)
    except RuntimeError:
        dirty = []
    return {"head": report.head_commit(root), "dirty": sorted(dirty)}


def tree_change(before: dict, after: dict) -> str | None:
    """A sentence saying how the git tree changed between two :func:`tree_snapshot` s, or ``None``."""
    parts = []
    if before["head"] != after["head"]:
        parts.append(f"HEAD moved from {before['head']} to {after['head']}")
    newly = sorted(set(after["dirty"]) - set(before["dirty"]))
    cleaned = sorted(set(before["dirty"]) - set(after["dirty"]))
    if newly:
        parts.append("modified: " + ", ".join(newly[:10]) + (" ..." if len(newly) > 10 else ""))
    if cleaned:
        parts.append("no longer modified: " + ", ".join(cleaned[:10]) + (" ..." if len(cleaned) > 10 else ""))
    return "; ".join(parts) or None
