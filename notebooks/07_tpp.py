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
# # Targeted probe perturbation
#
# SAE Bench's TPP: for each class $i$ of a multi-class dataset, a one-vs-rest probe is trained on the
# residual stream; the $N$ latents most attributed to class $i$ are zero-ablated (error term kept). A
# disentangled SAE hurts probe $i$ (*intended* drop) and leaves the other probes alone (*unintended*
# drop, averaged over $j \neq i$):
#
# $$ \mathrm{TPP} = \mathbb E_i \big[ \Delta A_{i,i} \big] - \mathbb E_i \mathbb E_{j \ne i} \big[ \Delta A_{j,i} \big]. $$
#
# The `offline` profile's classes are the sources of a passage (speeches before and after 1900, the
# novel, ham and spam emails, documentation):

# %% tags=["parameters"]
profile = "offline"
device = "cpu"
k_values = None
kl_coeff = None
n_train_tokens = None
expansion = None
seed = None

# %%
import pandas as pd
from IPython.display import Markdown, display

from vsae import chapter, paper, plotting

ex, params, timer = chapter.start("07_tpp", globals())

# %%
tasks = ex.tasks()
tasks[tasks.kind == "tpp"][["task", "classes", "n_train", "n_test", "description"]]

# %%
variants = [v for v in ex.headline_variants() if v.model_cfg.k in sorted(ex.profile.k_values)[-2:]]
tpp = ex.tpp(variants)
tpp_all = tpp[(tpp.dataset == "ALL") & (tpp["class"] == "ALL")]

# %% [markdown]
# ## Results
#
# Total, intended and unintended effects against the number of ablated latents $N$, for the two
# largest $k$ (the paper: 256 and 512):

# %% tags=["nbval-check-output"]
table = tpp_all.pivot_table(index="n", columns="sae", values=["tpp_total", "tpp_intended", "tpp_unintended"])
table = table.reorder_levels([1, 0], axis=1)[[(v.name, m) for v in variants for m in ("tpp_total", "tpp_intended", "tpp_unintended")]]
table.round(4)

# %% [markdown]
# The paper's table (Pythia-70M):

# %%
pt = paper.paper_results("tpp")
pt["sae"] = pt.architecture.map(paper.ARCH_LABEL) + " k=" + pt.k.astype(str)
pt.pivot_table(index="n_ablated", columns=["sae", "metric"], values="value").round(4)

# %% [markdown]
# ## Figure
#
# TPP total, intended (solid) against unintended (dashed) effects, selectivity (intended over
# unintended) and a heatmap of the total; dotted open markers are the paper's totals.

# %%
plotting.setup()
fig = plotting.tpp_1x4(tpp_all, paper=pt)
plotting.savefig(fig, "tpp")

# %% [markdown]
# Per class, at N = 20:

# %%
n_show = 20 if 20 in set(tpp["n"]) else sorted(tpp["n"].unique())[len(tpp["n"].unique()) // 2]
tpp[(tpp["class"] != "ALL") & (tpp.dataset != "ALL") & (tpp.n == n_show)].pivot_table(
    index="class", columns="sae", values="tpp_total").round(3)

# %%
u = tpp_all.groupby(["architecture", "n"])["tpp_unintended"].mean().unstack(0)
small = [n for n in u.index if n <= 20]
ratio = (u.loc[small, "topk"] / u.loc[small, "vsae"].where(u.loc[small, "vsae"].abs() > 1e-9)).mean()
pu = pt[(pt.metric == "tpp_unintended") & (pt.n_ablated <= 20)].groupby("architecture")["value"].mean()
display(Markdown(
    f"For N ≤ 20 the TopK SAEs' unintended effect is on average {ratio:.1f}× the vSAE's here; in the paper it is "
    f"{pu['topk'] / pu['vsae']:.1f}× (mean over N ≤ 20 and k ∈ {{256, 512}})."))

# %%
print(f"chapter 07 done in {timer.finish():.1f} s")
