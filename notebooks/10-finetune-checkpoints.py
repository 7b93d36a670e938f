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
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fine-tune task checkpoints
# > For hosts without task checkpoints: fine-tune `base_model` on each task's train split.
#
# Runs only when the profile sets `base_model`. Finished checkpoints in `checkpoints_dir` are
# reused, not retrained; the measurement notebooks then load them.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
shard: str = ""  # I/N: this host's share of the profile's tasks (effbert run --shard)

# %% [markdown]
# ## Setup
# The fine-tune settings of each task: the profile's `finetune` entry for the task, over its
# `default` entry, over `effbert.params.FinetuneSettings`.

# %%
from effbert import finetune

plan = finetune.FinetunePlan.from_profile(profile, reports_dir, shard)
plan.overview()

# %% [markdown]
# ## Measure
# Fine-tune each task that has train data (or reuse its checkpoint), then score it on dev.

# %%
reports = plan.run()

# %% [markdown]
# ## Results
# Each task's dev scores (every GLUE metric of the task) and the fine-tune's wall time.

# %%
finetune.scores_table(reports)

# %% [markdown]
# ## Checks
# Every fine-tuned checkpoint was saved and scored.

# %%
plan.check(reports)
