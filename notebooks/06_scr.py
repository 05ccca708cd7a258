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
# # Spurious correlation removal
#
# SAE Bench's SCR: a linear probe is trained on data where a *target* label and a *spurious* label
# coincide (in SAE Bench, profession and gender), so it learns both. The latents most attributed to
# the spurious concept are zero-ablated (the SAE's error term is kept) and the biased probe is scored
# again on the target; the metric is the normalised recovery
#
# $$ S = \frac{A_{ablated} - A_{biased}}{A_{oracle} - A_{biased}}, $$
#
# with the oracle a probe trained on the target alone. *Direction 1* ablates latents attributed to the
# spurious label, *direction 2* those attributed to the target; SAE Bench's `scr_metric` picks the
# direction of the attribute the biased probe did not learn. Ablating $N \in \{2, 5, 10, 20, 50, 100, 500\}$ latents.
#
# ## The offline analogue
#
# The `offline` profile builds its pairs from metadata of the installed corpora. A pair only means
# something if the oracle clearly beats the biased probe on the scored attribute; each pair's check is
# shown below, and the aggregate averages the pairs that pass it.

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

from vsae import chapter, paper, plotting, stats, verdicts
from vsae.evals.scr_tpp import scr_saebench

ex, params, timer = chapter.start("06_scr", globals())

# %%
tasks = ex.tasks()
tasks[tasks.kind == "scr"][["task", "classes", "n_train", "n_test", "description"]]

# %%
variants = ex.ablation_variants()
scr = ex.scr(variants)
scr["run"] = paper.run_label(scr)
checks = scr[scr.pair != "ALL"].groupby("pair")[["target_probe_acc", "spurious_probe_acc", "biased_probe_acc",
                                                  "biased_on_target", "biased_on_spurious", "oracle_margin",
                                                  "margin_ok", "selected_dir"]].first()
checks.round(3)

# %% [markdown]
# ## Results
#
# As in the paper, the two largest $k$ (the paper: 256 and 512). Two aggregations over the pairs:
#
# * **SAE Bench's** (the rule behind the paper's numbers): every pair counts; a direction whose
#   denominator $A_{oracle} - A_{biased}$ is below 0.001 scores $S = 0$; the direction is the one whose
#   biased accuracy is lower (their mean on a tie). This is the one set beside the paper.
# * **Valid pairs only** (this book's stricter reading): pairs whose oracle does not beat the biased
#   probe by 0.05 are dropped, since their $S$ divides by a near-zero margin.
#
# SCR metric against $N$ under SAE Bench's aggregation, mean ± 95% t-interval over the SAE seeds:

# %% tags=["nbval-check-output"]
scr_sb = scr_saebench(scr)
scr_sb_all = scr_sb[scr_sb.pair == "ALL"]
stats.ci_table(scr_sb_all, "n", "run", "scr_metric")

# %% [markdown]
# Over the valid pairs only:

# %%
scr_all = scr[scr.pair == "ALL"]
stats.ci_table(scr_all, "n", "run", "scr_metric")

# %% [markdown]
# The paper's table (Pythia-70M, Bias in Bios and Amazon reviews):

# %%
ps = paper.paper_results("scr")
ps["sae"] = paper.run_label(ps, "k")
ps.pivot(index="n_ablated", columns="sae", values="value").round(4)

# %% [markdown]
# ## Figure
#
# For each of the two largest $k$: the SCR metric and both directions against $N$ under SAE Bench's
# aggregation, then a heatmap of the metric (seed means; error bars: 95% t-intervals; dotted open
# markers: the paper's values; values off the axis are marked with arrows).


# %%
plotting.setup()
fig = plotting.scr_1x4(scr_sb_all, paper=ps)
plotting.savefig(fig, "scr")

# %% [markdown]
# Per pair (both directions), for every SAE configuration (mean over seeds):

# %%
scr[scr.pair != "ALL"].pivot_table(index=["pair", "n"], columns="run", values=["scr_dir1", "scr_dir2"]).round(3)

# %% [markdown]
# The paper's SCR claim, per $k$ (the verdict engine of chapter 10: best SCR metric over $N$ of each
# seed, SAE Bench's aggregation, 95% Welch interval of the vSAE − TopK difference):

# %%
core = ex.core(variants)["metrics"]
runs = verdicts.run_table(core, scr=scr_sb_all)
theirs = verdicts.run_table(**paper.run_tables())
verdicts.claims_by_k(runs, theirs, keys=["scr"])

# %%
print(f"chapter 06 done in {timer.finish():.1f} s")
