"""A static, serverless feature browser for a pair of SAEs (a TopK SAE and a vSAE).

:func:`write_browser` writes one self-contained folder that opens from ``file://`` or any plain static
server, fully offline::

    index.html            the page (the list of SAEs is inlined, so nothing is fetched to start)
    browser.js, .css      the page's own code and style (from ``vsae/browser_static/``)
    data_<name>.js        one per SAE: ``window.VSAE_BROWSER["<name>"] = {...};`` (JSON on one line)
    tabulator/            ``tabulator.min.js`` / ``.css`` and LICENSE of the pinned npm
                          ``tabulator-tables`` (asset ``tabulator``, see :mod:`vsae.assets`)

The data are scripts rather than ``.json`` files because browsers refuse ``fetch()`` of ``file://``
URLs; a ``<script src>`` loads from anywhere. Each is loaded when its SAE is first selected.

For every *alive* latent (fired at least once on the tokens looked at) of each SAE the data hold what
:mod:`vsae.interp` computes for the feature chapter: density, mean (when firing) and max activation,
decoder norm (:func:`~vsae.interp.latent_stats`), the top activating contexts with each token's
activation (:func:`~vsae.interp.top_contexts`), the top boosted / suppressed tokens of the decoder row
through the unembedding (:func:`~vsae.interp.logit_effects`), plus the ``n_neighbours`` nearest
latents of the same SAE by decoder cosine (:func:`nearest_latents`).

Compactness: floats are rounded to :data:`FLOAT_DIGITS` significant digits, contexts are token-id
lists and the SAE's file carries one vocabulary slice (``vocab``: id -> string) of just the tokens it
uses. Activations are the SAE's codes on the raw residual stream (saved SAEs have the training-time
normalisation folded in, see :mod:`vsae.models`): :data:`UNITS` says so on the page, with the norm
factor that converts them to units of the normalised residual.

Cost: one sparse pass for the statistics, then one dense encoder pass over the tokens per chunk of
latents (chunks sized by ``memory_mb``); ``n_tokens`` caps the tokens looked at.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import interp

#: version of the data files' layout (``schema`` in each); bump on any change of their keys
SCHEMA_VERSION = 1
#: the global every data script fills (``window.VSAE_BROWSER[name] = {...}``)
DATA_GLOBAL = "VSAE_BROWSER"
#: significant digits kept of every float in the data files
FLOAT_DIGITS = 4
#: what an activation is measured in (shown on the page)
UNITS = ("SAE code on the raw residual stream (divide by the norm factor for units of the normalised "
         "residual, whose mean squared norm is 1)")
#: the page's own files, copied into every browser folder
STATIC_DIR = Path(__file__).parent / "browser_static"
STATIC_FILES = ("browser.js", "browser.css")
#: keys of one latent's record (``latents`` in a data file); see :func:`latent_record`
LATENT_KEYS = ("id", "density", "n_fires", "mean", "max", "decoder_norm", "contexts", "boosted", "suppressed",
               "neighbours")


@dataclass(frozen=True)
class BrowserOptions:
    """What goes into a browser: how many contexts, tokens, latents, logit effects and neighbours."""

    #: top activating contexts per latent (one per context: the peak)
    n_contexts: int = 10
    #: cap on the latents per SAE (``None``: every alive one); the densest are kept
    max_latents: int | None = None
    #: boosted and suppressed tokens per latent
    n_logits: int = 10
    #: nearest latents by decoder cosine
    n_neighbours: int = 5
    #: tokens shown before / after a context's peak
    left: int = 12
    right: int = 4
    #: tokens of the cache looked at (``None``: all)
    n_tokens: int | None = None
    #: memory for one chunk of dense activations ``[n_tokens, chunk]`` (float32); every chunk encodes
    #: all the tokens again, so at the offline evaluation cache (327,680 tokens, d_sae 4608) 2 GB means
    #: 3 encoder passes per SAE where 256 MB meant 23 (the outputs do not depend on it)
    memory_mb: int = 2048

    def __post_init__(self) -> None:
        for f in ("n_contexts", "n_logits", "n_neighbours", "memory_mb"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be at least 1, got {getattr(self, f)}")
        if self.max_latents is not None and self.max_latents < 1:
            raise ValueError(f"max_latents must be at least 1 (or None for all alive), got {self.max_latents}")


# --------------------------------------------------------------------------------------------
# numbers and names
# --------------------------------------------------------------------------------------------
def rounded(x: float, digits: int = FLOAT_DIGITS) -> float | int:
    """``x`` to ``digits`` significant digits (an exact zero as the int ``0``: two bytes less in JSON)."""
    x = float(x)
    if x == 0.0 or not np.isfinite(x):
        return 0 if x == 0.0 else x
    return float(f"{x:.{digits}g}")


def slug(name: str) -> str:
    """A file-name-safe form of an SAE name (``data_<slug>.js``)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not s:
        raise ValueError(f"SAE name {name!r} has no usable characters")
    return s


# --------------------------------------------------------------------------------------------
# which latents, and their neighbours
# --------------------------------------------------------------------------------------------
def select_latents(stats: pd.DataFrame, max_latents: int | None = None) -> np.ndarray:
    """Ids (ascending) of the alive latents of a :func:`~vsae.interp.latent_stats` table; with
    ``max_latents``, only that many of the densest (ties: lower id first)."""
    alive = stats[stats["n_fires"] > 0]
    if max_latents is not None and len(alive) > max_latents:
        alive = alive.sort_values(["density", "latent"], ascending=[False, True], kind="stable").head(max_latents)
    return np.sort(alive["latent"].to_numpy(dtype=np.int64))


@torch.no_grad()
def nearest_latents(W_dec: torch.Tensor, latents: Sequence[int], k: int = 5, *, chunk: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` latents among ``latents`` whose decoder rows are closest in cosine to each one's.

    Cosines are computed ``chunk`` rows at a time (:func:`vsae.evals.core.top_cosines_to_others`), a
    latent is never its own neighbour. Returns ``(ids [m, k'], cosines [m, k'])`` with
    ``k' = min(k, m - 1)``, rows in the order of ``latents``, neighbours by decreasing cosine.
    """
    from .evals.core import top_cosines_to_others

    lat = torch.as_tensor(np.asarray(latents, dtype=np.int64))
    m = int(lat.numel())
    kk = min(int(k), m - 1)
    if kk <= 0:
        return np.zeros((m, 0), np.int64), np.zeros((m, 0), np.float32)
    cos, i = top_cosines_to_others(torch.as_tensor(W_dec)[lat], kk, chunk)
    return lat[i].numpy(), cos.numpy()


# --------------------------------------------------------------------------------------------
# contexts and logit effects (vsae.interp), for many latents
# --------------------------------------------------------------------------------------------
def _cache_tokens(acts, n_tokens: int | None) -> int:
    n = len(acts)
    return n if n_tokens is None else min(n, int(n_tokens))


def latent_chunks(latents: Sequence[int], n_tokens: int, memory_mb: int) -> Iterator[np.ndarray]:
    """``latents`` in chunks whose dense float32 activations ``[n_tokens, chunk]`` fit ``memory_mb``."""
    per = max(1, int(memory_mb * 2**20 // (4 * max(1, n_tokens))))
    lat = np.asarray(latents, dtype=np.int64)
    for a in range(0, len(lat), per):
        yield lat[a:a + per]


def latent_contexts(sae, acts, latents: Sequence[int], opts: BrowserOptions) -> dict[int, pd.DataFrame]:
    """``{latent: top_contexts table}`` for each latent (:func:`vsae.interp.top_contexts`), computed
    from :func:`vsae.interp.latent_activations` of one chunk of latents at a time."""
    n = _cache_tokens(acts, opts.n_tokens)
    out: dict[int, pd.DataFrame] = {}
    for chunk in latent_chunks(latents, n, opts.memory_mb):
        vals = interp.latent_activations(sae, acts, chunk, n_tokens=n)
        for j, lat in enumerate(chunk.tolist()):
            out[lat] = interp.top_contexts(acts, vals[:, j], k=opts.n_contexts, left=opts.left, right=opts.right)
    return out


def _no_decode(ids: list[int]) -> str:
    """A decoder that skips decoding: the data files keep token ids and one vocabulary slice."""
    return ""


def latent_logits(sae, lm, latents: Sequence[int], k: int) -> dict[int, pd.DataFrame]:
    """``{latent: logit_effects table}`` (:func:`vsae.interp.logit_effects`, token strings left empty)."""
    return {int(i): interp.logit_effects(sae, lm, int(i), k=k, decode=_no_decode) for i in latents}


# --------------------------------------------------------------------------------------------
# the data of one SAE
# --------------------------------------------------------------------------------------------
def _context_record(row: Mapping[str, Any]) -> list:
    """``[peak activation, peak offset, token ids, activations]`` of one :func:`top_contexts` row."""
    return [rounded(row["activation"]), int(row["peak"]), [int(t) for t in row["tokens"]],
            [rounded(a) for a in row["acts"]]]


def _effects(table: pd.DataFrame, direction: str) -> list[list]:
    """``[[token id, effect], ...]`` of one direction of a :func:`logit_effects` table, by rank."""
    t = table[table["direction"] == direction].sort_values("rank")
    return [[int(i), rounded(e)] for i, e in zip(t["token_id"], t["effect"])]


def latent_record(stat: Mapping[str, Any], contexts: pd.DataFrame, effects: pd.DataFrame,
                  neighbours: tuple[np.ndarray, np.ndarray]) -> dict:
    """One latent's entry in a data file (keys :data:`LATENT_KEYS`).

    ``contexts``: ``[[peak activation, peak offset, [token ids], [activations]], ...]``;
    ``boosted`` / ``suppressed``: ``[[token id, logit effect], ...]``; ``neighbours``:
    ``[[latent, decoder cosine], ...]``.
    """
    ids, cos = neighbours
    return {
        "id": int(stat["latent"]), "density": rounded(stat["density"]), "n_fires": int(stat["n_fires"]),
        "mean": rounded(stat["mean_activation"]), "max": rounded(stat["max_activation"]),
        "decoder_norm": rounded(stat["decoder_norm"]),
        "contexts": [_context_record(r) for _, r in contexts.iterrows()],
        "boosted": _effects(effects, "boosted"), "suppressed": _effects(effects, "suppressed"),
        "neighbours": [[int(i), rounded(c)] for i, c in zip(ids, cos)],
    }


def _used_tokens(records: list[dict]) -> list[int]:
    ids: set[int] = set()
    for r in records:
        for c in r["contexts"]:
            ids.update(c[2])
        ids.update(t for t, _ in r["boosted"] + r["suppressed"])
    return sorted(ids)


def vocab_slice(tokenizer_or_decode, ids: Sequence[int]) -> dict[str, str]:
    """``{str(id): token string}`` of ``ids`` (newlines shown as the ↵ sign, as in the book's contexts)."""
    dec = tokenizer_or_decode.decode if hasattr(tokenizer_or_decode, "decode") else tokenizer_or_decode
    return {str(int(t)): interp._tok_str(dec, int(t)) for t in ids}


def sae_meta(sae) -> dict:
    """Architecture, sizes and the recorded training data of an SAE (``cfg`` and ``cfg.meta``)."""
    cfg = sae.cfg
    meta = getattr(cfg, "meta", None) or {}
    cache = meta.get("cache", {}) if isinstance(meta, dict) else {}
    return {"architecture": getattr(cfg, "architecture", type(sae).__name__), "d_in": int(sae.W_dec.shape[1]),
            "d_sae": int(sae.W_dec.shape[0]), "k": int(getattr(cfg, "k", 0)),
            "lm": cache.get("model", {}).get("name"), "hook": cache.get("hook")}


def sae_data(name: str, sae, lm, acts, opts: BrowserOptions = BrowserOptions(), *,
             stats: pd.DataFrame | None = None) -> dict:
    """Everything the browser shows of one SAE, as one JSON-ready dict (layout :data:`SCHEMA_VERSION`).

    ``acts``: an ``ActivationCache`` (anything with ``get``, ``acts``, ``tokens``, ``ctx_index``, ``len``);
    ``stats``: its :func:`~vsae.interp.latent_stats` table when already computed on the same tokens.
    """
    n = _cache_tokens(acts, opts.n_tokens)
    if stats is None:
        stats = interp.latent_stats(sae, acts, n_tokens=n)
    latents = select_latents(stats, opts.max_latents)
    ctx = latent_contexts(sae, acts, latents, opts)
    eff = latent_logits(sae, lm, latents, opts.n_logits)
    nn_ids, nn_cos = nearest_latents(sae.W_dec, latents, opts.n_neighbours)
    by_id = stats.set_index("latent")
    records = [latent_record({"latent": int(i), **by_id.loc[int(i)].to_dict()}, ctx[int(i)], eff[int(i)],
                             (nn_ids[j], nn_cos[j])) for j, i in enumerate(latents.tolist())]
    return {
        "schema": SCHEMA_VERSION, "name": name, **sae_meta(sae),
        "n_tokens": int(n), "n_alive": int((stats["n_fires"] > 0).sum()), "n_latents_shown": len(records),
        "norm_factor": rounded(getattr(acts, "norm_factor", 1.0)), "units": UNITS,
        "options": asdict(opts), "latent_keys": list(LATENT_KEYS),
        "vocab": vocab_slice(lm.tokenizer, _used_tokens(records)), "latents": records,
    }


# --------------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------------
def data_script(data: dict) -> str:
    """The text of ``data_<name>.js``: the JSON of ``data`` on its own line, assigned to the global."""
    js = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return (f"window.{DATA_GLOBAL} = window.{DATA_GLOBAL} || {{}};\n"
            f"window.{DATA_GLOBAL}[{json.dumps(data['name'])}] =\n{js}\n;\n")


def load_data(path: str | Path) -> dict:
    """Parse a ``data_<name>.js`` written by :func:`data_script` back into its dict."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    return json.loads(lines[2])


def _page(title: str, index: list[dict]) -> str:
    tpl = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    manifest = json.dumps({"title": title, "saes": index}, ensure_ascii=False).replace("</", "<\\/")
    return tpl.replace("{{TITLE}}", html.escape(title)).replace("{{MANIFEST}}", manifest)


def require_tabulator() -> Path:
    """Folder of the pinned Tabulator; :class:`~vsae.assets.AssetError` saying how to fetch it when absent
    (checked before any expensive work: the browser never fetches on its own)."""
    from .assets import AssetError, have, tabulator_dir

    if not have("tabulator"):
        raise AssetError("the feature browser needs the pinned Tabulator (npm tabulator-tables@6.5.3), which is "
                         "not fetched: run `python -m vsae fetch` (or `python -m vsae fetch --only tabulator`)")
    return tabulator_dir()


def _copy_tabulator(src: Path, out: Path) -> None:
    dst = out / "tabulator"
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("tabulator.min.js", "tabulator.min.css", "LICENSE"):
        shutil.copy2(src / f, dst / f)


def write_browser(saes: Mapping[str, Any], lm, acts, out: str | Path, opts: BrowserOptions = BrowserOptions(),
                  *, title: str = "Feature browser", stats: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """Write the static browser of ``saes`` (``{name: sae}``, e.g. a TopK SAE and a vSAE) into ``out``.

    ``lm``: the language model wrapper (its ``W_U`` and ``tokenizer``); ``acts``: the activation cache
    the contexts come from (the evaluation split, as in the feature chapter); ``stats``: optional
    precomputed :func:`~vsae.interp.latent_stats` per name. Returns ``out``. Existing files of the
    same names are replaced; nothing else in ``out`` is touched.
    """
    if not saes:
        raise ValueError("no SAEs given")
    tab = require_tabulator()  # first: a missing asset fails before any work or any file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _copy_tabulator(tab, out)
    index = []
    for name, sae in saes.items():
        data = sae_data(name, sae, lm, acts, opts, stats=(stats or {}).get(name))
        fname = f"data_{slug(name)}.js"
        (out / fname).write_text(data_script(data), encoding="utf-8")
        index.append({"name": name, "file": fname, "architecture": data["architecture"], "k": data["k"],
                      "d_sae": data["d_sae"], "n_alive": data["n_alive"], "n_shown": data["n_latents_shown"]})
    for f in STATIC_FILES:
        shutil.copy2(STATIC_DIR / f, out / f)
    (out / "index.html").write_text(_page(title, index), encoding="utf-8")
    return out


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (what a browser folder costs to ship)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# from saved SAE folders (the CLI)
# --------------------------------------------------------------------------------------------
def sae_name(sae_dir: Path, sae) -> str:
    """The run name of a saved SAE: ``variant.json`` (written by the store), else ``cfg.meta``, else the folder."""
    v = sae_dir / "variant.json"
    if v.exists():
        return str(json.loads(v.read_text())["name"])
    meta = getattr(sae.cfg, "meta", None) or {}
    return str(meta.get("name") or sae_dir.name)


def load_sae_dirs(sae_dirs: Sequence[str | Path], device: str = "cpu") -> dict[str, Any]:
    """``{name: sae}`` of saved SAE folders; a folder that is not one raises ``FileNotFoundError``."""
    from .models import load_sae

    out: dict[str, Any] = {}
    for d in map(Path, sae_dirs):
        missing = [f for f in ("cfg.json", "sae.safetensors") if not (d / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{d} is not a saved SAE folder (missing {', '.join(missing)}); "
                                    "pass a folder printed by `python -m vsae train`")
        sae = load_sae(d, device)
        name = sae_name(d, sae)
        if name in out:
            name = f"{name}_{len(out)}"
        out[name] = sae
    return out


def check_profile(saes: Mapping[str, Any], lm_name: str, hook: str) -> None:
    """Refuse SAEs trained on another model or hook than the profile's (their contexts would be noise)."""
    for name, sae in saes.items():
        m = sae_meta(sae)
        if m["lm"] not in (None, lm_name) or m["hook"] not in (None, hook):
            raise ValueError(f"SAE {name} was trained on {m['lm']} {m['hook']}, but the profile reads "
                             f"{lm_name} {hook}: pass the matching --profile")


def browser_from_dirs(sae_dirs: Sequence[str | Path], out: str | Path, *, profile: str = "offline",
                      device: str = "cpu", opts: BrowserOptions = BrowserOptions()) -> Path:
    """The CLI's path: load saved SAEs, the profile's LM and evaluation activations, write the browser."""
    from .pipeline import Experiment

    require_tabulator()
    saes = load_sae_dirs(sae_dirs, device)
    ex = Experiment(profile, device)
    check_profile(saes, ex.profile.lm, ex.profile.hook_name)
    title = f"Feature browser: {', '.join(saes)} ({ex.profile.lm}, {ex.profile.hook_name}, profile {profile})"
    return write_browser(saes, ex.lm, ex.eval_acts, out, opts, title=title)


# --------------------------------------------------------------------------------------------
# the book's browser (written by ``python -m vsae.book build``, linked from book/browser.md)
# --------------------------------------------------------------------------------------------
#: where the book's browser is written under a profile's stage root; the site serves it at
#: ``browser/`` (:func:`vsae.book.publish_extras`), which the narrative page ``book/browser.md`` links
BOOK_BROWSER_DIR = Path("_build") / "browser"
#: the summary the book's browser writes beside its page (what is in it, what it cost)
BOOK_SUMMARY = "browser.json"


def book_pair(ex, k_values: Sequence[int] | None = None) -> list:
    """The SAEs of the book's browser: by default the feature chapter's pair (TopK SAE and vSAE at
    :meth:`~vsae.pipeline.Experiment.showcase_k`, main seed), so the browser shows every latent of the
    two SAEs whose hand-picked latents chapter 08 shows; with ``k_values``, the main-seed pair at each."""
    ks = [ex.showcase_k()] if not k_values else [int(k) for k in k_values]
    bad = sorted(set(ks) - set(ex.profile.k_values))
    if bad:
        raise ValueError(f"k {bad} is not a headline k of profile {ex.profile.name} (k values {list(ex.profile.k_values)})")
    return [v for k in ks for v in ex.headline_variants() if v.k == k]


def write_book_browser(ex, out: str | Path, opts: BrowserOptions = BrowserOptions(),
                       k_values: Sequence[int] | None = None) -> dict:
    """Write the browser of :func:`book_pair` (at ``k_values``) into ``out`` and its summary ``out/browser.json``.

    ``ex``: the profile's :class:`~vsae.pipeline.Experiment`. The pair is read from the store (trained
    only if missing, as any chapter would). Returns the summary: one row per SAE (latents alive and
    shown, data-file bytes) plus the tokens looked at, total bytes and seconds.
    """
    import time

    t0 = time.time()
    require_tabulator()
    pair = book_pair(ex, k_values)
    saes = ex.train(pair, progress=False)
    ks = ", ".join(str(k) for k in dict.fromkeys(v.k for v in pair))
    what = f"the feature chapter's TopK SAE and vSAE at k = {ks}" if not k_values else f"TopK SAEs and vSAEs at k = {ks}"
    title = f"Feature browser: {what} ({ex.profile.lm}, {ex.profile.hook_name}, profile {ex.profile.name})"
    out = Path(out)
    # written next to ``out`` and swapped in whole: a killed run leaves the previous browser as it was
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    write_browser(saes, ex.lm, ex.eval_acts, tmp, opts, title=title)
    rows = []
    for v in pair:
        d = load_data(tmp / f"data_{slug(v.name)}.js")
        rows.append({"sae": v.name, "architecture": v.architecture, "k": v.k, "d_sae": d["d_sae"],
                     "n_alive": d["n_alive"], "n_shown": d["n_latents_shown"],
                     "bytes": (tmp / f"data_{slug(v.name)}.js").stat().st_size})
    summary = {"profile": ex.profile.name, "n_tokens": int(_cache_tokens(ex.eval_acts, opts.n_tokens)),
               "options": asdict(opts), "saes": rows, "bytes": folder_bytes(tmp),
               "seconds": round(time.time() - t0, 1)}
    (tmp / BOOK_SUMMARY).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary
