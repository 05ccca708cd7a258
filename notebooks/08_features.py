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
# # Feature interpretability
#
# The paper inspects individual latents of the TopK SAE and the vSAE at $k = 256$: an activation
# histogram, statistics (sparsity, mean and max activation, decoder norm), the contexts around the
# peak activations, the logit effects of the decoder direction (through the unembedding) and a
# *synthetic* maximiser — soft tokens optimised with Gumbel-softmax (64 positions, Adam, lr 0.1,
# τ = 1, entropy weight 0.01) to drive the latent up. Here we show the same panels for latents of the
# two SAEs picked at matched firing densities, so that the comparison is between like and like.

# %% tags=["parameters"]
profile = "offline"
device = "cpu"
k_values = None
kl_coeff = None
n_train_tokens = None
expansion = None
seeds = None
n_pairs = 3
synthetic_steps = None

# %%
import pandas as pd
from IPython.display import HTML, Markdown, display

from vsae import chapter, interp, plotting
from vsae.params import Param

ex, params, timer = chapter.start("08_features", globals(), {
    "n_pairs": Param(int, min=1, max=12, help="comparable latent pairs shown"),
    "synthetic_steps": Param(int, min=0, max=2000, optional=True,
                             help="steps of the synthetic maximiser (0 skips it; default: the profile's)"),
})
steps = ex.profile.synthetic_steps if synthetic_steps is None else synthetic_steps

# %%
k_show = ex.showcase_k()
va, vb = [v for v in ex.headline_variants() if v.k == k_show]
saes = ex.train([va, vb])
acts = ex.eval_acts
stats = {v.name: interp.latent_stats(saes[v.name], acts) for v in (va, vb)}
arch_of = {va.name: va.architecture, vb.name: vb.architecture}
pd.DataFrame({n: {"alive latents": int((s.n_fires > 0).sum()), "latents": len(s),
                  "median density of alive": s.loc[s.n_fires > 0, "density"].median(),
                  "mean activation when firing": s.loc[s.n_fires > 0, "mean_activation"].mean(),
                  "mean decoder norm": s["decoder_norm"].mean()} for n, s in stats.items()}).round(4)

# %%
plotting.setup()
fig = plotting.latent_summary(stats, arch_of)
plotting.savefig(fig, "latent_summary")

# %% [markdown]
# ## Comparable latents
#
# Pairs of latents, one from each SAE, with matched firing densities (log-spaced across the range both
# SAEs cover):

# %%
pairs = interp.comparable_latents(stats[va.name], stats[vb.name], n=n_pairs, seed=ex.profile.seed)
pairs.round(5)

# %%
reports = []
for _, p in pairs.iterrows():
    ra = interp.feature_report(va.name, saes[va.name], ex.lm, acts, int(p["latent_a"]), stats[va.name],
                               synthetic_steps=steps, seed=ex.profile.seed)
    rb = interp.feature_report(vb.name, saes[vb.name], ex.lm, acts, int(p["latent_b"]), stats[vb.name],
                               synthetic_steps=steps, seed=ex.profile.seed)
    reports.append((ra, rb))
print(f"{len(reports)} latent pairs analysed")

# %% [markdown]
# For each pair: the panels, then the top-activating evaluation contexts of each latent (the peak
# token boxed, each token shaded by the latent's activation) and the synthetic maximiser's text.

# %%
for i, (ra, rb) in enumerate(reports):
    display(Markdown(f"### Pair {i + 1}: {ra.sae} #{ra.latent} and {rb.sae} #{rb.latent}"))
    fig = plotting.feature_pair(ra, rb, va.architecture, vb.architecture)
    plotting.savefig(fig, f"feature_pair_{i + 1}")
    for r in (ra, rb):
        display(HTML(r.contexts_html))
        if r.synthetic is not None:
            display(Markdown(f"Synthetic maximiser of {r.sae} #{r.latent} (hard tokens, max activation "
                             f"{r.synthetic.max_activation:.3f}): `{r.synthetic.text[:200]!r}`"))

# %%
print(f"chapter 08 done in {timer.finish():.1f} s")
