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
# # The latent space
#
# The paper's "global latent space visualisation" uses t-SNE {cite}`vandermaaten2008tsne` in two ways,
# both reproduced here on the $k = 256$ SAEs (or the middle $k$ of the profile):
#
# * **token space**: the sparse codes of $n$ evaluation tokens, restricted to latents active on more
#   than 1% of them, reduced by PCA to 50 dimensions, then t-SNE (perplexity 30, seeded);
# * **feature space**: every such latent is a point whose vector is its z-scored activation pattern
#   over the $n$ tokens; t-SNE and k-means clusters, with the utilisation of each cluster.
#
# We add what the abstract calls *feature independence*: the distribution of pairwise cosine
# similarities between decoder rows of alive latents, for all eight SAEs.

# %% tags=["parameters"]
profile = "offline"
device = "cpu"
k_values = None
kl_coeff = None
n_train_tokens = None
expansion = None
seeds = None
n_tokens = None

# %%
import pandas as pd
from IPython.display import Markdown, display

from vsae import chapter, latent, plotting
from vsae.params import Param

ex, params, timer = chapter.start("09_latent_space", globals(), {
    "n_tokens": Param(int, min=100, optional=True, help="tokens whose codes are embedded (default: the profile's)"),
})
n_tok = n_tokens or ex.profile.n_latent_tokens

# %%
k_show = ex.showcase_k()
variants = ex.headline_variants()
pair = [v for v in variants if v.k == k_show]
saes = ex.train(pair)
arch_of = {v.name: v.architecture for v in variants}
samples = {v.name: latent.collect_codes(saes[v.name], ex.eval_acts, n_tokens=n_tok, seed=ex.profile.seed) for v in pair}
pd.DataFrame({n: {"tokens": len(s.token_index), "latents active on >1% of tokens": len(s.latents),
                  "alive latents": int((s.density > 0).sum())} for n, s in samples.items()})

# %% [markdown]
# ## Token space

# %%
emb = {n: latent.token_tsne(s, seed=ex.profile.seed) for n, s in samples.items()}
emb = {n: e.assign(source=latent.token_sources(ex.eval_acts, e["token_index"])) for n, e in emb.items()}
plotting.setup()
fig = plotting.token_tsne_panels(emb, arch_of)
plotting.savefig(fig, "token_tsne")

# %% [markdown]
# ## Feature space

# %%
feats = {}
for v in pair:
    s = samples[v.name]
    if len(s.latents) >= 4:
        feats[v.name] = latent.feature_tsne(s, seed=ex.profile.seed)
        fig = plotting.feature_tsne_panels(feats[v.name], v.name, v.architecture)
        plotting.savefig(fig, f"feature_tsne_{v.name}")
    else:
        display(Markdown(f"{v.name}: only {len(s.latents)} latents are active on more than 1% of tokens; "
                         "too few for a feature-space t-SNE."))

# %%
pd.concat({n: latent.cluster_utilisation(f) for n, f in feats.items()}, names=["sae"]).round(4)

# %% [markdown]
# ## Feature independence
#
# Pairwise cosine similarity between the decoder rows of latents alive on the evaluation tokens
# (density from the core evaluation), for every SAE:

# %%
core = ex.core(variants)
dens = core["density"]
all_saes = ex.train(variants)
alive = {n: dens[dens.sae == n].sort_values("latent")["density"].to_numpy() > 0 for n in all_saes}

# %% tags=["nbval-check-output"]
cos = latent.decoder_cosine_table(all_saes, alive)
cos.set_index("sae").round(4)

# %%
hists = {n: latent.decoder_cosine_histogram(s, alive[n], name=n) for n, s in all_saes.items()}
fig = plotting.cosine_distributions(hists, arch_of)
plotting.savefig(fig, "decoder_cosines")

# %%
c = cos.set_index("sae").join(pd.Series(arch_of, name="architecture"))
m = c.groupby("architecture")[["mean_abs", "mean_max_cos", "n_latents"]].mean()
display(Markdown(
    f"Mean |cosine| between alive decoder rows: vSAE {m.loc['vsae', 'mean_abs']:.4f} vs TopK {m.loc['topk', 'mean_abs']:.4f}; "
    f"mean nearest-neighbour cosine: vSAE {m.loc['vsae', 'mean_max_cos']:.3f} vs TopK {m.loc['topk', 'mean_max_cos']:.3f} "
    f"(averaged over k; the vSAE has {m.loc['vsae', 'n_latents']:.0f} alive latents on average, TopK {m.loc['topk', 'n_latents']:.0f})."))

# %%
print(f"chapter 09 done in {timer.finish():.1f} s")
