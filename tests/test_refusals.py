"""Refusals through the real entry point: ``python -m vsae.book chapter 04_core --profile smoke -- -p ...``.

Each bad parameter must stop the chapter in the cell of ``chapter.start`` (the one after the parameter
cells), before the experiment creates its store, loads the language model or harvests anything, with
a message that names the parameter and what is allowed. Each case costs one kernel start (seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from vsae import book
from vsae.paths import REPO_ROOT

PROFILE = "smoke"
CHAPTER = "04_core"


def _refuse(tmp_path, params: list[str], env: dict | None = None):
    home = tmp_path / "home"
    home.mkdir()
    assets = os.environ.get("VSAE_HOME") and os.path.join(os.environ["VSAE_HOME"], "assets")
    e = {**os.environ, "VSAE_HOME": str(home), **(env or {})}
    if assets and os.path.isdir(assets):  # the chapter never gets to them, but keep the assets where they are
        (home / "assets").symlink_to(assets)
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "vsae.book", "chapter", CHAPTER, "--profile", PROFILE, "--", *params],
                       cwd=REPO_ROOT, capture_output=True, text=True, env=e, timeout=300)
    seconds = time.time() - t0
    out = p.stdout + p.stderr
    assert p.returncode != 0, f"{params} was accepted:\n{out[-3000:]}"
    assert "ParameterError" in out, out[-3000:]
    # nothing was computed or stored: the store folder is created by the experiment, after the check
    assert not (home / "store").exists(), f"{params}: the store was created before the refusal"
    failed = json.loads((book.chapters_dir(PROFILE) / f".{CHAPTER}.failed.ipynb").read_text())
    errors = [c for c in failed["cells"] if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(errors) == 1 and "chapter.start(" in "".join(errors[0]["source"]), "refused elsewhere than chapter.start"
    later = [c for c in failed["cells"][failed["cells"].index(errors[0]) + 1:] if c["cell_type"] == "code"]
    assert not any(c.get("execution_count") for c in later), "cells after the refusal ran"
    evalue = next(o for o in errors[0]["outputs"] if o.get("output_type") == "error")["evalue"]
    print(f"{params}: refused in {seconds:.1f} s (kernel start included): {evalue}")
    return evalue, seconds


@pytest.mark.parametrize("params, expected", [
    (["-p", "kl_coeff", "inf"], ["parameter 'kl_coeff'=inf is not a finite number", "float in [0.0, inf) (finite)"]),
    (["-p", "k_values", "[4096]"], ["parameter 'k_values'=[4096] has k [4096] above the dictionary size of profile "
                                    "'smoke'", "d_sae = expansion x d_model = 2 x 512 = 1024",
                                    "allowed: every k in [1, 1024]"]),
    (["-p", "n_train_tokens", "1000000000000"], ["parameter 'n_train_tokens'=1,000,000,000,000 is more than corpus "
                                                 "'smoke'", "allowed: n_train_tokens in [1000, 101696]"]),
    (["-p", "k_values", "[8,8]"], ["parameter 'k_values'=[8, 8] repeats [8]", "list[int] of distinct values"]),
], ids=["kl_coeff_inf", "k_above_d_sae", "n_train_tokens_above_supply", "duplicate_k"])
def test_chapter_refuses_before_any_work(tmp_path, params, expected):
    evalue, seconds = _refuse(tmp_path, params)
    for s in expected:
        assert s in evalue
    assert seconds < 30  # kernel start and imports only (~6 s); before the fix these failed after 25-67 s of work


def test_chapter_refuses_an_expansion_that_does_not_fit_in_memory(tmp_path):
    evalue, _ = _refuse(tmp_path, ["-p", "expansion", "32"], env={"VSAE_MEMORY_GB": "2.5"})
    assert "parameter 'expansion'=32 needs about 4.4 GB" in evalue
    assert "allowed: expansion in [1, 6]" in evalue
