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
# The profile's settings, checked and resolved (`python -m effbert params` explains each one).

# %%
from effbert import bench

study = bench.Study.from_profile(profile, reports_dir, force)
study.settings_table()

# %% [markdown]
# ## Measure
# Each cell: warmup, then `trials` windows of whole passes over the task's batches. Cells already
# measured with the same configuration are read back, not measured again.

# %%
records = study.run(["autocast_fp16", "autocast_bf16", "fp16"])

# %% [markdown]
# ## Results
# Means with 95% confidence half-widths over the trials; skipped cells with their reason.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["autocast_fp16", "autocast_bf16", "fp16"])

# %% [markdown]
# ## Checks
# Every window long enough and read, every metric present and within `metric_tolerance` of fp32.

# %%
study.check(records)
