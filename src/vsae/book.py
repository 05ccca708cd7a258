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
    python -m vsae.book browser --profile offline [--k-values 64,256]   # (re)write the feature browser (build does it too)
    python -m vsae.book tables  --profile offline    # (re)export the result tables (build does it too)
    python -m vsae.book compare --profile offline [--against HEAD]   # outputs that changed since a commit

Provenance: the default profile writes the committed chapters, so ``build`` and ``chapter`` refuse to
run it from a git tree whose tracked sources are modified (commit or stash first; the build's own
outputs, ``book/chapters/`` and ``notebooks/*.ipynb``, do not count). ``--allow-dirty`` runs anyway,
warns loudly, and every chapter header then shows ``<sha>+dirty``. The commit is recorded once, at the
start, and handed to every chapter kernel in ``$VSAE_BOOK_COMMIT`` (see :func:`vsae.report.git_commit`),
so all chapters of one build show the same commit; if the tree changes during the build the build says
so at the end. Staged profiles (``smoke``, ``paper``) run from any tree and record ``+dirty``.

Progress: before each chapter ``build`` prints ``chapter i/n NAME · elapsed · est. remaining`` (estimated
from the previous build's per-chapter times), at the end a per-chapter wall-time table and the peak
RSS of the build and of its kernels; after the chapters it writes the feature browser of chapter 08's pair
(:func:`write_browser`; the site serves it at ``browser/``, linked from ``book/browser.md``) and exports
every per-seed result table (:func:`write_tables`; served at ``tables/``, linked from ``book/tables.md``). The record goes to ``$VSAE_HOME/timings/<profile>/build.json``
(:func:`vsae.report.build_record`).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import report
from .buildlog import (estimate_remaining, maxrss_mb, previous_times, progress_line, timing_table, work_between,
                       work_columns, write_record)
from .chapter_outputs import clean_file, clean_notebook, dump_notebook, output_problems, rel_path
from .profiles import DEFAULT_PROFILE
from .provenance import banner, provenance_commit, tree_change, tree_snapshot
from .paths import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


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
            clean_file(tmp, input_path=src, output_path=failed)
        except (OSError, ValueError):  # pragma: no cover - an unreadable notebook is kept as it is
            pass
        shutil.move(str(tmp), failed)
        raise SystemExit(f"chapter {name} failed at cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                         f"the failed notebook is {failed}; the last good {out.name} is untouched") from None
    clean_file(tmp, input_path=src, output_path=out)
    tmp.replace(out)
    (out_dir / f".{name}.failed.ipynb").unlink(missing_ok=True)
    print(f"[vsae.book] {name} done in {time.time() - t0:.0f} s -> {rel_path(out)}", flush=True)
    return out


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
        new = dump_notebook(clean_notebook(json.loads(text)))
        if new != text:
            path.write_text(new)
            fixed.append(name)
    if fixed:
        print(f"[vsae.book] cleaned {len(fixed)} chapter(s) written without the book's clean-up (streams merged, "
              f"progress collapsed, paths sanitised): {', '.join(fixed)}", flush=True)
    return fixed


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
    publish_extras(root, profile)  # the feature browser and the result tables, or pages saying how to build them
    index = root / "_build" / "html" / "index.html"
    print(f"[vsae.book] site: {index}")
    return index


#: what the build writes beside the book under ``<stage root>/_build/<name>`` and the site serves at
#: ``<name>/`` (:func:`publish_extras`): name -> (what it is, the command that writes it on its own)
EXTRAS = {"browser": ("Feature browser", "python -m vsae.book browser --profile {profile}"),
          "tables": ("Result tables", "python -m vsae.book tables --profile {profile}")}

#: the page served in place of an extra that was not written (``make site`` on a fresh clone)
EXTRA_PLACEHOLDER = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{what}: not built</title></head>
<body style="font-family: sans-serif; max-width: 42em; margin: 3em auto; line-height: 1.5">
<h1>{what}: not built</h1>
<p>This site was rendered without it. <code>make book</code> (<code>python -m vsae.book build --profile {profile}</code>)
writes it after the chapters, from what they computed; on its own: <code>{command}</code>.</p>
</body></html>
"""


def publish_extras(root: Path, profile: str) -> dict[str, Path]:
    """Copy each of :data:`EXTRAS` written under ``root/_build/<name>`` into the rendered site
    (``root/_build/html/<name>``), or a page saying how to build it when it was not written; return the
    site's ``<name>/index.html`` per name."""
    out = {}
    for name, (what, command) in EXTRAS.items():
        src, dst = root / "_build" / name, root / "_build" / "html" / name
        if dst.exists():
            shutil.rmtree(dst)
        if (src / "index.html").exists():
            shutil.copytree(src, dst)
        else:
            dst.mkdir(parents=True)
            cmd = command.format(profile=profile)
            (dst / "index.html").write_text(EXTRA_PLACEHOLDER.format(what=what, profile=profile, command=cmd), encoding="utf-8")
            print(f"[vsae.book] no {what.lower()} under _build/{name} (profile {profile}): the site serves a page "
                  f"saying how to build it ({cmd})", flush=True)
        out[name] = dst / "index.html"
    return out


def write_tables(profile: str, device: str = "cpu") -> dict:
    """Export every per-seed result table (:func:`vsae.export.export_tables`, CSV and Parquet with their
    schema and an index page) under the profile's stage root, where :func:`site` picks them up."""
    from .export import export_tables
    from .pipeline import Experiment

    out = stage_root(profile) / "_build" / "tables"
    t0 = time.time()
    manifest = export_tables(Experiment(profile, device), out)
    mb = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
    print(f"[vsae.book] result tables: {len(manifest['tables'])} tables, {mb:.1f} MB in {time.time() - t0:.0f} s "
          f"-> {rel_path(out)}", flush=True)
    return manifest


def write_browser(profile: str, device: str = "cpu", k_values=None) -> dict:
    """Write the book's feature browser (:func:`vsae.browser.write_book_browser`; ``k_values``: the
    main-seed pairs at those k instead of chapter 08's) under the profile's stage root, where :func:`site`
    picks it up; print and return its summary."""
    from .browser import BOOK_BROWSER_DIR, write_book_browser
    from .pipeline import Experiment

    out = stage_root(profile) / BOOK_BROWSER_DIR
    print(f"[vsae.book] writing the feature browser -> {rel_path(out)}", flush=True)
    s = write_book_browser(Experiment(profile, device), out, k_values=k_values)
    shown = ", ".join(f"{r['sae']}: {r['n_shown']:,} of {r['d_sae']:,} latents" for r in s["saes"])
    print(f"[vsae.book] feature browser: {shown}; {s['bytes'] / 1e6:.1f} MB in {s['seconds']:.0f} s", flush=True)
    return s


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
           "chapters": [], "chapters_seconds": 0.0, "browser_seconds": None, "tables_seconds": None, "site_seconds": None,
           "total_seconds": 0.0,
           "peak_rss_build_mb": 0.0, "peak_rss_kernels_mb": 0.0, "tree_changed": None}
    print(f"[vsae.book] building {len(names)} chapters, profile {profile}, commit {commit}", flush=True)
    done: dict[str, float] = {}
    changed = None

    def update():
        rec["chapters_seconds"] = round(sum(done.values()), 1)
        rec["total_seconds"] = round(time.time() - t0, 1)
        rec["peak_rss_build_mb"] = round(maxrss_mb(resource.RUSAGE_SELF), 1)
        rec["peak_rss_kernels_mb"] = round(maxrss_mb(resource.RUSAGE_CHILDREN), 1)
        rec["tree_changed"] = changed
        write_record(profile, rec)

    for i, name in enumerate(names, 1):
        print(progress_line(i, len(names), name, time.time() - t0,
                            estimate_remaining(names[i - 1:], previous, done)), flush=True)
        t = time.time()
        execute(name, profile, device)
        done[name] = time.time() - t
        rec["chapters"].append({"chapter": name, "seconds": round(done[name], 1),
                                **work_columns(work_between(t, time.time()), done[name]),
                                "kernels_peak_rss_mb": round(maxrss_mb(resource.RUSAGE_CHILDREN), 1)})
        changed = changed or tree_change(before, tree_snapshot())
        update()
    t = time.time()
    write_browser(profile, device)
    rec["browser_seconds"] = round(time.time() - t, 1)
    t = time.time()
    write_tables(profile, device)
    rec["tables_seconds"] = round(time.time() - t, 1)
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
        print(banner([f"WARNING: {len(problems)} output(s) show a machine path or a warning "
                       "(tests/test_provenance.py fails on them):", *problems[:30]]), file=sys.stderr, flush=True)
    print(f"[vsae.book] build record: {rel_path(report.build_record_path(profile))}", flush=True)
    if changed:
        print(banner([f"WARNING: the git tree changed during the build: {changed}.",
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


def compare(profile: str = DEFAULT_PROFILE, against: str = "HEAD") -> int:
    """Compare the executed chapters with those committed at ``against``, as nbval would compare them.

    For every chapter: cells of the same source whose textual outputs differ after the nbval sanitizers
    (``tests/nbval_sanitize.cfg``), and cells whose source changed. It answers "did my change alter a
    number?" after a rebuild without re-executing anything. Returns 1 when any output changed.
    """
    from .chapter_outputs import output_differences, read_sanitizers

    san = read_sanitizers(REPO_ROOT / "tests" / "nbval_sanitize.cfg")
    n_changed = n_same = 0
    for name in chapters():
        path = chapters_dir(profile) / f"{name}.ipynb"
        rel = path.relative_to(REPO_ROOT).as_posix()
        old = subprocess.run(["git", "show", f"{against}:{rel}"], cwd=str(REPO_ROOT), capture_output=True, text=True)
        if old.returncode != 0 or not path.exists():
            print(f"[vsae.book] {name}: not in both ({'no ' + rel + ' at ' + against if old.returncode else 'not executed'})")
            continue
        d = output_differences(json.loads(old.stdout), json.loads(path.read_text()), san, name)
        n_cells = sum(c.get("cell_type") == "code" for c in json.loads(path.read_text())["cells"])
        same = n_cells - len(d["changed"]) - len(d["only_new"])
        n_changed += len(d["changed"])
        n_same += same
        print(f"[vsae.book] {name}: {same} cells as before, {len(d['changed'])} changed outputs, "
              f"{len(d['only_new'])} new or edited cells, {len(d['only_old'])} removed or edited")
        for line in d["changed"]:
            print("  changed " + line)
    print(f"[vsae.book] compared with {against}: {n_same} code cells reproduce their outputs, {n_changed} differ")
    return 1 if n_changed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vsae.book", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("build", "site", "verify", "chapter", "browser", "tables", "compare"):
        p = sub.add_parser(c)
        p.add_argument("--profile", default=DEFAULT_PROFILE)
        if c in ("build", "chapter", "browser", "tables"):
            p.add_argument("--device", default="cpu")
        if c in ("build", "chapter"):
            p.add_argument("--allow-dirty", action="store_true",
                           help=f"run the {DEFAULT_PROFILE} profile (committed chapters) from a modified git tree; "
                                "the chapters then record <sha>+dirty")
        if c == "chapter":
            p.add_argument("name")
        if c == "compare":
            p.add_argument("--against", default="HEAD", help="the git revision whose committed chapters to compare with")
        if c == "browser":
            p.add_argument("--k-values", default=None, help="comma-separated k: the main-seed pair at each "
                                                               "(default: chapter 08's k)")
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
    elif a.cmd == "browser":
        try:
            ks = [int(k) for k in a.k_values.split(",")] if a.k_values else None
            write_browser(a.profile, a.device, ks)
        except ValueError as e:
            ap.error(str(e))
    elif a.cmd == "tables":
        write_tables(a.profile, a.device)
    elif a.cmd == "verify":
        return verify(a.profile)
    elif a.cmd == "compare":
        return compare(a.profile, a.against)
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
