"""Run inside the interop environment: load each exported SAE with its peer library and compare.

``python peer_check.py JOB.json RESULT.json``. JOB lists cases ``{"name", "format", "path", "data"}``;
``data`` is a safetensors file with ``x`` (activations), ``codes`` (our ``encode(x)``) and ``recon`` (our
``decode(codes)``). For each case this loads the export unchanged (SAELens: ``SAE.load_from_disk``;
SAE Bench: the export's own ``load_saebench.py``), passes it through SAE Bench's
``general_utils.load_and_format_sae`` (what its evals do with an SAE object) and records the largest
absolute differences of ``encode(x)``, ``decode(codes)`` and ``decode(encode(x))`` from ours.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file


def load_peer(fmt: str, path: str):
    if fmt == "saelens":
        from sae_lens import SAE

        return SAE.load_from_disk(path, device="cpu")
    if fmt == "saebench":
        spec = importlib.util.spec_from_file_location("load_saebench", Path(path) / "load_saebench.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.load(path)
    raise ValueError(fmt)


@torch.no_grad()
def check(case: dict) -> dict:
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    sae = load_peer(case["format"], case["path"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_and_format_sae("custom", sae, "cpu")
    d = load_file(case["data"])
    x, codes, recon = d["x"], d["codes"], d["recon"]
    enc = sae.encode(x)
    cfg = sae.cfg
    meta = getattr(cfg, "metadata", None)
    return {
        "name": case["name"],
        "format": case["format"],
        "class": f"{type(sae).__module__}.{type(sae).__name__}",
        "architecture": cfg.architecture() if callable(cfg.architecture) else cfg.architecture,
        "apply_b_dec_to_input": getattr(cfg, "apply_b_dec_to_input", None),
        "hook_name": cfg.hook_name,  # set by load_and_format_sae for SAELens v6 configs too
        "hook_layer": cfg.hook_layer,
        "model_name": cfg.model_name,
        "metadata_hook_name": getattr(meta, "hook_name", None) if meta is not None else None,
        "decoder_norm_warning": any("not normalized" in str(w.message) for w in caught),
        "encode": float((enc - codes).abs().max()),
        "decode": float((sae.decode(codes) - recon).abs().max()),
        "roundtrip": float((sae.decode(enc) - recon).abs().max()),
        "same_support": bool(((enc != 0) == (codes != 0)).all()),
        "scale": float(codes.abs().max()),
    }


def main(job: str, result: str) -> None:
    cases = json.loads(Path(job).read_text())["cases"]
    out = {"versions": {p: md.version(p) for p in ("sae-lens", "sae-bench", "transformer-lens", "torch", "numpy")},
           "cases": [check(c) for c in cases]}
    Path(result).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
