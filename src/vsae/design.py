"""The experimental design of the book: which SAEs are trained, as pure functions of a profile.

A :class:`Variant` is one SAE to train: its model config and the trainer settings that differ from
the profile's. Its ``name`` is the key every result table uses (the ``sae`` column) and what the
book prints; :attr:`Variant.slug` is a file-name-safe form of it for exports. Nothing here trains,
evaluates or touches the store: :class:`vsae.pipeline.Experiment` does that for the variants these
functions return.

- :func:`headline_variants` / :func:`seed_variants`: the paper's eight runs (TopK and vSAE at each k),
  at one or every seed of the profile;
- :func:`beyond_variants`: the controlled runs of the "beyond the paper" chapter, grouped by question;
- :func:`showcase_k`: the one k that single-k chapters and controls use.
"""

from __future__ import annotations

import dataclasses
import re

from .models import TopKSAEConfig, VSAEConfig
from .profiles import Profile

#: KL weights of the beyond chapter's sweep
KL_WEIGHTS = (0.0, 0.01, 0.1, 1.0, 10.0)


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
    # a dead threshold the run reaches: 5% of its tokens (the paper's 10M is never reached)
    dead = max(1000, int(0.05 * steps * p.batch_size))
    return {
        "text_vs_code": [code, vs("vSAE unit var (blog)", var_mode="unit"),
                         vs("vSAE learned var (abstract)", var_mode="learned")],
        "kl_scope": [code, vs("vSAE KL on top-k only", kl_scope="topk")],
        "control": [topk, code, tk("TopK + L2 pre-act penalty", l2_preact_coeff=p.kl_coeff)],
        "auxk": [topk, tk(f"TopK + AuxK (dead after {dead:,} tokens)", dead_tokens_threshold=dead)],
        "kl_sweep": [code if w == p.kl_coeff else vs(f"vSAE KL weight {w:g}", kl_coeff=w) for w in kl_weights],
    }


def showcase_k(profile: Profile) -> int:
    """The one k single-k chapters and controls use: 256 (the paper's feature chapter) when the
    profile has it, else its middle k."""
    ks = sorted(profile.k_values)
    return 256 if 256 in ks else ks[len(ks) // 2]
