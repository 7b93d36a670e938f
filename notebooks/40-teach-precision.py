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
# # Precision
# > 16-bit weights, autocast and TF32: the same model in fewer bits.
#
# Energy is measured in one sweep (notebooks 20 and 25), so every technique takes its windows in
# the same interleaved rounds; this notebook shows how the family works, checks it on a few
# unmeasured batches, and reads the family's records from that sweep.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
shard: str = ""  # I/N: this host's share of the profile's tasks (effbert run --shard)

# %% [markdown]
# ## Setup
# The profile's first task and checkpoint; which of the family's techniques run on this device.

# %%
from IPython.display import display

from effbert import lesson, plan

study = plan.Plan.from_profile(profile, reports_dir, shard)
family = lesson.Family(study, "precision")
family.support()

# %% [markdown]
# ## What it changes
# `autocast_*` keeps fp32 weights and runs matrix products in 16 bits under `torch.autocast`;
# `fp16` and `bf16` cast the weights themselves (no per-call casts); `tf32` lets fp32 matrix
# products use TF32 tensor cores.

# %%
for code in family.code():
    display(code)

# %% [markdown]
# ## The model before and after
# The outer module, whether compiled, and an encoder layer's query projection: its class, its
# weight's type and the dtype its values are stored in.

# %%
family.models_table()

# %% [markdown]
# ## The kernels that ran
# Two batches of the first task, unmeasured, under the profiler: CUDA kernels on a GPU, where
# the attention family is read from their names and checked against the technique's promise;
# operators on a CPU.

# %%
family.kernels_table()

# %% [markdown]
# ## Numerical effect
# Each technique's outputs against fp32's on the same rows.

# %%
family.numerical_effect()

# %% [markdown]
# ## Records
# The family's cells measured by notebooks 20 and 25, beside the baseline at the same task,
# batch size and padding (energy ratio with its 95% interval where energy was measured, else
# throughput), and what they say.

# %%
family.records()

# %%
family.figure()

# %%
family.sentences()

# %% [markdown]
# ## Checks
# Every technique that ran gave finite outputs.

# %%
family.check()
