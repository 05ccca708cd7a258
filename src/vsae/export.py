"""Take the book's SAEs and result tables to where the field works: SAELens, SAE Bench, CSV / Parquet.

SAEs (``python -m vsae export SAE_DIR --format saelens|saebench OUT``)
------------------------------------------------------------------------

Both peers know one inference form, the TopK SAE::

    f     = TopK(ReLU((x - c * b_dec) @ W_enc + b_enc), k)     c = 1 (apply_b_dec_to_input) or 0
    x_hat = f @ W_dec + b_dec

A saved SAE of this project runs on *raw* activations (the training normalisation is folded into its
biases, :meth:`vsae.models.SAEBase.fold_activation_scale`), so every export says
``normalize_activations = "none"`` and is fed the hooked model's residual stream as it is.

- **TopK SAE**: maps directly (c = 1; W_enc, b_enc, W_dec, b_dec unchanged).
- **vSAE**: exported as a TopK-style SAE of its evaluation path. In eval mode the vSAE computes
  ``mu = ReLU(x @ W_enc + b_enc)`` (no ``b_dec`` subtraction, the authors' "april update" mode),
  ``z = mu`` for every ``var_mode`` (sampling happens only in training) and ``TopK(|z|) = TopK(mu)``
  since mu >= 0: ReLU then TopK on the same values, which is the TopK SAE's encoder with c = 0. What is
  preserved: ``encode`` (the codes, including their scale) and ``decode`` of the model as evaluated.
  What is dropped: the variance head (``W_var``, ``b_var`` of ``var_mode="learned"``), the sampling
  noise, the KL and every training-only setting (``kl_coeff``, ``kl_scope``, ``act_scale``); they are
  kept only as provenance under ``metadata["vsae"]`` / ``cfg.json["vsae"]``. An exported vSAE can be
  used for inference and evaluation, not to continue variational training.

  * SAELens writes c = 0 as ``apply_b_dec_to_input = false``: the weights are the vSAE's own, exact.
  * SAE Bench's ``TopKSAE`` always subtracts ``b_dec`` (c = 1), so the vSAE's encoder bias is exported
    as ``b_enc + b_dec @ W_enc`` (computed in float64): ``(x - b_dec) @ W_enc + b_enc' = x @ W_enc +
    b_enc`` up to float32 rounding of the two matmul orders (~1e-7 relative).

Decoder norms. SAE Bench asks for unit-norm decoder rows: for an SAE object passed to its evals
(``general_utils.load_and_format_sae``) it only *checks* them (``check_decoder_norms``, a warning) and
leaves the decoder as it is; its loaders for dictionary_learning checkpoints refuse a non-unit decoder,
and its ``relu_sae.normalize_decoder`` (divide each row by its norm, multiply the encoder column and
bias by it) is what it suggests. SAELens's ``fold_W_dec_norm`` refuses a TopK SAE whose
``rescale_acts_by_decoder_norm`` is false (it would change the TopK selection). The TopK SAE's decoder
rows are kept at unit norm in training, so it passes the check. The vSAE's decoder is unconstrained:
by default it is exported as trained (the check warns; codes equal ours exactly). With
``normalize_decoder=True`` (``--normalize-decoder``) the export applies that normalisation first,
i.e. it exports :meth:`vsae.models.VSAE.normalized_decoder` (the paper's evaluation-time export):
each latent's contribution mu_i * W_dec[i] is unchanged, but TopK then ranks n_i * mu_i, so the
selected latents can differ from the trained model's (measure it with
:func:`vsae.models.decoder_normalization_effect`).

Files
^^^^^

``--format saelens`` (SAELens 6.54.12, ``sae_lens.SAE.load_from_disk(OUT)`` loads it unchanged and
returns a ``sae_lens.saes.topk_sae.TopKSAE``): ``cfg.json`` (the dict of ``TopKSAEConfig.to_dict``:
``architecture = "topk"``, ``d_in``, ``d_sae``, ``k``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations = "none"``, ``reshape_activations = "none"``, ``rescale_acts_by_decoder_norm =
false``, ``metadata`` with ``sae_lens_version`` (>= 6, so the loader takes the 6.x path),
``model_name``, ``hook_name``, ``hook_layer``, ``prepend_bos``, ``context_size`` and the provenance) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec``,
float32)::

    from sae_lens import SAE
    sae = SAE.load_from_disk(OUT)            # sae.encode(x), sae.decode(f)

``--format saebench`` (SAE Bench 0.6.0). SAE Bench's custom-SAE interface is a *Python class*, not a
file format: an ``nn.Module`` deriving ``sae_bench.custom_saes.base_sae.BaseSAE`` with ``W_enc``,
``W_dec``, ``b_enc``, ``b_dec``, ``encode``/``decode``/``forward``, ``dtype``, ``device`` and a
``CustomSAEConfig`` ``cfg``. The export therefore writes the state dict that its
``sae_bench.custom_saes.topk_sae.TopKSAE`` takes (``sae_weights.safetensors``: ``W_enc``, ``W_dec``,
``b_enc``, ``b_dec`` float32 and ``k`` int32 scalar), its constructor arguments (``cfg.json``) and
``load_saebench.py``, this loader::

    import json, torch
    from safetensors.torch import load_file
    from sae_bench.custom_saes.topk_sae import TopKSAE
    cfg = json.load(open(f"{OUT}/cfg.json"))
    sae = TopKSAE(d_in=cfg["d_in"], d_sae=cfg["d_sae"], k=cfg["k"], model_name=cfg["model_name"],
                  hook_layer=cfg["hook_layer"], hook_name=cfg["hook_name"],
                  device=torch.device("cpu"), dtype=torch.float32)
    sae.load_state_dict(load_file(f"{OUT}/sae_weights.safetensors"))
    # then e.g. sae_bench.evals.core.main.run_evals(...) with [("my_sae", sae)]

(SAE Bench's evals also accept the SAELens export loaded with ``SAE.load_from_disk``.)

``model_name`` is the peers' name of the hooked model (``pythia-70m-deduped`` for this project's
``pythia-70m-deduped`` and for ``pythia-70m-random``, which has its architecture but random weights;
the Hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` for ``smollm2-135m``, whose offline weights are
Q4_1-dequantised); this project's own name is kept as ``vsae.lm``.

Result tables (``python -m vsae tables --profile P OUT``)
---------------------------------------------------------

:func:`export_tables` writes every per-seed result table of an :class:`~vsae.pipeline.Experiment`
(training summary and logs, core metrics / latent density / bootstrap noise, sparse probing, SCR, TPP
over all seeds of the profile, and the probing tasks) as ``<name>.csv`` and ``<name>.parquet``, with
``SCHEMA.txt`` (one line per table: rows and typed columns), ``schema.json``, ``manifest.json``
(profile, file sizes and sha256) and ``index.html`` (:func:`tables_page`: what the site serves at
``tables/``; ``make book`` writes them beside the site).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write, atomic_write_json

__all__ = [
    "FORMATS",
    "SAELENS_VERSION",
    "SAEBENCH_VERSION",
    "topk_form",
    "as_topk_sae",
    "export_sae",
    "export_saelens",
    "export_saebench",
    "SAEBENCH_LOADER",
    "TABLE_DOCS",
    "result_tables",
    "export_tables",
    "schema_lines",
    "tables_page",
]

#: export formats of :func:`export_sae`
FORMATS = ("saelens", "saebench")
#: the SAELens release whose ``SAE.load_from_disk`` the ``saelens`` export is written for (and tested with)
SAELENS_VERSION = "6.54.12"
#: the SAE Bench release whose ``custom_saes.topk_sae.TopKSAE`` the ``saebench`` export is written for
SAEBENCH_VERSION = "0.6.0"
#: this project's LM registry name -> the name SAELens / SAE Bench / TransformerLens know it by
PEER_MODEL_NAMES = {
    "pythia-70m-deduped": "pythia-70m-deduped",
    "pythia-70m-random": "pythia-70m-deduped",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

SAEBENCH_LOADER = '''"""Load this folder as SAE Bench 0.6.0's custom TopK SAE (written by `python -m vsae export`)."""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from sae_bench.custom_saes.topk_sae import TopKSAE


def load(path=Path(__file__).parent, device="cpu", dtype=torch.float32) -> TopKSAE:
    path = Path(path)
    cfg = json.loads((path / "cfg.json").read_text())
    sae = TopKSAE(d_in=cfg["d_in"], d_sae=cfg["d_sae"], k=cfg["k"], model_name=cfg["model_name"],
                  hook_layer=cfg["hook_layer"], hook_name=cfg["hook_name"],
                  device=torch.device(device), dtype=dtype)
    sae.load_state_dict(load_file(str(path / "sae_weights.safetensors")))
    sae.to(device=device, dtype=dtype)
    sae.cfg.architecture = "topk"
    return sae


if __name__ == "__main__":
    print(load())
'''


# ----------------------------------------------------------------------------------- the TopK form
@torch.no_grad()
def topk_form(sae, *, subtract_b_dec: bool | None = None, normalize_decoder: bool = False) -> dict[str, Any]:
    """The inference form of ``sae`` as a TopK SAE (see the module docstring).

    Returns ``{"W_enc", "b_enc", "W_dec", "b_dec"}`` (float32, contiguous, CPU), ``k`` and
    ``apply_b_dec_to_input``. ``subtract_b_dec=None`` keeps the SAE's own encoder (``cfg.subtract_b_dec``:
    TopK True, vSAE False by default); ``True`` forces a form that subtracts ``b_dec`` (the vSAE's bias becomes ``b_enc + b_dec @
    W_enc``). ``normalize_decoder`` rescales decoder rows to unit norm first (encoder columns and bias
    times the norm; the vSAE: :meth:`~vsae.models.VSAE.normalized_decoder`).
    """
    arch = sae.cfg.architecture
    if arch not in ("topk", "vsae"):
        raise ValueError(f"cannot export architecture {arch!r}")
    if normalize_decoder and arch == "vsae" and not sae.cfg.decoder_normalized:
        sae = sae.normalized_decoder()
    W_enc, b_enc, W_dec, b_dec = (p.detach().float().cpu() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    if normalize_decoder and arch == "topk":  # the same rescaling as VSAE.normalized_decoder
        n = W_dec.norm(dim=1).clamp_min(1e-12)
        W_dec, W_enc, b_enc = W_dec / n[:, None], W_enc * n[None, :], b_enc * n
    own = bool(sae.cfg.subtract_b_dec)  # the recipe field (TopK: True, vSAE: False unless a ladder rung flips it)
    apply = own if subtract_b_dec is None else bool(subtract_b_dec)
    if apply != own:  # x @ W + b == (x - b_dec) @ W + (b + b_dec @ W)
        shift = b_dec.double() @ W_enc.double()
        b_enc = (b_enc.double() + shift if apply else b_enc.double() - shift).float()
    out: dict[str, Any] = {n: t.contiguous() for n, t in
                           (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec))}
    out["k"] = int(sae.cfg.k)
    out["apply_b_dec_to_input"] = apply
    return out


def as_topk_sae(sae, normalize_decoder: bool = False):
    """This project's :class:`~vsae.models.TopKSAE` computing ``sae``'s inference form (eval mode).

    For a vSAE it is the TopK-style SAE of the ``saebench`` export (``b_enc + b_dec @ W_enc``): its
    ``encode`` equals the vSAE's mean-path ``encode`` up to float rounding, its ``decode`` is the same.
    """
    from .models import TopKSAE, TopKSAEConfig

    form = topk_form(sae, subtract_b_dec=True, normalize_decoder=normalize_decoder)
    cfg = TopKSAEConfig(d_in=sae.cfg.d_in, d_sae=sae.cfg.d_sae, k=sae.cfg.k, seed=sae.cfg.seed,
                        act_scale=sae.cfg.act_scale, meta={"exported_from": sae.cfg.architecture})
    out = TopKSAE(cfg)
    with torch.no_grad():
        for n in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(out, n).copy_(form[n])
    return out.eval()


# ----------------------------------------------------------------------------------- metadata
def _provenance(sae, normalize_decoder: bool) -> dict[str, Any]:
    cfg = sae.cfg
    meta = dict(cfg.meta or {})
    cache = meta.get("cache") or {}
    model = cache.get("model") if isinstance(cache.get("model"), dict) else {}
    prov = {
        "exported_by": "vsae.export",
        "architecture": cfg.architecture,
        "name": meta.get("name"),
        "seed": cfg.seed,
        "act_scale": cfg.act_scale,
        "norm_factor": meta.get("norm_factor"),
        "lm": model.get("name") or cache.get("lm"),
        "cache_checksum": cache.get("checksum"),
        "corpus": cache.get("corpus"),
        "train_tokens": meta.get("tokens"),
        "decoder_normalized": bool(normalize_decoder or getattr(cfg, "decoder_normalized", False)),
        "normalisation": "folded into the weights: feed raw activations",
    }
    if cfg.architecture == "vsae":
        prov.update({
            "var_mode": cfg.var_mode, "kl_coeff": cfg.kl_coeff, "kl_scope": cfg.kl_scope,
            "exported_as": "TopK-style SAE of the evaluation path: f = TopK(ReLU(x @ W_enc + b_enc)), z = mu",
            "dropped": (["W_var", "b_var"] if cfg.var_mode == "learned" else [])
            + ["sampling noise", "KL", "training-only settings"],
        })
    return {k: v for k, v in prov.items() if v is not None}


def _hook_and_model(sae, hook_name: str | None, model_name: str | None, layer: int | None) -> dict[str, Any]:
    meta = dict(sae.cfg.meta or {})
    cache = meta.get("cache") or {}
    model = cache.get("model") if isinstance(cache.get("model"), dict) else {}
    hook = hook_name or cache.get("hook") or cache.get("hook_name") or model.get("hook")
    if layer is None and hook_name is None and model.get("layer") is not None:
        layer = int(model["layer"])
    if hook is None and layer is not None:
        hook = f"blocks.{layer}.hook_resid_post"
    if hook is None:
        raise ValueError("the SAE's cfg.json does not record its hook (meta.cache.hook); pass hook_name=... (--hook-name)")
    if layer is None:
        m = re.search(r"blocks\.(\d+)\.", hook)
        if m is None:
            raise ValueError(f"cannot read the layer from hook {hook!r}; pass layer=... (--layer)")
        layer = int(m.group(1))
    ours = model.get("name") or cache.get("lm")
    peer = model_name or PEER_MODEL_NAMES.get(ours or "", ours)
    if peer is None:
        raise ValueError("the SAE's cfg.json does not record its language model; pass model_name=... (--model-name)")
    ctx = (cache.get("ctx_len") or (meta.get("train") or {}).get("ctx_len"))
    return {"hook_name": hook, "hook_layer": int(layer), "model_name": peer, "vsae_lm": ours,
            "prepend_bos": bool(model.get("prepend_bos", True)), "context_size": ctx}


def _save_weights(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


# ----------------------------------------------------------------------------------- the writers
def export_saelens(sae, out: str | Path, *, normalize_decoder: bool = False, hook_name: str | None = None,
                   model_name: str | None = None, layer: int | None = None) -> Path:
    """Write ``sae`` as a SAELens 6.x TopK SAE folder (``cfg.json`` + ``sae_weights.safetensors``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    form = topk_form(sae, normalize_decoder=normalize_decoder)
    where = _hook_and_model(sae, hook_name, model_name, layer)
    metadata = {
        "sae_lens_version": SAELENS_VERSION,
        "sae_lens_training_version": None,
        "model_name": where["model_name"],
        "hook_name": where["hook_name"],
        "hook_layer": where["hook_layer"],
        "hook_head_index": None,
        "prepend_bos": where["prepend_bos"],
        "context_size": where["context_size"],
        "model_from_pretrained_kwargs": {},
        "vsae": _provenance(sae, normalize_decoder) | {"lm": where["vsae_lm"]},
    }
    cfg = {
        "architecture": "topk",
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "k": form["k"],
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": form["apply_b_dec_to_input"],
        "normalize_activations": "none",
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": metadata,
    }
    _save_weights(out / "sae_weights.safetensors", {n: form[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec")},
                  {"format": "saelens", "architecture": "topk"})
    atomic_write_json(out / "cfg.json", cfg)
    return out


def export_saebench(sae, out: str | Path, *, normalize_decoder: bool = False, hook_name: str | None = None,
                    model_name: str | None = None, layer: int | None = None) -> Path:
    """Write the state dict and constructor arguments of SAE Bench's ``custom_saes.topk_sae.TopKSAE``
    for ``sae`` (``cfg.json``, ``sae_weights.safetensors``, ``load_saebench.py``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    form = topk_form(sae, subtract_b_dec=True, normalize_decoder=normalize_decoder)
    where = _hook_and_model(sae, hook_name, model_name, layer)
    norms = form["W_dec"].norm(dim=1)
    cfg = {
        "format": "sae_bench.custom_saes.topk_sae.TopKSAE state dict",
        "sae_bench_version": SAEBENCH_VERSION,
        "loader": "load_saebench.py",
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "k": form["k"],
        "model_name": where["model_name"],
        "hook_layer": where["hook_layer"],
        "hook_name": where["hook_name"],
        "prepend_bos": where["prepend_bos"],
        "context_size": where["context_size"],
        "dtype": "float32",
        "architecture": "topk",
        "normalize_activations": "none",
        "decoder_unit_norm": bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-5)),
        "vsae": _provenance(sae, normalize_decoder) | {"lm": where["vsae_lm"]},
    }
    tensors = {n: form[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
    tensors["k"] = torch.tensor(form["k"], dtype=torch.int32)
    _save_weights(out / "sae_weights.safetensors", tensors, {"format": "saebench", "architecture": "topk"})
    atomic_write_json(out / "cfg.json", cfg)
    atomic_write(out / "load_saebench.py", SAEBENCH_LOADER)
    return out


def export_sae(sae_or_dir, out: str | Path, fmt: str = "saelens", **kw) -> Path:
    """Export an SAE (a module or a folder written by ``save``) in ``fmt`` (``saelens`` | ``saebench``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    sae = sae_or_dir
    if isinstance(sae_or_dir, (str, Path)):
        from .models import load_sae

        sae = load_sae(sae_or_dir)
    sae = sae.eval()
    return (export_saelens if fmt == "saelens" else export_saebench)(sae, out, **kw)


# ----------------------------------------------------------------------------------- result tables
#: the per-seed result tables of an Experiment and what each row is
TABLE_DOCS = {
    "training_summary": "last logged training values, one row per SAE (all seeds)",
    "training_logs": "training log, one row per SAE and logged step",
    "core_metrics": "core metrics on the held-out tokens, one row per SAE",
    "core_density": "per-latent firing density and first firing token, one row per SAE and latent",
    "core_noise": "bootstrap half-widths of the core scores, one row per SAE and score",
    "probing": "sparse probing, one row per SAE, dataset, task and k (dataset ALL: averages)",
    "scr": "spurious correlation removal, one row per SAE, pair and N (pair ALL: averages)",
    "tpp": "targeted probe perturbation, one row per SAE, dataset, class and N (ALL: averages)",
    "tasks": "the probing / SCR / TPP tasks and how they were built, one row per task",
}


def result_tables(ex, variants=None) -> dict[str, Any]:
    """Every per-seed result table of the Experiment ``ex`` over ``variants`` (default: its
    ``seed_variants()``), by name (:data:`TABLE_DOCS`). Computes whatever is not stored yet, as the
    chapters do, and reuses the rest."""
    vs = ex.seed_variants() if variants is None else list(variants)
    core = ex.core(vs)
    pool = ex.pool_evals(vs)
    return {
        "training_summary": ex.training_summary(vs),
        "training_logs": ex.logs(vs),
        "core_metrics": core["metrics"],
        "core_density": core["density"],
        "core_noise": core["noise"],
        "probing": pool["probing"],
        "scr": pool["scr"],
        "tpp": pool["tpp"],
        "tasks": ex.tasks(),
    }


def _dtype_name(s) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_float_dtype(s):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_string_dtype(s) or s.dtype == object:
        vals = s.dropna()
        for name, kinds in (("str", str), ("bool", bool), ("int", int), ("float", (int, float))):
            if all(isinstance(v, kinds) for v in vals):
                return name if len(vals) == len(s) or name == "str" else f"{name}?"  # ?: with missing values
        return "object"
    return str(s.dtype)


def schema_lines(tables: dict[str, Any]) -> list[str]:
    """One line per table: ``name (N rows): col:type, ...`` with types str, int, float, bool, datetime or
    object; ``?`` marks a column of Python values with missing entries (e.g. ``bool?``)."""
    return [f"{name} ({len(df):,} rows): " + ", ".join(f"{c}:{_dtype_name(df[c])}" for c in df.columns)
            for name, df in tables.items()]


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _for_files(df):
    """A copy whose columns are strings and whose object cells are JSON-able scalars (for Parquet)."""
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    for c in df.columns:
        if df[c].dtype == object:
            vals = df[c].dropna()
            if len(vals) and not all(isinstance(v, (str, int, float, bool)) for v in vals):
                df[c] = df[c].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))
    return df


def export_tables(ex_or_tables, out: str | Path, formats=("csv", "parquet"), variants=None,
                  profile: dict | None = None) -> dict[str, Any]:
    """Write each result table as ``<name>.csv`` / ``<name>.parquet`` into ``out``, with ``SCHEMA.txt``
    (:func:`schema_lines`), ``schema.json`` and ``manifest.json``; returns the manifest.

    ``ex_or_tables`` is an :class:`~vsae.pipeline.Experiment` (its :func:`result_tables`) or a dict of
    DataFrames already at hand.
    """
    formats = tuple(formats)
    bad = sorted(set(formats) - {"csv", "parquet"})
    if bad or not formats:
        raise ValueError(f"formats must be csv and/or parquet, got {list(formats)}")
    if isinstance(ex_or_tables, dict):
        tables = ex_or_tables
    else:
        tables = result_tables(ex_or_tables, variants)
        if profile is None and hasattr(ex_or_tables, "profile"):
            profile = ex_or_tables.profile.to_dict()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    schema: dict[str, dict] = {}
    written = {name: _for_files(df) for name, df in tables.items()}
    for name, df in written.items():
        if "csv" in formats:
            atomic_write(out / f"{name}.csv", df.to_csv(index=False))
        if "parquet" in formats:
            atomic_write(out / f"{name}.parquet", lambda f, df=df: df.to_parquet(f, index=False))
        for ext in formats:
            p = out / f"{name}.{ext}"
            files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        schema[name] = {"rows": int(len(df)), "doc": TABLE_DOCS.get(name, ""),
                        "columns": [[c, _dtype_name(df[c])] for c in df.columns]}
    lines = schema_lines(written)
    atomic_write(out / "SCHEMA.txt", "\n".join(lines) + "\n")
    atomic_write_json(out / "schema.json", schema)
    from . import __version__ as vsae_version

    manifest = {"profile": profile, "tables": list(tables), "formats": list(formats), "files": files,
                "vsae": vsae_version}
    atomic_write_json(out / "manifest.json", manifest)
    atomic_write(out / "index.html", tables_page(schema, manifest))
    return manifest


def tables_page(schema: dict[str, dict], manifest: dict) -> str:
    """A static HTML index of exported tables: per table its description, rows, typed columns and links
    to its files (with sizes), plus links to ``SCHEMA.txt``, ``schema.json`` and ``manifest.json``."""
    import html

    prof = (manifest.get("profile") or {}).get("name", "?")
    rows = []
    for name, sc in schema.items():
        links = " · ".join(
            f'<a href="{html.escape(f)}">{html.escape(f)}</a> ({manifest["files"][f]["bytes"] / 1e6:.2f} MB)'
            for f in (f"{name}.{ext}" for ext in manifest.get("formats", [])) if f in manifest["files"])
        cols = ", ".join(f"<code>{html.escape(c)}</code>:{html.escape(t)}" for c, t in sc["columns"])
        rows.append(f"<tr><td><strong>{html.escape(name)}</strong><br>{html.escape(sc.get('doc', ''))}</td>"
                    f"<td>{sc['rows']:,}</td><td>{links}</td><td style='font-size: 0.85em'>{cols}</td></tr>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Result tables</title>"
            "<style>body{font-family:sans-serif;margin:2em;line-height:1.4}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}</style></head><body>"
            f"<h1>Result tables (profile {html.escape(str(prof))})</h1>"
            "<p>Every per-seed result table of the book, as written by <code>python -m vsae tables</code>: "
            "<a href='SCHEMA.txt'>SCHEMA.txt</a> (one line per table), <a href='schema.json'>schema.json</a>, "
            f"<a href='manifest.json'>manifest.json</a> (sizes and sha256). vsae {html.escape(str(manifest.get('vsae')))}.</p>"
            "<table><tr><th>table</th><th>rows</th><th>files</th><th>columns</th></tr>"
            + "".join(rows) + "</table></body></html>\n")
