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
# # Post-training int8 quantization
# > Linear layers with int8 weights and dynamically quantized int8 activations (torchao).
#
# No calibration data and no retraining: `Int8DynamicActivationInt8WeightConfig` applied to
# the fine-tuned model.

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
records = study.run(["int8"])

# %% [markdown]
# ## Results
# Means with 95% confidence half-widths over the trials; skipped cells with their reason.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["int8"])

# %% [markdown]
# ## Checks
# Every window long enough and read, every metric present and within `metric_tolerance` of fp32.

# %%
study.check(records)
