"""Our metrics against SAE Bench 0.6.0's own code, on the same model, SAEs and tokens.

The model is ``pythia-70m-random`` (the exact Pythia-70M architecture, seeded random weights, the real
tokenizer). SAE Bench gets it as the paper's pipeline loads Pythia: a ``HookedTransformer`` from
``from_pretrained`` with default processing, built from the very Hugging Face weights our
``TransformerBridge`` wraps (``saebench_metrics.py`` runs in the interop environment). Both sides run
in float64, so float32 rounding is out of the way and any difference larger than 1e-5 is a difference
of definition: the explained variances (SAE Bench's coded formula and its legacy one), cosine, L0, L1,
L2 norms and ratio, relative reconstruction bias, fraction alive and the density thresholds, CE and KL
with and without the SAE and their scores, and the weight-based max cosines. The two SAEs are a TopK
SAE and a vSAE trained here on this model's layer-3 residual, so some latents are dead and the scores
are in their usual range.

The same job runs SAE Bench's sparse-probing top-k selection, its top-N latent selection for
SCR/TPP, and its SCR and TPP scores on small literal inputs, against ``vsae.evals``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from vsae.__main__ import main as cli
from vsae.evals.common import top_k_mean_diff
from vsae.evals.core import max_cosine_to_others, sparsity_and_reconstruction
from vsae.evals.downstream import downstream_metrics
from vsae.evals.scr_tpp import scr_saebench, select_top_n, tpp_scores
from vsae.lm import load_lm, pythia_random_hf, pythia_tokenizer
from vsae.models import TopKSAEConfig, VSAEConfig, load_sae

from sources import MemoryActs

TOL = 1e-5
LAYER, N_PROMPTS, T, BATCH = 3, 8, 32, 4
HOOK = f"blocks.{LAYER}.hook_resid_post"

#: ours -> SAE Bench's name for the same metric (``explained_variance`` is SAE Bench's *coded* formula)
METRICS = {
    "explained_variance_saebench": "explained_variance", "explained_variance_legacy": "explained_variance_legacy",
    "cossim": "cossim", "l0": "l0", "l1": "l1", "l2_norm_in": "l2_norm_in", "l2_norm_out": "l2_norm_out",
    "l2_ratio": "l2_ratio", "relative_reconstruction_bias": "relative_reconstruction_bias",
    "frac_alive": "frac_alive", "freq_over_1_percent": "freq_over_1_percent",
    "freq_over_10_percent": "freq_over_10_percent",
    "ce_loss_without_sae": "ce_loss_without_sae", "ce_loss_with_sae": "ce_loss_with_sae",
    "ce_loss_with_ablation": "ce_loss_with_ablation", "ce_loss_score": "ce_loss_score",
    "kl_div_with_sae": "kl_div_with_sae", "kl_div_with_ablation": "kl_div_with_ablation", "kl_div_score": "kl_div_score",
    "average_max_decoder_cosine_sim": "average_max_decoder_cosine_sim",
    "average_max_encoder_cosine_sim": "average_max_encoder_cosine_sim",
}


def _tokens(n: int, seed: int) -> torch.Tensor:
    """Token ids of ordinary vocabulary, with BOS/EOS (0) and PAD (1) at a few places, so the
    special-token masks of both sides are exercised (position 0 included)."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(2, 50_000, (n, T), generator=g)
    tok[::3, 0] = 0
    tok[1::4, T // 2] = 0
    tok[2::5, -1] = 1
    return tok


def _train(lm, tmp: Path) -> dict[str, Path]:
    """A TopK SAE and a learned-variance vSAE, trained briefly on this model's layer-3 residual."""
    from vsae.training import TrainConfig, train_saes

    acts = lm.resid(_tokens(96, seed=1)).reshape(-1, lm.d_model).float()
    d, k = lm.d_model, 16
    specs = {"topk": TopKSAEConfig(d_in=d, d_sae=4 * d, k=k, seed=0),
             "vsae": VSAEConfig(d_in=d, d_sae=4 * d, k=k, seed=0, var_mode="learned")}
    train_saes(MemoryActs(acts), specs, TrainConfig(steps=120, batch_size=128, warmup_steps=10, checkpoint_every=0,
                                                    log_every=40), tmp / "trained", progress=False)
    return {n: tmp / "trained" / n for n in specs}


@torch.no_grad()
def _ours(lm, sae, tokens: torch.Tensor) -> dict:
    special = lm.special_token_ids
    acts = lm.resid(tokens).reshape(-1, lm.d_model)
    m, _ = sparsity_and_reconstruction({"s": sae}, acts, tokens=tokens.reshape(-1), special_ids=special,
                                       batch_tokens=BATCH * T, n_boot=0)
    down = downstream_metrics({"s": sae}, lm, tokens, special_ids=special, batch_size=BATCH, exclude_special_tokens=True)
    return {**m["s"], **down["s"],
            "average_max_decoder_cosine_sim": float(max_cosine_to_others(sae.W_dec).mean()),
            "average_max_encoder_cosine_sim": float(max_cosine_to_others(sae.W_enc.T).mean())}


def _formula_job() -> tuple[dict, dict]:
    """Small literal inputs for SAE Bench's selection and score code, and what ``vsae.evals`` says."""
    g = np.random.default_rng(3)
    acts = g.normal(size=(40, 30)).astype(np.float32)
    labels = (np.arange(40) % 2).astype(int)
    acts[labels == 1, 7] += 2.0
    acts[labels == 1, 11] -= 1.5  # |mean difference| is what counts: a negative shift is selected too
    effects = np.abs(g.normal(size=25)).astype(np.float32)
    effects[[2, 9, 17]] = 0.0  # only non-zero effects may be selected
    effects_few = np.zeros(25, np.float32)
    effects_few[[4, 6]] = [0.3, 0.9]  # fewer non-zero effects than N
    # SCR: one pair per case; (biased on target, biased on spurious, oracle target, oracle spurious,
    # ablated dir 1, ablated dir 2), chosen to hit both directions and SAE Bench's S = 0 rule
    scr_cases = [(0.62, 0.91, 0.95, 0.97, 0.80, 0.90), (0.88, 0.70, 0.93, 0.96, 0.90, 0.78),
                 (0.60, 0.85, 0.6005, 0.90, 0.70, 0.86), (0.75, 0.90, 0.70, 0.95, 0.72, 0.91)]
    pn, mf, bias = "professor / nurse", "male / female", "male_professor / female_nurse probe on"
    scr_jobs, rows = [], []
    for i, (bt, bs, ot, os_, a1, a2) in enumerate(scr_cases):
        scr_jobs.append({
            "llm_clean_accs": {pn: ot, mf: os_, f"{bias} {pn} data": bt, f"{bias} {mf} data": bs},
            "class_accuracies": {mf: {"5": {f"{bias} {pn} data": a1}}, pn: {"5": {f"{bias} {mf} data": a2}}}})
        rows.append({"sae": "s", "pair": f"case{i}", "n": 5, "ablated_acc_dir1": a1, "ablated_acc_dir2": a2,
                     "biased_on_target": bt, "biased_on_spurious": bs, "target_probe_acc": ot,
                     "spurious_probe_acc": os_})
    clean = {"a": 0.91, "b": 0.84, "c": 0.77}
    ablated = {"a": {2: {"a": 0.70, "b": 0.83, "c": 0.78}, 20: {"a": 0.55, "b": 0.80, "c": 0.70}},
               "b": {2: {"a": 0.90, "b": 0.60, "c": 0.76}, 20: {"a": 0.88, "b": 0.52, "c": 0.71}},
               "c": {2: {"a": 0.91, "b": 0.84, "c": 0.77}, 20: {"a": 0.86, "b": 0.81, "c": 0.50}}}
    job = {"probe_acts": acts.tolist(), "probe_labels": labels.tolist(), "probe_k": [1, 2, 5],
           "effects": effects.tolist(), "effects_few": effects_few.tolist(), "top_n": [1, 5, 20], "scr": scr_jobs,
           "tpp": {"llm_clean_accs": clean,
                   "class_accuracies": {c: {str(n): d for n, d in by_n.items()} for c, by_n in ablated.items()}}}
    ours = {
        "top_k_mean_diff": {str(k): sorted(top_k_mean_diff(acts, labels, k).tolist()) for k in job["probe_k"]},
        "select_top_n": {str(n): sorted(select_top_n(effects, n).tolist()) for n in job["top_n"]},
        "select_top_n_few": {str(n): sorted(select_top_n(effects_few, n).tolist()) for n in job["top_n"]},
        "scr": scr_saebench(pd.DataFrame(rows)).query("pair != 'ALL'").to_dict("records"),
        "tpp": {c: {n: tpp_scores(clean, abl, c) for n, abl in by_n.items()} for c, by_n in ablated.items()},
    }
    return job, ours


def _compare_formulas(theirs: dict, ours: dict) -> None:
    assert theirs["top_k_mean_diff"] == ours["top_k_mean_diff"]
    assert theirs["select_top_n"] == ours["select_top_n"]
    assert theirs["select_top_n_few"] == ours["select_top_n_few"]
    for mine, their in zip(ours["scr"], theirs["scr"]):
        assert their["scr_dir1_threshold_5"] == pytest.approx(mine["scr_dir1"], abs=1e-12), (mine, their)
        assert their["scr_dir2_threshold_5"] == pytest.approx(mine["scr_dir2"], abs=1e-12), (mine, their)
        assert their["scr_metric_threshold_5"] == pytest.approx(mine["scr_metric"], abs=1e-12), (mine, their)
    assert any(r["scr_dir1"] == 0.0 for r in ours["scr"]), "a case should hit SAE Bench's S = 0 rule"
    for c, by_n in ours["tpp"].items():
        for n, s in by_n.items():
            their = theirs["tpp"]["per_class"][c]
            for key, name in (("tpp_total", "total_metric"), ("tpp_intended", "intended_diff_only"),
                              ("tpp_unintended", "unintended_diff_only")):
                assert their[f"tpp_threshold_{n}_{name}"] == pytest.approx(s[key], abs=1e-12), (c, n, key)
    for n in (2, 20):  # SAE Bench's overall TPP: the mean over classes, as our class == "ALL" rows
        mean_total = np.mean([ours["tpp"][c][n]["tpp_total"] for c in ours["tpp"]])
        assert theirs["tpp"]["overall"][f"tpp_threshold_{n}_total_metric"] == pytest.approx(mean_total, abs=1e-12)


def test_core_metrics_and_formulas_match_saebench(peer_python, tmp_path):
    lm = load_lm("pythia-70m-random", LAYER, dtype="float64")
    model_dir = tmp_path / "pythia-70m-random"
    pythia_random_hf().save_pretrained(model_dir)  # the weights lm wraps (same seed), in float32
    pythia_tokenizer().save_pretrained(model_dir)
    sae_dirs = _train(lm, tmp_path)
    tokens = _tokens(N_PROMPTS, seed=2)
    save_file({"tokens": tokens.contiguous()}, str(tmp_path / "tokens.safetensors"))
    saes = []
    for name, d in sae_dirs.items():
        assert cli(["export", str(d), "--format", "saebench", str(tmp_path / "exports" / name)]) == 0
        saes.append({"name": name, "path": str(tmp_path / "exports" / name)})
    formula_job, formula_ours = _formula_job()
    job = {"model_dir": str(model_dir), "dtype": "float64", "tokens": str(tmp_path / "tokens.safetensors"),
           "batch_prompts": BATCH, "ignore_tokens": lm.special_token_ids, "hook_name": HOOK, "layer": LAYER,
           "resid_out": str(tmp_path / "resid.safetensors"), "saes": saes, "formulas": formula_job}
    (tmp_path / "job.json").write_text(json.dumps(job))
    t = time.time()
    r = subprocess.run([str(peer_python), str(Path(__file__).with_name("saebench_metrics.py")), str(tmp_path / "job.json"),
                        str(tmp_path / "result.json")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((tmp_path / "result.json").read_text())
    print(f"SAE Bench metrics on {len(saes)} SAEs in {time.time() - t:.1f} s ({res['seconds']}); versions {res['versions']}")
    assert res["versions"]["sae-bench"] == "0.6.0"

    # the model first: SAE Bench's HookedTransformer and our bridge give the same residual at the hook
    theirs_resid = load_file(str(tmp_path / "resid.safetensors"))["resid"]
    ours_resid = lm.resid(tokens[:BATCH])
    resid_diff = float((theirs_resid - ours_resid).abs().max() / ours_resid.abs().max())
    print(f"residual at {HOOK}: max |SAE Bench - ours| / max |ours| = {resid_diff:.3g}")
    # ~3e-9 measured: both run in float64, but the weights arrive as float32 and the two libraries fold
    # LayerNorm and centre the weights in different orders; far below every metric tolerance
    assert resid_diff < 1e-7

    worst = {}
    for s in saes:
        ours = _ours(lm, load_sae(Path(sae_dirs[s["name"]])).double().eval(), tokens)
        theirs = res["saes"][s["name"]]
        for mine, name in METRICS.items():
            diff = abs(ours[mine] - theirs[name])
            print(f"{s['name']:5s} {mine:32s} ours {ours[mine]: .8f}  SAE Bench {theirs[name]: .8f}  |diff| {diff:.2g}")
            worst[mine] = max(worst.get(mine, 0.0), diff)
            assert diff <= TOL, (s["name"], mine, ours[mine], theirs[name])
        assert 0 < ours["frac_alive"] < 1 or s["name"] == "topk", "the vSAE should have dead latents to count"
        # a random model: zero ablation may even lower the CE; the score is defined while the gap is not tiny
        assert abs(ours["ce_loss_with_ablation"] - ours["ce_loss_without_sae"]) > 0.05, "the CE score should be well defined"
    print(f"largest |ours - SAE Bench| over {len(METRICS)} metrics x {len(saes)} SAEs: {max(worst.values()):.3g} "
          f"({max(worst, key=worst.get)})")
    _compare_formulas(res["formulas"], formula_ours)
