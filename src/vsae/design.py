"""The experimental design of the book: which SAEs are trained, as pure functions of a profile.

A :class:`Variant` is one SAE to train: its model config and the trainer settings that differ from
the profile's. Its ``name`` is the key every result table uses (the ``sae`` column) and what the
book prints; :attr:`Variant.slug` is a file-name-safe form of it for exports. Nothing here trains,
evaluates or touches the store: :class:`vsae.pipeline.Experiment` does that for the variants these
functions return.

- :func:`headline_variants` / :func:`seed_variants`: the paper's eight runs (TopK and vSAE at each k),
  at one or every seed of the profile;
- :func:`beyond_variants`: the controlled runs of the "beyond the paper" chapter, grouped by question;
- :func:`convergence_variants`: TopK and vSAE at the headline and the paper's training budget;
- :func:`showcase_k`: the one k that single-k chapters and controls use.
"""

from __future__ import annotations

import dataclasses
import re

from .models import TopKSAEConfig, VSAEConfig
from .profiles import Profile

#: KL weights of the beyond chapter's sweep
KL_WEIGHTS = (0.0, 0.01, 0.1, 1.0, 10.0)
#: sampling sigmas of the beyond chapter's sweep, in the SAE's normalised input units (mean squared
#: input norm 1, so one coordinate's RMS is 1/sqrt(d_in): 0.042 at d_in 576); 1.0 is the blog post's
NOISE_SCALES = (0.01, 0.03, 0.1, 1.0)
#: initial log-variances (``log_var_init``) of the learned-variance vSAE swept in the beyond chapter:
#: initial sigma = exp(init / 2) = 0.050, 0.14, 0.37 (the default) and 1.0 in the same normalised units
LOG_VAR_INITS = (-6.0, -4.0, -2.0, 0.0)


def sae_name(arch: str, k: int, suffix: str = "") -> str:
    """The name of a headline run: ``topk_k64``, ``vsae_k256_s43``."""
    return f"{arch}_k{k}{suffix}"


@dataclasses.dataclass
class Variant:
    """One SAE to train: its model config and the trainer settings that differ from the defaults."""

    #: the run's name: the ``sae`` key of every result table and its label in the book
    name: str
    model_cfg: TopKSAEConfig | VSAEConfig
    train_overrides: dict = dataclasses.field(default_factory=dict)
    #: where the run sits in a design, e.g. ``{"side": "vsae", "rung": "kl"}`` on the attribution ladder
    role: dict = dataclasses.field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.model_cfg.architecture

    @property
    def k(self) -> int:
        return int(self.model_cfg.k)

    @property
    def seed(self) -> int:
        return int(self.train_overrides.get("seed", self.model_cfg.seed))

    @property
    def slug(self) -> str:
        """``name`` as a file-name-safe key: lower case, runs of other characters as ``_``."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


def headline_variants(profile: Profile, d_in: int, d_sae: int, k_values=None, seed: int | None = None) -> list[Variant]:
    """The paper's eight runs at one seed (default: the main one): TopK and vSAE (fixed variance,
    KL over all latents) at each k. Runs of the main seed are named ``topk_k64``, others ``topk_k64_s43``."""
    p = profile
    seed = p.main_seed if seed is None else int(seed)
    sfx = "" if seed == p.main_seed else f"_s{seed}"
    ks = list(k_values or p.k_values)
    out = [Variant(sae_name("topk", k, sfx), TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed), {"seed": seed})
           for k in ks]
    out += [Variant(sae_name("vsae", k, sfx), VSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed, kl_coeff=p.kl_coeff),
                    {"seed": seed}) for k in ks]
    return out


def seed_variants(profile: Profile, d_in: int, d_sae: int, k_values=None) -> list[Variant]:
    """The headline runs at every seed of the profile (main seed first)."""
    return [v for s in profile.seeds for v in headline_variants(profile, d_in, d_sae, k_values, seed=s)]


def beyond_variants(profile: Profile, d_in: int, d_sae: int, k: int, budget_fraction: float = 0.25,
                    kl_weights=KL_WEIGHTS) -> dict[str, list[Variant]]:
    """The runs of the "beyond the paper" chapter, at ``budget_fraction`` of the training steps and
    the main seed (the seed question is answered by the full-budget :func:`seed_variants`).

    Returns the variants grouped by the question they answer; names are unique across groups, and a
    run shared by two questions (the vSAE as the code trains it, plain TopK) is the same variant.
    """
    p = profile
    steps = max(50, int(p.steps * budget_fraction))
    seed = p.main_seed
    tr = {"steps": steps, "seed": seed}

    def vs(name, **kw):
        kw.setdefault("kl_coeff", p.kl_coeff)
        return Variant(name, VSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed, **kw), dict(tr))

    def tk(name, **kw):
        return Variant(name, TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed, **kw), dict(tr))

    code, topk = vs("vSAE fixed var (code)"), tk("TopK")
    blog = vs("vSAE unit var (blog)", var_mode="unit")
    learned = vs("vSAE learned var (abstract)", var_mode="learned")
    # a dead threshold the run reaches: 5% of its tokens (the paper's 10M is never reached)
    dead = max(1000, int(0.05 * steps * p.batch_size))
    return {
        "text_vs_code": [code, blog, learned],
        "sigma_sweep": [code] + [blog if sg == 1.0 else vs(f"vSAE unit var sigma {sg:g}", var_mode="unit", noise_scale=sg)
                                 for sg in NOISE_SCALES],
        "learned_init": [code] + [learned if li == VSAEConfig.log_var_init else
                                  vs(f"vSAE learned var init {li:g}", var_mode="learned", log_var_init=li)
                                  for li in LOG_VAR_INITS],
        "kl_scope": [code, vs("vSAE KL on top-k only", kl_scope="topk")],
        "control": [topk, code, tk("TopK + L2 pre-act penalty", l2_preact_coeff=p.kl_coeff)],
        "auxk": [topk, tk(f"TopK + AuxK (dead after {dead:,} tokens)", dead_tokens_threshold=dead)],
        "kl_sweep": [code if w == p.kl_coeff else vs(f"vSAE KL weight {w:g}", kl_coeff=w) for w in kl_weights],
    }


#: the paper's training budget: 10,001 steps of 192 tokens (the authors' training script: total_steps=10001)
PAPER_STEPS = 10_001
PAPER_TRAIN_TOKENS = PAPER_STEPS * 192


def convergence_variants(profile: Profile, d_in: int, d_sae: int, k: int, budgets: dict[str, int],
                         seeds=None) -> list[Variant]:
    """TopK and vSAE at ``k`` trained for each budget of ``budgets`` (label -> steps), at every seed
    (default: the profile's), all on one training cache: the runs that say whether the headline budget's
    conclusions hold at the paper's. Named ``topk_k256_<label>[_s43]``; ``role["budget"]`` is the label,
    ``role["steps"]`` the steps. The learning-rate schedule (warm-up, decay at 80%) scales with the steps,
    as the trainer defines it."""
    p = profile
    seeds = list(p.seeds if seeds is None else seeds)
    out = []
    for label, steps in budgets.items():
        for seed in seeds:
            sfx = "" if seed == p.main_seed else f"_s{seed}"
            tr = {"steps": int(steps), "seed": int(seed)}
            role = {"budget": label, "steps": int(steps)}
            out.append(Variant(sae_name("topk", k, f"_{label}{sfx}"), TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed),
                               dict(tr), dict(role)))
            out.append(Variant(sae_name("vsae", k, f"_{label}{sfx}"),
                               VSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed, kl_coeff=p.kl_coeff), dict(tr), dict(role)))
    return out


def ablation_ks(profile: Profile) -> list[int]:
    """The k values of the SCR and TPP chapters: the profile's two largest, as the paper's figures show
    them (its two largest, 256 and 512)."""
    return sorted(profile.k_values)[-2:]


def showcase_k(profile: Profile) -> int:
    """The one k single-k chapters and controls use: 256 (the paper's feature chapter) when the
    profile has it, else its middle k."""
    ks = sorted(profile.k_values)
    return 256 if 256 in ks else ks[len(ks) // 2]


#: the recipe differences of the attribution ladder: (short name, what it is), in the order the
#: book lists them. Each rung flips one of them, starting from one architecture's own recipe.
LADDER_DIFFERENCES = (
    ("kl", "the KL term (weight 1, all latents, before TopK)"),
    ("b_dec", "subtracting b_dec before encoding"),
    ("unit_norm", "the unit-norm decoder constraint (gradient projection + renormalisation)"),
    ("init", "the initialisation (TopK: unit-norm tied rows; vSAE: N(0, 1) rows at norm 0.1)"),
    ("geomed", "b_dec initialised at the geometric median of the first batch"),
    ("lr", "the learning rate (TopK 2e-4 / sqrt(d_sae / 2^14); vSAE 8e-4)"),
)


def _flip(cfg, diff: str, topk_lr: float, vsae_lr: float, kl_coeff: float):
    """(model config, lr or None) with one recipe difference flipped towards the other architecture."""
    r = dataclasses.replace
    topk = cfg.architecture == "topk"
    if diff == "kl":  # the TopK side gets the vSAE's fixed-variance KL as an L2 penalty on its pre-acts
        return (r(cfg, l2_preact_coeff=kl_coeff) if topk else r(cfg, kl_coeff=0.0)), None
    if diff == "b_dec":
        return r(cfg, subtract_b_dec=not cfg.subtract_b_dec), None
    if diff == "unit_norm":
        return r(cfg, unit_norm_decoder=not cfg.unit_norm_decoder), None
    if diff == "init":
        return r(cfg, init="vsae" if cfg.init == "topk" else "topk"), None
    if diff == "geomed":
        return r(cfg, b_dec_init="zero" if cfg.b_dec_init == "geometric_median" else "geometric_median"), None
    if diff == "lr":
        return cfg, (vsae_lr if topk else topk_lr)
    raise ValueError(f"unknown recipe difference {diff!r}; choose from {[d for d, _ in LADDER_DIFFERENCES]}")


def ladder_variants(profile: Profile, d_in: int, d_sae: int, k: int, budget_fraction: float = 0.25,
                    seeds=None, differences=None) -> dict[str, list[Variant]]:
    """The attribution ladder: the TopK and vSAE recipes, and each with one recipe difference
    (:data:`LADDER_DIFFERENCES`) flipped to the other's, at ``budget_fraction`` of the headline steps,
    for every seed in ``seeds`` (default: the profile's).

    Returns ``{"vsae": [...], "topk": [...]}``: each list starts with the unmodified recipe (named
    ``vSAE`` / ``TopK``, suffixed ``_s<seed>`` for seeds other than the main one), then one run per
    difference, named ``vSAE - kl``-style ("the vSAE without its KL term") and ``TopK + kl``-style
    ("TopK with the vSAE's KL"). Each variant's ``train_overrides`` carries its steps, seed and,
    for the ``lr`` rung, the other architecture's learning rate.
    """
    p = profile
    steps = max(50, int(p.steps * budget_fraction))
    diffs = [d for d, _ in LADDER_DIFFERENCES] if differences is None else list(differences)
    base_topk = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k)
    base_vsae = VSAEConfig(d_in=d_in, d_sae=d_sae, k=k, kl_coeff=p.kl_coeff)
    lrs = recipe_lrs(d_in, d_sae, k)
    out: dict[str, list[Variant]] = {"vsae": [], "topk": []}
    for seed in (p.seeds if seeds is None else seeds):
        sfx = "" if seed == p.main_seed else f"_s{seed}"
        for arch, base, label, sign in (("vsae", base_vsae, "vSAE", "-"), ("topk", base_topk, "TopK", "+")):
            cfg = dataclasses.replace(base, seed=seed)
            tr = {"steps": steps, "seed": seed}
            out[arch].append(Variant(f"{label}{sfx}", cfg, dict(tr), {"side": arch, "rung": "recipe"}))
            for d in diffs:
                c, lr = _flip(cfg, d, lrs["topk"], lrs["vsae"], p.kl_coeff)
                out[arch].append(Variant(f"{label} {sign} {d}{sfx}", c, {**tr, **({"lr": lr} if lr else {})},
                                         {"side": arch, "rung": d}))
    return out


def recipe_lrs(d_in: int, d_sae: int, k: int) -> dict[str, float]:
    """Each recipe's own learning rate at these shapes (:func:`vsae.training.auto_lr`)."""
    from .training import auto_lr

    return {"topk": auto_lr(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k)),
            "vsae": auto_lr(VSAEConfig(d_in=d_in, d_sae=d_sae, k=k))}


def lr_variants(profile: Profile, d_in: int, d_sae: int, k: int, seeds=None) -> list[Variant]:
    """Both architectures at both learning rates, at the full headline budget and every seed: the
    headline TopK and vSAE runs at ``k`` (their own learning rates, the same runs and names as
    :func:`seed_variants`) and each at the *other* architecture's learning rate (``topk_k256_lr_vsae``:
    TopK trained at the vSAE's 8e-4; ``vsae_k256_lr_topk``: the vSAE at TopK's
    ``2e-4 / sqrt(d_sae / 2^14)``). ``role``: ``{"arch": ..., "lr_of": "topk" | "vsae"}``."""
    p = profile
    lrs = recipe_lrs(d_in, d_sae, k)
    out = []
    for seed in (p.seeds if seeds is None else seeds):
        sfx = "" if seed == p.main_seed else f"_s{seed}"
        for v in headline_variants(p, d_in, d_sae, [k], seed=seed):
            arch, other = v.architecture, "vsae" if v.architecture == "topk" else "topk"
            out.append(dataclasses.replace(v, role={"arch": arch, "lr_of": arch}))
            out.append(Variant(sae_name(arch, k, f"_lr_{other}{sfx}"), v.model_cfg,
                               {**v.train_overrides, "lr": lrs[other]}, {"arch": arch, "lr_of": other}))
    return out


#: the ablation-metric controls: (role, what it is), in the order the book shows them
ABLATION_CONTROLS = (
    ("topk", "the headline TopK SAE"),
    ("vsae", "the headline vSAE"),
    ("size_matched", "a TopK SAE with as many latents as the vSAE keeps alive"),
    ("random", "a TopK SAE at its initialisation (learning rate 0; b_dec at the geometric median)"),
)
#: steps of the untrained null: the trainer's minimum (the learning rate is 0, so nothing moves)
NULL_STEPS = 50


def ablation_control_variants(profile: Profile, d_in: int, d_sae: int, k: int, live: int, seeds=None) -> list[Variant]:
    """The runs that separate "better ablation metrics" from "a small, dense dictionary", at every
    seed: the headline TopK and vSAE at ``k`` (the same runs as :func:`seed_variants`), a TopK SAE
    with ``d_sae = live`` latents (``topk_k256_d1024``; its own ``auto_lr``) and an untrained TopK
    SAE (``topk_k256_random``: learning rate 0 for :data:`NULL_STEPS` steps, i.e. its initial weights)
    as a null baseline. ``role["control"]`` names the run's row of :data:`ABLATION_CONTROLS`."""
    if not k <= live <= d_sae:
        raise ValueError(f"the size-matched control needs k <= live <= d_sae, got k={k}, live={live}, d_sae={d_sae}")
    p = profile
    out = []
    for seed in (p.seeds if seeds is None else seeds):
        sfx = "" if seed == p.main_seed else f"_s{seed}"
        out += [dataclasses.replace(v, role={"control": v.architecture})
                for v in headline_variants(p, d_in, d_sae, [k], seed=seed)]
        out.append(Variant(sae_name("topk", k, f"_d{live}{sfx}"), TopKSAEConfig(d_in=d_in, d_sae=live, k=k, seed=seed),
                           {"seed": seed}, {"control": "size_matched"}))
        out.append(Variant(sae_name("topk", k, f"_random{sfx}"), TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, seed=seed),
                           {"seed": seed, "steps": NULL_STEPS, "lr": 0.0}, {"control": "random"}))
    return out
