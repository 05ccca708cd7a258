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
seeds = None

# %%
import pandas as pd
from IPython.display import Markdown, display

from vsae import chapter, paper, plotting, stats

ex, params, timer = chapter.start("07_tpp", globals())

# %%
tasks = ex.tasks()
tasks[tasks.kind == "tpp"][["task", "classes", "n_train", "n_test", "description"]]

# %%
variants = [v for v in ex.seed_variants() if v.model_cfg.k in sorted(ex.profile.k_values)[-2:]]
tpp = ex.tpp(variants)
tpp["run"] = tpp.architecture.map(paper.ARCH_LABEL) + " k=" + tpp.sae_k.astype(str)
tpp_all = tpp[(tpp.dataset == "ALL") & (tpp["class"] == "ALL")]

# %% [markdown]
# ## Results
#
# Total, intended and unintended effects against the number of ablated latents $N$, for the two
# largest $k$ (the paper: 256 and 512); mean ± 95% t-interval over the SAE seeds:

# %% tags=["nbval-check-output"]
pd.concat({m: stats.ci_table(tpp_all, "n", "run", m) for m in ("tpp_total", "tpp_intended", "tpp_unintended")},
          axis=1).reorder_levels([1, 0], axis=1).sort_index(axis=1, level=0, sort_remaining=False)

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
# unintended) and a heatmap of the total (seed means; shaded: 95% t-intervals); dotted open markers
# are the paper's totals.

# %%
plotting.setup()
fig = plotting.tpp_1x4(tpp_all, paper=pt)
plotting.savefig(fig, "tpp")

# %% [markdown]
# Per class, at N = 20 (mean over seeds):

# %%
n_show = 20 if 20 in set(tpp["n"]) else sorted(tpp["n"].unique())[len(tpp["n"].unique()) // 2]
tpp[(tpp["class"] != "ALL") & (tpp.dataset != "ALL") & (tpp.n == n_show)].pivot_table(
    index="class", columns="run", values="tpp_total").round(3)

# %%
u = tpp_all.groupby(["architecture", "n"])["tpp_unintended"].mean().unstack(0)
small = [n for n in u.index if n <= 20]
ratio = (u.loc[small, "topk"] / u.loc[small, "vsae"].where(u.loc[small, "vsae"].abs() > 1e-9)).mean()
pu = pt[(pt.metric == "tpp_unintended") & (pt.n_ablated <= 20)].groupby("architecture")["value"].mean()
# per seed: mean unintended effect over N <= 20 and both k
per_seed = tpp_all[tpp_all.n <= 20].groupby(["architecture", "seed"])["tpp_unintended"].mean()
ci = {a: stats.fmt(*stats.t_interval(per_seed[a])[:2], digits=4) for a in ("topk", "vsae")}
display(Markdown(
    f"For N ≤ 20 the TopK SAEs' unintended effect is on average {ratio:.1f}× the vSAE's here; in the paper it is "
    f"{pu['topk'] / pu['vsae']:.1f}× (mean over N ≤ 20 and k ∈ {{256, 512}}). Per seed, the mean unintended effect is "
    f"TopK {ci['topk']} and vSAE {ci['vsae']} (95% intervals): "
    f"{'the seeds separate them' if stats.interval_separated(per_seed['topk'], per_seed['vsae']) else 'the seed spread does not separate them'}."))

# %%
print(f"chapter 07 done in {timer.finish():.1f} s")
