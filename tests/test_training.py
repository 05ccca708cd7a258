"""Unit tests of vsae.training: schedules, one-pass training of several SAEs, logs and outputs,
kill-and-resume with identical weights, NaN handling, and two synthetic-dictionary experiments
(TopK recovers a known dictionary; the vSAE's KL kills latents)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

import vsae.checkpoints as C
import vsae.training as T
from vsae.models import TopKSAEConfig, VSAEConfig, load_sae
from vsae.training import (
    LOG_COLUMNS,
    SAETrainer,
    TrainConfig,
    TrainingDivergedError,
    auto_lr,
    kl_scale,
    lr_factor,
    train_saes,
)

pytestmark = [pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad"),
              pytest.mark.usefixtures("one_thread")]



class MemCache:
    """In-memory stand-in for vsae.activations.ActivationCache: raw activations, a seeded
    permutation per epoch, deterministic given (seed, step)."""

    def __init__(self, acts: torch.Tensor, fail_at: int | None = None, nan_at: int | None = None):
        self.acts = acts
        self.d_model = acts.shape[1]
        self.norm_factor = float(acts.pow(2).sum(1).mean().sqrt())
        self.manifest = {"d_model": self.d_model, "n_tokens": acts.shape[0], "checksum": "mem"}
        self.fail_at = fail_at
        self.nan_at = nan_at
        self.calls: list[tuple] = []
        self.served = 0

    def batches(self, batch_size, seed, start_step=0, n_steps=None):
        self.calls.append((batch_size, seed, start_step, n_steps))
        n = self.acts.shape[0]
        per = n // batch_size
        step = start_step
        while n_steps is None or step < start_step + n_steps:
            if self.fail_at is not None and step == self.fail_at:
                raise KeyboardInterrupt("killed")
            epoch, j = divmod(step, per)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            x = self.acts[perm[j * batch_size : (j + 1) * batch_size]].clone()
            if self.nan_at is not None and step == self.nan_at:
                x[0, 0] = float("nan")
            self.served += 1
            yield x
            step += 1


def _acts(n=4000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 4.0 + 1.0


def _specs(d=16):
    return {
        "topk": TopKSAEConfig(d, 64, 4),
        "topk_aux": TopKSAEConfig(d, 64, 4, auxk_alpha=0.5, dead_tokens_threshold=32, l2_preact_coeff=0.1),
        "vsae": VSAEConfig(d, 64, 4),
        "vsae_unit": VSAEConfig(d, 64, 4, var_mode="unit", kl_scope="topk"),
        "vsae_learned": VSAEConfig(d, 64, 4, var_mode="learned", auxk_alpha=0.1, dead_tokens_threshold=64),
    }


def _cfg(**kw):
    base = dict(steps=30, batch_size=32, warmup_steps=5, checkpoint_every=5, log_every=5)
    base.update(kw)
    return TrainConfig(**base)


def _params(models):
    return {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in models.items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for n in a:
        for k in a[n]:
            assert torch.equal(a[n][k], b[n][k]), f"{n}.{k} differs"


def _read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------


def test_lr_schedule_paper_values():
    cfg = TrainConfig(steps=10_001)  # warm-up 200, decay from 8000
    assert cfg.decay_start == 8000 and cfg.kl_warmup_steps == 1000
    assert lr_factor(0, cfg) == 0.0
    assert lr_factor(100, cfg) == pytest.approx(0.5)
    assert lr_factor(199, cfg) == pytest.approx(199 / 200)
    assert lr_factor(200, cfg) == 1.0 and lr_factor(5000, cfg) == 1.0 and lr_factor(8000, cfg) == 1.0
    assert lr_factor(9000, cfg) == pytest.approx(1001 / 2001)
    assert lr_factor(10_000, cfg) == pytest.approx(1 / 2001)
    short = TrainConfig(steps=10, warmup_steps=200)  # overlapping ramps: the smaller wins
    assert lr_factor(9, short) == pytest.approx(min(9 / 200, 1 / 2))


def test_kl_schedule_values():
    cfg = TrainConfig(steps=10_001)
    assert kl_scale(0, cfg) == 0.0
    assert kl_scale(500, cfg) == pytest.approx(0.5)
    assert kl_scale(1000, cfg) == 1.0 and kl_scale(9000, cfg) == 1.0
    assert kl_scale(0, TrainConfig(steps=10, kl_warmup_frac=0.0)) == 1.0


def test_auto_lr():
    assert auto_lr(TopKSAEConfig(512, 8192, 64)) == pytest.approx(2.83e-4, rel=1e-3)
    assert auto_lr(TopKSAEConfig(512, 16384, 64)) == pytest.approx(2e-4)
    assert auto_lr(VSAEConfig(512, 8192, 64)) == 8e-4
    tr = SAETrainer("a", TopKSAEConfig(8, 32, 2), TrainConfig(steps=10, lr=1e-3, lr_by_name={"a": 5e-3}))
    assert tr.base_lr == 5e-3


def test_layout_adam_matches_torch_fused_adam():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(6, 4).t()), torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]  # clone keeps the strides
    oa = T.LayoutAdam(a, 1e-2, (0.9, 0.999), 1e-8)
    ob = torch.optim.Adam(b, lr=1e-2, fused=True)
    for _ in range(4):
        for p, q in zip(a, b):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q) and p.stride() == q.stride()
    ob.load_state_dict(oa.state_dict())  # stock state format


def test_trainer_gradients_need_no_layout_copy():
    for cfg in (TopKSAEConfig(16, 64, 4), VSAEConfig(16, 64, 4, var_mode="learned")):
        tr = SAETrainer("a", cfg, TrainConfig(steps=10))
        tr.update(torch.randn(32, 16), 3)
        for p in tr.model.parameters():
            assert p.grad is None or p.grad.stride() == p.stride()
        assert tr.model.W_enc.t().is_contiguous()


def test_trainer_applies_schedules():
    cfg = TrainConfig(steps=100, warmup_steps=10, kl_warmup_frac=0.2)
    tr = SAETrainer("v", VSAEConfig(8, 32, 2), cfg)
    x = torch.randn(16, 8)
    m = tr.update(x, 0)
    assert m["lr"] == 0.0 and m["kl_scale"] == 0.0
    m = tr.update(x, 5)
    assert m["lr"] == pytest.approx(0.5 * 8e-4) and m["kl_scale"] == pytest.approx(0.25)
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(0.5 * 8e-4)


# ---------------------------------------------------------------------------------------------
# one pass, outputs, constraints
# ---------------------------------------------------------------------------------------------


def test_train_saes_outputs_logs_and_constraints(tmp_path, capsys, monkeypatch):
    ledger = tmp_path / "work.jsonl"
    monkeypatch.setenv("VSAE_WORK_LEDGER", str(ledger))
    cache = MemCache(_acts())
    cfg = _cfg()
    models = train_saes(cache, _specs(), cfg, tmp_path, progress=False)
    # one pass: one stream, each batch read once, for all five SAEs
    assert cache.calls == [(32, 42, 0, 30)] and cache.served == 30
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["complete"] and summary["tokens"] == 30 * 32 and set(summary["per_model"]) == set(_specs())
    # the pass is entered in the work ledger once: five SAEs x 30 steps x 32 tokens
    (line,) = [json.loads(x) for x in ledger.read_text().splitlines() if x]
    assert (line["kind"], line["n_saes"], line["sae_tokens"]) == ("train", 5, 5 * 30 * 32)
    assert line["seconds"] == pytest.approx(summary["seconds_this_session"], abs=1e-3)
    assert "tokens/s" in capsys.readouterr().out
    for name, sae in models.items():
        d = tmp_path / name
        assert (d / "cfg.json").exists() and (d / "sae.safetensors").exists()
        assert not (d / "ckpt").exists()  # checkpoints removed once final weights are written
        rows = _read_log(d / "log.csv")
        assert list(rows[0]) == LOG_COLUMNS
        assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
        assert all(math.isfinite(float(r["loss"])) for r in rows)
        back = load_sae(d)
        assert type(back) is type(sae) and all(p.is_contiguous() for p in sae.parameters())
        for p1, p2 in zip(sae.parameters(), back.parameters()):
            assert torch.equal(p1, p2)
        assert sae.cfg.act_scale == pytest.approx(cache.norm_factor)
        assert sae.cfg.meta["norm_factor"] == pytest.approx(cache.norm_factor)
        assert sae.cfg.meta["train"]["steps"] == 30
    # TopK: decoder rows unit norm, b_dec moved from 0 (geometric median init)
    for name in ("topk", "topk_aux"):
        assert torch.allclose(models[name].W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
        assert float(models[name].b_dec.abs().max()) > 0
    # vSAE decoder unconstrained: norms drift from the 0.1 init
    assert not torch.allclose(models["vsae"].W_dec.norm(dim=1), torch.full((64,), 0.1), atol=1e-4)
    # AuxK with a reachable dead threshold fires; the L2 control is logged
    aux_rows = _read_log(tmp_path / "topk_aux" / "log.csv")
    assert max(float(r["auxk"]) for r in aux_rows) > 0
    assert max(float(r["frac_dead"]) for r in aux_rows) > 0
    assert float(aux_rows[-1]["l2_preact"]) > 0
    assert all(float(r["auxk"]) == 0 for r in _read_log(tmp_path / "topk" / "log.csv"))  # 10M threshold
    assert float(_read_log(tmp_path / "vsae" / "log.csv")[-1]["kl"]) > 0
    # the saved SAE runs on raw activations: the reconstruction is close to the raw input scale
    x = cache.acts[:256]
    out = models["topk"].eval()(x)
    ev = 1 - float(((x - out.x_hat) ** 2).sum()) / float(((x - x.mean(0)) ** 2).sum())
    assert ev > 0.2


def test_models_train_independently_of_each_other(tmp_path):
    cache = MemCache(_acts())
    specs = _specs()
    together = train_saes(cache, specs, _cfg(checkpoint_every=0), tmp_path / "all", progress=False)
    alone = train_saes(MemCache(_acts()), {"vsae_unit": specs["vsae_unit"]}, _cfg(checkpoint_every=0), tmp_path / "one", progress=False)
    _assert_same(_params({"vsae_unit": together["vsae_unit"]}), _params(alone))


def test_a_per_sae_learning_rate_in_a_shared_pass_equals_training_alone_at_that_rate(tmp_path):
    """What ``Experiment.train`` relies on to train runs that differ only in lr in one pass."""
    specs = _specs()
    together = train_saes(MemCache(_acts()), specs, _cfg(checkpoint_every=0, lr_by_name={"vsae_unit": 3e-3}),
                          tmp_path / "all", progress=False)
    alone = train_saes(MemCache(_acts()), {"vsae_unit": specs["vsae_unit"]}, _cfg(checkpoint_every=0, lr=3e-3),
                       tmp_path / "one", progress=False)
    default = train_saes(MemCache(_acts()), {"vsae_unit": specs["vsae_unit"]}, _cfg(checkpoint_every=0),
                         tmp_path / "default", progress=False)
    _assert_same(_params({"vsae_unit": together["vsae_unit"]}), _params(alone))
    assert not torch.equal(alone["vsae_unit"].W_dec, default["vsae_unit"].W_dec)  # the rate was used


def test_d_model_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="d_model"):
        train_saes(MemCache(_acts(d=16)), {"a": TopKSAEConfig(8, 32, 2)}, _cfg(), tmp_path, progress=False)


def test_finished_run_is_loaded_not_retrained(tmp_path):
    specs = {"topk": TopKSAEConfig(16, 64, 4)}
    first = train_saes(MemCache(_acts()), specs, _cfg(), tmp_path, progress=False)
    cache = MemCache(_acts())
    again = train_saes(cache, specs, _cfg(), tmp_path, progress=False)
    assert cache.served == 0
    _assert_same(_params(first), _params(again))
    with pytest.raises(ValueError, match="other specs"):
        train_saes(MemCache(_acts()), {"topk": TopKSAEConfig(16, 64, 8)}, _cfg(), tmp_path, progress=False)
    fresh = train_saes(MemCache(_acts()), specs, _cfg(), tmp_path, resume=False, progress=False)
    _assert_same(_params(first), _params(fresh))


def test_bf16_training_runs_and_learns(tmp_path):
    cache = MemCache(_acts())
    specs = {"topk": TopKSAEConfig(16, 64, 4), "vsae": VSAEConfig(16, 64, 4)}
    train_saes(cache, specs, _cfg(steps=60, dtype="bfloat16", checkpoint_every=0, log_every=10), tmp_path, progress=False)
    for n in specs:
        rows = _read_log(tmp_path / n / "log.csv")
        assert float(rows[-1]["mse"]) < float(rows[0]["mse"])
        assert all(math.isfinite(float(r["loss"])) for r in rows)


# ---------------------------------------------------------------------------------------------
# checkpoints: kill and resume, NaN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kill_at", [3, 10, 13, 29])
def test_kill_and_resume_gives_identical_weights(tmp_path, kill_at):
    specs = _specs()
    ref = train_saes(MemCache(_acts()), specs, _cfg(checkpoint_every=0), tmp_path / "ref", progress=False)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_saes(MemCache(_acts(), fail_at=kill_at), specs, _cfg(), out, progress=False)
    if kill_at >= 5:
        assert json.loads((out / "checkpoint.json").read_text())["step"] == (kill_at // 5) * 5
    cache = MemCache(_acts())
    resumed = train_saes(cache, specs, _cfg(), out, progress=False)
    assert cache.calls[0][2] == (kill_at // 5) * 5  # continued from the checkpoint's data position
    _assert_same(_params(ref), _params(resumed))
    for n in specs:  # logs too
        assert _read_log(out / n / "log.csv") == _read_log(tmp_path / "ref" / n / "log.csv")


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    specs = {"topk": TopKSAEConfig(16, 64, 4), "vsae_unit": VSAEConfig(16, 64, 4, var_mode="unit")}
    ref = train_saes(MemCache(_acts()), specs, _cfg(checkpoint_every=0), tmp_path / "ref", progress=False)
    real = C.atomic_write_json
    calls = {"n": 0}

    def flaky(path, obj, **kw):
        if path.name == "checkpoint.json":
            calls["n"] += 1
            if calls["n"] == 3:  # model files of step 15 written, marker not yet
                raise KeyboardInterrupt("killed during checkpoint")
        return real(path, obj, **kw)

    monkeypatch.setattr(C, "atomic_write_json", flaky)  # the checkpoint marker's writer
    with pytest.raises(KeyboardInterrupt):
        train_saes(MemCache(_acts()), specs, _cfg(), tmp_path / "run", progress=False)
    monkeypatch.setattr(C, "atomic_write_json", real)
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 10
    resumed = train_saes(MemCache(_acts()), specs, _cfg(), tmp_path / "run", progress=False)
    _assert_same(_params(ref), _params(resumed))


def test_nan_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    specs = {"topk": TopKSAEConfig(16, 64, 4), "vsae": VSAEConfig(16, 64, 4)}
    with pytest.raises(TrainingDivergedError, match=r"'topk'.*step 12.*last good checkpoint: step 10"):
        train_saes(MemCache(_acts(), nan_at=12), specs, _cfg(), tmp_path, progress=False)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 10
    assert (tmp_path / "topk" / "ckpt" / "step_00000010.pt").exists()
    assert not (tmp_path / "train_summary.json").exists()
    # with the bad batch fixed the run resumes from the good checkpoint and matches a clean run
    ref = train_saes(MemCache(_acts()), specs, _cfg(checkpoint_every=0), tmp_path / "ref", progress=False)
    resumed = train_saes(MemCache(_acts()), specs, _cfg(), tmp_path, progress=False)
    _assert_same(_params(ref), _params(resumed))


def test_resume_with_other_settings_is_refused(tmp_path):
    specs = {"topk": TopKSAEConfig(16, 64, 4)}
    with pytest.raises(KeyboardInterrupt):
        train_saes(MemCache(_acts(), fail_at=12), specs, _cfg(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run"):
        train_saes(MemCache(_acts()), specs, _cfg(steps=40), tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------
# synthetic dictionary
# ---------------------------------------------------------------------------------------------


def _synthetic(n=40_000, d=64, n_feat=256, active=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.rand(n, n_feat, generator=g).topk(active, dim=1).indices
    coef = torch.rand(n, active, generator=g) * 1.5 + 0.5
    X = torch.zeros(n, d).index_add_(0, torch.arange(n).repeat_interleave(active), coef.reshape(-1, 1) * D[idx.reshape(-1)])
    return D, X


def test_topk_recovers_a_known_sparse_dictionary(tmp_path):
    D, X = _synthetic()
    cfg = TrainConfig(steps=300, batch_size=256, lr=4e-3, warmup_steps=20, checkpoint_every=0, log_every=50)
    sae = train_saes(MemCache(X), {"topk": TopKSAEConfig(64, 512, 4)}, cfg, tmp_path, progress=False)["topk"]
    W = sae.W_dec.detach()
    mmcs = (D @ (W / W.norm(dim=1, keepdim=True)).t()).max(1).values.mean()
    assert float(mmcs) >= 0.9


def test_vsae_kl_keeps_fewer_latents_alive(tmp_path):
    _, X = _synthetic()
    cfg = TrainConfig(steps=200, batch_size=256, warmup_steps=20, checkpoint_every=0, log_every=50)
    specs = {"kl0": VSAEConfig(64, 512, 4, kl_coeff=0.0), "kl1": VSAEConfig(64, 512, 4, kl_coeff=1.0)}
    saes = train_saes(MemCache(X), specs, cfg, tmp_path, progress=False)
    alive = {}
    for n, sae in saes.items():
        v, i = sae.encode_topk(X[:10_000])
        fired = torch.zeros(512, dtype=torch.bool)
        fired[i[v != 0]] = True
        alive[n] = float(fired.float().mean())
    assert alive["kl1"] < 0.5 * alive["kl0"], alive


def test_parallel_workers_update_each_sae_as_serially(tmp_path, monkeypatch):
    """SAEs updated in two threads (each op on one core) end where the serial loop ends, and the
    torch thread count is restored afterwards; a bad worker count is refused with the variable's name."""
    specs = _specs()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the serial reference with one core per op, as each worker runs
        serial = train_saes(MemCache(_acts()), specs, _cfg(), tmp_path / "serial", progress=False, workers=1)
        torch.set_num_threads(2)
        par = train_saes(MemCache(_acts()), specs, _cfg(), tmp_path / "par", progress=False, workers=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    _assert_same(_params(serial), _params(par))
    monkeypatch.setenv(T.WORKERS_ENV, "0")
    with pytest.raises(ValueError, match=T.WORKERS_ENV):
        T.train_workers(4)
    monkeypatch.setenv(T.WORKERS_ENV, "3")
    assert T.train_workers(8) == 3 and T.train_workers(2) == 2


def test_parallel_divergence_names_the_first_sae_in_order(tmp_path):
    specs = {"topk": TopKSAEConfig(16, 64, 4), "vsae": VSAEConfig(16, 64, 4)}
    with pytest.raises(TrainingDivergedError, match=r"'topk'.*step 12"):
        train_saes(MemCache(_acts(), nan_at=12), specs, _cfg(), tmp_path, progress=False, workers=2)
