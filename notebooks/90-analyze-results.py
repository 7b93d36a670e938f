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
# # Analyze the results
# > Which techniques make DistilBERT cheaper in energy, and at what cost in accuracy.
#
# Reads only the records the measurement notebooks wrote; it never touches the GPU, so it
# re-runs anywhere in seconds.

# %% tags=["parameters"]
profile: str = "smoke"  # a profile in params/ (or a .yaml path) whose records are analyzed
reports_dir: str = "reports"  # results, figures and reports go here

# %% [markdown]
# ## Setup
# The profile's records: where and with what they were measured.

# %%
from effbert import config, figures, profiles, results, stats, tables

settings = profiles.load(profile, inputs=False)
baseline_technique = settings.baseline_technique
paths = config.reports_paths(reports_dir)
trials = results.read_results(paths["results"], settings.profile)
summary = stats.summarize(trials)
tables.provenance_sheet(trials)

# %% [markdown]
# ## Results
# One row per cell: means with 95% confidence half-widths over the trials.

# %%
from IPython.display import Markdown

Markdown(tables.comparison_markdown(summary))

# %%
saved = figures.save_all(summary, paths["figures"], baseline_technique)
[str(p.relative_to(paths["root"])) for p in saved]

# %%
from IPython.display import Image, display

for path in saved:
    display(Image(filename=str(path)))

# %% [markdown]
# Cells flagged for trial-to-trial variation above `max_cv`, and cells that were skipped:

# %%
summary[summary["cv_flag"]][["task", "technique", "batch_size"]]

# %%
trials[trials["status"] == "skipped"][["task", "technique", "reason"]].drop_duplicates()

# %% [markdown]
# ## The original study's claims
# Each claim judged from the records, task by task, with the rules stated under the table.

# %%
Markdown(tables.claims_markdown(trials))

# %% [markdown]
# ## Conclusion
# Written from the records above, not by hand: each finding with its numbers and the cells
# (ids in `results/cells/`) it comes from.

# %%
Markdown(tables.findings(summary, baseline_technique))

# %% [markdown]
# ## Checks

# %%
assert all(p.exists() and p.stat().st_size > 0 for p in saved)
assert not summary.empty, f"no measured cell in profile {profile}"
