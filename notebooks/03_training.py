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
# # Training
#
# The paper trains eight SAEs: a TopK SAE and a vSAE at each $k \in \{64, 128, 256, 512\}$, with a
# dictionary of $16 \times d_{model}$ latents, batches of 192 tokens, 10,001 steps, Adam, a 200-step
# warm-up and a linear decay over the last 20% of steps, gradient clipping at 1, activations scaled
# to unit mean squared norm; lr $2\cdot10^{-4}/\sqrt{F/2^{14}}$ for TopK and $8\cdot10^{-4}$ for the vSAE, whose
# KL weight is annealed from 0 to 1 over the first 10% of steps. All eight runs of one seed read the
# *same* batches from one pass over the activation cache; the header above gives this profile's budget.
#
# The paper trains each configuration once. Here every one of the eight runs is trained with each of
# the profile's **SAE seeds** (header above); a seed sets the SAE's initialisation and the order of
# its training batches, and every headline metric in the following chapters is the mean over seeds
# with a 95% t-interval.

# %% tags=["parameters"]
profile = "offline"
device = "cpu"
k_values = None
kl_coeff = None
n_train_tokens = None
expansion = None
seeds = None

# %%
from vsae import chapter, paper, plotting, stats

ex, params, timer = chapter.start("03_training", globals())

# %%
variants = ex.seed_variants()
saes = ex.train(variants)
logs = ex.logs(variants)
print(f"{len(saes)} SAEs ({len(ex.profile.seeds)} seeds x {len(variants) // len(ex.profile.seeds)} runs), d_in={ex.d_model}, "
      f"d_sae={ex.d_sae}, {ex.profile.steps:,} steps of {ex.profile.batch_size} tokens")

# %% [markdown]
# ## Training curves
#
# Loss, reconstruction error, the KL term, L0 and the fraction of *inactive* latents (no activation in
# the last 100,000 training tokens; the paper's 10M-token dead threshold is never reached in these
# runs, so its own dead fraction stays at zero) against training tokens, averaged over seeds. TopK
# runs are blue, vSAE runs magenta; darker lines have larger $k$.

# %%
plotting.setup()
fig = plotting.training_curves(logs, columns=("loss", "mse", "kl", "l0", "frac_inactive"))
plotting.savefig(fig, "training_curves")

# %% [markdown]
# ## End of training
#
# The last logged values of each run of the main seed. Which part of the vSAE recipe makes its
# latents inactive is measured by chapter 12's attribution ladder, not read off these curves.

# %% tags=["nbval-check-output"]
final = ex.training_summary(variants)
final[final.seed == ex.profile.main_seed].drop(columns="seed").round(4)

# %% [markdown]
# Over all seeds (mean ± 95% t-interval):

# %%
stats.runs_ci_table(final.assign(run=paper.run_label(final, "k")), "run",
                    ["mse", "l0", "ev", "frac_inactive"])

# %%
print(f"chapter 03 done in {timer.finish():.1f} s")
