"""Training several SAEs from one pass over an activation cache.

:func:`train_saes` reads each batch of the cache once, divides it by the cache's ``norm_factor`` once
and feeds it to every SAE in ``specs`` in turn (forward, backward, optimizer step), so the paper's
eight runs cost one pass of data. The recipe is the authors' (``paper-recipe.md`` section 4):

- Adam (0.9, 0.999), lr = ``2e-4 / sqrt(d_sae / 2**14)`` for the TopK SAE and ``8e-4`` for the vSAE
  unless given; linear warm-up from 0 over ``warmup_steps`` (200), constant, linear decay to 0 from
  ``decay_start_frac`` (80%) of the steps (dictionary_learning's ``get_lr_schedule``, so the very
  first update has lr 0);
- gradient-norm clip 1.0 per model; KL (and the TopK control's L2) weight warmed up linearly over the
  first ``kl_warmup_frac`` (10%) of the steps, ``min(1, step / kl_warmup_steps)``;
- TopK SAE: ``b_dec`` = geometric median of the first batch; before each update the gradient
  component parallel to each decoder row is removed, after it the rows are rescaled to unit norm;
- dead-latent counters (tokens since each latent last fired) per model, used by AuxK.

Everything is seeded and deterministic on CPU. Checkpoints (weights, optimizer, RNG states, dead
counters, log accumulators; the data position is the step, since the cache's stream is a function
of (seed, step)) are written every ``checkpoint_every`` steps, atomically: each model's file is
written to a temporary name and renamed, then the run-level marker ``checkpoint.json`` is renamed
into place, and only then are older checkpoint files removed. A run killed at any point and
resumed ends with weights identical to an uninterrupted run. A NaN or inf loss raises
:class:`TrainingDivergedError` naming the model and step; the last good checkpoint is kept.

Outputs: ``out_dir/<name>/{cfg.json, sae.safetensors, log.csv}`` (weights folded to run on raw
activations, see :meth:`vsae.models.SAEBase.fold_activation_scale`), checkpoints under
``out_dir/<name>/ckpt/``, and ``out_dir/train_summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import torch

from .checkpoints import (
    LOG_COLUMNS,
    CsvLog,
    finished_or_reset,
    restore_checkpoint,
    run_signature,
    write_checkpoint,
)
from .buildlog import record_work
from .files import atomic_write_json
from .models import (
    SAEBase,
    TopKSAE,
    TopKSAEConfig,
    VSAEConfig,
    build_sae,
    release_scratch,
)
from .optim import LayoutAdam, make_adam, transposed_storage

__all__ = [
    "TrainConfig",
    "TrainingDivergedError",
    "SAETrainer",
    "auto_lr",
    "lr_factor",
    "kl_scale",
    "train_saes",
    "LOG_COLUMNS",
    "LayoutAdam",
]


class ActivationSource(Protocol):
    """What the trainer needs from :class:`vsae.activations.ActivationCache`."""

    norm_factor: float
    manifest: dict

    def batches(self, batch_size: int, seed: int, start_step: int = 0, n_steps: int | None = None) -> Iterator[torch.Tensor]: ...


@dataclass
class TrainConfig:
    """Optimisation settings shared by all SAEs of one pass (defaults: the paper's)."""

    #: optimizer steps (the paper: 10,001)
    steps: int = 10_001
    #: tokens per step (the paper: 192)
    batch_size: int = 192
    #: learning rate for every SAE; None -> :func:`auto_lr` per architecture
    lr: float | None = None
    #: per-SAE learning rates (name -> lr), overriding ``lr``
    lr_by_name: dict[str, float] = field(default_factory=dict)
    #: linear lr warm-up from 0 (the paper: 200)
    warmup_steps: int = 200
    #: linear lr decay to 0 starts at this fraction of ``steps`` (the paper: 0.8)
    decay_start_frac: float = 0.8
    #: gradient-norm clip per model
    grad_clip: float = 1.0
    #: KL / L2-penalty warm-up over this fraction of ``steps`` (the paper: 0.1)
    kl_warmup_frac: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    #: seed of the data order (the models' init seeds are in their configs)
    seed: int = 42
    #: "float32" or "bfloat16" (bf16 dense encoder matmuls, fp32 master weights and sparse parts)
    dtype: str = "float32"
    #: checkpoint every N steps (0: never)
    checkpoint_every: int = 1000
    #: one log row (averages over the last N steps) every N steps
    log_every: int = 50
    #: ``frac_inactive`` in the log counts latents silent for this many tokens
    inactive_window_tokens: int = 100_000
    #: torch.set_num_threads for the run (None: leave as is)
    num_threads: int | None = None

    def __post_init__(self) -> None:
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("steps and batch_size must be positive")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if not 0 <= self.decay_start_frac <= 1 or not 0 <= self.kl_warmup_frac <= 1:
            raise ValueError("decay_start_frac and kl_warmup_frac must be in [0, 1]")
        if self.log_every <= 0 or self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise ValueError("log_every must be > 0; checkpoint_every, warmup_steps >= 0")

    @property
    def decay_start(self) -> int:
        return int(self.decay_start_frac * self.steps)

    @property
    def kl_warmup_steps(self) -> int:
        return int(self.kl_warmup_frac * self.steps)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or inf."""


def auto_lr(cfg: TopKSAEConfig | VSAEConfig) -> float:
    """The paper's learning rates: TopK ``2e-4 / sqrt(d_sae / 2**14)`` (dictionary_learning's
    auto lr), vSAE ``8e-4``."""
    if isinstance(cfg, TopKSAEConfig):
        return 2e-4 / math.sqrt(cfg.d_sae / 2**14)
    return 8e-4


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at 0-based ``step``: ``step / warmup`` during warm-up, 1, then
    ``(steps - step) / (steps - decay_start)`` from ``decay_start`` (the minimum of the two ramps
    when a short run makes them overlap)."""
    f = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        f = step / cfg.warmup_steps
    ds = cfg.decay_start
    if step >= ds and cfg.steps > ds:
        f = min(f, (cfg.steps - step) / (cfg.steps - ds))
    return max(f, 0.0)


def kl_scale(step: int, cfg: TrainConfig) -> float:
    """KL / L2 warm-up factor ``min(1, step / kl_warmup_steps)`` (1 when there is no warm-up)."""
    w = cfg.kl_warmup_steps
    return 1.0 if w <= 0 else min(1.0, step / w)


_ACC_KEYS = ["loss", "mse", "ev", "kl", "l2_preact", "auxk", "l0"]


class SAETrainer:
    """One SAE with its optimizer, dead-latent counters and log accumulators."""

    def __init__(self, name: str, sae_cfg: TopKSAEConfig | VSAEConfig, cfg: TrainConfig):
        self.name = name
        self.cfg = cfg
        self.model: SAEBase = build_sae(dataclasses.replace(sae_cfg, meta=dict(sae_cfg.meta)))
        if self.model.cfg.act_scale != 1.0:
            raise ValueError(f"{name}: train from act_scale 1 (the trainer folds the norm factor at save)")
        self.model.compute_dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        self.model.train()
        for pname in ("W_enc", "W_var"):  # sparse encoder gradients arrive [d_sae, d_in]: see LayoutAdam
            if hasattr(self.model, pname):
                transposed_storage(getattr(self.model, pname))
        self.base_lr = cfg.lr_by_name.get(name, cfg.lr if cfg.lr is not None else auto_lr(sae_cfg))
        self.params = list(self.model.parameters())
        self.opt = make_adam(self.params, self.base_lr, cfg.adam_betas, cfg.adam_eps)
        self.tokens_since_fired = torch.zeros(self.model.d_sae, dtype=torch.long)
        self.seconds = 0.0
        self.acc: dict[str, float] = {k: 0.0 for k in _ACC_KEYS}
        self.acc_n = 0
        self.last: dict[str, float] = {}

    @property
    def is_topk(self) -> bool:
        return isinstance(self.model, TopKSAE)

    def update(self, x: torch.Tensor, step: int, var_x: float | None = None) -> dict[str, float]:
        """One optimizer step on the normalised batch x [B, d_in]; returns the step's metrics."""
        t0 = time.perf_counter()
        model = self.model
        rc = model.cfg
        if step == 0 and rc.b_dec_init == "geometric_median":
            model.init_b_dec(x)  # geometric median of the first batch
        lr = self.base_lr * lr_factor(step, self.cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        ks = kl_scale(step, self.cfg)
        out = model(x, kl_scale=ks, tokens_since_fired=self.tokens_since_fired)
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"SAE {self.name!r}: loss is {loss} at step {step} "
                f"(mse={float(out.mse)}, kl={float(out.kl)}, auxk={float(out.auxk)})"
            )
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if rc.unit_norm_decoder:
            model.project_decoder_grad()
        if self.cfg.grad_clip and self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.opt.step()
        if rc.unit_norm_decoder:
            model.normalize_decoder_rows_()
        self.seconds += time.perf_counter() - t0
        mse = float(out.mse.detach())
        m = {
            "loss": loss, "mse": mse, "kl": float(out.kl), "l2_preact": float(out.l2_preact),
            "auxk": float(out.auxk), "l0": float(out.l0),
            "ev": (1.0 - mse / var_x) if var_x else float("nan"), "lr": lr, "kl_scale": ks,
        }
        for k in _ACC_KEYS:
            self.acc[k] += m[k]
        self.acc_n += 1
        self.last = m
        return m

    def log_row(self, steps_done: int) -> dict[str, Any]:
        n = max(self.acc_n, 1)
        row: dict[str, Any] = {"step": steps_done, "tokens": steps_done * self.cfg.batch_size}
        for k in _ACC_KEYS:
            row[k] = self.acc[k] / n
        tsf = self.tokens_since_fired
        row["frac_dead"] = float((tsf >= self.model.cfg.dead_tokens_threshold).float().mean())
        row["frac_inactive"] = float((tsf >= self.cfg.inactive_window_tokens).float().mean())
        row["lr"] = self.last.get("lr", float("nan"))
        row["kl_scale"] = self.last.get("kl_scale", float("nan"))
        self.acc = {k: 0.0 for k in _ACC_KEYS}
        self.acc_n = 0
        return row

    # -- checkpoint state
    def state_dict(self, step: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "step": step,
            "cfg": dataclasses.asdict(self.model.cfg),
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optim": self.opt.state_dict(),
            "tokens_since_fired": self.tokens_since_fired.clone(),
            "noise_rng": self.model.noise_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "seconds": self.seconds,
            "acc": dict(self.acc),
            "acc_n": self.acc_n,
            "last": dict(self.last),
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optim"])
        self.tokens_since_fired.copy_(st["tokens_since_fired"])
        self.model.noise_generator.set_state(st["noise_rng"])
        self.seconds = float(st["seconds"])
        self.acc = dict(st["acc"])
        self.acc_n = int(st["acc_n"])
        self.last = dict(st["last"])


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train_saes(
    cache: ActivationSource,
    specs: Mapping[str, TopKSAEConfig | VSAEConfig],
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, SAEBase]:
    """Train every SAE in ``specs`` (name -> config) on one pass over ``cache``.

    ``workers`` > 1 updates the SAEs of a step in that many threads, each running its ops on one
    core (:class:`_StepRunner`); None: :func:`train_workers`.

    Returns the trained SAEs (folded to raw activation units, eval mode, as saved to
    ``out_dir/<name>``). With ``resume=True`` a finished run in ``out_dir`` with the same specs and
    settings is loaded instead of retrained, and an interrupted one continues from its last
    checkpoint; a mismatch raises ``ValueError``. ``resume=False`` starts afresh, removing this
    trainer's files in ``out_dir`` first.
    """
    out_dir = Path(out_dir)
    _check_specs(cache, specs)
    out_dir.mkdir(parents=True, exist_ok=True)
    sig = run_signature(specs, cfg, cache)
    done = finished_or_reset(out_dir, specs, sig, resume)
    if done is not None:
        return done
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    trainers = {n: SAETrainer(n, c, cfg) for n, c in specs.items()}
    start = restore_checkpoint(out_dir, trainers, sig) if resume else 0
    s_norm = float(cache.norm_factor)
    if not (s_norm > 0 and math.isfinite(s_norm)):
        raise ValueError(f"cache.norm_factor must be positive and finite, got {s_norm}")
    wall, data_seconds = _train_loop(cache, trainers, cfg, out_dir, sig, start, 1.0 / s_norm, progress,
                                     train_workers(len(trainers)) if workers is None else workers)
    return _finish(out_dir, trainers, cfg, sig, s_norm, start, wall, data_seconds)


#: environment variable overriding the number of threads that update SAEs in parallel
WORKERS_ENV = "VSAE_TRAIN_WORKERS"


def train_workers(n_saes: int) -> int:
    """How many SAEs of one pass are updated at once: ``$VSAE_TRAIN_WORKERS``, else one per torch
    thread (at most one per SAE)."""
    env = os.environ.get(WORKERS_ENV)
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV} must be a whole number, got {env!r}") from None
        if n < 1:
            raise ValueError(f"{WORKERS_ENV} must be >= 1, got {n}")
    else:
        n = torch.get_num_threads()
    return max(1, min(n, n_saes))


class _StepRunner:
    """One optimizer step of every SAE on the same batch, serially or in ``workers`` threads.

    The SAEs of one pass share nothing but the batch, and at the book's shapes most of a step is
    small ops that one core runs as fast as two, so updating ``workers`` SAEs at once, each on one
    core (``torch.set_num_threads(1)`` for the duration), uses the cores better than splitting every
    op across them. The SAEs are spread over the threads by an estimated cost (a vSAE with the KL
    over all latents needs one more dense matmul). Errors are raised in the SAEs' order, as serially.
    Each SAE's updates are the same in either mode up to the summation order of its matmuls.
    """

    def __init__(self, trainers: list[SAETrainer], workers: int):
        self.trainers = trainers
        self.workers = max(1, min(int(workers), len(trainers)))
        self.pool = None
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sae-train")
            self.groups = self._partition()

    def _partition(self) -> list[list[int]]:
        def cost(tr):
            c = tr.model.cfg
            dense = c.architecture == "vsae" and c.kl_scope == "all" or getattr(c, "l2_preact_coeff", 0) > 0
            return 1.0 + (0.5 if dense else 0.0) + c.k / 2048

        loads = [0.0] * self.workers
        groups: list[list[int]] = [[] for _ in range(self.workers)]
        for i in sorted(range(len(self.trainers)), key=lambda i: -cost(self.trainers[i])):
            g = loads.index(min(loads))
            groups[g].append(i)
            loads[g] += cost(self.trainers[i])
        return [sorted(g) for g in groups if g]

    def update(self, x: torch.Tensor, step: int, var_x: float) -> None:
        if self.pool is None:
            for tr in self.trainers:
                tr.update(x, step, var_x)
            return
        errors: dict[int, BaseException] = {}

        def run(group):
            for i in group:
                try:
                    self.trainers[i].update(x, step, var_x)
                except BaseException as e:  # noqa: BLE001 - re-raised below, in the SAEs' order
                    errors[i] = e
                    return

        for f in [self.pool.submit(run, g) for g in self.groups]:
            f.result()
        if errors:
            raise errors[min(errors)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            torch.set_num_threads(self.threads_before)
            self.pool = None


def _check_specs(cache: ActivationSource, specs: Mapping[str, TopKSAEConfig | VSAEConfig]) -> None:
    if not specs:
        raise ValueError("specs is empty")
    for n in specs:
        if not n or "/" in n or n.startswith((".", "_")):
            raise ValueError(f"bad SAE name {n!r}")
    d_model = (getattr(cache, "manifest", None) or {}).get("d_model", getattr(cache, "d_model", None))
    for n, c in specs.items():
        if d_model is not None and c.d_in != int(d_model):
            raise ValueError(f"SAE {n!r}: d_in={c.d_in} but the cache has d_model={d_model}")


def _train_loop(cache, trainers: Mapping[str, SAETrainer], cfg: TrainConfig, out_dir: Path, sig: dict, start: int,
                inv: float, progress: bool, workers: int = 1) -> tuple[float, float]:
    """Steps ``start .. cfg.steps`` of every trainer on the same normalised batches, with logs,
    checkpoints and a progress bar; returns (wall seconds, seconds spent reading batches)."""
    logs = {}
    for n in trainers:
        (out_dir / n / "ckpt").mkdir(parents=True, exist_ok=True)
        logs[n] = CsvLog(out_dir / n / "log.csv", keep_until_step=start if start > 0 else None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"training {len(trainers)} SAE(s)", unit="step", dynamic_ncols=True)
    t_start = time.perf_counter()
    data_seconds = 0.0
    step = start
    last_ckpt = start if start > 0 else None
    runner = _StepRunner(list(trainers.values()), workers)
    try:
        it = iter(cache.batches(cfg.batch_size, cfg.seed, start_step=start, n_steps=cfg.steps - start))
        while step < cfg.steps:
            t0 = time.perf_counter()
            try:
                xb = next(it)
            except StopIteration:
                raise RuntimeError(f"the activation cache ran out of batches at step {step} of {cfg.steps}") from None
            x = xb.to(torch.float32).mul_(inv) if xb.dtype != torch.float32 else xb * inv
            var_x = float((x - x.mean(0, keepdim=True)).pow(2).sum(-1).mean())
            data_seconds += time.perf_counter() - t0
            runner.update(x, step, var_x)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                for n, tr in trainers.items():
                    logs[n].write(tr.log_row(step))
                if bar is not None:
                    first = next(iter(trainers.values()))
                    bar.set_postfix_str(f"{first.name}: mse {first.last['mse']:.3g}", refresh=False)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                write_checkpoint(out_dir, trainers, step, sig, last_ckpt)
                last_ckpt = step
            if bar is not None:
                bar.update(1)
    except TrainingDivergedError as e:
        where = f"step {last_ckpt} in {out_dir}" if last_ckpt is not None else "none written yet"
        raise TrainingDivergedError(f"{e}; last good checkpoint: {where}") from None
    finally:
        runner.close()
        for lg in logs.values():
            lg.close()
        if bar is not None:
            bar.close()
    return time.perf_counter() - t_start, data_seconds


def _finish(out_dir: Path, trainers: Mapping[str, SAETrainer], cfg: TrainConfig, sig: dict, s_norm: float,
            start: int, wall: float, data_seconds: float) -> dict[str, SAEBase]:
    """Fold the norm factor into each SAE, save it, write the run summary, drop the checkpoints."""
    result: dict[str, SAEBase] = {}
    tokens = cfg.steps * cfg.batch_size
    per_model = {}
    release_scratch()
    for n, tr in trainers.items():
        tr.opt.zero_grad(set_to_none=True)
        sae = tr.model.copy().eval()
        for p in sae.parameters():  # back to the ordinary contiguous layout
            p.data = p.data.contiguous()
        sae.compute_dtype = torch.float32
        sae.cfg.meta = dict(
            sae.cfg.meta, name=n, norm_factor=s_norm, train=cfg.to_dict(), cache=sig["cache"],
            tokens=tokens, lr=tr.base_lr,
        )
        sae.fold_activation_scale(s_norm)
        sae.save(out_dir / n)
        result[n] = sae
        per_model[n] = {
            "seconds": tr.seconds,
            "tokens_per_s": tokens / tr.seconds if tr.seconds > 0 else None,
            "lr": tr.base_lr,
            "final": {k: tr.last.get(k) for k in ("loss", "mse", "ev", "kl", "l2_preact", "auxk", "l0")},
            "frac_dead": float((tr.tokens_since_fired >= tr.model.cfg.dead_tokens_threshold).float().mean()),
            "frac_inactive": float((tr.tokens_since_fired >= cfg.inactive_window_tokens).float().mean()),
        }
    train_seconds = sum(tr.seconds for tr in trainers.values())
    summary = {
        "complete": True,
        "signature": sig,
        "steps": cfg.steps,
        "tokens": tokens,
        "resumed_from_step": start,
        "seconds_this_session": wall,
        "data_seconds_this_session": data_seconds,
        "seconds_all_sessions_train": train_seconds,
        "tokens_per_s_pass": (cfg.steps - start) * cfg.batch_size / wall if wall > 0 else None,
        "sae_tokens_per_s": len(trainers) * tokens / train_seconds if train_seconds > 0 else None,
        "per_model": per_model,
        "norm_factor": s_norm,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    atomic_write_json(out_dir / "train_summary.json", summary)
    record_work("train", len(trainers), len(trainers) * (cfg.steps - start) * cfg.batch_size, wall)
    # checkpoints are no longer needed once the final weights are written
    (out_dir / "checkpoint.json").unlink(missing_ok=True)
    for n in trainers:
        shutil.rmtree(out_dir / n / "ckpt", ignore_errors=True)
    per = ", ".join(f"{n} {tokens / tr.seconds:,.0f}" for n, tr in trainers.items() if tr.seconds > 0)
    print(
        f"trained {len(trainers)} SAE(s) on {tokens:,} tokens ({cfg.steps} steps x {cfg.batch_size}) in "
        f"{wall:.1f} s: {(cfg.steps - start) * cfg.batch_size / max(wall, 1e-9):,.0f} tokens/s per pass, "
        f"per SAE tokens/s: {per}"
    )
    return result


