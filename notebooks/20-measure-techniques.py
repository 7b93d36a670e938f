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
# # Measure the techniques
# > Energy, throughput and task metric of each inference technique beside the fp32 baseline.
#
# The original study's techniques, at its setting (the profile's batch size and padding):
#
# | technique | what changes |
# |---|---|
# | `fp32` | nothing: the checkpoint as saved, eager attention. The reference. |
# | `int8` | the encoder's Linear layers get int8 weights and dynamically quantized int8 activations (torchao), no calibration. |
# | `autocast_fp16`, `autocast_bf16` | fp32 weights, matrix products in 16 bits under `torch.autocast`. |
# | `fp16` | the weights themselves cast to fp16. |
# | `flash` | SDPA restricted to its fused kernels (FlashAttention where inputs allow, else memory-efficient), fp32. |
# | `fp16_flash` | `fp16` and `flash` together. |
#
# A profile may compose more from the axes (precision + attention + execution, e.g.
# `bf16+flash+compile`); `python -m effbert params` lists them.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
force: bool = False  # re-measure cells that already have results
shard: str = ""  # I/N: this host's share of the profile's tasks (effbert run --shard)

# %% [markdown]
# ## Setup
# The profile's settings, checked and resolved; library warnings go to the log it names.

# %%
from effbert import plan, plots, stats, sweep, tables

study = plan.Plan.from_profile(profile, reports_dir, shard)
study.settings_table()

# %% [markdown]
# ## Measure
# Each cell: the model prepared and run once over every batch shape (compilation happens here,
# unmeasured), warmup, then `trials` windows of whole batches (whole passes where batch shapes
# differ); latency, the kernels that ran and the task metric come from passes of their own,
# outside the windows. Cells already on disk
# with the same inputs are read back, not measured again.

# %%
records = sweep.Sweep(study, force).run(study.cells(study.params.techniques))

# %% [markdown]
# ## Results
# Means with 95% half-widths over the trials; cells not measured, with the reason. The original
# study found int8 *raised* energy and fp16 with fused attention lowered it most.

# %%
tables.cell_summary(records)

# %%
tables.skipped(records)

# %%
techniques, baseline = study.params.techniques, study.params.baseline_technique
plots.compare(stats.summarize(study.recorded()), techniques, baseline)

# %% [markdown]
# ## Checks
# Windows long enough for the counter, energy read, every metric within `metric_tolerance` of
# the baseline.

# %%
study.check(records)
