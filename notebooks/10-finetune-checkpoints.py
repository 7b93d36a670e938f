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
# # Fine-tune task checkpoints
# > For hosts without task checkpoints: fine-tune `base_model` on each task's train split.
#
# Runs only when the profile sets `base_model`. Finished checkpoints in `checkpoints_dir` are
# reused, not retrained; the measurement notebooks then load them.

# %% tags=["parameters"]
profile: str = "smoke"  # name recorded with every result
reports_dir: str = "reports"  # results, figures and reports go here (set by the runner)
device: str = "auto"  # auto (first GPU, else CPU), cpu or cuda:N
tasks: list = ["sst2", "mrpc", "stsb", "mnli_m"]  # GLUE tasks, see effbert.tasks.TASKS
on_missing_task: str = "error"  # error, or skip tasks whose data or checkpoint is missing
data_source: str = "synthetic"  # hub (nyu-mll/glue), local (glue_data folder) or synthetic
glue_dir: str = ""  # the glue_data folder, for data_source local
max_samples: int = 32  # rows per task (0: the whole split)
seed: int = 0  # seed of synthetic data, tiny models and fine-tuning
base_model: str = ""  # Hub id or local folder of a base DistilBERT ("" skips this notebook)
checkpoints_dir: str = ""  # where fine-tuned checkpoints go, one folder per task
finetune_epochs: dict = {"default": 3}  # task (or default) -> epochs
finetune_lr: dict = {"default": 3e-5}  # task (or default) -> peak learning rate
finetune_batch_size: dict = {"default": 32}  # task (or default) -> sequences per step
finetune_seed: dict = {}  # task (or default) -> seed of the fine-tune (default: seed)
finetune_max_train_samples: int = 0  # rows of each train split (0: all)

# %% [markdown]
# ## Setup

# %%
from effbert import finetune

plan = finetune.Plan.from_namespace(globals())
plan.overview()

# %% [markdown]
# ## Measure
# Fine-tune each task that has train data (or reuse its checkpoint), then score it on dev.

# %%
reports = plan.run()

# %% [markdown]
# ## Results

# %%
reports

# %% [markdown]
# ## Checks
# Every fine-tuned checkpoint was saved and scored.

# %%
assert not base_model or not reports.empty, "base_model is set but no task could be fine-tuned"
assert reports.empty or reports["dev_metric"].notna().all()
