"""Named settings of the book: ``paper``, ``offline`` (the embedded default) and ``smoke`` (CI).

A profile fixes *what* is computed (language model, hook, corpora, token budgets, dictionary size,
k values, probing sizes). Every chapter starts from one and may override single fields through its
papermill parameters; :func:`get_profile` validates the overrides.

Scale choices of the ``offline`` profile are explained in the book's reproducibility appendix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """One complete setting of the experiments.

    Token budgets are counted in tokens of the hooked model's tokenizer after chunking into
    ``ctx_len``-token contexts (padding dropped).
    """

    name: str
    #: language-model registry name (see :mod:`vsae.lm`)
    lm: str
    #: residual-stream layer: activations are read at ``blocks.{layer}.hook_resid_post``
    layer: int
    #: corpus used to train the SAEs (see :mod:`vsae.data`)
    train_corpus: str
    #: corpus used for the core metrics (held out from the training corpus)
    eval_corpus: str
    #: tokens harvested for SAE training
    n_train_tokens: int
    #: evaluation tokens for sparsity / variance metrics (L0, alive, explained variance)
    n_eval_tokens: int
    #: contexts used for the CE-loss and KL-divergence scores (full forward passes)
    n_ce_contexts: int
    #: dictionary size = expansion * d_model (the paper: 16)
    expansion: int
    #: TopK values of the eight headline runs (one TopK SAE and one vSAE each)
    k_values: tuple[int, ...] = (64, 128, 256, 512)
    #: context length in tokens (the paper: 128)
    ctx_len: int = 128
    #: training batch in tokens (the paper: 192)
    batch_size: int = 192
    #: vSAE KL weight (the paper: 1.0)
    kl_coeff: float = 1.0
    #: probing task family: "paper" (SAE Bench datasets), "offline" or "smoke"
    probe_tasks: str = "offline"
    #: texts per class-balanced probing task, train and test
    n_probe_train: int = 4000
    n_probe_test: int = 1000
    #: tokens whose codes feed the t-SNE views and feature statistics
    n_latent_tokens: int = 20_000
    #: optimisation steps of the synthetic maximiser in the feature chapter (the paper: 150-200)
    synthetic_steps: int = 200
    #: vocabulary words used by the first-letter absorption eval
    absorption_words: int = 3000
    #: dtype of the language model and of the activation cache
    lm_dtype: str = "float32"
    #: training tokens of the convergence runs (chapter 12): the long budget is this over the batch size,
    #: by default the paper's 10,001 steps of 192 tokens on fresh tokens (``Experiment.convergence``)
    n_convergence_tokens: int = 10_001 * 192
    #: seed of everything that is not an SAE: probe training, task splits, t-SNE
    seed: int = 42
    #: seeds of the headline SAEs: each sets one SAE's initialisation and the order of its training
    #: batches. The first is the *main* seed (the SAE shown in single-SAE figures); every headline
    #: metric is reported as the mean and a 95% t-interval over all of them (see :mod:`vsae.stats`).
    seeds: tuple[int, ...] = (42, 43, 44)

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def steps(self) -> int:
        return self.n_train_tokens // self.batch_size

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["k_values"] = list(self.k_values)
        d["seeds"] = list(self.seeds)
        return d

    @property
    def main_seed(self) -> int:
        return self.seeds[0]


#: the embedded default: its chapters are the committed ones (``book/chapters/``)
DEFAULT_PROFILE = "offline"

PROFILES: dict[str, Profile] = {
    # The paper's exact setting (paper-recipe.md section 4). Needs the Hugging Face Hub; GPU advised.
    "paper": Profile(
        name="paper",
        lm="pythia-70m-deduped",
        layer=3,
        train_corpus="tinystories",
        eval_corpus="c4-code",
        n_train_tokens=10_001 * 192,
        n_eval_tokens=2000 * 16 * 128,
        n_ce_contexts=200 * 16,
        expansion=16,
        probe_tasks="paper",
        n_probe_train=4000,
        n_probe_test=1000,
        n_latent_tokens=100_000,
    ),
    # The embedded default: a real pretrained LM and real text, installable by package name.
    "offline": Profile(
        name="offline",
        lm="smollm2-135m",
        # Layer 9 of 30 (a third of the depth; Pythia's layer 3 of 6 is the paper's) because:
        # (1) without BOS, SmolLM2's residual has a massive first-position activation: |x| at
        #     position 0 is ~750 vs ~100 at layers 2-8 (a quarter of the squared norm) and ~23,000
        #     vs ~150 from layer 11 on (99% of it: it would set the paper's norm factor alone);
        #     only layers 9-10 are clean (pos0 165 vs 139 at layer 9, 1% of the squared norm);
        # (2) speed: the bridge harvests layer 9 at ~1,600 tok/s in float32 on 2 cores. The profile
        #     ran in bfloat16 until the book moved to AVX2-only machines, where a bf16 matmul runs at
        #     ~1 GFLOP/s against ~30-60 for fp32 (measured 2026-12-02: harvesting fell to ~95 tok/s),
        #     so the LM, its activations and the CE scoring are float32 throughout.
        layer=9,
        train_corpus="offline",
        eval_corpus="offline",
        # 1,500 steps of the paper's 192-token batches (the paper: 10,001), for three seeds of all
        # eight runs: training the 24 SAEs is ~40% of the offline book's 90-minute budget
        n_train_tokens=1500 * 192,
        # evaluation sizes chosen against measured noise (chapter 4): fraction alive on 10x the
        # tokens it was first counted on (its curve against eval tokens shows the saturation), CE/KL
        # on 64 contexts (their bootstrap interval is reported beside the seed interval, chapter 4)
        n_eval_tokens=327_680,
        n_ce_contexts=64,
        expansion=8,
        probe_tasks="offline",
        n_probe_train=600,
        n_probe_test=300,
        n_latent_tokens=20_000,
        lm_dtype="float32",
        synthetic_steps=150,
    ),
    # Seconds-scale plumbing check on the exact Pythia architecture with random weights (never a result).
    "smoke": Profile(
        name="smoke",
        lm="pythia-70m-random",
        layer=3,
        train_corpus="smoke",
        eval_corpus="smoke",
        n_train_tokens=96 * 192,
        n_convergence_tokens=192 * 192,
        n_eval_tokens=4096,
        n_ce_contexts=8,
        expansion=2,
        k_values=(8, 16, 32, 64),
        seeds=(42, 43),
        ctx_len=64,
        probe_tasks="smoke",
        n_probe_train=120,
        n_probe_test=60,
        n_latent_tokens=2000,
        synthetic_steps=10,
        absorption_words=300,
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    """Return profile ``name`` with ``overrides`` applied; unknown names or fields raise ``ValueError``."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    base = PROFILES[name]
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    bad = sorted(set(overrides) - set(fields))
    if bad:
        raise ValueError(f"unknown profile field(s) {bad}; allowed: {sorted(fields)}")
    if "k_values" in overrides:
        overrides["k_values"] = tuple(int(k) for k in overrides["k_values"])
    if "seeds" in overrides:
        seeds = tuple(int(s) for s in overrides["seeds"])
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {list(overrides['seeds'])}")
        overrides["seeds"] = seeds
    return dataclasses.replace(base, **overrides)
