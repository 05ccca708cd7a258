"""SAE Bench's metrics, written from their definitions (no run-time dependency on ``sae-bench``).

* :mod:`vsae.evals.core`       L0, density, alive fraction, MSE, explained variance, cosine, L2 ratio,
                               CE-loss and KL-divergence scores with the reconstruction spliced in
* :mod:`vsae.evals.tasks`      probing / SCR / TPP task suites (``paper``, ``offline``, ``smoke``) and
                               the passage pool harvested once through the LM
* :mod:`vsae.evals.probing`    sparse probing (top-k latents by class-mean difference, LLM baseline)
* :mod:`vsae.evals.scr_tpp`    spurious correlation removal and targeted probe perturbation
* :mod:`vsae.evals.absorption` first-letter feature absorption

Each eval takes ``saes: dict[name, SAE]`` and returns tidy pandas tables (one row per SAE and
setting); :class:`vsae.pipeline.Experiment` stores them per SAE through :mod:`vsae.store`.
"""

from .absorption import AbsorptionConfig, AbsorptionResult, prepare_absorption, run_absorption
from .common import sae_fingerprint
from .core import CoreConfig, CoreResult, evaluate_core
from .probing import SparseProbingConfig, llm_baseline, run_sparse_probing, summarise_sparse_probing
from .scr_tpp import ScrTppConfig, run_scr, run_tpp, scr_oracle_check, train_scr_probes, train_tpp_probes
from .tasks import PassagePool, TaskSuite, build_suite, harvest_pool, load_pool, suite_for_profile

__all__ = [
    "AbsorptionConfig", "AbsorptionResult", "prepare_absorption", "run_absorption",
    "sae_fingerprint",
    "CoreConfig", "CoreResult", "evaluate_core",
    "SparseProbingConfig", "llm_baseline", "run_sparse_probing", "summarise_sparse_probing",
    "ScrTppConfig", "run_scr", "run_tpp", "scr_oracle_check", "train_scr_probes", "train_tpp_probes",
    "PassagePool", "TaskSuite", "build_suite", "harvest_pool", "load_pool", "suite_for_profile",
]
