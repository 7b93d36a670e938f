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
# # Fused attention (SDPA)
# > PyTorch scaled-dot-product attention restricted to its fused kernels, in fp32.
#
# SDPA may use its FlashAttention kernel only for fp16/bf16 inputs without a padding mask;
# otherwise the memory-efficient fused kernel runs. The math fallback is disabled.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
force: bool = False  # re-measure cells that already have results

# %% [markdown]
# ## Setup
# Only the attention kernel changes here: weights stay fp32.

# %%
from effbert import bench

study = bench.Study.from_profile(profile, reports_dir, force)
study.settings_table()

# %% [markdown]
# ## Measure
# With a padding mask and fp32 inputs, SDPA's memory-efficient kernel is the fused one that can
# run; FlashAttention itself needs fp16 or bf16 (notebook 60).

# %%
records = study.run(["flash"])

# %% [markdown]
# ## Results
# Attention is a small share of DistilBERT's work at 128 tokens: expect a ratio near 1.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["flash"])

# %% [markdown]
# ## Checks
# A fused kernel computes the same attention: metrics should match fp32 closely.

# %%
study.check(records)
