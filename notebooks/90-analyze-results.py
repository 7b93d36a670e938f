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
# # Analyze the results
# > The answer first: per task the original configuration beside the best one measured, then the original study's claims judged, then every cell, the method and the provenance.
#
# Reads only the records the measurement notebooks wrote; it never touches the GPU, so it
# re-runs anywhere in seconds.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path) whose records are analyzed
reports_dir: str = "reports"  # results, figures and reports go here

# %% [markdown]
# ## Setup

# %%
from IPython.display import Image, Markdown, display

from effbert import config, figures, profiles, report, results, runs, stats, tables

settings = profiles.load(profile, inputs=False)
paths = config.reports_paths(reports_dir)
trials = results.read_results(paths["results"], settings.profile)
summary = stats.summarize(trials)
saved = figures.save_all(summary, paths["figures"], settings.baseline_technique)

# %% [markdown]
# ## The answer
# Per task: the original study's configuration (fp32, batch 16, every input padded to 128) and
# the cheapest cell measured whose metric drops by at most 0.005, in total and above the GPU's
# idle power. Where a runner-up's interval overlaps the best's, the table calls it a tie.

# %%
Markdown(tables.headline_markdown(summary))

# %% [markdown]
# In one sentence, for the first task (SST-2 where measured), with the cells from the original
# to the cheapest:

# %%
Markdown(report.answer_markdown(paths["root"], settings.profile))

# %% [markdown]
# The same, one lever at a time, where the records hold the waterfall's cells:

# %%
figures.waterfall(summary)

# %% [markdown]
# ## The original study's claims
# Each claim's verdict in a line (pooled where several tasks have its cells), then every test:

# %%
Markdown(report.claims_lines(paths["root"], settings.profile))

# %%
Markdown(tables.claims_markdown(trials))

# %% [markdown]
# ## Every cell
# One row per cell: means with 95% half-widths over the trials, beside the baseline.

# %%
Markdown(tables.comparison_markdown(summary))

# %%
for path in saved:
    display(Image(filename=str(path)))

# %% [markdown]
# Cells flagged for trial-to-trial variation above `max_cv`, and cells that were skipped:

# %%
summary[summary["cv_flag"].fillna(False).astype(bool)][["task", "technique", "batch_size"]]

# %%
trials[trials["status"] == "skipped"][["task", "technique", "reason"]].drop_duplicates()

# %% [markdown]
# Written from the records: each technique at the setting with the most techniques.

# %%
Markdown(tables.findings(summary, settings.baseline_technique))

# %% [markdown]
# ## How the windows were measured
# Carry-over: a window's power deviation from its cell's mean against the power of the window
# before it (another cell's, in interleaved rounds). A slope near 0 means independent windows;
# the pre-roll before each window (`preroll_s`) and balanced rounds are there to make it so.
# Beside it, the run in `compare_with` where the profile sets one. For the study that is
# `reports/study-2gpu`: a November run of the method before (effbert 849b8bc: random order, no
# pre-roll, 1-s windows) on two GPUs of a host another run shared, so host load differs too.

# %%
Markdown(report.carry_over_markdown(trials, settings.compare_with))

# %% [markdown]
# Run to run: the same configurations measured in another run (`compare_with`), energy per
# sample here over there; "differ" where the interval excludes 1. The intervals elsewhere on
# this page are within one run: a ratio of two cells of one run is what they support.

# %%
Markdown(report.agreement_markdown(trials, settings.compare_with))

# %% [markdown]
# ## Provenance and GPU time

# %%
tables.provenance_sheet(trials)

# %%
Markdown(runs.time_markdown(paths["root"], settings.profile) or "No whole run is recorded.")

# %% [markdown]
# ## Checks

# %%
assert all(p.exists() and p.stat().st_size > 0 for p in saved)
assert not summary.empty, f"no measured cell in profile {profile}"
