"""Run inside the interop environment: SAE Bench 0.6.0's own metric code on our model, SAEs and tokens.

``python saebench_metrics.py JOB.json RESULT.json``. JOB holds:

* ``model_dir``: a Hugging Face ``save_pretrained`` folder (config, weights, tokenizer) of the
  ``pythia-70m-random`` GPT-NeoX model. It is loaded the way the paper and SAE Bench load Pythia:
  ``HookedTransformer.from_pretrained`` with its default processing (fold LayerNorm, centre the
  writing weights and the unembedding), from the local folder, in ``dtype``;
* ``tokens``: a safetensors file with ``tokens`` ``[n_prompts, T]``, served in order, ``batch_prompts``
  at a time, by a minimal stand-in for SAELens' ``ActivationsStore`` (SAE Bench's core functions only
  call its ``get_batch_tokens``);
* ``ignore_tokens``: the special-token ids SAE Bench masks (BOS / EOS / PAD);
* ``saes``: ``{"name", "path"}`` of SAE Bench-format exports (``python -m vsae export --format saebench``),
  loaded with the export's own ``load_saebench.py`` and cast to ``dtype``;
* ``formulas``: small literal inputs for the sparse-probing top-k selection, SCR's and TPP's scores.

For each SAE it runs ``get_sparsity_and_variance_metrics``, ``get_downstream_reconstruction_metrics``,
``get_featurewise_weight_based_metrics`` and ``calculate_misc_metrics`` (exactly what ``run_evals`` and
``multiple_evals`` call) and writes every scalar to RESULT, with the residual of the first batch (for a
model-level diagnostic when a metric disagrees).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TokenStore:
    """What SAE Bench's core evaluation needs of an ``ActivationsStore``: token batches, in order."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens
        self.pos = 0
        self.context_size = tokens.shape[1]

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        if self.pos + n > len(self.tokens):
            raise RuntimeError(f"asked for prompts {self.pos}..{self.pos + n} of {len(self.tokens)}")
        out = self.tokens[self.pos : self.pos + n]
        self.pos += n
        return out

    def reset_input_dataset(self) -> None:
        self.pos = 0


def load_model(model_dir: str, dtype: torch.dtype):
    from transformer_lens import HookedTransformer
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from transformer_lens import loading_from_pretrained as loading

    hf = GPTNeoXForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    # from_pretrained looks the name up in its list of official models before anything else; the rest
    # of its path (config from the folder's config.json, NeoX weight conversion, LayerNorm folding and
    # centring) already accepts a local folder, so only that lookup is told to pass the folder through
    official = loading.get_official_model_name
    loading.get_official_model_name = lambda name: name if name == model_dir else official(name)
    try:
        return HookedTransformer.from_pretrained(model_dir, hf_model=hf, tokenizer=tok, device="cpu", dtype=dtype).eval()
    finally:
        loading.get_official_model_name = official


def load_sae(path: str, dtype: torch.dtype):
    spec = importlib.util.spec_from_file_location("load_saebench", Path(path) / "load_saebench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    _, sae, _ = load_and_format_sae("custom", mod.load(path), "cpu")  # what SAE Bench's evals do first
    return sae.to(dtype=dtype).eval()


@torch.no_grad()
def sae_metrics(sae, model, tokens: torch.Tensor, batch_prompts: int, ignore: set[int]) -> dict:
    from sae_bench.evals.core import main as core

    n_batches = len(tokens) // batch_prompts
    store = TokenStore(tokens)
    down = core.get_downstream_reconstruction_metrics(
        sae, model, store, compute_kl=True, compute_ce_loss=True, n_batches=n_batches,
        eval_batch_size_prompts=batch_prompts, ignore_tokens=ignore, exclude_special_tokens_from_reconstruction=True)
    store.reset_input_dataset()
    sparse, feats = core.get_sparsity_and_variance_metrics(
        sae, model, store, n_batches=n_batches, compute_l2_norms=True, compute_sparsity_metrics=True,
        compute_variance_metrics=True, compute_featurewise_density_statistics=True,
        eval_batch_size_prompts=batch_prompts, model_kwargs={}, ignore_tokens=ignore)
    feats |= core.get_featurewise_weight_based_metrics(sae)
    misc = core.calculate_misc_metrics(feats)
    return {**{k: float(v) for k, v in down.items()}, **{k: float(v) for k, v in sparse.items()},
            **{k: float(v) for k, v in misc.items()}}


def _by_threshold(class_accuracies: dict) -> dict:
    """JSON keys are strings; SAE Bench's dicts are keyed by the integer threshold N."""
    return {c: {int(t): v for t, v in d.items()} for c, d in class_accuracies.items()}


def formulas(job: dict) -> dict:
    """SAE Bench's probing selection, SCR and TPP scores on the literal inputs of the job."""
    from sae_bench.evals.scr_and_tpp.main import create_tpp_plotting_dict, get_scr_plotting_dict, select_top_n_features
    from sae_bench.evals.sparse_probing.probe_training import get_top_k_mean_diff_mask

    out: dict = {"top_k_mean_diff": {}, "select_top_n": {}, "select_top_n_few": {}}
    acts = torch.tensor(job["probe_acts"], dtype=torch.float32)
    labels = torch.tensor(job["probe_labels"], dtype=torch.int)
    for k in job["probe_k"]:
        mask = get_top_k_mean_diff_mask(acts, labels, k)  # True where NOT selected
        out["top_k_mean_diff"][str(k)] = sorted(int(i) for i in torch.nonzero(~mask).flatten())
    for key, eff in (("select_top_n", job["effects"]), ("select_top_n_few", job["effects_few"])):
        eff = torch.tensor(eff, dtype=torch.float32)
        for n in job["top_n"]:
            out[key][str(n)] = sorted(int(i) for i in torch.nonzero(select_top_n_features(eff, n, "c")).flatten())
    out["scr"] = [get_scr_plotting_dict(_by_threshold(c["class_accuracies"]), c["llm_clean_accs"]) for c in job["scr"]]
    overall, per_class = create_tpp_plotting_dict(_by_threshold(job["tpp"]["class_accuracies"]), job["tpp"]["llm_clean_accs"])
    out["tpp"] = {"overall": overall, "per_class": per_class}
    return out


def main(job_path: str, result_path: str) -> None:
    import time

    t0 = time.time()
    job = json.loads(Path(job_path).read_text())
    dtype = DTYPES[job["dtype"]]
    from sae_bench.evals.core import main as _  # noqa: F401 - the import alone takes a while; timed apart

    t_import = time.time()
    model = load_model(job["model_dir"], dtype)
    t_model = time.time()
    tokens = load_file(job["tokens"])["tokens"].long()
    ignore = set(int(t) for t in job["ignore_tokens"])
    _, cache = model.run_with_cache(tokens[: job["batch_prompts"]], prepend_bos=False,
                                    names_filter=[job["hook_name"]], stop_at_layer=job["layer"] + 1)
    save_file({"resid": cache[job["hook_name"]].contiguous()}, job["resid_out"])
    out = {"versions": {p: md.version(p) for p in ("sae-bench", "sae-lens", "transformer-lens", "torch")},
           "saes": {s["name"]: sae_metrics(load_sae(s["path"], dtype), model, tokens, job["batch_prompts"], ignore)
                    for s in job["saes"]},
           "formulas": formulas(job["formulas"])}
    out["seconds"] = {"import": round(t_import - t0, 1), "model": round(t_model - t_import, 1),
                      "metrics": round(time.time() - t_model, 1)}
    Path(result_path).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
