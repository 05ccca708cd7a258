"""Execute the book's chapters with papermill and render the site with jupyter-book.

The chapters are jupytext percent files ``notebooks/NN_name.py`` paired with ``notebooks/NN_name.ipynb``.
For the default profile (``offline``) the executed chapters go to ``book/chapters/`` (committed, so the
rendered book shows real results from a clone). Any other profile is *staged* under
``.stage/<profile>/`` (a copy of the book's config and narrative pages plus its executed chapters), so
running ``smoke`` or ``paper`` never overwrites the committed results.

Command line (what the Makefile calls)::

    python -m vsae.book build   --profile offline [--device cpu]
    python -m vsae.book chapter 04_core --profile offline -- -p k_values "[128]" -p kl_coeff 0.1
    python -m vsae.book site    --profile offline
    python -m vsae.book verify  --profile offline
"""

from __future__ import annotations

import argparse
import ast
import re
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .paths import REPO_ROOT

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
    """Parse papermill-style ``-p name value`` pairs; values are Python/JSON literals or plain strings."""
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
            value = raw
        params[name] = value
        i += 3
    return params


def sync_notebook(name: str) -> Path:
    """Regenerate ``notebooks/<name>.ipynb`` from its paired ``.py`` (the .py is the source of truth)."""
    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    if not py.exists():
        raise FileNotFoundError(f"chapter source {py} is missing; chapters are {chapters()}")
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--update", str(py), "-o", str(ipynb)]
                   if ipynb.exists() else
                   [sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", str(py), "-o", str(ipynb)],
                   check=True)
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
        # keep the failed notebook for inspection, never replace the last good chapter with it
        failed = out_dir / f".{name}.failed.ipynb"
        shutil.move(str(tmp), failed)
        raise SystemExit(f"chapter {name} failed at cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                         f"the failed notebook is {failed}; the last good {out.name} is untouched") from None
    _clean_metadata(tmp)
    tmp.replace(out)
    (out_dir / f".{name}.failed.ipynb").unlink(missing_ok=True)
    print(f"[vsae.book] {name} done in {time.time() - t0:.0f} s -> {out.relative_to(REPO_ROOT)}", flush=True)
    return out


_BAR = re.compile(r"^(?P<name>[^|\n]*?):?\s*\d+%\|.*\|\s*[\d.,kM]+/[\d.,kM?]+ \[")


def collapse_progress(text: str) -> str:
    """Keep only the final state of each tqdm bar in a captured stderr stream (one line per bar)."""
    lines = [seg for line in text.split("\n") for seg in line.split("\r")[-1:]]
    last: dict[str, int] = {}
    for i, ln in enumerate(lines):
        m = _BAR.match(ln)
        if m:
            last[m.group("name").strip()] = i
    keep = [ln for i, ln in enumerate(lines) if not _BAR.match(ln) or last.get(_BAR.match(ln).group("name").strip()) == i]
    return "\n".join(keep)


def _clean_metadata(path: Path) -> None:
    """Drop volatile papermill metadata (timestamps, durations) so re-executions diff cleanly."""
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).get("papermill", {}).pop("start_time", None)
    nb.get("metadata", {}).get("papermill", {}).pop("end_time", None)
    nb.get("metadata", {}).get("papermill", {}).pop("duration", None)
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                out["text"] = collapse_progress(text)
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).get("execution", {}).clear()
        tags = cell.get("metadata", {}).get("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "hide-input" not in tags:
            cell["metadata"]["tags"] = tags + ["hide-input"]  # collapsed in the rendered book
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


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


def site(profile: str, strict: bool = True) -> Path:
    """Render the HTML with jupyter-book (warnings are errors when ``strict``)."""
    root = stage(profile)
    missing = [c for c in chapters() if not (chapters_dir(profile) / f"{c}.ipynb").exists()]
    if missing:
        raise SystemExit(f"executed chapters missing for profile {profile}: {missing}; run make book PROFILE={profile}")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--quiet"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("[vsae.book] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    index = root / "_build" / "html" / "index.html"
    print(f"[vsae.book] site: {index}")
    return index


def build(profile: str, device: str = "cpu") -> Path:
    t0 = time.time()
    for name in chapters():
        execute(name, profile, device)
    index = site(profile)
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
        build(a.profile, a.device)
    elif a.cmd == "site":
        site(a.profile)
    elif a.cmd == "verify":
        return verify(a.profile)
    elif a.cmd == "chapter":
        if a.name not in chapters():
            ap.error(f"unknown chapter {a.name!r}; chapters are {chapters()}")
        execute(a.name, a.profile, a.device, parse_params(a.params))
        site(a.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
