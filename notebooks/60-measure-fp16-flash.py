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
# # fp16 with fused attention
# > fp16 weights with SDPA's fused attention kernels: the study's combined technique.
#
# The combination of `fp16` (40) and fused attention (50).

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
force: bool = False  # re-measure cells that already have results

# %% [markdown]
# ## Setup
# The combined technique: fp16 weights (40) with SDPA's fused kernels (50); needs a CUDA GPU.

# %%
from effbert import bench

study = bench.Study.from_profile(profile, reports_dir, force)
study.settings_table()

# %% [markdown]
# ## Measure
# fp16 inputs let SDPA pick FlashAttention where the mask allows it.

# %%
records = study.run(["fp16_flash"])

# %% [markdown]
# ## Results
# If the two effects were independent, this ratio would be the product of the fp16 and fused
# attention ratios.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["fp16_flash"])

# %% [markdown]
# ## Checks
# Same tolerance as every technique: within `metric_tolerance` of fp32.

# %%
study.check(records)
