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
# # Mixed precision: autocast and fp16 weights
# > fp16 and bf16 autocast over fp32 weights, and the whole model cast to fp16.
#
# Autocast keeps fp32 weights and runs matrix products in 16 bits; `fp16` casts the weights
# themselves. fp16 needs a CUDA GPU; bf16 autocast also runs on CPUs.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
force: bool = False  # re-measure cells that already have results

# %% [markdown]
# ## Setup
# `autocast_fp16` and `fp16` need a CUDA GPU; on a CPU they are recorded as skipped, with why.

# %%
from effbert import bench

study = bench.Study.from_profile(profile, reports_dir, force)
study.settings_table()

# %% [markdown]
# ## Measure
# Three techniques, one cell each per task: autocast keeps fp32 weights and casts per operation,
# `fp16` casts the weights once.

# %%
records = study.run(["autocast_fp16", "autocast_bf16", "fp16"])

# %% [markdown]
# ## Results
# Autocast pays a cast per matrix product; fp16 weights do not. The gap between the two is the
# price of keeping fp32 master weights at inference.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["autocast_fp16", "autocast_bf16", "fp16"])

# %% [markdown]
# ## Checks
# 16-bit rounding must leave each metric within `metric_tolerance` of fp32.

# %%
study.check(records)
