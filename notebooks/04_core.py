# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Core metrics
#
# SAE Bench's core evaluation on held-out tokens: sparsity (L0, the fraction of latents that fire at
# least once), reconstruction (explained variance $1 - \mathrm{Var}(x - \hat x)/\mathrm{Var}(x)$, cosine
# similarity, MSE, L2 ratio) and the downstream scores with the SAE's reconstruction spliced into the
# model at the hook:
#
# $$ \text{CE-loss score} = \frac{CE_{zero} - CE_{SAE}}{CE_{zero} - CE_{clean}}, \qquad
#    \text{KL score} = \frac{KL_{zero} - KL_{SAE}}{KL_{zero} - 0}, $$
#
# where *zero* replaces the residual by zeros and KL is measured against the clean model's next-token
# distribution. Both are 1 for a perfect reconstruction and 0 for a useless one; special tokens are
# excluded as SAE Bench does.
#
# ## The paper's table
#
# Pythia-70M, layer 3, $F = 8192$ (read from `data/paper_results.csv`):

# %% tags=["parameters"]
profile = "offline"
device = "cpu"
k_values = None
kl_coeff = None
n_train_tokens = None
expansion = None
seeds = None

# %%
import pandas as pd
from IPython.display import Markdown, display

from vsae import chapter, paper, plotting, stats
from vsae.models import decoder_normalization_effect

ex, params, timer = chapter.start("04_core", globals())

# %%
paper_core = paper.core_table()
paper_core.round(4)

# %% [markdown]
# ## Ours
#
# Mean ± 95% t-interval over the profile's SAE seeds (header above):

# %%
variants = ex.seed_variants()
core = ex.core(variants)
metrics = core["metrics"].assign(run=lambda d: d.architecture.map(paper.ARCH_LABEL) + " k=" + d.sae_k.astype(str))
cols = ["kl_div_score", "ce_loss_score", "explained_variance", "cossim", "l0", "frac_alive"]
ours = metrics.groupby("run", sort=False)[cols].mean().T

# %% tags=["nbval-check-output"]
stats.metrics_ci_table(metrics, "run", cols)

# %% [markdown]
# The seed means side by side with the paper's single runs (paper / ours) for each SAE:

# %%
both = pd.concat({"paper (Pythia-70M)": paper_core.loc[cols], f"ours ({ex.profile.name})": ours.loc[cols]}, axis=1)
both = both.reorder_levels([1, 0], axis=1)
both[[c for c in both.columns if c[0] in ours.columns]].round(3)

# %% [markdown]
# ## Against k
#
# The paper's core overview figure: CE-loss score, explained variance, cosine similarity and the
# fraction of alive latents against $k$. Solid lines are ours (seed mean, shaded: 95% t-interval),
# dashed open markers the paper's.

# %%
plotting.setup()
paper_tidy = paper.paper_results("core")
fig = plotting.metrics_vs_k(metrics.assign(k=metrics.sae_k), ["ce_loss_score", "explained_variance", "cossim", "frac_alive"], paper=paper_tidy,
                            ours_label=ex.profile.name)
plotting.savefig(fig, "core_overview")

# %%
fig = plotting.pareto(metrics.assign(k=metrics.sae_k), paper=paper_tidy)
plotting.savefig(fig, "pareto")

# %% [markdown]
# ## Feature density
#
# How often each latent fires on the evaluation tokens (log scale; dead latents at the left edge), for
# the main seed's SAEs at the middle $k$.

# %%
main = ex.headline_variants()
show = [v.name for v in main if v.model_cfg.k == sorted(ex.profile.k_values)[len(ex.profile.k_values) // 2]]
fig = plotting.density_histogram(core["density"], show, {v.name: v.architecture for v in variants})
plotting.savefig(fig, "density")

# %% [markdown]
# ## The paper's artefacts, recomputed
#
# The paper's table reports a KL-divergence score of exactly −1 for every SAE and CE-loss scores above
# 1 (1.0294 for three SAEs). The first is impossible for a correct computation (the KL divergence is
# never negative, and it would take a reconstruction twice as harmful as zeroing the residual), the
# second implausible for SAEs that explain at most 96% of the variance; both come from its evaluation (bf16 quantisation, and a model loaded without the weight processing used in
# training). Ours come from the same model, weights and dtype the activations came from (the profile's
# `lm_dtype`; the `offline` profile runs SmolLM2 in bfloat16, see chapter 2), with the logits cast to
# float32 before the log-softmax, which is where bf16 arithmetic turns a KL divergence into NaN (main
# seed shown; the bounds below cover every seed):

# %%
ce_cols = ["ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "ce_loss_score",
           "kl_div_with_sae", "kl_div_with_ablation", "kl_div_score"]
metrics[metrics.seed == ex.profile.main_seed].set_index("sae")[ce_cols].round(4)

# %%
lo, hi = metrics["ce_loss_score"].min(), metrics["ce_loss_score"].max()
kl_lo, kl_hi = metrics["kl_div_score"].min(), metrics["kl_div_score"].max()
top = metrics.loc[metrics["ce_loss_score"].idxmax()]
notes = []
if hi > 1:
    # a near-perfect reconstruction can lower the CE loss below the clean model's by chance, so a
    # score a hair above 1 is possible; report by how much, against the paper's 1.0294
    notes.append(f"the largest CE-loss score exceeds 1 by {hi - 1:.4f} ({top['sae']}, explained variance "
                 f"{top['explained_variance']:.3f}: its reconstruction changes the CE loss by "
                 f"{top['ce_loss_with_sae'] - top['ce_loss_without_sae']:+.4f} nats), against the paper's 0.0294")
if lo < 0 or kl_lo < 0 or kl_hi > 1:
    notes.append("some scores fall outside [0, 1] (see the table above)")
verdict = "; ".join(notes) or "all within [0, 1]"
display(Markdown(f"Over all {len(metrics)} SAEs, our CE-loss scores lie in [{lo:.4f}, {hi:.4f}] and our KL scores in "
                 f"[{kl_lo:.4f}, {kl_hi:.4f}]: {verdict}."))

# %% [markdown]
# ## Evaluating the vSAE as it was trained
#
# SAE Bench loaded the authors' vSAE with its decoder rows rescaled to unit norm (and the encoder
# rescaled to compensate). Because TopK then ranks $\|d_i\| z_i$ instead of $z_i$, this changes which
# latents are selected, so the evaluated model is not the trained one. The book evaluates each SAE as
# it was trained; the table measures how much the paper's export would have changed the codes (main
# seed).

# %%
x = ex.eval_acts.get(range(min(len(ex.eval_acts), 4096))).float()
saes = ex.train([v for v in main if v.architecture == "vsae"])
pd.DataFrame([{"sae": n, **decoder_normalization_effect(s, x)} for n, s in saes.items()]).set_index("sae").round(4)

# %%
print(f"chapter 04 done in {timer.finish():.1f} s")
