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
# torchao's int8 kernels need a GPU of compute capability 8.0 or newer, or a CPU.

# %%
from effbert import bench

study = bench.Study.from_profile(profile, reports_dir, force)
study.settings_table()

# %% [markdown]
# ## Measure
# Quantization happens once per cell, before warmup; its cost is outside the energy windows.
# Dynamic quantization adds a quantize step per Linear per batch: that is inside them.

# %%
records = study.run(["int8"])

# %% [markdown]
# ## Results
# The original study found int8 *raised* energy. Compare with fp32 on the same task: the ratio,
# and whether the metric moved.

# %%
study.summary(records)

# %%
study.skipped(records)

# %%
study.figure(["int8"])

# %% [markdown]
# ## Checks
# Each metric within `metric_tolerance` of fp32: int8 rounding may cost a point on small tasks.

# %%
study.check(records)
