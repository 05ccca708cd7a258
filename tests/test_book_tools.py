"""Fast unit tests of the book build's pure parts: the dirty-tree check (a temporary git repo),
progress collapsing on realistic captured streams, the whole-book time estimate, the checks on
executed notebooks, and the build record."""

from __future__ import annotations

import json
import subprocess

import pytest

from vsae import book, buildlog, chapter_outputs, provenance, report


# --------------------------------------------------------------------------------------------
# dirty tree
# --------------------------------------------------------------------------------------------
def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)


@pytest.fixture()
def repo(tmp_path):
    r = tmp_path / "repo"
    (r / "src").mkdir(parents=True)
    (r / "book" / "chapters").mkdir(parents=True)
    (r / "notebooks").mkdir()
    (r / "src" / "code.py").write_text("x = 1\n")
    (r / "book" / "chapters" / "01_a.ipynb").write_text("{}\n")
    (r / "notebooks" / "01_a.ipynb").write_text("{}\n")
    (r / "notebooks" / "01_a.py").write_text("# %%\n")
    _git(r, "init", "-q")
    _git(r, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return r


def test_clean_tree_gives_the_plain_sha(repo):
    sha = report.head_commit(repo)
    assert len(sha) >= 7 and report.dirty_files(repo) == []
    assert provenance.provenance_commit(book.DEFAULT_PROFILE, root=repo) == sha
    assert report.tree_commit(repo) == sha


def test_build_outputs_and_untracked_files_do_not_make_the_tree_dirty(repo):
    (repo / "book" / "chapters" / "01_a.ipynb").write_text('{"new": 1}\n')  # the build's own output
    (repo / "notebooks" / "01_a.ipynb").write_text('{"synced": 1}\n')  # jupytext pairing
    (repo / "untracked.txt").write_text("scratch\n")
    assert report.dirty_files(repo) == []
    assert provenance.provenance_commit(book.DEFAULT_PROFILE, root=repo) == report.head_commit(repo)


def test_dirty_tree_is_refused_for_the_committed_chapters(repo, capsys):
    (repo / "src" / "code.py").write_text("x = 2\n")
    (repo / "notebooks" / "01_a.py").write_text("# %%\nchanged\n")
    assert sorted(report.dirty_files(repo)) == ["notebooks/01_a.py", "src/code.py"]
    sha = report.head_commit(repo)
    with pytest.raises(SystemExit) as e:
        provenance.provenance_commit(book.DEFAULT_PROFILE, root=repo)
    msg = str(e.value)
    assert "dirty" in msg and "commit or stash" in msg and "--allow-dirty" in msg and "src/code.py" in msg
    # --allow-dirty: runs, loudly, and records +dirty
    assert provenance.provenance_commit(book.DEFAULT_PROFILE, allow_dirty=True, root=repo) == sha + "+dirty"
    assert "WARNING" in capsys.readouterr().err
    # staged profiles never refuse, they record +dirty
    assert provenance.provenance_commit("smoke", root=repo) == sha + "+dirty"
    assert report.tree_commit(repo) == sha + "+dirty"


def test_staged_change_counts_as_dirty(repo):
    (repo / "src" / "code.py").write_text("x = 3\n")
    _git(repo, "add", "src/code.py")
    assert report.dirty_files(repo) == ["src/code.py"]


def test_porcelain_parsing():
    porcelain = " M src/a.py\nM  book/chapters/04_core.ipynb\nR  old.py -> src/new.py\n M notebooks/04_core.ipynb\n"
    assert report.dirty_files(porcelain=porcelain) == ["src/a.py", "src/new.py"]


def test_tree_change_is_reported(repo):
    before = provenance.tree_snapshot(repo)
    assert provenance.tree_change(before, provenance.tree_snapshot(repo)) is None
    (repo / "src" / "code.py").write_text("x = 4\n")
    assert "modified: src/code.py" in provenance.tree_change(before, provenance.tree_snapshot(repo))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second")
    assert "HEAD moved" in provenance.tree_change(before, provenance.tree_snapshot(repo))


def test_recorded_commit_wins_over_head(monkeypatch):
    monkeypatch.setenv(report.COMMIT_ENV, "abc1234")
    assert report.git_commit() == "abc1234"
    monkeypatch.delenv(report.COMMIT_ENV)
    assert report.git_commit() != "abc1234"


# --------------------------------------------------------------------------------------------
# progress collapsing
# --------------------------------------------------------------------------------------------
def _kernel_outputs(writes: list[str], name: str = "stderr") -> list[dict]:
    """What nbclient stores: one stream output per message the kernel sent."""
    return [{"output_type": "stream", "name": name, "text": w} for w in writes]


def _bar(desc, n, total, t="00:01", rate="3.9ktok/s"):
    pct = int(100 * n / total)
    fill = "█" * (pct // 10)
    return f"{desc}: {pct:3d}%|{fill:<10}| {n}k/{total}k [{t}<00:10, {rate}]"


def test_collapse_a_realistic_chapter_stream():
    """The shape of 02_data's harvest cell: each tqdm refresh a separate stream output starting with \\r,
    a close with two 100% states, a log line, then a second bar; a DataFrame after them."""
    d1, d2 = "harvest smollm2-135m blocks.9.hook_resid_post offline/train", "harvest ... offline/eval"
    writes = ["\r" + _bar(d1, 0, 288)] + ["\r" + _bar(d1, n, 288) for n in range(4, 289, 4)]
    writes += ["\r" + _bar(d1, 288, 288, rate="3.99ktok/s"), "\n",
               "harvested 288,000 tokens ... in 74.2 s (3,994 tok/s), peak RSS 1.49 GB -> $VSAE_HOME/store/acts/7de\n"]
    writes += ["\r" + _bar(d2, n, 32) for n in range(0, 33, 4)] + ["\n", "harvested 32,768 tokens\n"]
    outputs = _kernel_outputs(writes)
    outputs.insert(40, {"output_type": "stream", "name": "stdout", "text": "a print in between\n"})
    outputs.append({"output_type": "execute_result", "data": {"text/plain": "table"}, "metadata": {},
                    "execution_count": 6})
    merged = chapter_outputs.merge_streams(outputs)
    kinds = [(o["output_type"], o.get("name")) for o in merged]
    assert kinds == [("stream", "stderr"), ("stream", "stdout"), ("execute_result", None)]
    lines = merged[0]["text"].splitlines()
    assert lines == [_bar(d1, 288, 288, rate="3.99ktok/s"), lines[1], _bar(d2, 32, 32), "harvested 32,768 tokens"]
    assert lines[1].startswith("harvested 288,000 tokens")
    assert "\r" not in merged[0]["text"]


def test_collapse_bar_updates_captured_as_lines():
    """A stream whose \\r were already lost (old builds): adjacent states of one bar collapse to the last."""
    text = "\n".join([_bar("training 3 SAE(s)", n, 50) for n in range(0, 51, 5)] + ["done", _bar("eval", 1, 2), _bar("eval", 2, 2)])
    assert chapter_outputs.collapse_progress(text).splitlines() == [_bar("training 3 SAE(s)", 50, 50), "done", _bar("eval", 2, 2)]


def test_merge_legacy_outputs_whose_carriage_returns_were_stripped():
    """Chapters cleaned by the old per-output collapse: one output per refresh, no \r, no newline."""
    d = "harvest x offline/train"
    outputs = _kernel_outputs([_bar(d, n, 8) for n in range(0, 9, 2)] + ["\n", "harvested 8 tokens\n"])
    once = chapter_outputs.merge_streams(outputs)
    assert once[0]["text"] == _bar(d, 8, 8) + "\nharvested 8 tokens\n"
    assert chapter_outputs.merge_streams(once) == once  # idempotent


def test_collapse_keeps_separate_finished_bars_and_drops_cleared_ones():
    a1, a2 = _bar("round", 10, 10, t="00:01"), _bar("round", 20, 20, t="00:02")
    cleared = "\r" + _bar("tmp", 1, 4) + "\r" + " " * 60 + "\r"
    text = "\r" + a1 + "\n\r" + a2 + "\n" + cleared + "\nlog line\n"
    assert chapter_outputs.collapse_progress(text).splitlines() == [a1, a2, "log line"]


def test_collapse_leaves_ordinary_text_alone():
    text = "line 1\nline 2 | with | pipes 3/4 [x]\n\nlast"
    assert chapter_outputs.collapse_progress(text) == text


def test_carriage_return_semantics_are_the_notebooks():
    # a notebook renderer replaces the line after a carriage return (tqdm pads shorter refreshes itself)
    assert chapter_outputs._terminal_line("abc\rX") == ("X", True)
    assert chapter_outputs._terminal_line("bar 50%\r       \r") == ("       ", True)  # a leave=False bar, cleared
    assert chapter_outputs._terminal_line("ab\bc") == ("ac", False)


# --------------------------------------------------------------------------------------------
# cleaning executed notebooks
# --------------------------------------------------------------------------------------------
def _nb(cells):
    return {"cells": cells, "metadata": {"papermill": {"input_path": "/x/notebooks/a.ipynb", "duration": 3.0}},
            "nbformat": 4, "nbformat_minor": 5}


def _code(outputs=(), tags=(), n=1):
    return {"cell_type": "code", "execution_count": n, "source": "", "outputs": list(outputs),
            "metadata": {"tags": list(tags), "papermill": {"duration": 1}}}


def test_clean_notebook_tags_parameters_remove_cell_and_relativises_paths():
    home = str(chapter_outputs.vsae_home())
    nb = _nb([_code(tags=["parameters", "hide-input"]), _code(tags=["injected-parameters"]),
              _code([{"output_type": "stream", "name": "stderr", "text": f"saved -> {home}/store/acts/1\n"},
                     {"output_type": "display_data", "metadata": {},
                      "data": {"text/plain": f"{book.REPO_ROOT}/book/chapters/figures/a.png",
                               "image/png": "iVBORw0KGgo/home/x"}}])])
    chapter_outputs.clean_notebook(nb)
    assert nb["cells"][0]["metadata"]["tags"] == ["parameters", "remove-cell"]
    assert nb["cells"][1]["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert "papermill" not in nb["cells"][2]["metadata"] and "duration" not in nb["metadata"]["papermill"]
    outs = nb["cells"][2]["outputs"]
    assert outs[0]["text"] == "saved -> $VSAE_HOME/store/acts/1\n"
    assert outs[1]["data"]["text/plain"] == "book/chapters/figures/a.png"
    assert outs[1]["data"]["image/png"] == "iVBORw0KGgo/home/x"  # images untouched


# --------------------------------------------------------------------------------------------
# checks on executed notebooks (what tests/test_provenance.py runs on the committed chapters)
# --------------------------------------------------------------------------------------------
def _header(commit):
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/markdown": f"**Profile** `offline` · **commit** `{commit}`", "text/plain": "<Markdown>"}}


def test_provenance_checks_on_hand_made_notebooks():
    good = _nb([_code([_header("abc1234")]), _code([{"output_type": "stream", "name": "stderr", "text": "bar 100%\n"}])])
    assert chapter_outputs.header_commits(good) == ["abc1234"]
    assert chapter_outputs.provenance_problems({"01_a": good, "02_b": good}) == []

    dirty = _nb([_code([_header("abc1234+dirty")])])
    other = _nb([_code([_header("def5678")])])
    none = _nb([_code()])
    warn = _nb([_code([_header("abc1234")]),
                _code([{"output_type": "stream", "name": "stderr",
                        "text": "/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress "
                                "not found.\n  from .autonotebook import tqdm as notebook_tqdm\n"}], n=4)])
    path = _nb([_code([_header("abc1234")]),
                _code([{"output_type": "execute_result", "metadata": {}, "execution_count": 2,
                        "data": {"text/html": "<td>/root/.cache/x</td>", "image/png": "/home/abc"}}], n=2)])
    problems = chapter_outputs.provenance_problems({"01_a": good, "02_dirty": dirty, "03_other": other, "04_none": none,
                                         "05_warn": warn, "06_path": path})
    text = "\n".join(problems)
    assert "02_dirty: built from a dirty tree (commit abc1234+dirty)" in text
    assert "04_none: no '**commit**" in text
    assert "different commits" in text and "def5678: 03_other" in text
    assert "05_warn cell 1 [In 4] stream stderr: machine path (/work/, site-packages, .venv/)" in text
    assert "05_warn cell 1 [In 4] stream stderr: warning:" in text and "TqdmWarning" in text
    assert "06_path cell 1 [In 2] execute_result text/html: machine path (/root/)" in text
    assert "/home/" not in text  # image data is not searched
    assert len([p for p in problems if p.startswith("05_warn")]) == 2  # one line per output and kind


# --------------------------------------------------------------------------------------------
# whole-book progress and the build record
# --------------------------------------------------------------------------------------------
def test_estimate_remaining():
    prev = {"01": 60.0, "02": 120.0, "03": 600.0}
    assert buildlog.estimate_remaining(["01", "02", "03"], prev) == 780.0
    assert buildlog.estimate_remaining([], prev) == 0.0
    assert buildlog.estimate_remaining(["01"], {}) is None
    # this build runs twice as slow as the last one so far
    assert buildlog.estimate_remaining(["03"], prev, done={"01": 120.0, "02": 240.0}) == 1200.0
    # a new chapter counts as the mean known one; the speed-up ratio is clipped to [0.25, 4]
    assert buildlog.estimate_remaining(["03", "new"], prev, done={"01": 6000.0}) == 4 * (600 + 260)


def test_progress_line():
    line = buildlog.progress_line(4, 12, "04_core", 12.3 * 60, 40 * 60)
    assert line == "[vsae.book] chapter 4/12 04_core · elapsed 12.3 min · est. remaining 40 min"
    assert "est. remaining ?" in buildlog.progress_line(1, 12, "01_introduction", 0.0, None)


def test_build_record_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("VSAE_HOME", str(tmp_path))
    assert report.build_record("smoke") == {}
    rec = {"profile": "smoke", "commit": "abc1234", "chapters": [{"chapter": "01_a", "seconds": 3.0,
                                                                  "kernels_peak_rss_mb": 900.0}],
           "site_seconds": 2.0, "total_seconds": 5.5, "peak_rss_build_mb": 100.0, "peak_rss_kernels_mb": 900.0}
    buildlog.write_record("smoke", rec)
    assert report.build_record("smoke") == rec
    assert report.build_record_path("smoke") == tmp_path / "timings" / "smoke" / "build.json"
    # the chapters' own timing records sit next to it and ignore it
    (tmp_path / "timings" / "smoke" / "01_a.json").write_text(json.dumps({"chapter": "01_a", "seconds": 2.0}))
    assert [r["chapter"] for r in report.chapter_timings("smoke")] == ["01_a"]
    assert buildlog.previous_times("smoke") == {"01_a": 3.0}  # the build's own wall time wins
    table = buildlog.timing_table(rec)
    assert "01_a" in table and "site (jupyter-book)" in table and "peak RSS" in table


def test_work_ledger_sums_per_kind_inside_the_window(tmp_path, monkeypatch):
    monkeypatch.setenv("VSAE_HOME", str(tmp_path))
    monkeypatch.delenv("VSAE_WORK_LEDGER")
    path = buildlog.work_ledger_path()
    assert path == tmp_path / "timings" / "work.jsonl"
    assert buildlog.work_between(0.0, 1e12) == {}  # no ledger yet
    lines = [{"t_end": 10.0, "kind": "train", "n_saes": 8, "sae_tokens": 8 * 192, "seconds": 2.0},
             {"t_end": 20.0, "kind": "train", "n_saes": 8, "sae_tokens": 8 * 192, "seconds": 4.0},
             {"t_end": 25.0, "kind": "core", "n_saes": 3, "sae_tokens": 3 * 100, "seconds": 1.5},
             {"t_end": 26.0, "kind": "absorption", "n_saes": 2, "sae_tokens": None, "seconds": 0.5},
             {"t_end": 99.0, "kind": "core", "n_saes": 5, "sae_tokens": 500, "seconds": 9.0}]  # after the window
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"t_end": 21.0, "kind": "tr')  # killed mid-line
    w = buildlog.work_between(15.0, 30.0)
    assert w == {"train": {"n_saes": 8, "sae_tokens": 1536, "seconds": 4.0},
                 "core": {"n_saes": 3, "sae_tokens": 300, "seconds": 1.5},
                 "absorption": {"n_saes": 2, "sae_tokens": 0, "seconds": 0.5}}
    cols = buildlog.work_columns(w, wall_seconds=10.0)
    # 1536 trained in 4 s of training; 300 evaluated; (1536 + 300) / 10 s of wall time
    assert cols == {"saes_trained": 8, "sae_tokens_trained": 1536, "train_sae_tokens_per_s": 384.0,
                    "sae_evaluations": 5, "sae_tokens_evaluated": 300, "sae_tokens_per_s": 183.6}
    assert buildlog.work_columns({}, 10.0)["sae_tokens_per_s"] is None
    # appending adds a parseable line with the current time
    buildlog.record_work("pool_evals", 1, 4096, 0.25)
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["kind"] == "pool_evals" and last["sae_tokens"] == 4096 and last["seconds"] == 0.25
    # a home that cannot be written loses the timing line, not the work
    buildlog.record_work("core", 1, 1, 1.0, path=tmp_path / "timings" / "work.jsonl" / "not-a-dir")


def test_build_prints_progress_and_writes_the_record(tmp_path, monkeypatch, capsys):
    """build() with the chapter execution and the site faked: progress lines, table, record, commit env."""
    monkeypatch.setenv("VSAE_HOME", str(tmp_path))
    monkeypatch.setenv("VSAE_WORK_LEDGER", str(tmp_path / "work.jsonl"))
    monkeypatch.delenv(report.COMMIT_ENV, raising=False)
    names = ["01_a", "02_b", "03_c"]
    seen = []
    out_dir = tmp_path / "chapters"
    out_dir.mkdir()
    monkeypatch.setattr(book, "chapters", lambda: names)
    monkeypatch.setattr(book, "chapters_dir", lambda profile: out_dir)

    def fake_execute(name, profile, device="cpu", params=None):
        import os

        seen.append(os.environ[report.COMMIT_ENV])
        if name == "02_b":  # the chapter's kernel trains 2 SAEs and evaluates them (the ledger is shared)
            buildlog.record_work("train", 2, 2 * 1000, 4.0)
            buildlog.record_work("core", 2, 2 * 300, 1.0)
        (out_dir / f"{name}.ipynb").write_text(json.dumps(_nb([_code([_header(seen[-1])])])))
        return out_dir / f"{name}.ipynb"

    monkeypatch.setattr(book, "execute", fake_execute)
    monkeypatch.setattr(book, "site", lambda profile: tmp_path / "index.html")
    browsers, tables = [], []
    monkeypatch.setattr(book, "write_browser", lambda profile, device: browsers.append((profile, device)))
    monkeypatch.setattr(book, "write_tables", lambda profile, device: tables.append((profile, device)))
    buildlog.write_record("smoke", {"chapters": [{"chapter": "01_a", "seconds": 60.0}, {"chapter": "02_b", "seconds": 60.0},
                                              {"chapter": "03_c", "seconds": 60.0}]})
    book.build("smoke")
    out = capsys.readouterr().out
    assert "[vsae.book] chapter 1/3 01_a · elapsed 0.0 min · est. remaining 3.0 min" in out
    assert "[vsae.book] chapter 3/3 03_c" in out and "site (jupyter-book)" in out
    assert len(set(seen)) == 1 and seen[0].split("+")[0] == report.head_commit()  # one commit for every chapter
    rec = report.build_record("smoke")
    assert rec["complete"] and rec["finished"] and rec["commit"] == seen[0]
    assert [r["chapter"] for r in rec["chapters"]] == names
    a, b = rec["chapters"][0], rec["chapters"][1]
    assert a["sae_tokens_trained"] == 0 and a["sae_tokens_evaluated"] == 0 and a["sae_tokens_per_s"] is None
    assert b["saes_trained"] == 2 and b["sae_tokens_trained"] == 2000 and b["train_sae_tokens_per_s"] == 500.0
    assert b["sae_evaluations"] == 2 and b["sae_tokens_evaluated"] == 600
    assert "SAE-tok trained" in out and "train SAE-tok/s" in out
    assert rec["peak_rss_build_mb"] > 0 and rec["site_seconds"] is not None
    # the feature browser is written once, after the chapters, before the site
    assert browsers == [("smoke", "cpu")] and rec["browser_seconds"] is not None and "feature browser" in out
    assert tables == [("smoke", "cpu")] and rec["tables_seconds"] is not None and "result tables" in out


def test_site_extras_placeholder_then_the_written_folder(tmp_path, capsys):
    """An extra the build did not write (``make site`` on a fresh clone) is served as a page saying how to
    build it; once written, the folder itself replaces the placeholder."""
    (tmp_path / "_build" / "html").mkdir(parents=True)
    pages = book.publish_extras(tmp_path, "offline")
    assert set(pages) == set(book.EXTRAS) == {"browser", "tables"}
    text = pages["browser"].read_text()
    assert "Feature browser: not built" in text and "python -m vsae.book browser --profile offline" in text
    assert "python -m vsae.book tables --profile offline" in pages["tables"].read_text()
    out = capsys.readouterr().out
    assert "no feature browser under _build/browser" in out and "no result tables under _build/tables" in out
    (tmp_path / "_build" / "browser").mkdir()
    (tmp_path / "_build" / "browser" / "index.html").write_text("<html>browser</html>")
    (tmp_path / "_build" / "browser" / "data_x.js").write_text("x")
    pages = book.publish_extras(tmp_path, "offline")
    assert pages["browser"].read_text() == "<html>browser</html>"
    assert (tmp_path / "_build" / "html" / "browser" / "data_x.js").read_text() == "x"


def test_chapter_command_succeeds_on_a_partial_stage(tmp_path, monkeypatch, capsys):
    """``chapter`` on a stage with only some chapters executed: the chapter is written, the site is
    skipped with one line naming what is missing, exit 0; with every chapter there the site is rendered."""
    names = ["01_a", "02_b", "03_c"]
    out_dir = tmp_path / "chapters"
    out_dir.mkdir()
    monkeypatch.setattr(book, "chapters", lambda: names)
    monkeypatch.setattr(book, "chapters_dir", lambda profile: out_dir)
    rendered = []

    def fake_execute(name, profile, device="cpu", params=None):
        (out_dir / f"{name}.ipynb").write_text(json.dumps(_nb([_code([_header("abc")])])))
        return out_dir / f"{name}.ipynb"

    monkeypatch.setattr(book, "execute", fake_execute)
    monkeypatch.setattr(book, "site", lambda profile, strict=True: rendered.append(profile))
    assert book.main(["chapter", "02_b", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "[vsae.book] site not rebuilt: profile smoke has 1 of 3 chapters executed (missing: 01_a, 03_c)" in out
    assert "python -m vsae.book build --profile smoke" in out and rendered == []
    for n in ("01_a", "03_c"):
        fake_execute(n, "smoke")
    assert book.main(["chapter", "02_b", "--profile", "smoke"]) == 0
    assert rendered == ["smoke"] and "site not rebuilt" not in capsys.readouterr().out


_PROGRESS_CHAPTER = '''# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
fail = False

# %%
import sys
import time

from tqdm.auto import tqdm

for i in tqdm(range(300), desc="harvest", mininterval=0, miniters=1):
    pass
print("done")
assert not fail, "asked to fail"
'''


def _n_streams(nb):
    return [sum(o.get("output_type") == "stream" for o in c.get("outputs", [])) for c in nb["cells"]]


@pytest.mark.parametrize("fail", [False, True], ids=["written", "failed"])
def test_execute_collapses_progress_on_every_path_it_writes(tmp_path, monkeypatch, fail):
    """A real papermill run of a chapter that draws 300 progress refreshes: the chapter it writes (or the
    failed notebook it keeps) holds one stream per stream name and cell, each bar at its final state."""
    nbs, out_dir = tmp_path / "notebooks", tmp_path / "chapters"
    nbs.mkdir()
    (nbs / "01_bars.py").write_text(_PROGRESS_CHAPTER)
    monkeypatch.setattr(book, "NOTEBOOKS", nbs)
    monkeypatch.setattr(book, "chapters_dir", lambda profile: out_dir)
    if fail:
        with pytest.raises(SystemExit, match="asked to fail"):
            book.execute("01_bars", "smoke", params={"fail": True})
        nb = json.loads((out_dir / ".01_bars.failed.ipynb").read_text())
    else:
        nb = json.loads(book.execute("01_bars", "smoke").read_text())
    cell = next(c for c in nb["cells"] if "tqdm(" in "".join(c["source"]))
    streams = [o for o in cell["outputs"] if o["output_type"] == "stream"]
    assert sorted(o["name"] for o in streams) == ["stderr", "stdout"], [o["name"] for o in streams]
    bar = next(o for o in streams if o["name"] == "stderr")["text"]
    assert bar.count("harvest") == 1 and "300/300" in bar and "\r" not in "".join(bar)
    assert max(_n_streams(nb)) == 2


def test_site_cleans_chapters_written_by_any_path(tmp_path, monkeypatch, capsys):
    """A chapter written without the book's clean-up (one output per progress refresh, as papermill or
    Jupyter leave it) is cleaned before the site renders it; a clean one is left byte for byte."""
    out_dir = tmp_path / "chapters"
    out_dir.mkdir()
    monkeypatch.setattr(book, "chapters", lambda: ["01_a", "02_b"])
    monkeypatch.setattr(book, "chapters_dir", lambda profile: out_dir)
    raw = _kernel_outputs(["\r" + _bar("harvest", n, 250) for n in range(251)] + ["\n"])
    (out_dir / "01_a.ipynb").write_text(json.dumps(_nb([_code([_header("abc")] + raw)])))
    clean = chapter_outputs.dump_notebook(chapter_outputs.clean_notebook(_nb([_code([_header("abc")])])))
    (out_dir / "02_b.ipynb").write_text(clean)
    assert book.clean_chapters("smoke") == ["01_a"]
    assert "cleaned 1 chapter(s)" in capsys.readouterr().out
    nb = json.loads((out_dir / "01_a.ipynb").read_text())
    assert len(nb["cells"][0]["outputs"]) == 2 and nb["cells"][0]["outputs"][1]["text"] == _bar("harvest", 250, 250) + "\n"
    assert (out_dir / "02_b.ipynb").read_text() == clean
    assert book.clean_chapters("smoke") == []  # idempotent
    # the site runs it before jupyter-book
    (out_dir / "01_a.ipynb").write_text(json.dumps(_nb([_code([_header("abc")] + raw)])))
    monkeypatch.setattr(book, "stage", lambda profile: tmp_path)
    monkeypatch.setattr(book, "vendor_mathjax", lambda root: None)
    monkeypatch.setattr(book.subprocess, "run", lambda *a, **k: None)
    book.site("smoke")
    assert len(json.loads((out_dir / "01_a.ipynb").read_text())["cells"][0]["outputs"]) == 2


def test_browser_and_tables_commands_parse_and_refuse_an_unknown_k(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(book, "write_browser", lambda profile, device, ks=None: calls.append(("browser", profile, device, ks)))
    monkeypatch.setattr(book, "write_tables", lambda profile, device: calls.append(("tables", profile, device)))
    book.main(["browser", "--profile", "smoke", "--k-values", "8,64"])
    book.main(["browser", "--profile", "smoke"])
    book.main(["tables", "--profile", "smoke", "--device", "cpu"])
    assert calls == [("browser", "smoke", "cpu", [8, 64]), ("browser", "smoke", "cpu", None), ("tables", "smoke", "cpu")]

    def refuse(profile, device, ks=None):
        raise ValueError("k [7] is not a headline k of profile smoke (k values [8, 16, 32, 64])")
    monkeypatch.setattr(book, "write_browser", refuse)
    with pytest.raises(SystemExit) as e:
        book.main(["browser", "--profile", "smoke", "--k-values", "7"])
    assert e.value.code == 2 and "k [7] is not a headline k" in capsys.readouterr().err


def _nb_by_source(*cells):
    return {"cells": [{"cell_type": "code", "source": src, "outputs": outs} for src, outs in cells]}


def _out(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_output_differences_match_cells_by_source_and_apply_the_sanitizers():
    san = chapter_outputs.read_sanitizers(book.REPO_ROOT / "tests" / "nbval_sanitize.cfg")
    old = _nb_by_source(("print(a)", [_out("EV 0.951 in 12.3 s\n")]), ("print(b)", [_out("CE 0.99\n")]),
              ("gone()", [_out("x\n")]), ("print(a)", [_out("second 1\n")]))
    new = _nb_by_source(("print(a)", [_out("EV 0.951 in 40.0 s\n")]), ("print(b)", [_out("CE 0.98\n")]),
              ("added()", []), ("print(a)", [_out("second 1\n")]))
    d = chapter_outputs.output_differences(old, new, san, "ch")
    # the timing differs only inside the sanitized <TIME>; the CE value is a real change
    assert len(d["changed"]) == 1 and d["changed"][0].startswith("ch: print(b)")
    assert "-stream stdout: CE 0.99" in d["changed"][0] and "+stream stdout: CE 0.98" in d["changed"][0]
    assert d["only_new"] == ["ch: added()"] and d["only_old"] == ["ch: gone()"]
    # without sanitizers the timing is a difference too
    assert len(chapter_outputs.output_differences(old, new, (), "ch")["changed"]) == 2


def test_compare_parses_its_revision():
    with pytest.raises(SystemExit):
        book.main(["compare", "--profile", "nope"])
