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
# # Appendix: reproducibility
#
# Everything needed to rerun, check or change this book. The values below are read from the profile
# and the stored artifacts at execution time.
#
# ## The profile

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

from vsae import chapter, paper, report

ex, params, timer = chapter.start("13_appendix", globals())

# %%
p = ex.profile
rows = [(k, str(v)) for k, v in p.to_dict().items()] + [
    ("hook", p.hook_name), ("training steps", f"{p.steps:,}"), ("d_sae", f"{p.expansion} × d_model")]
pd.DataFrame(rows, columns=["setting", "value"])

# %% [markdown]
# ## Why the `offline` profile has this scale
#
# The paper trains on 1.92M tokens of Pythia-70M's layer-3 residual stream (d_model 512) with
# $F = 8192$ latents, once per configuration. On 2 CPU cores that is hours with the authors' trainer,
# and the whole book here, with **three seeds of each of the eight runs** (24 SAEs) and the
# beyond-the-paper chapter's variants, must build in about 90 minutes. The `offline` profile keeps the
# paper's $k$ values, batches of 192 tokens, learning rates, warm-up, decay, KL annealing and KL weight,
# and shrinks the budget: $F = 8 \times d_{model}$ latents, 15% of the paper's training tokens (1,500
# steps) and 600 / 300 passages per probing class (train / test). Whether the paper's conclusions
# survive this budget is itself measured: chapter 11 compares the KL-free vSAE, the KL sweep and the
# other controls at a quarter of it, chapter 12 attributes the feature death to the recipes'
# differences (and matches the learning rates at the full budget), and chapter 10 prints every claim's
# verdict per $k$. Absolute
# metric values are not comparable with Pythia-70M's (the table below lists every deviation).

# %% tags=["nbval-check-output"]
paper.deviations(ex.profile, ex.lm.describe())

# %% [markdown]
# **Evaluation sizes.** Fraction alive is counted on the profile's evaluation tokens (header above;
# 10× the 32,768 of the first offline book, whose count called any latent rarer than 3·10⁻⁵ dead);
# chapter 4 shows the alive fraction against the number of evaluation tokens and the bootstrap noise
# of every core score beside its seed interval.
#
# **Why layer 9 of SmolLM2-135M, in float32.** Without a BOS token, SmolLM2's residual stream carries a
# huge activation at the first position of every context: at layers 2–8 it holds about a quarter of the
# squared norm, and from layer 11 on about 99%, so it would set the paper's normalisation factor on its
# own. Layers 9 and 10 are clean (about 1% at layer 9). The first offline book ran the model in
# bfloat16; on the AVX2-only CPUs this book is now built on, a bfloat16 matmul runs at about
# 1 GFLOP/s against 30–60 GFLOP/s in float32, so the model, every activation and every CE/KL score are
# float32. The same model, dtype and path produce every activation and every score in the book.
#
# ## Software

# %%
info = ex.describe()
vers = report.package_versions()
pd.DataFrame(sorted(vers.items()), columns=["package", "version"])

# %%
display(Markdown(f"Git commit: `{report.git_commit()}` · artifact store: `$VSAE_HOME/store` · device: `{ex.device}`"))

# %% [markdown]
# ## Wall time per chapter
#
# The chapters of this book's last build (`make book`), each timed by itself (seconds; a chapter that
# reads stored artifacts is much faster than the run that computed them, so the build record also says
# which chapters found their artifacts already stored):

# %%
report.timings_table(ex.profile.name)

# %% [markdown]
# ## Re-running
#
# | what | command |
# | --- | --- |
# | the whole book (this profile) | `make book` |
# | one chapter with new parameters | `make chapter NB=04_core PARAMS="-p k_values '[128]' -p kl_coeff 0.1"` |
# | more seeds (mean and 95% interval over all of them) | `make chapter NB=04_core PARAMS="-p seeds '[42,43,44,45,46]'"` |
# | the paper's setting (needs the Hub) | `make book PROFILE=paper DEVICE=cuda` |
# | check the committed outputs | `make verify` |
# | the tests | `make test` |
#
# Parameters every chapter accepts (anything else is refused before work starts):

# %%
pd.DataFrame([(k, v.describe()) for k, v in chapter.COMMON.items()], columns=["parameter", "type and meaning"])

# %%
print(f"chapter 13 done in {timer.finish():.1f} s")
