"""Execute the book's chapters with papermill and render the site with jupyter-book.

The chapters are jupytext percent files ``notebooks/NN_name.py`` paired with ``notebooks/NN_name.ipynb``.
For the default profile (``offline``) the executed chapters go to ``book/chapters/`` (committed, so the
rendered book shows real results from a clone). Any other profile is *staged* under
``.stage/<profile>/`` (a copy of the book's config and narrative pages plus its executed chapters), so
running ``smoke`` or ``paper`` never overwrites the committed results.

Command line (what the Makefile calls)::

    python -m vsae.book build   --profile offline [--device cpu] [--allow-dirty]
    python -m vsae.book chapter 04_core --profile offline [--allow-dirty] -- -p k_values "[128]" -p kl_coeff 0.1
    python -m vsae.book site    --profile offline
    python -m vsae.book verify  --profile offline

Provenance: the default profile writes the committed chapters, so ``build`` and ``chapter`` refuse to
run it from a git tree whose tracked sources are modified (commit or stash first; the build's own
outputs, ``book/chapters/`` and ``notebooks/*.ipynb``, do not count). ``--allow-dirty`` runs anyway,
warns loudly, and every chapter header then shows ``<sha>+dirty``. The commit is recorded once, at the
start, and handed to every chapter kernel in ``$VSAE_BOOK_COMMIT`` (see :func:`vsae.report.git_commit`),
so all chapters of one build show the same commit; if the tree changes during the build the build says
so at the end. Staged profiles (``smoke``, ``paper``) run from any tree and record ``+dirty``.

Progress: before each chapter ``build`` prints ``chapter i/n NAME · elapsed · est. remaining`` (estimated
from the previous build's per-chapter times), at the end a per-chapter wall-time table and the peak
RSS of the build and of its kernels; the record goes to ``$VSAE_HOME/timings/<profile>/build.json``
(:func:`vsae.report.build_record`).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import report
from .files import atomic_write_json
from .paths import REPO_ROOT, vsae_home

NOTEBOOKS = REPO_ROOT / "notebooks"
DEFAULT_PROFILE = "offline"


def chapters() -> list[str]:
    """Computational chapters in table-of-contents order (names like ``04_core``)."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    out = []
    for part in toc.get("parts", []):
        for ch in part.get("chapters", []):
            f = ch["file"]
            if f.startswith("book/chapters/"):
                out.append(Path(f).name)
    return out


def stage_root(profile: str) -> Path:
    return REPO_ROOT if profile == DEFAULT_PROFILE else REPO_ROOT / ".stage" / profile


def chapters_dir(profile: str) -> Path:
    return stage_root(profile) / "book" / "chapters"


def parse_params(argv: list[str]) -> dict:
    """Parse papermill-style ``-p name value`` pairs; values are Python/JSON literals (``inf`` and ``nan``
    are floats) or plain strings."""
    params, i = {}, 0
    argv = [a for a in argv if a != "--"]
    while i < len(argv):
        if argv[i] not in ("-p", "--parameters"):
            raise SystemExit(f"cannot parse parameters at {argv[i:]!r}; use -p NAME VALUE ...")
        if i + 2 >= len(argv):
            raise SystemExit(f"parameter {argv[i + 1] if i + 1 < len(argv) else '?'!r} has no value; use -p NAME VALUE")
        name, raw = argv[i + 1], argv[i + 2]
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            # inf / nan are numbers to the user (and to the parameter check, which refuses them)
            value = float(raw) if raw.strip().lower().lstrip("+-") in ("inf", "infinity", "nan") else raw
        params[name] = value
        i += 3
    return params


def sync_notebook(name: str) -> Path:
    """Regenerate ``notebooks/<name>.ipynb`` from its paired ``.py`` (the .py is the source of truth)."""
    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    if not py.exists():
        raise FileNotFoundError(f"chapter source {py} is missing; chapters are {chapters()}")
    import jupytext
    from jupytext.combine import combine_inputs_with_outputs

    nb = jupytext.read(py)
    if ipynb.exists():  # keep the outputs and metadata of the paired notebook (jupytext --update)
        nb = combine_inputs_with_outputs(nb, jupytext.read(ipynb), fmt="ipynb")
    jupytext.write(nb, ipynb)
    return ipynb


def execute(name: str, profile: str, device: str = "cpu", params: dict | None = None) -> Path:
    """Execute one chapter with papermill into the profile's chapter folder; return the executed path."""
    import papermill as pm

    src = sync_notebook(name)
    out_dir = chapters_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.ipynb"
    tmp = out_dir / f".{name}.running.ipynb"
    parameters = {"profile": profile, "device": device, **(params or {})}
    t0 = time.time()
    print(f"[vsae.book] executing {name} (profile={profile}, params={params or {}})", flush=True)
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=parameters, cwd=str(out_dir), kernel_name="python3",
                            progress_bar=False, request_save_on_cell_execute=False)
    except pm.PapermillExecutionError as e:
        # keep the failed notebook for inspection (cleaned like a chapter: one stream per cell, progress
        # collapsed), never replace the last good chapter with it
        failed = out_dir / f".{name}.failed.ipynb"
        try:
            _clean_metadata(tmp, input_path=src, output_path=failed)
        except (OSError, ValueError):  # pragma: no cover - an unreadable notebook is kept as it is
            pass
        shutil.move(str(tmp), failed)
        raise SystemExit(f"chapter {name} failed at cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                         f"the failed notebook is {failed}; the last good {out.name} is untouched") from None
    _clean_metadata(tmp, input_path=src, output_path=out)
    tmp.replace(out)
    (out_dir / f".{name}.failed.ipynb").unlink(missing_ok=True)
    print(f"[vsae.book] {name} done in {time.time() - t0:.0f} s -> {_rel(out)}", flush=True)
    return out


_BAR = re.compile(r"^(?P<name>[^|\n]*?):?\s*\d+%\|[^|]*\|\s*(?P<n>[\d.,]+[kMGTP]?)/(?P<total>[\d.,]+[kMGTP]?|\?) \[")


def _terminal_line(line: str) -> tuple[str, bool]:
    r"""What is finally shown of one line with ``\r`` and ``\b``; and whether the line used ``\r``."""
    while "\x08" in line:  # a backspace cancels the character before it
        new = re.sub("[^\x08\n]\x08", "", line, count=1)
        if new == line:
            break
        line = new
    line = line.replace("\x08", "")
    if "\r" not in line:
        return line, False
    # as a notebook renders it: text after a carriage return replaces the line (tqdm pads a shorter
    # refresh with spaces and clears a leave=False bar with spaces, so the last non-empty piece is
    # what a terminal shows too)
    segs = [seg for seg in line.split("\r") if seg]
    return (segs[-1] if segs else ""), True


def collapse_progress(text: str) -> str:
    r"""Reduce a captured stream to what a terminal would finally show, one line per tqdm bar.

    ``\r`` rewrites are resolved as a terminal would (the last state of each bar wins, lines a bar
    cleared with ``leave=False`` disappear). Bar updates that arrived as separate lines (a stream captured
    without ``\r``) are collapsed too: of adjacent lines of the same bar, an earlier one is dropped when
    it is unfinished or shows the same count as the next.
    """
    lines = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        ln, rewritten = _terminal_line(raw)
        if rewritten and not ln.strip():
            continue
        lines.append(ln.rstrip() if rewritten else ln)
    keep = []
    for i, ln in enumerate(lines):
        m = _BAR.match(ln)
        nxt = _BAR.match(lines[i + 1]) if i + 1 < len(lines) else None
        if m and nxt and m.group("name").strip() == nxt.group("name").strip():
            unfinished = m.group("n") != m.group("total")
            if unfinished or (m.group("n"), m.group("total")) == (nxt.group("n"), nxt.group("total")):
                continue
        keep.append(ln)
    return "\n".join(keep)


def merge_streams(outputs: list[dict]) -> list[dict]:
    r"""Merge every ``stream`` output of a cell into one per stream name (at its first position), then
    :func:`collapse_progress` it.

    The kernel sends each tqdm refresh as its own stream message; the rendered book (``nb_merge_streams``)
    and nbval merge a cell's streams anyway, but myst-nb ends every merged piece with a newline, so
    un-merged ``\r`` updates would render as hundreds of progress lines.
    """
    new, streams = [], {}
    for out in outputs:
        if out.get("output_type") != "stream":
            new.append(out)
            continue
        text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
        if out["name"] in streams:
            prev = streams[out["name"]]["text"]
            if not prev.endswith("\n") and not text.startswith(("\r", "\n")) and _BAR.match(text):
                text = "\r" + text  # a bar refresh whose \r an older clean-up already stripped
            streams[out["name"]]["text"] = prev + text
        else:
            out = dict(out, text=text)
            streams[out["name"]] = out
            new.append(out)
    for out in streams.values():
        text = collapse_progress(out["text"])
        out["text"] = text if text.endswith("\n") or not text else text + "\n"
    return [o for o in new if o.get("output_type") != "stream" or o["text"].strip()]


def machine_prefixes() -> list[tuple[str, str]]:
    """``(prefix, replacement)`` pairs that make printed paths machine-independent (longest first):
    ``$VSAE_HOME`` for the artifact folder (``$VSAE_HOME/store`` for the store), the repository root
    dropped (paths become relative), the home folder as ``~``."""
    from .paths import store_dir

    pairs = [(str(vsae_home()), "$VSAE_HOME"), (str(store_dir()), "$VSAE_HOME/store"),
             (str(REPO_ROOT) + os.sep, ""), (str(REPO_ROOT), "."), (str(Path.home()), "~")]
    return sorted({p for p in pairs if len(p[0]) > 1}, key=lambda p: -len(p[0]))


def sanitize_paths(text: str, prefixes: list[tuple[str, str]] | None = None) -> str:
    for prefix, repl in prefixes or machine_prefixes():
        text = text.replace(prefix, repl)
    return text


_TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex")


def _sanitize_output(out: dict, prefixes) -> None:
    def fix(v):
        if isinstance(v, list):
            return [sanitize_paths(x, prefixes) for x in v]
        return sanitize_paths(v, prefixes) if isinstance(v, str) else v

    if out.get("output_type") == "stream":
        out["text"] = fix(out["text"])
    elif out.get("output_type") == "error":
        out["traceback"] = fix(out.get("traceback", []))
        out["evalue"] = fix(out.get("evalue", ""))
    for mime in _TEXT_MIMES:
        if mime in out.get("data", {}):
            out["data"][mime] = fix(out["data"][mime])


#: tags that make jupyter-book drop a cell entirely (the header printed by chapter.start shows the profile)
PARAMETER_TAGS = ("parameters", "injected-parameters")


def clean_notebook(nb: dict, input_path: Path | None = None, output_path: Path | None = None) -> dict:
    """Drop volatile papermill metadata, merge and collapse streams, make printed paths relative, and tag
    the parameter cells ``remove-cell`` (in place; returns ``nb``)."""
    pm_meta = nb.get("metadata", {}).get("papermill", {})
    for k in ("start_time", "end_time", "duration"):
        pm_meta.pop(k, None)
    for k, p in (("input_path", input_path), ("output_path", output_path)):
        if k in pm_meta:
            pm_meta[k] = _rel(p) if p is not None else sanitize_paths(str(pm_meta[k]))
    prefixes = machine_prefixes()
    for cell in nb.get("cells", []):
        if cell.get("outputs"):
            cell["outputs"] = merge_streams(cell["outputs"])
            for out in cell["outputs"]:
                _sanitize_output(out, prefixes)
        meta = cell.setdefault("metadata", {})
        meta.pop("papermill", None)
        meta.get("execution", {}).clear()
        tags = meta.get("tags", [])
        if any(t in tags for t in PARAMETER_TAGS):
            meta["tags"] = [t for t in tags if t != "hide-input"] + ([] if "remove-cell" in tags else ["remove-cell"])
    return nb


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return sanitize_paths(str(p))


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _clean_metadata(path: Path, input_path: Path | None = None, output_path: Path | None = None) -> None:
    """Clean an executed notebook in place (see :func:`clean_notebook`) so re-executions diff cleanly."""
    nb = clean_notebook(json.loads(path.read_text()), input_path, output_path)
    path.write_text(_dump(nb))


def clean_chapters(profile: str) -> list[str]:
    """Clean every executed chapter of ``profile`` that is not clean yet (:func:`clean_notebook` is
    idempotent, so a clean chapter is left byte for byte); return the names rewritten.

    :func:`execute` cleans what it writes; this catches a chapter written by any other path (papermill
    or Jupyter by hand, a copy from another checkout) before the site renders it or it is committed.
    """
    fixed = []
    for name in chapters():
        path = chapters_dir(profile) / f"{name}.ipynb"
        if not path.exists():
            continue
        text = path.read_text()
        new = _dump(clean_notebook(json.loads(text)))
        if new != text:
            path.write_text(new)
            fixed.append(name)
    if fixed:
        print(f"[vsae.book] cleaned {len(fixed)} chapter(s) written without the book's clean-up (streams merged, "
              f"progress collapsed, paths sanitised): {', '.join(fixed)}", flush=True)
    return fixed


# --------------------------------------------------------------------------------------------
# checks on executed chapters (used by the build, tests/test_provenance.py and tests/test_book.py)
# --------------------------------------------------------------------------------------------
#: substrings that betray a machine-specific path in an output
MACHINE_PATH_MARKERS = ("/work/", "/root/", "/home/", "/Users/", "/tmp/", "site-packages", ".venv/")
#: substrings that make a stderr output a warning
WARNING_MARKERS = ("Warning", "warnings.warn")
_COMMIT = re.compile(r"\*\*commit\*\* `([^`]+)`")


def _output_texts(out: dict) -> list[tuple[str, str]]:
    """``(what, text)`` of every textual part of an output (images are skipped)."""
    join = lambda v: "".join(v) if isinstance(v, list) else str(v)  # noqa: E731
    kind = out.get("output_type")
    if kind == "stream":
        return [(f"stream {out.get('name')}", join(out.get("text", "")))]
    if kind == "error":
        return [("error", out.get("ename", "") + ": " + join(out.get("evalue", "")) + "\n" + join(out.get("traceback", [])))]
    return [(f"{kind} {m}", join(v)) for m, v in out.get("data", {}).items() if m.startswith("text/") or m.endswith("json")]


def _excerpt(text: str, marker: str, width: int = 70) -> str:
    i = text.find(marker)
    return text[max(0, i - width // 2): i + len(marker) + width // 2].replace("\n", "⏎")


def output_problems(nb: dict, name: str = "") -> list[str]:
    """One line per output of ``nb`` that shows a machine path or is a warning (stderr), naming the cell.

    Cells are named ``cell <index> [In <execution_count>]``, the index counting every cell from 0.
    """
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        where = f"{name} cell {i} [In {cell.get('execution_count')}]"
        for out in cell.get("outputs", []):
            for what, text in _output_texts(out):
                found = [m for m in MACHINE_PATH_MARKERS if m in text]
                if found:
                    first = min(found, key=text.find)
                    problems.append(f"{where} {what}: machine path ({', '.join(found)}): ...{_excerpt(text, first, 100)}...")
                if what == "stream stderr":
                    for m in WARNING_MARKERS:
                        if m in text:
                            problems.append(f"{where} {what}: warning: ...{_excerpt(text, m, 140)}...")
                            break
    return problems


def header_commits(nb: dict) -> list[str]:
    """The commits the chapter's header(s) show (``**commit** `abc1234```), in order of appearance."""
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            for _, text in _output_texts(out):
                found += _COMMIT.findall(text)
    return found


def provenance_problems(notebooks: dict[str, dict]) -> list[str]:
    """Problems of a set of executed chapters ``{name: notebook}`` as one line each: a chapter without a
    commit in its header, chapters of different commits, ``+dirty`` commits, and :func:`output_problems`."""
    problems, commits = [], {}
    for name, nb in notebooks.items():
        c = sorted(set(header_commits(nb)))
        if not c:
            problems.append(f"{name}: no '**commit** `...`' in any output (chapter.start prints it in the header)")
        elif len(c) > 1:
            problems.append(f"{name}: several commits in one chapter: {c}")
        for x in c:
            commits.setdefault(x, []).append(name)
            if x.endswith("+dirty"):
                problems.append(f"{name}: built from a dirty tree (commit {x}); rebuild from a clean checkout")
    if len(commits) > 1:
        problems.append("chapters come from different commits: "
                        + "; ".join(f"{c}: {', '.join(n)}" for c, n in sorted(commits.items())))
    for name, nb in notebooks.items():
        problems += output_problems(nb, name)
    return problems


# --------------------------------------------------------------------------------------------
# provenance: which commit the chapters come from
# --------------------------------------------------------------------------------------------
DIRTY_HINT = ("commit or stash your changes first (git stash), or pass --allow-dirty "
              "(make book BOOK_FLAGS=--allow-dirty) to record the chapters as <sha>+dirty")


def _banner(lines: list[str]) -> str:
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
        print(_banner([f"WARNING: building the committed chapters from a DIRTY tree (--allow-dirty): "
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


# --------------------------------------------------------------------------------------------
# whole-book progress
# --------------------------------------------------------------------------------------------
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


def _maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def timing_table(rec: dict) -> str:
    """The end-of-build table: per-chapter wall time, kernels' peak RSS so far, totals."""
    rows = [f"{'chapter':<22}{'wall':>10}{'kernels peak RSS':>20}"]
    for r in rec["chapters"]:
        rows.append(f"{r['chapter']:<22}{r['seconds']:>8.0f} s{r['kernels_peak_rss_mb'] / 1024:>17.2f} GB")
    if rec.get("site_seconds") is not None:
        rows.append(f"{'site (jupyter-book)':<22}{rec['site_seconds']:>8.0f} s")
    rows.append(f"{'total':<22}{_fmt_min(rec['total_seconds']):>10}   peak RSS: build "
                f"{rec['peak_rss_build_mb'] / 1024:.2f} GB, largest kernel {rec['peak_rss_kernels_mb'] / 1024:.2f} GB")
    return "\n".join("[vsae.book] " + r for r in rows)


def _write_record(profile: str, rec: dict) -> None:
    p = report.build_record_path(profile)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, rec, indent=1)


def stage(profile: str) -> Path:
    """Copy the book's config and narrative pages into the profile's stage (no-op for the default)."""
    root = stage_root(profile)
    if root == REPO_ROOT:
        return root
    (root / "book").mkdir(parents=True, exist_ok=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO_ROOT / f, root / f)
    for f in (REPO_ROOT / "book").iterdir():
        if f.is_file():
            shutil.copy2(f, root / "book" / f.name)
    return root


#: where :func:`vendor_mathjax` puts the pinned MathJax; ``_config.yml`` lists it in ``html_static_path``
#: and points ``mathjax_path`` at ``mathjax/tex-mml-chtml.js`` inside it (so the site needs no CDN)
VENDOR_DIR = Path("_build") / "vendor"


def vendor_mathjax(root: Path) -> Path:
    """Copy the pinned MathJax (npm ``mathjax``, see :func:`vsae.assets.mathjax_dir`) under ``root``."""
    from .assets import mathjax_dir

    src = mathjax_dir()
    dst = root / VENDOR_DIR / "mathjax"
    stamp = dst / ".source"
    if stamp.exists() and stamp.read_text() == str(src) and (dst / "tex-mml-chtml.js").exists():
        return dst
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".complete.json"))
    stamp.write_text(str(src))
    return dst


def missing_chapters(profile: str) -> list[str]:
    """Chapters of the table of contents that have no executed notebook in the profile's folder."""
    return [c for c in chapters() if not (chapters_dir(profile) / f"{c}.ipynb").exists()]


def partial_stage_line(profile: str, missing: list[str]) -> str:
    """The line ``chapter`` prints instead of rendering the site of a partly executed stage."""
    n = len(chapters())
    return (f"[vsae.book] site not rebuilt: profile {profile} has {n - len(missing)} of {n} chapters executed "
            f"(missing: {', '.join(missing)}); the chapter itself is written. Execute them all and render the site "
            f"with `python -m vsae.book build --profile {profile}` (make book PROFILE={profile}).")


def site(profile: str, strict: bool = True) -> Path:
    """Render the HTML with jupyter-book (warnings are errors when ``strict``)."""
    root = stage(profile)
    missing = missing_chapters(profile)
    if missing:
        raise SystemExit(f"executed chapters missing for profile {profile}: {missing}; run make book PROFILE={profile}")
    clean_chapters(profile)
    vendor_mathjax(root)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--quiet"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("[vsae.book] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    index = root / "_build" / "html" / "index.html"
    print(f"[vsae.book] site: {index}")
    return index


def build(profile: str, device: str = "cpu", allow_dirty: bool = False) -> Path:
    """Execute every chapter, then render the site; print progress and write the build record."""
    t0 = time.time()
    commit = provenance_commit(profile, allow_dirty)
    os.environ[report.COMMIT_ENV] = commit  # inherited by every chapter kernel
    before = tree_snapshot()
    names = chapters()
    previous = previous_times(profile)
    rec = {"profile": profile, "device": device, "commit": commit, "host": platform.node(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "finished": None, "complete": False,
           "chapters": [], "chapters_seconds": 0.0, "site_seconds": None, "total_seconds": 0.0,
           "peak_rss_build_mb": 0.0, "peak_rss_kernels_mb": 0.0, "tree_changed": None}
    print(f"[vsae.book] building {len(names)} chapters, profile {profile}, commit {commit}", flush=True)
    done: dict[str, float] = {}
    changed = None

    def update():
        rec["chapters_seconds"] = round(sum(done.values()), 1)
        rec["total_seconds"] = round(time.time() - t0, 1)
        rec["peak_rss_build_mb"] = round(_maxrss_mb(resource.RUSAGE_SELF), 1)
        rec["peak_rss_kernels_mb"] = round(_maxrss_mb(resource.RUSAGE_CHILDREN), 1)
        rec["tree_changed"] = changed
        _write_record(profile, rec)

    for i, name in enumerate(names, 1):
        print(progress_line(i, len(names), name, time.time() - t0,
                            estimate_remaining(names[i - 1:], previous, done)), flush=True)
        t = time.time()
        execute(name, profile, device)
        done[name] = time.time() - t
        rec["chapters"].append({"chapter": name, "seconds": round(done[name], 1),
                                "kernels_peak_rss_mb": round(_maxrss_mb(resource.RUSAGE_CHILDREN), 1)})
        changed = changed or tree_change(before, tree_snapshot())
        update()
    t = time.time()
    index = site(profile)
    rec["site_seconds"] = round(time.time() - t, 1)
    changed = changed or tree_change(before, tree_snapshot())
    rec["complete"], rec["finished"] = True, time.strftime("%Y-%m-%d %H:%M:%S")
    update()
    print(timing_table(rec), flush=True)
    problems = [p for n in names for p in output_problems(json.loads((chapters_dir(profile) / f"{n}.ipynb").read_text()), n)]
    if problems:
        print(_banner([f"WARNING: {len(problems)} output(s) show a machine path or a warning "
                       "(tests/test_provenance.py fails on them):", *problems[:30]]), file=sys.stderr, flush=True)
    print(f"[vsae.book] build record: {_rel(report.build_record_path(profile))}", flush=True)
    if changed:
        print(_banner([f"WARNING: the git tree changed during the build: {changed}.",
                       f"Every chapter records commit {commit}, which is what the build STARTED from;",
                       "the chapters may not match the current tree: rebuild from a clean, unchanging tree."]),
              file=sys.stderr, flush=True)
    print(f"[vsae.book] book ({profile}) built in {(time.time() - t0) / 60:.1f} min: {index}")
    return index


def verify(profile: str = DEFAULT_PROFILE) -> int:
    """Re-execute the executed chapters under nbval (tagged cells must reproduce their stored output)."""
    nbs = [str(chapters_dir(profile) / f"{c}.ipynb") for c in chapters()]
    cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env",
           "--nbval-sanitize-with", str(REPO_ROOT / "tests" / "nbval_sanitize.cfg"),
           "-p", "no:cacheprovider", "--nbval-cell-timeout=3000", *nbs]
    print("[vsae.book] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=str(chapters_dir(profile))).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vsae.book", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("build", "site", "verify", "chapter"):
        p = sub.add_parser(c)
        p.add_argument("--profile", default=DEFAULT_PROFILE)
        if c in ("build", "chapter"):
            p.add_argument("--device", default="cpu")
            p.add_argument("--allow-dirty", action="store_true",
                           help=f"run the {DEFAULT_PROFILE} profile (committed chapters) from a modified git tree; "
                                "the chapters then record <sha>+dirty")
        if c == "chapter":
            p.add_argument("name")
    # papermill-style parameters come after "--": chapter NAME [--profile P] -- -p NAME VALUE ...
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    a = ap.parse_args(argv)
    a.params = extra
    from .profiles import PROFILES

    if a.profile not in PROFILES:
        ap.error(f"unknown profile {a.profile!r}; choose one of {sorted(PROFILES)}")
    if a.cmd == "build":
        build(a.profile, a.device, a.allow_dirty)
    elif a.cmd == "site":
        site(a.profile)
    elif a.cmd == "verify":
        return verify(a.profile)
    elif a.cmd == "chapter":
        if a.name not in chapters():
            ap.error(f"unknown chapter {a.name!r}; chapters are {chapters()}")
        params = parse_params(a.params)
        os.environ[report.COMMIT_ENV] = provenance_commit(a.profile, a.allow_dirty)
        execute(a.name, a.profile, a.device, params)
        # re-executing one chapter succeeds on its own: the site is rendered when every chapter of the
        # profile is there (always so for the committed offline chapters), else skipped with one line
        missing = missing_chapters(a.profile)
        if missing:
            print(partial_stage_line(a.profile, missing), flush=True)
        else:
            site(a.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
