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
# # Check the environment
# > What this machine offers the study: device, energy meter, libraries, data and checkpoints.
#
# Run first: it fails early, with the fix, where a later notebook would fail mid-sweep.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
shard: str = ""  # I/N: this host's share of the profile's tasks (effbert run --shard)

# %% [markdown]
# ## Setup
# The profile's settings, checked and resolved (`python -m effbert params` explains each one).

# %%
from effbert import plan, sweep

study = plan.Plan.from_profile(profile, reports_dir, shard)
study.settings_table()

# %% [markdown]
# ## Measure
# The device, its software, the energy meter and the device's idle power.

# %%
sweep.Sweep(study).environment().to_frame()

# %% [markdown]
# ## Results
# Each task's rows and checkpoint (`planned` where 10-finetune will train it), and which
# techniques can run on this device.

# %%
inputs = study.inputs()
inputs

# %%
study.technique_support()

# %% [markdown]
# ## Checks
# Every task can run, unless the profile says to skip those that cannot.

# %%
study.check_inputs(inputs)
