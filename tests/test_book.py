"""The smoke book end to end: papermill executes every chapter (profile ``smoke``), nbval re-executes
them and compares the tagged cells, jupyter-book renders the site with warnings as errors, and headless
Chromium checks the rendered pages. Also: parameter validation and one-chapter re-execution."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vsae import book, chapter_outputs
from vsae.paths import REPO_ROOT

PROFILE = "smoke"
STAGE = book.stage_root(PROFILE)


def _run(cmd, **kw):
    p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, **kw)
    if p.returncode:
        sys.stdout.write(p.stdout[-6000:])
        sys.stderr.write(p.stderr[-6000:])
    return p


@pytest.fixture(scope="module")
def smoke_book():
    t0 = time.time()
    p = _run([sys.executable, "-m", "vsae.book", "build", "--profile", PROFILE])
    assert p.returncode == 0, f"smoke book failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    print(f"smoke book built in {time.time() - t0:.0f} s")
    return STAGE / "_build" / "html"


def test_build_record_has_each_chapters_sae_work(smoke_book):
    """The build credits each chapter with the ledger's SAE work; every chapter row has the columns,
    and the SAEs trained (on a cold store) and evaluated show up in the chapters that did it."""
    from vsae import report

    rec = report.build_record(PROFILE)
    assert [r["chapter"] for r in rec["chapters"]] == book.chapters()
    keys = {"saes_trained", "sae_tokens_trained", "train_sae_tokens_per_s", "sae_evaluations",
            "sae_tokens_evaluated", "sae_tokens_per_s"}
    assert all(keys <= set(r) for r in rec["chapters"])
    for r in rec["chapters"]:
        if r["sae_tokens_trained"]:
            assert r["saes_trained"] > 0 and r["train_sae_tokens_per_s"] > 0 and r["sae_tokens_per_s"] > 0


def test_every_chapter_executed(smoke_book):
    for name in book.chapters():
        nb = json.loads((book.chapters_dir(PROFILE) / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c.get("execution_count") for c in code), f"{name}: unexecuted cells"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: error outputs {errors}"
        tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
        assert any("parameters" in t for t in tags) and any("injected-parameters" in t for t in tags), \
            f"{name}: no parameters cell"
        assert all("remove-cell" in t for t in tags if "parameters" in t or "injected-parameters" in t), \
            f"{name}: parameter cells must be tagged remove-cell (no empty boxes in the book)"


def test_smoke_outputs_show_no_machine_paths_or_warnings(smoke_book):
    """The same output checks as tests/test_provenance.py, on the chapters this run just executed."""
    problems = []
    for name in book.chapters():
        nb = json.loads((book.chapters_dir(PROFILE) / f"{name}.ipynb").read_text())
        problems += chapter_outputs.output_problems(nb, name)
        commits = set(chapter_outputs.header_commits(nb))
        if len(commits) != 1:
            problems.append(f"{name}: header commits {sorted(commits)} (one expected)")
        streams = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream"]
        per_cell = [sum(o.get("output_type") == "stream" and o["name"] == "stderr" for o in c.get("outputs", []))
                    for c in nb["cells"]]
        if max(per_cell, default=0) > 1:
            problems.append(f"{name}: a cell has {max(per_cell)} stderr outputs (progress not collapsed)")
        if any("\r" in "".join(o["text"]) for o in streams):
            problems.append(f"{name}: a stream still holds carriage returns")
    assert not problems, "smoke chapters:\n  " + "\n  ".join(problems)


def test_nbval_reproduces_tagged_outputs(smoke_book):
    nbs = [str(book.chapters_dir(PROFILE) / f"{c}.ipynb") for c in book.chapters()]
    # one notebook per xdist worker (--dist loadfile: a notebook's cells stay in order in one kernel); the
    # re-execution reads the store only, and two kernels halve the wall time on two cores (measured 138 s)
    p = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile",
              "--nbval-lax", "--nbval-current-env",
              "--nbval-sanitize-with", str(REPO_ROOT / "tests" / "nbval_sanitize.cfg"), *nbs])
    assert p.returncode == 0, p.stdout[-4000:]
    assert " passed" in p.stdout


def test_site_rendered_and_browser_check(smoke_book, tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from browser_check import check

    pages = ["index.html", "book/chapters/04_core.html", "book/chapters/01_introduction.html",
             "book/chapters/08_features.html"]
    for page in pages:
        assert (smoke_book / page).exists(), f"{page} not rendered"
    # MathJax comes with the site (pinned npm mathjax), not from a CDN
    assert (smoke_book / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    intro = (smoke_book / "book/chapters/01_introduction.html").read_text()
    assert 'src="../../_static/mathjax/tex-mml-chtml.js' in intro, "the page should load the local MathJax"
    assert "cdn.jsdelivr" not in intro and "mathjax@" not in intro
    shots = STAGE / "_build" / "screenshots"
    recs = check(smoke_book, pages, shots)  # fails on raw TeX, untypeset maths, non-local requests
    assert all(Path(r["screenshot"]).stat().st_size > 10_000 for r in recs)
    assert recs[1]["images"] >= 2, "the core-metrics chapter should show its figures"
    for r in recs[1:3]:
        assert r["mathjax"] == "typeset" and r["maths"] > 0, f"{r['page']}: its maths should be typeset: {r}"


def test_feature_browser_in_the_site(smoke_book):
    """The build writes the feature browser of chapter 08's pair; the site serves it at browser/, linked
    from book/browser.html, and it opens in Chromium (when installed) with every alive latent listed."""
    from vsae import browser
    from vsae.pipeline import Experiment

    summary = json.loads((smoke_book / "browser" / browser.BOOK_SUMMARY).read_text())
    ex = Experiment(PROFILE)
    pair = browser.book_pair(ex)
    assert [r["sae"] for r in summary["saes"]] == [v.name for v in pair]
    assert sorted(v.architecture for v in pair) == ["topk", "vsae"] and {v.k for v in pair} == {ex.showcase_k()}
    for r in summary["saes"]:
        d = browser.load_data(smoke_book / "browser" / f"data_{browser.slug(r['sae'])}.js")
        assert d["n_latents_shown"] == d["n_alive"] == r["n_alive"] > 0
        assert d["n_tokens"] == summary["n_tokens"] == len(ex.eval_acts)
    page = (smoke_book / "book" / "browser.html").read_text()
    assert 'href="../browser/index.html"' in page
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        pytest.skip("chromium and chromedriver are not installed (`make browser`)")
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from browser_check import _chrome, serve

    drv = _chrome()
    try:
        with serve(smoke_book) as base:
            drv.get(base + "book/browser.html")
            drv.find_element("css selector", 'a[href="../browser/index.html"]').click()
            t0 = time.time()
            ready = None
            while time.time() - t0 < 20 and not ready:
                ready = drv.execute_script("return window.VSAE_READY")
                time.sleep(0.05)
            assert ready, "the feature browser never became ready"
            assert ready["sae"] == pair[0].name and ready["rows"] == summary["saes"][0]["n_shown"]
            shots = STAGE / "_build" / "screenshots"
            shots.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(str(shots / "book_feature_browser.png"))
    finally:
        drv.quit()


def test_result_tables_beside_the_site(smoke_book):
    """The build exports every per-seed result table beside the site (tables/), with its schema and an
    index page linked from book/tables.html."""
    from vsae import export

    manifest = json.loads((smoke_book / "tables" / "manifest.json").read_text())
    assert manifest["profile"]["name"] == PROFILE and set(manifest["tables"]) == set(export.TABLE_DOCS)
    schema = (smoke_book / "tables" / "SCHEMA.txt").read_text().splitlines()
    assert len(schema) == len(manifest["tables"]) and schema[0].startswith(manifest["tables"][0] + " (")
    index = (smoke_book / "tables" / "index.html").read_text()
    assert all(f'href="{name}.csv"' in index and f'href="{name}.parquet"' in index for name in manifest["tables"])
    import pandas as pd

    core = pd.read_parquet(smoke_book / "tables" / "core_metrics.parquet")
    assert core.seed.nunique() == len(book_profile().seeds) and "explained_variance_saebench" in core
    assert 'href="../tables/index.html"' in (smoke_book / "book" / "tables.html").read_text()


def book_profile():
    from vsae.profiles import get_profile

    return get_profile(PROFILE)


def test_bad_parameter_is_refused_before_work(tmp_path):
    import papermill as pm

    src = book.sync_notebook("01_introduction")
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters={"profile": "smoke", "kl_coef": 0.1},
                            cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    assert "unknown parameter(s) ['kl_coef']" in str(e.value.evalue)
    assert "kl_coeff" in str(e.value.evalue)  # the message lists what is allowed
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters={"profile": "tiny"},
                            cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    assert "not allowed" in str(e.value.evalue) and "offline" in str(e.value.evalue)


def test_rerun_one_chapter_with_new_parameters_reuses_artifacts(smoke_book):
    """k_values=[16] is a subset of the smoke runs: no SAE is trained again, no eval recomputed."""
    from vsae.store import Store

    def n_artifacts():
        root = Store().root
        return {kind: len(list((root / kind).glob("*/COMPLETE"))) for kind in ("sae", "core")}

    before = n_artifacts()
    t0 = time.time()
    p = _run([sys.executable, "-m", "vsae.book", "chapter", "04_core", "--profile", PROFILE, "--", "-p", "k_values", "[16]"])
    assert p.returncode == 0, p.stdout[-3000:]
    nb = json.loads((book.chapters_dir(PROFILE) / "04_core.ipynb").read_text())
    assert "k_values = [16]" in json.dumps(nb)
    assert n_artifacts() == before, "re-executing with a subset of k values must reuse every stored artifact"
    # restore the full smoke chapter for later runs, from a partial stage: re-executing one chapter
    # succeeds on its own (exit 0), the site is skipped with one line instead of failing the command
    last = book.chapters()[-1]
    aside = book.chapters_dir(PROFILE) / f".{last}.aside.ipynb"
    (book.chapters_dir(PROFILE) / f"{last}.ipynb").rename(aside)
    try:
        p = _run([sys.executable, "-m", "vsae.book", "chapter", "04_core", "--profile", PROFILE])
    finally:
        aside.rename(book.chapters_dir(PROFILE) / f"{last}.ipynb")
    assert p.returncode == 0, p.stdout[-3000:]
    assert f"site not rebuilt: profile {PROFILE} has {len(book.chapters()) - 1} of {len(book.chapters())} chapters" in p.stdout
    print(f"re-executed 04_core twice in {time.time() - t0:.0f} s")
