"""The experiment behind the book: one object that turns a profile into cached results.

Each chapter builds an :class:`Experiment` from its parameters and asks it for what it shows. Every
step is stored in the content-addressed :class:`~vsae.store.Store`, keyed by exactly the settings that
produce it, and *per SAE* where it can be: re-executing a chapter with the same parameters reuses all
of it, and one with new parameters (say ``k_values=[128]`` or ``kl_coeff=0.1``) computes only what is
missing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Callable

import pandas as pd

from . import design
from .buildlog import record_work
from .design import Variant, sae_name  # noqa: F401 - re-exported for callers of vsae.pipeline
from .models.config import key_dict
from .profiles import Profile, get_profile
from .store import Store, config_key, read_tables, write_tables

#: fields of a Profile that determine the training activations
_TRAIN_DATA_FIELDS = ("lm", "layer", "train_corpus", "n_train_tokens", "ctx_len", "lm_dtype")
_EVAL_DATA_FIELDS = ("lm", "layer", "eval_corpus", "n_eval_tokens", "ctx_len", "lm_dtype")
#: the metrics of the attribution ladder: core ones for every run, ablation ones for some seeds
LADDER_CORE_METRICS = ("frac_alive", "explained_variance", "explained_variance_saebench", "cossim",
                       "ce_loss_score", "kl_div_score", "l0")
LADDER_ABLATION_METRICS = ("tpp_total_20", "tpp_unintended_20", "scr_best")


class Experiment:
    """Results of one profile (plus overrides) on one device, computed on demand and stored."""

    def __init__(self, profile: Profile | str = "offline", device: str = "cpu", store: Store | None = None, **overrides):
        self.profile = get_profile(profile, **overrides) if isinstance(profile, str) else profile
        self.device = device
        self.store = store or Store()

    # ----------------------------------------------------------------------------------- data
    @cached_property
    def lm(self):
        from .lm import load_lm

        return load_lm(self.profile.lm, layer=self.profile.layer, device=self.device, dtype=self.profile.lm_dtype)

    @cached_property
    def train_acts(self):
        from .activations import harvest

        p = self.profile
        return harvest(self.lm, p.train_corpus, "train", p.n_train_tokens, p.ctx_len, self.store)

    @cached_property
    def eval_acts(self):
        from .activations import harvest

        p = self.profile
        return harvest(self.lm, p.eval_corpus, "eval", p.n_eval_tokens, p.ctx_len, self.store)

    @property
    def d_model(self) -> int:
        return int(self.train_acts.manifest["d_model"])

    @property
    def d_sae(self) -> int:
        return self.profile.expansion * self.d_model

    # ------------------------------------------------------------------------------- training
    def train_config(self, **overrides):
        from .training import TrainConfig

        p = self.profile
        base = dict(steps=p.steps, batch_size=p.batch_size, seed=p.main_seed)
        base.update(overrides)
        return TrainConfig(**base)

    def headline_variants(self, k_values=None, seed: int | None = None) -> list[Variant]:
        """The paper's eight runs at one seed (:func:`vsae.design.headline_variants`)."""
        return design.headline_variants(self.profile, self.d_model, self.d_sae, k_values, seed)

    def seed_variants(self, k_values=None) -> list[Variant]:
        """The headline runs at every seed of the profile, main seed first (:func:`vsae.design.seed_variants`)."""
        return design.seed_variants(self.profile, self.d_model, self.d_sae, k_values)

    def ablation_variants(self) -> list[Variant]:
        """The seed runs of the SCR and TPP chapters: those at :func:`vsae.design.ablation_ks`."""
        ks = design.ablation_ks(self.profile)
        return [v for v in self.seed_variants() if v.k in ks]

    def beyond_variants(self, k: int, budget_fraction: float = 0.25,
                        kl_weights=design.KL_WEIGHTS) -> dict[str, list[Variant]]:
        """The runs of the "beyond the paper" chapter by question (:func:`vsae.design.beyond_variants`)."""
        return design.beyond_variants(self.profile, self.d_model, self.d_sae, k, budget_fraction, kl_weights)

    def ladder_variants(self, k: int | None = None, budget_fraction: float = 0.25, seeds=None) -> dict[str, list[Variant]]:
        """The attribution ladder at ``k`` (default :meth:`showcase_k`): :func:`vsae.design.ladder_variants`."""
        k = self.showcase_k() if k is None else int(k)
        return design.ladder_variants(self.profile, self.d_model, self.d_sae, k, budget_fraction, seeds)

    def ladder(self, budget_fraction: float = 0.25, k: int | None = None, seeds=None,
               ablation_seeds=None) -> tuple[dict[str, list[Variant]], pd.DataFrame]:
        """Train and evaluate the attribution ladder: ``(ladder, table)``, one table row per run
        (:func:`vsae.attribution.ladder_table`) with the core metrics of every run and, for the runs
        whose seed is in ``ablation_seeds`` (default: the main seed only; the pooled evals cost about
        as much as the core ones), TPP at N = 20 and the best SCR (NaN for the others)."""
        from .attribution import ladder_table

        lad = self.ladder_variants(k, budget_fraction, seeds)
        runs = [v for vs in lad.values() for v in vs]
        core = self.core(runs)["metrics"].set_index("sae")
        summary = core[list(LADDER_CORE_METRICS)].rename_axis("sae").reset_index()
        ab_seeds = {self.profile.main_seed} if ablation_seeds is None else {int(s) for s in ablation_seeds}
        ab = [v for v in runs if v.seed in ab_seeds]
        if ab:
            vs = self.variant_summary(ab).set_index("sae")[list(LADDER_ABLATION_METRICS)]
            summary = summary.join(vs, on="sae")
        else:
            for m in LADDER_ABLATION_METRICS:
                summary[m] = float("nan")
        return lad, ladder_table(summary, lad, LADDER_CORE_METRICS + LADDER_ABLATION_METRICS)

    def lr_variants(self, k: int | None = None, seeds=None) -> list[Variant]:
        """Both architectures at both learning rates, full budget (:func:`vsae.design.lr_variants`)."""
        k = self.showcase_k() if k is None else int(k)
        return design.lr_variants(self.profile, self.d_model, self.d_sae, k, seeds)

    def lr_matched(self, k: int | None = None, seeds=None) -> pd.DataFrame:
        """Train and core-evaluate :meth:`lr_variants`: one row per run with ``arch``, ``lr_of`` (whose
        learning rate it was trained at), ``lr``, ``seed`` and :data:`LADDER_CORE_METRICS`."""
        from .training import auto_lr

        runs = self.lr_variants(k, seeds)
        core = self.core(runs)["metrics"].set_index("sae")
        return pd.DataFrame([{"sae": v.name, "arch": v.role["arch"], "lr_of": v.role["lr_of"],
                              "lr": self.train_config(**v.train_overrides).lr or auto_lr(v.model_cfg), "seed": v.seed,
                              **{m: float(core.loc[v.name, m]) for m in LADDER_CORE_METRICS}} for v in runs])

    def vsae_live_latents(self, k: int | None = None, multiple: int = 16) -> int:
        """How many latents the headline vSAE at ``k`` keeps alive: its fraction alive (mean over the
        seeds) times ``d_sae``, rounded to a multiple of ``multiple`` (at least ``k``)."""
        k = self.showcase_k() if k is None else int(k)
        vs = [v for v in self.seed_variants(k_values=[k]) if v.architecture == "vsae"]
        alive = float(self.core(vs)["metrics"]["frac_alive"].mean())
        return max(k, int(round(alive * self.d_sae / multiple)) * multiple)

    def ablation_controls(self, k: int | None = None, seeds=None) -> pd.DataFrame:
        """Train and evaluate :func:`vsae.design.ablation_control_variants` (the size-matched TopK has
        :meth:`vsae_live_latents` latents): one row per run with ``control``, ``d_sae``, ``seed``, the
        core metrics, TPP at N = 20, the best SCR and the sparse-probing accuracies."""
        from .evals.probing import summarise_sparse_probing

        k = self.showcase_k() if k is None else int(k)
        live = self.vsae_live_latents(k)
        runs = design.ablation_control_variants(self.profile, self.d_model, self.d_sae, k, live, seeds)
        summ = self.variant_summary(runs).set_index("sae")
        core = self.core(runs)["metrics"].set_index("sae")
        probe = summarise_sparse_probing(self.sparse_probing(runs)).set_index("sae")
        pcols = [c for c in probe.columns if c.startswith("sae_top_") and c.endswith("_test_accuracy")]
        return pd.DataFrame([{"sae": v.name, "control": v.role["control"], "d_sae": v.model_cfg.d_sae, "seed": v.seed,
                              "explained_variance_saebench": float(core.loc[v.name, "explained_variance_saebench"]),
                              **summ.loc[v.name, ["frac_alive", "explained_variance", "ce_loss_score", "tpp_total_20",
                                                  "tpp_unintended_20", "scr_best"]].astype(float).to_dict(),
                              **probe.loc[v.name, pcols].astype(float).to_dict()} for v in runs])

    def convergence(self, k: int | None = None, seeds=None, n_train_tokens: int | None = None,
                    budgets: dict[str, int] | None = None) -> dict[str, pd.DataFrame]:
        """TopK and vSAE at ``k`` (default :meth:`showcase_k`) trained for the headline budget and the
        paper's (:func:`vsae.design.convergence_variants`), at every seed, on one cache of
        ``n_train_tokens`` training tokens (default the profile's ``n_convergence_tokens``: the paper's
        1.92M, except the smoke profile's few), then the core metrics.

        The runs use an Experiment of this profile with ``n_train_tokens`` replaced (same store, same
        evaluation tokens), so they are stored and resumed like any other. ``budgets``: label -> steps;
        default ``{"headline": profile.steps, "paper": n_train_tokens // batch_size}``. Returns tables
        ``core`` (one row per run: ``budget``, ``steps``, ``seed``, the core metrics), ``logs`` (the
        training logs with ``budget``), ``comparison`` (:func:`vsae.convergence.budget_comparison`),
        ``noise`` (evaluation noise beside the seed spread per architecture and budget,
        :func:`vsae.evals.core.noise_vs_seeds`) and ``density`` (per latent, with its first firing token).
        """
        from .convergence import budget_comparison
        from .evals.core import noise_vs_seeds

        k = self.showcase_k() if k is None else int(k)
        n_train_tokens = self.profile.n_convergence_tokens if n_train_tokens is None else int(n_train_tokens)
        sub = Experiment(dataclasses.replace(self.profile, n_train_tokens=n_train_tokens), self.device, self.store)
        budgets = budgets or {"headline": self.profile.steps, "paper": sub.profile.steps}
        too_long = {b: s for b, s in budgets.items() if s * self.profile.batch_size > n_train_tokens}
        if too_long:
            raise ValueError(f"budgets {too_long} need more than the {n_train_tokens:,} training tokens: "
                             f"raise n_train_tokens to at least {max(too_long.values()) * self.profile.batch_size:,}")
        runs = design.convergence_variants(sub.profile, sub.d_model, sub.d_sae, k, budgets, seeds)
        tables = sub.core(runs)
        role = {v.name: v.role for v in runs}
        core = tables["metrics"]
        core = core.assign(budget=core.sae.map(lambda n: role[n]["budget"]), steps=core.sae.map(lambda n: role[n]["steps"]))
        logs = sub.logs(runs)
        logs = logs.assign(budget=logs.run.map(lambda n: role[n]["budget"]))
        noise = noise_vs_seeds(core.assign(run=core.architecture + " " + core.budget), tables["noise"])
        return {"core": core, "logs": logs, "comparison": budget_comparison(core), "noise": noise,
                "density": tables["density"]}

    def showcase_k(self) -> int:
        """The one k of single-k chapters and controls (:func:`vsae.design.showcase_k`)."""
        return design.showcase_k(self.profile)

    def beyond(self, budget_fraction: float = 0.25, k: int | None = None):
        """The "beyond the paper" runs at :meth:`showcase_k`: ``(k, groups, unique variants, summary)``
        (summary: :meth:`variant_summary` of every distinct run; trains and evaluates what is missing)."""
        k = self.showcase_k() if k is None else int(k)
        groups = self.beyond_variants(k, budget_fraction=budget_fraction)
        unique = list({self.sae_dir(v): v for g in groups.values() for v in g}.values())
        return k, groups, unique, self.variant_summary(unique)

    def _budget_text(self, k: int, steps: int, budget_fraction: float) -> str:
        return f"k = {k} and {steps:,} training steps ({budget_fraction:.0%} of the headline budget)"

    def kl_sweep_statement(self, budget_fraction: float = 0.25, beyond=None) -> str:
        """What the KL-weight sweep and the KL-free vSAE of :meth:`beyond` say about the KL term's part
        in the feature death (single runs, main seed; pass :meth:`beyond`'s result when at hand)."""
        from .verdicts import mechanism_from_runs

        k, groups, unique, summary = beyond if beyond is not None else self.beyond(budget_fraction)
        budget = self._budget_text(k, self.train_config(**unique[0].train_overrides).steps, budget_fraction)
        return mechanism_from_runs(summary, groups["control"][0].name, [v.name for v in groups["kl_sweep"]],
                                   self.profile.kl_coeff, budget)

    def mechanism(self, budget_fraction: float = 0.25, k: int | None = None) -> str:
        """The book's computed statement on what kills the vSAE's features: the fraction-alive
        attribution of the ladder (:meth:`ladder`, every seed; :func:`vsae.attribution.mechanism_from_ladder`)."""
        from .attribution import attribute, mechanism_from_ladder

        k = self.showcase_k() if k is None else int(k)
        lad, table = self.ladder(budget_fraction, k=k)
        budget = self._budget_text(k, self.train_config(**lad["vsae"][0].train_overrides).steps, budget_fraction)
        return mechanism_from_ladder(attribute(table, "frac_alive"), budget)

    def _sae_key_cfg(self, v: Variant) -> dict:
        p = self.profile
        return {
            "data": {f: getattr(p, f) for f in _TRAIN_DATA_FIELDS} | {"cache": self.train_acts.manifest.get("checksum")},
            "model": key_dict(v.model_cfg),  # recipe fields only where they differ from the default
            "train": dataclasses.asdict(self.train_config(**v.train_overrides)),
        }

    def sae_dir(self, v: Variant) -> Path:
        return self.store.path("sae", self._sae_key_cfg(v))

    def train(self, variants: list[Variant], progress: bool = True, load: bool = True) -> dict:
        """Train the variants that are not stored yet (all from one pass when their trainer settings
        agree); returns them loaded (eval mode, on the device), or ``{}`` with ``load=False``."""
        from .models import load_sae
        from .training import train_saes

        missing = [v for v in variants if not self.store.exists("sae", self._sae_key_cfg(v))]
        # runs that differ only in their learning rate share a pass (the trainer's per-SAE lr_by_name):
        # the data order and the steps are the same, and each SAE's base lr is its own
        groups: dict[str, tuple[dict, list[Variant]]] = {}
        for v in missing:
            shared = {k: val for k, val in v.train_overrides.items() if k != "lr"}
            groups.setdefault(config_key(dataclasses.asdict(self.train_config(**shared))), (shared, []))[1].append(v)
        for shared, vs in groups.values():
            lrs = {v.name: float(v.train_overrides["lr"]) for v in vs if v.train_overrides.get("lr") is not None}
            tcfg = self.train_config(**shared, lr_by_name={**shared.get("lr_by_name", {}), **lrs})
            run_key = config_key({"group": sorted(config_key(self._sae_key_cfg(v)) for v in vs)})
            work = self.store.work_dir("runs", run_key)  # stable: a killed run resumes from its checkpoints
            specs = {v.name: v.model_cfg for v in vs}
            train_saes(self.train_acts, specs, tcfg, work, resume=True, progress=progress)
            for v in vs:
                with self.store.writing("sae", self._sae_key_cfg(v)) as tmp:
                    for f in ("cfg.json", "sae.safetensors", "log.csv"):
                        shutil.copy2(work / v.name / f, tmp / f)
                    (tmp / "variant.json").write_text(json.dumps({"name": v.name}))
            shutil.rmtree(work, ignore_errors=True)
        if not load:
            return {}
        return {v.name: load_sae(self.sae_dir(v)).to(self.device).eval() for v in variants}

    def logs(self, variants: list[Variant]) -> pd.DataFrame:
        """Training logs of stored variants, one row per logged step, with run / architecture / k columns."""
        frames = []
        for v in variants:
            df = pd.read_csv(self.sae_dir(v) / "log.csv")
            df.insert(0, "run", v.name)
            df.insert(1, "architecture", v.architecture)
            df.insert(2, "k", v.k)
            df.insert(3, "seed", v.seed)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    # ---------------------------------------------------------------------------- evaluation
    def per_sae_tables(self, kind: str, variants: list[Variant], eval_cfg: dict,
                       compute: Callable[[dict], dict[str, pd.DataFrame]],
                       chunk: int | None = None, tokens_per_sae: int | None = None) -> dict[str, pd.DataFrame]:
        """Evaluate each SAE once per ``eval_cfg`` and store its rows of every table.

        ``compute({name: sae})`` returns ``{table_name: DataFrame}``, each with an ``sae`` column; SAEs
        already evaluated with this ``eval_cfg`` are read back instead of recomputed. ``chunk``: how
        many SAEs one ``compute`` call gets (None: all of them, for evals that share work between
        SAEs); each call's rows are stored before the next call starts, so a killed run keeps them,
        and only that call's SAEs are in memory. Each call is entered in the work ledger
        (:func:`vsae.buildlog.record_work`) with ``tokens_per_sae``, the tokens each SAE encodes.
        """
        frames: dict[str, list[pd.DataFrame]] = {}
        todo = []
        for v in variants:
            cfg = {"sae": config_key(self._sae_key_cfg(v)), "eval": eval_cfg}
            if self.store.exists(kind, cfg):
                for tname, df in read_tables(self.store.path(kind, cfg)).items():
                    # rows are stored under the name the SAE had when they were computed; the same SAE
                    # (same key) may be asked for under another name, so the name is the caller's
                    frames.setdefault(tname, []).append(df.assign(sae=v.name))
            else:
                todo.append((v, cfg))
        if todo:
            from .models import load_sae

            self.train([v for v, _ in todo], load=False)
            size = len(todo) if chunk is None else max(1, int(chunk))
            for a in range(0, len(todo), size):
                part = todo[a : a + size]
                saes = {v.name: load_sae(self.sae_dir(v)).to(self.device).eval() for v, _ in part}
                t0 = time.perf_counter()
                tables = compute(saes)
                record_work(kind, len(part), None if tokens_per_sae is None else len(part) * int(tokens_per_sae),
                            time.perf_counter() - t0)
                del saes
                for v, cfg in part:
                    rows = {tname: df[df["sae"] == v.name].reset_index(drop=True) for tname, df in tables.items()}
                    with self.store.writing(kind, cfg) as tmp:
                        write_tables(tmp, rows)
                    for tname, df in rows.items():
                        frames.setdefault(tname, []).append(df)
        order = {v.name: i for i, v in enumerate(variants)}
        arch = {v.name: v.architecture for v in variants}
        out = {}
        for tname, fs in frames.items():
            df = pd.concat(fs, ignore_index=True)
            df = df.sort_values("sae", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
            # every table says which architecture and which TopK k each row's SAE has ("k" may be a
            # probe's k in an eval's own table, so the SAE's is always "sae_k")
            df["architecture"] = df["sae"].map(arch)
            df["sae_k"] = df["sae"].map({v.name: v.k for v in variants})
            df["seed"] = df["sae"].map({v.name: v.seed for v in variants})
            out[tname] = df
        return out

    # ---------------------------------------------------------------------------- the evals
    def core(self, variants: list[Variant]) -> dict[str, pd.DataFrame]:
        """Core metrics on the held-out evaluation tokens: tables ``metrics``, ``density`` (with each
        latent's first firing token) and ``noise`` (bootstrap evaluation noise of every score)."""
        from .evals.core import CleanRuns, CoreConfig, evaluate_core

        cfg = CoreConfig(n_ce_contexts=self.profile.n_ce_contexts)
        eval_cfg = {"core": cfg.to_dict(), "acts": self.eval_acts.manifest.get("checksum")}

        def compute(saes):
            # the CE/KL pass's clean and zero-ablated runs are stored by the first call and shared by all
            clean_runs = CleanRuns(self.store, {"lm": self.lm.describe(), "device": str(self.device)})
            res = evaluate_core(saes, self.eval_acts, self.lm, cfg=cfg, clean_runs=clean_runs)
            return {"metrics": res.metrics, "density": res.density, "noise": res.noise}

        # tokens each SAE encodes: the reconstruction pass's, then the CE/KL pass's contexts
        n_ce = min(cfg.n_ce_contexts, len(self.eval_acts.contexts)) * int(self.eval_acts.contexts.shape[1])
        return self.per_sae_tables("core", variants, eval_cfg, compute,
                                   tokens_per_sae=self.eval_acts.n_tokens + n_ce)

    @cached_property
    def pool(self):
        """The labelled passages of the probing / SCR / TPP tasks, harvested once through the LM."""
        from .evals.tasks import harvest_pool, suite_for_profile

        suite = suite_for_profile(self.profile, self.lm, store=self.store)
        return harvest_pool(self.lm, suite, store=self.store)

    def _pool_id(self) -> str:
        return str(self.pool.path.name if self.pool.path is not None else config_key(self.pool.suite.describe().to_dict()))

    def tasks(self) -> pd.DataFrame:
        """One row per probing / SCR / TPP task with how it was built."""
        return self.pool.suite.describe()

    @cached_property
    def llm_probe_baseline(self) -> pd.DataFrame:
        from .evals.probing import SparseProbingConfig, llm_baseline

        cfg = SparseProbingConfig(seed=self.profile.seed)
        return self.store.get_table("probe_llm", {"pool": self._pool_id(), "cfg": cfg.to_dict()},
                                    lambda: llm_baseline(self.pool, cfg=cfg))

    def _scr_tpp_cfg(self):
        from .evals.scr_tpp import ScrTppConfig

        return ScrTppConfig(seed=self.profile.seed)

    def pool_evals(self, variants: list[Variant]) -> dict[str, pd.DataFrame]:
        """Sparse probing, SCR and TPP of each SAE, computed together: tables ``probing``, ``scr``, ``tpp``.

        All three read the SAE's mean-pooled codes of the same passages, the expensive part (every
        token of the pool through the encoder), so one pass serves the three chapters.
        """
        from .evals.probing import SparseProbingConfig, run_sparse_probing
        from .evals.scr_tpp import run_scr, run_tpp, train_scr_probes, train_tpp_probes

        pcfg = SparseProbingConfig(seed=self.profile.seed)
        acfg = self._scr_tpp_cfg()
        eval_cfg = {"pool": self._pool_id(), "probing": pcfg.to_dict(), "scr_tpp": acfg.to_dict()}

        probes = {}

        def compute(saes):
            if not probes:  # the residual-stream probes of SCR and TPP: trained once, shared by every SAE
                probes["scr"] = [train_scr_probes(self.pool, p, acfg) for p in self.pool.suite.scr]
                probes["tpp"] = [train_tpp_probes(self.pool, d, acfg) for d in self.pool.suite.tpp]
            try:
                return {"probing": run_sparse_probing(saes, self.pool, cfg=pcfg, llm=self.llm_probe_baseline),
                        "scr": run_scr(saes, self.pool, cfg=acfg, probes=probes["scr"]),
                        "tpp": run_tpp(saes, self.pool, cfg=acfg, probes=probes["tpp"])}
            finally:
                self.pool.clear_codes()

        # one SAE at a time: its pooled codes (about 0.1 GB at d_sae 4608 on the offline pool) serve its
        # three evals and are freed before the next SAE's, so memory does not grow with the number of SAEs
        return self.per_sae_tables("pool_evals", variants, eval_cfg, compute, chunk=1,
                                   tokens_per_sae=int(self.pool.acts.shape[0]))

    def sparse_probing(self, variants: list[Variant]) -> pd.DataFrame:
        """SAE Bench sparse probing, one row per (sae, dataset, task, k) plus ``dataset == "ALL"`` rows."""
        return self.pool_evals(variants)["probing"]

    def scr(self, variants: list[Variant]) -> pd.DataFrame:
        """Spurious correlation removal, one row per (sae, pair, N) plus ``pair == "ALL"`` rows."""
        return self.pool_evals(variants)["scr"]

    def tpp(self, variants: list[Variant]) -> pd.DataFrame:
        """Targeted probe perturbation, one row per (sae, dataset, class, N) plus ``ALL`` rows."""
        return self.pool_evals(variants)["tpp"]

    def absorption(self, variants: list[Variant], **cfg_overrides) -> dict[str, pd.DataFrame]:
        """First-letter feature absorption (beyond the paper): tables ``summary`` and ``letters``."""
        from .evals.absorption import AbsorptionConfig, prepare_absorption, run_absorption

        cfg = AbsorptionConfig(**cfg_overrides)
        eval_cfg = {"cfg": dataclasses.asdict(cfg), "lm": self.lm.describe(), "hook": self.lm.hook_name}
        state = {}

        def compute(saes):
            if "data" not in state:
                state["data"] = prepare_absorption(self.lm, cfg)
            res = run_absorption(saes, self.lm, cfg=cfg, data=state["data"])
            return {"summary": res.summary, "letters": res.letters}

        return self.per_sae_tables("absorption", variants, eval_cfg, compute)

    def variant_summary(self, variants: list[Variant], n_tpp: int = 20) -> pd.DataFrame:
        """One row per variant: fraction alive, explained variance, CE-loss score, TPP at ``n_tpp``, best SCR."""
        core = self.core(variants)["metrics"].set_index("sae")
        tpp = self.tpp(variants)
        tpp = tpp[(tpp.dataset == "ALL") & (tpp["class"] == "ALL")]
        n = n_tpp if n_tpp in set(tpp["n"]) else int(tpp["n"][tpp["n"] <= n_tpp].max())
        t = tpp[tpp.n == n].set_index("sae")
        scr = self.scr(variants)
        best_scr = scr[scr.pair == "ALL"].groupby("sae")["scr_metric"].max()
        rows = []
        for v in variants:
            rows.append({"sae": v.name, "architecture": v.architecture, "k": v.k, "seed": v.seed,
                         "kl_coeff": getattr(v.model_cfg, "kl_coeff", 0.0), "frac_alive": core.loc[v.name, "frac_alive"],
                         "explained_variance": core.loc[v.name, "explained_variance"],
                         "ce_loss_score": core.loc[v.name, "ce_loss_score"],
                         "tpp_total_20": t.loc[v.name, "tpp_total"], "tpp_unintended_20": t.loc[v.name, "tpp_unintended"],
                         "scr_best": best_scr.get(v.name, float("nan"))})
        return pd.DataFrame(rows)

    def describe(self) -> dict:
        return {"profile": self.profile.to_dict(), "device": self.device, "store": str(self.store.root)}

    def training_summary(self, variants: list[Variant]) -> pd.DataFrame:
        """Last logged values of each run: one row per SAE."""
        logs = self.logs(variants)
        last = logs.groupby("run", sort=False).tail(1).set_index("run")
        cols = [c for c in ("architecture", "k", "seed", "step", "tokens", "loss", "mse", "kl", "auxk", "l0", "frac_dead", "frac_inactive", "ev")
                if c in last.columns]
        out = last[cols].reindex([v.name for v in variants]).reset_index().rename(columns={"run": "sae"})
        return out
