"""What a reader sees first: ``index.html``, the terminal's closing summary, ``summary`` tables,
and the account of a published run."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from effbert import carryover, claims, results, tables
from effbert import config as cfg
from effbert.stats import original_cell, run_agreement, summarize, waterfall
from effbert.tasks import TASKS, get_task

FORMATS = ("markdown", "csv", "json")


LANDING_FIGURES = ("waterfall", "tradeoff", "energy")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}.sub{color:#555;margin-top:0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}
.ok{color:#17692b}.failed,.interrupted{color:#b00020;font-weight:bold}.notrun{color:#777}
pre{white-space:pre-wrap;background:#fafafa;padding:.5rem;border:1px solid #eee}
"""


def profile_summary(reports_dir: str | Path, profile: str) -> pd.DataFrame | None:
    """The per-cell summary of a profile's records, or None where nothing was measured."""
    paths = cfg.reports_paths(reports_dir)
    if not (paths["results"] / results.RESULTS_CSV).exists() and not paths["cells"].is_dir():
        return None
    try:
        trials = results.read_results(paths["results"])
    except FileNotFoundError:
        return None  # a cells folder with no record yet
    summary = summarize(trials[trials["profile"] == profile])
    return None if summary.empty else summary


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return f'<div class="scroll">{frame.to_html(index=index, border=0, na_rep="")}</div>'


def _readable_summary(root: Path, profile: str) -> tuple[pd.DataFrame | None, str]:
    """``profile_summary``, or None and why the records cannot be read (a damaged record)."""
    try:
        return profile_summary(root, profile), ""
    except (results.StoreError, ValueError) as err:
        return None, f"The records cannot be read: {err}"


def _result(summary: pd.DataFrame, trials: pd.DataFrame, baseline: str) -> list[str]:
    """The page's lead: per task the original configuration beside the best one measured (or,
    without energy, throughput beside the baseline), then the claims judged."""
    best = tables.best_table(summary)
    if best.empty:
        head = tables.headline(summary, baseline)
        return [
            f"<h2>Result: {html.escape(str(head.columns.name))} per sample</h2>",
            "<p>No task has the original configuration measured with energy: throughput "
            "relative to the baseline, mean over trials with its 95% interval.</p>",
            _table(head.rename_axis(columns=None)),
        ]
    lead = _claims_lead(claims.claims(trials))
    return [
        "<h2>Result: the original configuration and the best one measured, per task</h2>",
        "<p>Energy per 1000 samples, mean over trials with its 95% interval, in total and above "
        "the GPU's idle power, from the same records.</p>",
        _table(best, index=False),
        "<h2>The original study's claims</h2>",
        "<p>Energy of the first technique over the second's, paired by round (95% interval, "
        "not adjusted), pooled over the tasks where every task runs the same shapes, else per "
        "task; verdicts Holm-adjusted over the family. Notebook 90 has every task's test.</p>",
        _table(lead, index=False)
        if not lead.empty
        else "<p>No claim has its two cells measured in these records.</p>",
    ]


def _claims_lead(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Each claim's pooled row, or each task's where it has none, as page text."""
    if verdicts.empty:
        return verdicts
    pooled = verdicts.groupby("claim")["task"].transform(lambda t: (t == claims.POOLED).any())
    lead = verdicts[(verdicts["task"] == claims.POOLED) | ~pooled.astype(bool)]
    return pd.DataFrame(
        {
            "claim": lead["claim"],
            "compared": lead["compared"],
            "task": lead["task"],
            "verdict": lead["verdict"],
            "energy ratio [95%]": [_interval(row) for _, row in lead.iterrows()],
            "above idle": lead["above_idle"].map("{:.3f}".format),
        }
    )


def write_index(root: Path, runs, profile: str, baseline: str = "fp32") -> Path:
    """The landing page: headline table and figures, provenance, then each notebook's status."""
    root = Path(root)
    summary, problem = _readable_summary(root, profile)
    parts = [
        f"<h1>effbert · profile {html.escape(profile)}</h1>",
        '<p class="sub">Which inference techniques make DistilBERT cheaper in energy on GLUE, and '
        f"at what cost in accuracy. Page written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
        "</p>",
    ]
    if problem:
        parts.append(f'<p class="failed">{html.escape(problem)}</p>')
    elif summary is None:
        parts.append("<p>No measured cell yet: the measurement notebooks have not finished.</p>")
    else:
        trials = results.read_results(cfg.reports_paths(root)["results"])
        trials = trials[trials["profile"] == profile]
        parts += _result(summary, trials, baseline)
        measured = (summary["energy_source"].fillna("none") != "none").any()
        if not measured:
            parts.append("<p>No energy was measured in this run (energy: none), so no figure.</p>")
        for name in LANDING_FIGURES if measured else ():
            if (root / "figures" / f"{name}.png").exists():
                parts.append(f'<p><img src="figures/{name}.png" alt="{name} figure"></p>')
        parts += ["<h2>Provenance</h2>", _table(tables.provenance_sheet(trials))]
    items = []
    for run in runs:
        css = run.status.split(" ")[0].replace("not", "notrun")
        shown = run.status.replace("(earlier run)", "(from an earlier run)")
        name = html.escape(run.stem)
        link = f'<a href="{name}.html">{name}</a>' if (root / f"{run.stem}.html").exists() else name
        message = f"<pre>{html.escape(run.message)}</pre>" if run.message else ""
        about = f" <em>{html.escape(run.about)}</em>" if getattr(run, "about", "") else ""
        items.append(
            f'<li>{link}{about} — <span class="{css}">{html.escape(shown)}</span>{message}</li>'
        )
    parts += [
        "<h2>Notebooks</h2>",
        f"<ol>{''.join(items)}</ol>",
        '<p>Records: <a href="results/results.csv">results.csv</a> (one row per trial), '
        '<a href="results/summary.csv">summary.csv</a> (one row per cell); executed notebooks '
        'in <a href="executed/">executed/</a>. Library messages go to <code>logs/</code> beside '
        "this page on the machine that ran it (published reports leave them out).</p>",
    ]
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>effbert · {html.escape(profile)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    path = root / "index.html"
    results.write_text_atomic(path, page)
    return path


def closing_summary(root: Path, runs, profile: str, baseline: str = "fp32") -> str:
    """What the terminal shows after a run: headline, failed notebooks, where the report is."""
    summary, problem = _readable_summary(Path(root), profile)
    lines = [problem] if problem else []
    if summary is not None:
        head = tables.headline(summary, baseline)
        lines += [f"{head.columns.name}, per sample:", head.to_string(), ""]
    failed = [r for r in runs if r.status.startswith(("failed", "interrupted"))]
    for run in failed:
        lines.append(f"FAILED {run.stem}: {run.message}")
    lines.append(f"report: {cfg.project_relative(Path(root) / 'index.html')}")
    return "\n".join(lines)


def summary_table(
    profile: str, reports_dir: str | Path, task: str | None = None, fmt: str = "markdown"
) -> str:
    """Per task and technique: energy and speed relative to the baseline, the metric's change.

    Raises:
        FileNotFoundError: the reports folder or its records do not exist (message says so).
    """
    root = cfg.resolve_path(reports_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"reports folder {reports_dir} does not exist")
    summary = profile_summary(root, profile)
    if summary is None:
        raise FileNotFoundError(
            f"no measured cell of profile {profile!r} in {reports_dir}: run "
            f"`python -m effbert run --profile {profile} --reports-dir {reports_dir}` first"
        )
    if task is not None and task not in set(summary["task"]):
        raise FileNotFoundError(
            f"no measured cell of task {task!r} in profile {profile!r}: its tasks are "
            + ", ".join(sorted(set(summary["task"])))
        )
    if fmt == "csv":
        return tables.comparison_of(summary, task).to_csv(index=False)
    if fmt == "json":
        return tables.comparison_of(summary, task).to_json(orient="records", indent=1)
    return tables.comparison_markdown(summary, task)


def answer_markdown(reports_dir: str | Path, profile: str, rows: int = 5) -> str:
    """The README's answer, printed from a floor profile's records: the best cell measured
    against the original configuration in the same run, in one sentence with its numbers and
    provenance, and a table of ``rows`` cells from the original to the best."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    summary = summarize(trials)
    ok = summary.dropna(subset=["j_per_1k_samples_mean"])
    first = next((t for t in ["sst2", *TASKS] if t in set(ok["task"])), None)  # SST-2 first
    ok = ok[ok["task"] == first]
    original = original_cell(ok) if not ok.empty else None
    if original is None:
        return "No task has the original configuration measured with energy: no answer yet."
    ok = ok.sort_values("j_per_1k_samples_mean")
    best = ok.iloc[0]
    first = trials[trials["cell_id"] == best["cell_id"]].iloc[0]
    dev_rows = int(round(first["n_samples"] / first["passes"]))
    ratio = original["j_per_1k_samples_mean"] / best["j_per_1k_samples_mean"]
    changed = round(abs(best["metric_value"] - original["metric_value"]) * dev_rows)
    sentence = (
        f"On one {first['device_name']}, DistilBERT classifies {get_task(best['task']).folder}'s "
        f"{dev_rows} dev sentences for **{best['j_per_1k_samples_mean']:.2f} J per 1000 "
        f"samples** ({best['dynamic_j_per_1k_samples_mean']:.2f} J/1k above the GPU's idle power): "
        f"**{ratio:.1f}× less energy** than the original study's configuration (fp32, batch "
        f"16, every input padded to 128 tokens, {original['j_per_1k_samples_mean']:.1f} J/1k) "
        f"measured in the same run, at {best['metric']} {best['metric_value']:.4f} against "
        f"{original['metric_value']:.4f} (a difference of {changed} of {dev_rows} sentences). The "
        f"cheapest cell measured: `{best['technique']}`, batch {best['batch_size']}."
    )
    provenance = (
        f"Profile [`{profile}`](params/{profile}.yaml), {str(first['measured_at'])[:10]}, "
        f"driver {first['driver']}, torch {first['torch']}, effbert `{first['git_sha']}`; "
        f"records in [`{cfg.project_relative(reports_dir)}`]({cfg.project_relative(reports_dir)}/)."
    )
    steps = waterfall(summary, best["task"])
    table = _waterfall_rows(steps, best["metric"]) if len(steps) >= 3 else _cell_rows(ok, rows)
    return f"{sentence}\n\n{provenance}\n\n{tables.markdown_table(table)}"


def _padding_words(padding: str, max_length: int) -> str:
    return {
        "max_length": f"padded to {max_length}",
        "longest": "padded to the batch's longest",
        "bucketed": "padded to the batch's longest",
        "packed": "packed, no pad tokens",
    }.get(padding, padding)


def _cell_rows(ok: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The original, the dearest other cell and the cheapest of each attention kernel family."""
    original = original_cell(ok)
    dearest = ok[ok["cell_id"] != original["cell_id"]]
    chosen = {original["cell_id"], *dearest.iloc[-1:]["cell_id"]}
    chosen |= set(ok.drop_duplicates("attention_kernel")["cell_id"])
    picked = ok[ok["cell_id"].isin(chosen)].sort_values("j_per_1k_samples_mean", ascending=False)
    picked = pd.concat([picked.iloc[:1], picked.iloc[1:].tail(rows - 1)])
    return pd.DataFrame(
        {
            "configuration": [
                f"`{t}`, batch {b}, {_padding_words(p, m)}"
                for t, b, p, m in zip(
                    picked["technique"],
                    picked["batch_size"],
                    picked["padding"],
                    picked["max_length"],
                    strict=True,
                )
            ],
            "J/1k": [
                f"{m:.2f} ± {c:.2f}"
                for m, c in zip(
                    picked["j_per_1k_samples_mean"], picked["j_per_1k_samples_ci95"], strict=True
                )
            ],
            "above idle": picked["dynamic_j_per_1k_samples_mean"].map("{:.2f}".format),
            "original / this": (
                original["j_per_1k_samples_mean"] / picked["j_per_1k_samples_mean"]
            ).map("{:.1f}×".format),
            ok["metric"].iloc[0]: picked["metric_value"].map("{:.4f}".format),
        }
    )


def _waterfall_rows(steps: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The waterfall's levers, one row each: the cell after it and the step's factor."""
    original = steps["j_per_1k"].iloc[0]
    return pd.DataFrame(
        {
            "lever (added to the row above)": steps["lever"],
            "J/1k": steps["j_per_1k"].map("{:.2f}".format),
            "above idle": steps["above_idle_j_per_1k"].map("{:.2f}".format),
            "this lever": [
                "" if pd.isna(f) else f"{f:.2f}× [{lo:.2f}, {hi:.2f}]"
                for f, lo, hi in zip(steps["factor"], steps["low"], steps["high"], strict=True)
            ],
            "original / this": (original / steps["j_per_1k"]).map("{:.1f}×".format),
            metric: steps["metric_value"].map("{:.4f}".format),
        }
    )


NO_OTHER_RUN = (
    "No other run to compare with: set `compare_with` in the profile to the reports "
    "folder of a run of the same configurations."
)


def _other_run(compare_with: str) -> tuple[pd.DataFrame | None, str]:
    """The trials of the run in ``compare_with`` (a reports folder), or None and why not."""
    where = tables.text(compare_with)
    try:
        return results.read_results(cfg.reports_paths(compare_with)["results"]), where
    except (FileNotFoundError, results.StoreError) as err:
        return None, f"compare_with {where}: {tables.text(str(err))}"


def agreement_markdown(trials: pd.DataFrame, compare_with: str) -> str:
    """Run-to-run agreement (``stats.run_agreement``) with the run in ``compare_with``, a
    reports folder, as Markdown; or why there is none."""
    if not compare_with:
        return NO_OTHER_RUN
    other, where = _other_run(compare_with)
    if other is None:
        return where
    table = run_agreement(trials, other)
    if not table["shared"].iloc[-1]:
        return f"{where} holds no cell of these configurations: nothing to compare."
    shown = table.assign(
        ratio=[
            _interval(row)
            if row["low"] == row["low"]
            else f"{row['ratio']:.3f} (one cell: no interval)"
            for _, row in table.iterrows()
        ]
    ).drop(columns=["low", "high"])
    return (
        f"Energy per sample here over {where}, cells of one configuration in both runs: the "
        "geometric mean ratio with its 95% interval over the cells, per precision.\n\n"
        + tables.markdown_table(shown)
    )


def carry_over_markdown(trials: pd.DataFrame, compare_with: str = "") -> str:
    """The carry-over lag regression (``carryover.carry_over_table``) of this run, beside the
    run in ``compare_with`` where one is set (the run before a change of method, say)."""
    runs = [("this run", trials)]
    note = ""
    if compare_with:
        other, where = _other_run(compare_with)
        if other is None:
            note = f"\n\n({where})"
        else:
            runs.append((where, other))
    shown = None
    for name, frame in runs:
        table = carryover.carry_over_table(frame).set_index("task")
        column = [
            f"{row.slope:.3f} (r {row.r:.2f}, {row.windows} windows)"
            if row.slope == row.slope
            else f"no slope ({row.windows} windows)"
            for row in table.itertuples()
        ]
        part = pd.DataFrame({f"slope in {name}": column}, index=table.index)
        shown = part if shown is None else shown.join(part, how="left")
    return (
        "A window's power deviation from its cell's mean, regressed on the previous window's "
        "power (W per W):\n\n" + tables.markdown_table(shown.reset_index()) + note
    )


def _interval(row: pd.Series) -> str:
    """A row's ``ratio`` with its ``low``-``high`` interval, as every table here shows it."""
    return f"{row['ratio']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def _ratio_text(row: pd.Series) -> str:
    return f"{_interval(row)}; above idle {row['above_idle']:.3f}"


def claims_lines(reports_dir: str | Path, profile: str) -> str:
    """One line per claim of the original study, its verdict pooled over tasks (or each
    task's, where the workload depends on the task) with the ratio and 95% interval, from a
    published run's records."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    table = claims.claims(trials)
    if table.empty:
        return "No claim has its two cells measured."
    lines = []
    for claim, group in table.groupby("claim", sort=False):
        row = group.iloc[-1]
        if row["task"] == claims.POOLED:
            lines.append(
                f"- {claim}: **{row['verdict']}** ({row['compared']}, pooled over "
                f"{len(group) - 1} tasks: {_ratio_text(row)})"
            )
            continue
        each = "; ".join(
            f"{r['task']} **{r['verdict']}** {_ratio_text(r)}" for _, r in group.iterrows()
        )
        lines.append(f"- {claim} ({row['compared']}, per task): {each}")
    lines.append(f"\n(The family: {len(table)} tests, per task and pooled, Holm-adjusted.)")
    return "\n".join(lines)
