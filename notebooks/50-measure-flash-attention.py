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
profile: str = "smoke"  # name recorded with every result
reports_dir: str = "reports"  # results, figures and reports go here (set by the runner)
device: str = "auto"  # auto (first GPU, else CPU), cpu or cuda:N
tasks: list = ["sst2", "mrpc", "stsb", "mnli_m"]  # GLUE tasks, see effbert.tasks.TASKS
on_missing_task: str = "error"  # error, or skip tasks whose data or checkpoint is missing
data_source: str = "synthetic"  # hub (nyu-mll/glue), local (glue_data folder) or synthetic
glue_dir: str = ""  # the glue_data folder, for data_source local
max_samples: int = 32  # rows per task (0: the whole split)
seed: int = 0  # seed of synthetic data, tiny models and fine-tuning
force: bool = False  # re-measure cells that already have results (set by the runner)
energy: str = "auto"  # energy meter: auto (NVML on a GPU, RAPL on a CPU), nvml, rapl or none
model: str = "tiny-random"  # checkpoint for tasks without their own (tiny-random: no download)
checkpoints: dict = {}  # task -> Hub id or local folder
checkpoints_dir: str = ""  # fine-tuned checkpoints, one folder per task (10-finetune)
label_maps: dict = {}  # task -> GLUE label names in the checkpoint's output order
techniques: list = ["fp32", "int8", "autocast_fp16", "autocast_bf16", "fp16", "flash", "fp16_flash"]
batch_sizes: list = [16]  # sequences per forward pass
padding: str = "max_length"  # max_length (pad to max_length), longest or bucketed
max_length: int = 128  # tokens per input after truncation
warmup_s: float = 3.0  # unmeasured passes first, at least this long
trials: int = 5  # measured windows per cell
min_window_s: float = 2.0  # each window repeats full passes at least this long
max_cv: float = 0.05  # flag cells whose trials vary more than this (coefficient of variation)
idle_s: float = 3.0  # seconds of idle power measurement per run (0: skip)
latency_batches: int = 50  # batches timed for latency percentiles
carbon_intensity_g_per_kwh: float = 475.0  # grid intensity (IEA world average, 2019)
metrics_backend: str = "auto"  # auto (evaluate where it loads), evaluate or sklearn
metric_tolerance: float = 0.02  # largest metric difference from fp32 the checks accept

# %% [markdown]
# ## Setup
# The profile's parameters become one `Study`; its energy meter says what measures energy here.

# %%
from effbert import bench, plots, results

study = bench.Study.from_namespace(globals())
study.meter.source, study.meter.reason

# %% [markdown]
# ## Measure
# Each cell: warmup, then `trials` windows of whole passes over the task's batches. Cells already
# measured with the same configuration are read back, not measured again.

# %%
trials = study.run(["flash"])

# %% [markdown]
# ## Results

# %%
summary = results.summarize(trials)
summary.filter(
    regex="task|technique|batch_size|samples_per_s_|j_per_1k_samples_|metric_value|cv_flag"
)

# %%
trials[trials["status"] == "skipped"][["task", "technique", "reason"]]

# %%
plots.compare(results.summarize(results.read_results(study.paths["results"], profile)), ["flash"])
# %% [markdown]
# ## Checks
# Every window long enough and read, every metric present and within `metric_tolerance` of fp32.

# %%
study.check(trials)
