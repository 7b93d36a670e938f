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
# # The energy frontier
# > Batch size, padding, compilation and precision together: how low can energy per sample go?
#
# The cells are the profile's `combinations` (technique, batch size, padding), e.g. the original
# configuration beside candidates for the floor (`params/floor.yaml`). A profile without
# combinations measures nothing here.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path): every setting comes from it
reports_dir: str = "reports"  # results, figures and reports go here
force: bool = False  # re-measure cells that already have results
shard: str = ""  # I/N: this host's share of the profile's tasks (effbert run --shard)

# %% [markdown]
# ## Setup

# %%
from effbert import figures, plan, stats, sweep, tables

frontier = plan.Plan.from_profile(profile, reports_dir, shard)

# %% [markdown]
# ## Measure
# Compilation and autotuning happen in an unmeasured first pass over every batch shape; its time
# is recorded as `prepare_s`, with the peak GPU memory and the kernels that ran.

# %%
cells = sweep.Sweep(frontier, force).run(frontier.cells(combinations=True))

# %% [markdown]
# ## Results
# Energy per sample in total and above idle (`dynamic_`), latency, and whether a requested kernel
# silently fell back (a `fallback` column, shown only where some cell's did).

# %%
summary = stats.summarize(cells)
shown = summary.filter(
    regex="^(task|technique|batch_size|padding|fallback|prepare_s|peak_memory_mb|latency_p99_ms)$"
    "|^(j_per_1k_samples|dynamic_j_per_1k_samples|samples_per_s)_(mean|ci95)$|metric_value"
)
tables.with_intervals(shown.dropna(axis=1, how="all"))

# %%
figures.frontier(summary)

# %% [markdown]
# ## Checks
# Every window long enough and read; every metric within `metric_tolerance` of the baseline.

# %%
frontier.check(cells)
