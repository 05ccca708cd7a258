"""What an executed chapter's outputs may hold, and how they are cleaned so re-executions diff cleanly.

Cleaning (:func:`clean_notebook`, what :func:`vsae.book.execute` applies to every chapter it writes):
one stream per kind per cell (:func:`merge_streams`), tqdm progress bars collapsed to their final line
(:func:`collapse_progress`), machine paths rewritten to ``$VSAE_HOME`` or repository-relative ones
(:func:`sanitize_paths`), volatile metadata dropped. Checking (used by the build,
``tests/test_provenance.py`` and ``tests/test_book.py``): :func:`output_problems` (machine paths,
warnings on stderr), :func:`header_commits` and :func:`provenance_problems` (one clean commit for all
chapters).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .paths import REPO_ROOT, vsae_home

_TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex")
#: tags that make jupyter-book drop a cell entirely (the header printed by chapter.start shows the profile)
PARAMETER_TAGS = ("parameters", "injected-parameters")

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


def clean_notebook(nb: dict, input_path: Path | None = None, output_path: Path | None = None) -> dict:
    """Drop volatile papermill metadata, merge and collapse streams, make printed paths relative, and tag
    the parameter cells ``remove-cell`` (in place; returns ``nb``)."""
    pm_meta = nb.get("metadata", {}).get("papermill", {})
    for k in ("start_time", "end_time", "duration"):
        pm_meta.pop(k, None)
    for k, p in (("input_path", input_path), ("output_path", output_path)):
        if k in pm_meta:
            pm_meta[k] = rel_path(p) if p is not None else sanitize_paths(str(pm_meta[k]))
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


def rel_path(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return sanitize_paths(str(p))


def dump_notebook(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def clean_file(path: Path, input_path: Path | None = None, output_path: Path | None = None) -> None:
    """Clean an executed notebook in place (see :func:`clean_notebook`) so re-executions diff cleanly."""
    nb = clean_notebook(json.loads(path.read_text()), input_path, output_path)
    path.write_text(dump_notebook(nb))


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


def read_sanitizers(cfg_path: Path) -> list[tuple[re.Pattern, str]]:
    """The ``(regex, replacement)`` pairs of an nbval sanitize file (``tests/nbval_sanitize.cfg``)."""
    import configparser

    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(Path(cfg_path).read_text())
    return [(re.compile(cp[s]["regex"]), cp[s]["replace"]) for s in cp.sections()]


def _cell_texts(cell: dict, sanitizers) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        for what, text in _output_texts(out):
            for rx, rep in sanitizers:
                text = rx.sub(rep, text)
            texts.append(f"{what}: {text}")
    return texts


def output_differences(old: dict, new: dict, sanitizers=(), name: str = "") -> dict[str, list[str]]:
    """What changed between two executions of a chapter, as nbval would see it, cell by cell.

    Code cells are matched by their source. Returns ``{"changed": [...], "only_old": [...],
    "only_new": [...]}``: cells of the same source whose textual outputs differ after the sanitizers
    (images are not compared, as ``nbval --nbval-lax`` skips them too), and cells whose source is in
    one notebook only (the notebook's code changed there, so a difference is expected). A cell whose
    source appears several times is matched in order of appearance.
    """
    def code_cells(nb):
        cells: dict[str, list[dict]] = {}
        for c in nb.get("cells", []):
            if c.get("cell_type") == "code":
                src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                cells.setdefault(src, []).append(c)
        return cells

    o, n = code_cells(old), code_cells(new)
    first = lambda src: src.strip().splitlines()[0][:70] if src.strip() else "<empty cell>"  # noqa: E731
    res: dict[str, list[str]] = {"changed": [], "only_old": [], "only_new": []}
    for src, cells in n.items():
        for i, cell in enumerate(cells):
            if i >= len(o.get(src, [])):
                res["only_new"].append(f"{name}: {first(src)}")
                continue
            a, b = _cell_texts(o[src][i], sanitizers), _cell_texts(cell, sanitizers)
            if a != b:
                import difflib

                diff = [ln for ln in difflib.unified_diff("\n".join(a).splitlines(), "\n".join(b).splitlines(),
                                                          lineterm="", n=0) if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
                res["changed"].append(f"{name}: {first(src)}\n    " + "\n    ".join(diff[:8])
                                      + (f"\n    ... {len(diff) - 8} more lines" if len(diff) > 8 else ""))
    for src, cells in o.items():
        extra = len(cells) - len(n.get(src, []))
        res["only_old"] += [f"{name}: {first(src)}"] * max(extra, 0)
    return res
