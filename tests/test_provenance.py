"""Provenance of the COMMITTED offline chapters (``book/chapters/*.ipynb``).

Every chapter must come from one clean commit, and no output may show a machine path or a warning.
``python -m vsae.book build`` (profile offline) refuses a dirty tree and records the commit once, so a
clean build passes; chapters re-executed one by one from different or dirty commits do not. Each test
lists every offending chapter / cell, so one run tells what to fix.
"""

from __future__ import annotations

import json

import pytest

from vsae import book, chapter_outputs

CHAPTERS = book.chapters()
DIR = book.chapters_dir(book.DEFAULT_PROFILE)


@pytest.fixture(scope="module")
def notebooks() -> dict[str, dict]:
    missing = [c for c in CHAPTERS if not (DIR / f"{c}.ipynb").exists()]
    assert not missing, f"committed chapters missing: {missing}; run make book"
    return {c: json.loads((DIR / f"{c}.ipynb").read_text()) for c in CHAPTERS}


def _fail(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n  " + "\n  ".join(problems), pytrace=False)


def test_every_chapter_records_one_and_the_same_clean_commit(notebooks):
    commits = {name: sorted(set(chapter_outputs.header_commits(nb))) for name, nb in notebooks.items()}
    problems = [f"{n}: no '**commit** `...`' in its outputs" for n, c in commits.items() if not c]
    problems += [f"{n}: several commits {c}" for n, c in commits.items() if len(c) > 1]
    problems += [f"{n}: commit {x} (built from a dirty tree)" for n, c in commits.items() for x in c
                 if x.endswith("+dirty")]
    distinct = sorted({x for c in commits.values() for x in c})
    if len(distinct) > 1:
        problems.append("chapters from different commits: "
                        + "; ".join(f"{x}: {', '.join(n for n, c in commits.items() if x in c)}" for x in distinct))
    if problems:
        problems.append("regenerate them with one clean `make book` (python -m vsae.book build) and commit them")
    _fail(problems, "provenance problem(s)")


def test_no_output_shows_a_machine_path(notebooks):
    problems = [p for n, nb in notebooks.items() for p in chapter_outputs.output_problems(nb, n) if ": machine path" in p]
    _fail(problems, "output(s) with a machine path")


def test_no_output_is_a_warning(notebooks):
    problems = [p for n, nb in notebooks.items() for p in chapter_outputs.output_problems(nb, n) if ": warning:" in p]
    _fail(problems, "warning output(s)")
