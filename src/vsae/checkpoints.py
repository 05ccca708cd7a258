"""The files of one training pass: its signature, checkpoints, per-SAE CSV logs, resume and refusal.

A pass is identified by its signature (:func:`run_signature`: the SAE specs, the training settings that
cannot change across a resume, the cache's norm factor and identity). :func:`finished_or_reset` returns a
finished pass with the same signature and refuses one with another; :func:`restore_checkpoint` continues
an interrupted one from ``checkpoint.json``; :func:`write_checkpoint` writes each model's state, then the
run-level marker, atomically, and only then removes the older files (see :mod:`vsae.training`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from .files import atomic_write, atomic_write_json
from .models import SAEBase, TopKSAEConfig, VSAEConfig, load_sae

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from .training import ActivationSource, SAETrainer, TrainConfig

LOG_COLUMNS = [
    "step", "tokens", "loss", "mse", "ev", "kl", "l2_preact", "auxk", "l0",
    "frac_dead", "frac_inactive", "lr", "kl_scale",
]


def save_checkpoint(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


class CsvLog:
    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        rows: list[dict] = []
        if keep_until_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_COLUMNS)
        self.w.writeheader()
        for r in rows:
            self.w.writerow(r)
        self.f.flush()

    def write(self, row: dict) -> None:
        self.w.writerow({k: row[k] for k in LOG_COLUMNS})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def spec_dict(cfg: TopKSAEConfig | VSAEConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("meta", None)
    if "log_var_clamp" in d:
        d["log_var_clamp"] = list(d["log_var_clamp"])
    return d


def run_signature(specs: Mapping[str, Any], cfg: TrainConfig, cache: ActivationSource) -> dict:
    tc = cfg.to_dict()
    for k in ("checkpoint_every", "log_every", "num_threads"):  # may change across a resume
        tc.pop(k)
    return {
        "specs": {n: spec_dict(c) for n, c in specs.items()},
        "train": tc,
        "norm_factor": float(cache.norm_factor),
        "cache": cache_info(cache),
    }


def cache_info(cache: ActivationSource) -> dict:
    man = getattr(cache, "manifest", None) or {}
    keys = ("checksum", "model", "lm", "hook", "hook_name", "corpus", "split", "n_tokens", "d_model", "dtype", "path")
    info = {k: man[k] for k in keys if k in man}
    if "path" not in info and getattr(cache, "path", None) is not None:
        info["path"] = str(cache.path)
    return json.loads(json.dumps(info, default=str))


def finished_or_reset(out_dir: Path, specs, sig: dict, resume: bool) -> dict[str, SAEBase] | None:
    """The SAEs of a finished run with this signature (resume), else None; ``resume=False`` clears
    this trainer's files first; a finished run with another signature is refused."""
    marker, summary_path = out_dir / "checkpoint.json", out_dir / "train_summary.json"
    if not resume:
        for p in (marker, summary_path):
            p.unlink(missing_ok=True)
        for n in specs:
            shutil.rmtree(out_dir / n, ignore_errors=True)
    elif summary_path.exists():
        summ = json.loads(summary_path.read_text())
        if summ.get("complete") and summ.get("signature") == sig:
            return {n: load_sae(out_dir / n) for n in specs}
        if summ.get("complete"):
            raise ValueError(
                f"{out_dir} holds a finished run with other specs or settings; "
                "use another out_dir or resume=False"
            )
    return None


def restore_checkpoint(out_dir: Path, trainers: Mapping[str, SAETrainer], sig: dict) -> int:
    """Load the last checkpoint of an interrupted run with this signature; the step to start from."""
    marker = out_dir / "checkpoint.json"
    if not marker.exists():
        return 0
    mk = json.loads(marker.read_text())
    if mk.get("signature") != sig:
        raise ValueError(
            f"{out_dir} holds a checkpoint of a different run (specs, settings or cache); "
            "use another out_dir or resume=False"
        )
    start = int(mk["step"])
    for n, tr in trainers.items():
        st = torch.load(out_dir / n / "ckpt" / f"step_{start:08d}.pt", weights_only=True)
        tr.load_state_dict(st)
        torch.set_rng_state(st["torch_rng"])  # the same global state is stored with every model
    return start


def write_checkpoint(out_dir: Path, trainers: Mapping[str, SAETrainer], step: int, sig: dict, prev: int | None) -> None:
    for n, tr in trainers.items():
        save_checkpoint(tr.state_dict(step), out_dir / n / "ckpt" / f"step_{step:08d}.pt")
    tokens = step * next(iter(trainers.values())).cfg.batch_size
    atomic_write_json(out_dir / "checkpoint.json", {"step": step, "tokens": tokens, "signature": sig, "names": list(trainers)})
    for n in trainers:
        for p in (out_dir / n / "ckpt").glob("step_*.pt"):
            if p.name != f"step_{step:08d}.pt":
                p.unlink(missing_ok=True)
