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

from vsae import chapter, paper, plotting, stats, verdicts
from vsae.evals.scr_tpp import tpp_unintended_ratio

ex, params, timer = chapter.start("07_tpp", globals())

# %%
tasks = ex.tasks()
tasks[tasks.kind == "tpp"][["task", "classes", "n_train", "n_test", "description"]]

# %%
variants = ex.ablation_variants()
tpp = ex.tpp(variants)
tpp["run"] = paper.run_label(tpp)
tpp_all = tpp[(tpp.dataset == "ALL") & (tpp["class"] == "ALL")]

# %% [markdown]
# ## Results
#
# Total, intended and unintended effects against the number of ablated latents $N$, for the two
# largest $k$ (the paper: 256 and 512); mean ± 95% t-interval over the SAE seeds:

# %% tags=["nbval-check-output"]
stats.runs_ci_table(tpp_all, ["run", "n"], ["tpp_total", "tpp_intended", "tpp_unintended"])

# %% [markdown]
# The paper's table (Pythia-70M):

# %%
pt = paper.paper_results("tpp")
pt["sae"] = paper.run_label(pt, "k")
pt.pivot_table(index="n_ablated", columns=["sae", "metric"], values="value").round(4)

# %% [markdown]
# ## Figure
#
# For each of the two largest $k$: TPP total, intended (solid) against unintended (dashed) effects and
# selectivity, the share of the accuracy drop that falls on the targeted class,
# intended / (|intended| + |unintended|) (0.5: no selectivity); below, a heatmap of the total. Seed
# means with 95% t-interval error bars; dotted open markers are the paper's values.

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

# %% [markdown]
# ## The paper's claims, per k
#
# The unintended-effect ratio computed the paper's way on both sides: mean TopK unintended effect over
# $N \le 20$ divided by the vSAE's (a ratio of means), for each $k$ and over both. The verdicts come from
# the engine of chapter 10 (per-seed values, 95% Welch interval of vSAE − TopK).

# %%
pt_k = pt.rename(columns={"n_ablated": "n"}).pivot_table(index=["architecture", "k", "n"], columns="metric",
                                                          values="value").reset_index()
ours_k = tpp_all.assign(k=tpp_all.sae_k)
ks = sorted(ours_k.k.unique())
pd.DataFrame([{"k": str(k) if k is not None else "both", "ours": tpp_unintended_ratio(ours_k, ks=None if k is None else [k]),
               "paper": tpp_unintended_ratio(pt_k, ks=None if k is None else [k])} for k in ks + [None]]
             ).set_index("k").round(2).rename(columns={"ours": f"ours ({ex.profile.name})", "paper": "paper (Pythia-70M)"})

# %% tags=["nbval-check-output"]
core = ex.core(variants)["metrics"]
runs = verdicts.run_table(core, tpp=tpp_all)
theirs = verdicts.run_table(**paper.run_tables())
tpp_claims = verdicts.claims_by_k(runs, theirs, keys=["tpp_u", "tpp_t"])
tpp_claims

# %%
display(Markdown(verdicts.summarise(tpp_claims)))

# %%
print(f"chapter 07 done in {timer.finish():.1f} s")
