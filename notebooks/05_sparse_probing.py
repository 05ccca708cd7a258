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
# # Sparse probing
#
# SAE Bench's sparse probing asks whether single latents carry the concepts a linear probe finds in
# the residual stream. Each text is mean-pooled over its (at most 128) tokens — the residual itself for
# the LLM baseline, each token's SAE code for the SAE — and for every binary task the $k$ latents with
# the largest class-mean difference on the training split feed a logistic regression; we report test
# accuracy for $k \in \{1, 2, 5\}$ and for all latents, and *preservation* = SAE accuracy / LLM accuracy.
#
# ## The tasks
#
# The paper uses SAE Bench's datasets (Bias in Bios, Amazon reviews, GitHub code, AG News, Europarl),
# which need the Hugging Face Hub. The `offline` profile builds binary tasks from text installed by
# package name; each is split into train and test by *document*, so no speech, chapter or email
# contributes to both:

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
from vsae.evals.probing import summarise_sparse_probing

ex, params, timer = chapter.start("05_sparse_probing", globals())

# %%
tasks = ex.tasks()
tasks[tasks.kind == "probing"][["task", "classes", "n_train", "n_test", "description"]]

# %% [markdown]
# ## Results
#
# Mean ± 95% t-interval over the profile's SAE seeds (the tasks, their splits and the LLM baseline are
# the same for every seed):

# %%
variants = ex.seed_variants()
probing = ex.sparse_probing(variants)
summary = summarise_sparse_probing(probing)
summary = summary.merge(probing[["sae", "architecture", "sae_k", "seed"]].drop_duplicates(), on="sae")
summary = summary.rename(columns={f"preservation_top_{k}": f"top_{k}_preservation" for k in (1, 2, 5)})
summary["run"] = paper.run_label(summary)
cols = ["sae_test_accuracy", "preservation", "sae_top_1_test_accuracy", "top_1_preservation",
        "sae_top_2_test_accuracy", "top_2_preservation", "sae_top_5_test_accuracy", "top_5_preservation"]

# %% tags=["nbval-check-output"]
stats.runs_ci_table(summary, "run", cols)

# %% [markdown]
# The paper's table (Pythia-70M, SAE Bench datasets), from `data/paper_results.csv`:

# %%
pp = paper.paper_results("sparse_probing")
pp["sae"] = paper.run_label(pp, "k")
pp.pivot(index="metric", columns="sae", values="value").loc[cols].round(4)

# %% [markdown]
# The residual-stream (LLM) baseline on our tasks, per task:

# %%
llm = ex.llm_probe_baseline
llm.assign(k=llm["k"].astype("Int64")).pivot_table(index="task", columns="k", values="llm_accuracy", dropna=False).round(3)

# %% [markdown]
# ## Figure
#
# The paper's 2×2 figure: SAE against LLM accuracy, mean preservation per architecture, top-$k$
# accuracy against the number of latents, and the accuracy lost against the SAE's $k$ (seed means;
# error bars: 95% t-intervals; open markers on dashed lines: the paper's values).

# %%
plotting.setup()
fig = plotting.probing_2x2(summary, paper=paper.paper_results("sparse_probing"))
plotting.savefig(fig, "sparse_probing")

# %% [markdown]
# Per task, top-1 accuracy (a single latent) for each SAE (mean over seeds):

# %%
top1 = probing[(probing.dataset != "ALL") & (probing.k == 1)]
top1 = top1.assign(run=paper.run_label)
top1.pivot_table(index="task", columns="run", values="accuracy")[list(summary.run.unique())].round(3)

# %% [markdown]
# The paper's probing claims, per $k$ (the verdict engine of chapter 10: 95% Welch interval of the
# vSAE − TopK difference over seeds; "comparable" means within ±0.03 accuracy):

# %% tags=["nbval-check-output"]
core = ex.core(variants)["metrics"]
runs = verdicts.run_table(core, summary)
probe_claims = verdicts.claims_by_k(runs, verdicts.run_table(**paper.run_tables()), keys=["probe", "probe1"])
probe_claims

# %%
display(Markdown(verdicts.summarise(probe_claims)))

# %%
print(f"chapter 05 done in {timer.finish():.1f} s")
