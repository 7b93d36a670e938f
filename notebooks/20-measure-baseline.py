# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Baseline: fp32 DistilBERT
# > Energy, throughput and task metric of the unmodified fp32 model: the reference for every technique.
#
# Eager attention, fp32 weights and activations, inputs padded as the profile says.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
force: bool = False  # re-measure cells that already have results

# %% [markdown]
# ## Setup
# The baseline runs the checkpoint as saved: fp32 weights, eager attention, no autocast.

# %%
from effbert import bench

study = bench.Study.from_profile(profile, reports_dir, force)
study.settings_table()

# %% [markdown]
# ## Measure
# Every later notebook divides by these cells, so they are measured first: warmup, then `trials`
# windows of whole passes. Cells already on disk with the same configuration are read back.

# %%
records = study.run(["fp32"])

# %% [markdown]
# ## Results
# Energy per 1000 samples and throughput, each with its 95% interval over the trials; the task
# metric of fp32 is the reference the other techniques must stay near.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["fp32"])

# %% [markdown]
# ## Checks
# Windows long enough for the counter, energy read, every task's metric present.

# %%
study.check(records)
