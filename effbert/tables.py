"""Tables a reader sees, from the per-cell summary: each cell beside the baseline, the
headline, the claims and findings as Markdown, provenance, numbers narrowed to fit a page."""

from __future__ import annotations

import html
import math

import pandas as pd

from effbert import claims as claims_
from effbert import stats
from effbert.kernels import ran_labels
from effbert.schema import with_columns
from effbert.stats import (
    comparison,
    energy_ratio,
    main_setting,
    original_cell,
    single_device,
    summarize,
)
from effbert.tasks import TASKS
from effbert.techniques import TECHNIQUES

PROVENANCE_COLUMNS = [
    "device_name",
    "driver",
    "cuda",
    "power_limit_w",
    "torch",
    "transformers",
    "zeus",
    "torchao",
    "git_sha",
    "energy_source",
]


def provenance(trials: pd.DataFrame) -> pd.DataFrame:
    """Where and with what the measured cells ran: one row per distinct environment."""
    trials = with_columns(trials, ["profile", "status", "measured_at"])
    ok = trials[trials["status"] == "ok"]
    columns = ["profile"] + [c for c in PROVENANCE_COLUMNS if c in ok.columns]
    table = ok.groupby(columns, dropna=False)["measured_at"].agg(["min", "max", "count"])
    table = table.rename(columns={"min": "first", "max": "last", "count": "trials"}).reset_index()
    return table.reindex(columns=[*columns, "first", "last", "trials"])


def provenance_sheet(trials: pd.DataFrame) -> pd.DataFrame:
    """``provenance`` turned on its side, a column per environment and a row per field: a run
    has one or two environments, so it fits the page where a row of 16 fields would not."""
    table = provenance(trials)
    table.index = [f"environment {i + 1}" for i in range(len(table))]
    return table.T.rename_axis(None)


def compared(summary: pd.DataFrame, baseline: str = "fp32") -> pd.DataFrame:
    """``comparison``'s rows that have the baseline at their own setting (a cell measured only
    at a setting the baseline never ran has no ratio to show)."""
    table = comparison(summary, baseline)
    if table.empty:
        return table
    return table[table["energy_vs_base"].notna() | table["speedup_vs_base"].notna()]


def headline(summary: pd.DataFrame, baseline: str = "fp32") -> pd.DataFrame:
    """Energy per sample relative to the baseline, task by technique, at the smallest batch size
    (throughput relative to the baseline where no energy was measured), as text with the 95%
    interval, e.g. ``0.21× ±0.01``."""
    table = compared(summary, baseline)
    if table.empty:
        return pd.DataFrame()
    table = main_setting(table)
    measured = table["energy_vs_base"].notna().any()
    value, half = ("energy_vs_base", "energy_vs_base_ci95") if measured else ("speedup_vs_base", "")
    table = table.assign(
        shown=[
            "1× (reference)"
            if technique == baseline
            else f"{v:.2f}×" + (f" ±{h:.2f}" if half and pd.notna(h) else "")
            for technique, v, h in zip(
                table["technique"], table[value], table[half or value], strict=True
            )
        ]
    )
    out = table.pivot_table(index="task", columns="technique", values="shown", aggfunc="first")
    tasks = [t for t in TASKS if t in out.index] + sorted(set(out.index) - set(TASKS))
    techniques = [t for t in TECHNIQUES if t in out.columns]
    techniques += sorted(set(out.columns) - set(techniques))
    out = out.reindex(index=tasks, columns=techniques).fillna("")
    out.columns.name = f"{'energy' if measured else 'throughput'} / {baseline}"
    return out


def with_intervals(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary`` narrower for a page: each ``<name>_mean`` and ``<name>_ci95`` pair as one
    column ``<name>`` reading "mean ± half-width", every float to ``digits`` significant
    digits (whole numbers from 10^digits up)."""

    def number(value: float) -> str:
        if pd.isna(value):
            return ""
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"

    out = {}
    for column in summary.columns:
        if column.endswith("_ci95") and f"{column[:-5]}_mean" in summary:
            continue
        values = summary[column]
        if column.endswith("_mean"):
            name, ci = column[:-5], summary.get(f"{column[:-5]}_ci95")
            if ci is not None:
                out[name] = [
                    number(m) if pd.isna(c) else f"{number(m)} ± {number(c)}"
                    for m, c in zip(values, ci, strict=True)
                ]
                continue
        if pd.api.types.is_float_dtype(values):
            values = values.map(number)
        out[column] = values
    return pd.DataFrame(out, index=summary.index)


def text(value) -> str:
    """A string from records, profiles or data, safe inside Markdown that becomes HTML: markup
    escaped (a task named ``<img onerror=...>`` shows as text), pipes kept inside their cell."""
    return html.escape(str(value), quote=False).replace("|", "\\|")


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table for the README and the notebooks' Markdown, every cell escaped (``text``);
    ``**bold**`` and numbers pass as they are."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}g}"
        return text(value)

    columns = [text(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def signed_change(value: float) -> str:
    """A metric change with its sign: ``0`` where none, small ones in scientific notation so
    that a change never reads as ``+0.0000``."""
    if pd.isna(value):
        return ""
    if value == 0:
        return "0"
    return f"{value:+.1e}" if abs(value) < 5e-5 else f"{value:+.4f}"


def findings(summary: pd.DataFrame, baseline: str = "fp32") -> str:
    """The analysis' conclusion as Markdown, generated from the records: per technique, its
    energy relative to the baseline across tasks (each ratio with its 95% interval), the largest
    change in a task metric, and the cells each finding comes from."""
    table = compared(summary, baseline)
    if table.empty:
        return (
            f"No setting holds {text(baseline)} beside another technique: nothing to compare."
            if not summary.empty
            else "No measured cell: nothing to conclude."
        )
    table = main_setting(table)
    measured = table["energy_vs_base"].notna().any()
    ratio, half, what = (
        ("energy_vs_base", "energy_vs_base_ci95", "energy per sample")
        if measured
        else ("speedup_vs_base", None, "throughput")
    )
    setting = ["task", "technique", "batch_size", "padding"]
    ids = summary.drop_duplicates(setting).set_index(setting)["cell_id"].sort_index()
    lines = [
        f"At batch size {table['batch_size'].iloc[0]}, padding {text(table['padding'].iloc[0])} "
        f"(the setting with the most techniques), {what} relative to {text(baseline)} "
        f"(mean over trials, 95% interval), and the largest change of a task metric:",
        "",
    ]
    ranked = table[table["technique"] != baseline].groupby("technique")[ratio].median()
    ran = ran_labels(summary)
    for technique in ranked.sort_values().index:
        rows = table[(table["technique"] == technique) & table[ratio].notna()]
        if rows.empty:
            continue
        low, high = rows.loc[rows[ratio].idxmin()], rows.loc[rows[ratio].idxmax()]

        def shown(row):
            interval = f" ± {row[half]:.2f}" if half and pd.notna(row[half]) else ""
            return f"{row[ratio]:.2f}×{interval} ({text(row['task'])})"

        change = rows.loc[rows["metric_change"].abs().idxmax()]
        cells = ", ".join(
            str(ids.get((r.task, technique, r.batch_size, r.padding), ""))[:8]
            for r in rows.itertuples()
        )
        width = rows[half].fillna(0) if half else 0
        below, above = int((rows[ratio] + width < 1).sum()), int((rows[ratio] - width > 1).sum())
        words = ("less energy", "more energy") if measured else ("slower", "faster")
        verdict = [f"{n} with {w}" for n, w in ((below, words[0]), (above, words[1])) if n]
        unresolved = len(rows) - below - above
        if unresolved:
            verdict.append(f"{unresolved} not separable from {text(baseline)}")
        lines.append(
            f"- **{text(ran.get(technique, technique))}**: {shown(low)} to {shown(high)} over "
            f"{len(rows)} tasks "
            f"({', '.join(verdict)}); largest metric change "
            f"{signed_change(change['metric_change'])} {text(change['metric'])} on "
            f"{text(change['task'])}. "
            f"Cells: {cells}."
        )
    noisy = int(summary["cv_flag"].fillna(False).astype(bool).sum())
    if noisy:
        lines += ["", f"{noisy} cells vary between trials more than `max_cv`: read them with care."]
    return "\n".join(lines)


def comparison_of(summary: pd.DataFrame, task: str | None) -> pd.DataFrame:
    table = comparison(summary)
    return table[table["task"] == task] if task else table


def comparison_markdown(summary: pd.DataFrame, task: str | None = None) -> str:
    """The comparison as a Markdown table narrow enough for a page: each cell's energy with its
    interval, its ratios to the baseline and its metric change."""
    table = comparison_of(summary, task)
    energy = [
        "" if pd.isna(m) else f"{m:.1f} ± {c:.1f}" if pd.notna(c) else f"{m:.1f}"
        for m, c in zip(table["j_per_1k_samples_mean"], table["j_per_1k_samples_ci95"], strict=True)
    ]
    columns = {
        "task": "task",
        "technique": "technique",
        "batch_size": "batch",
        "padding": "padding",
        "energy": "energy J/1k (±95%)",
        "energy_vs_base": "energy / fp32",
        "speedup_vs_base": "speed / fp32",
        "metric": "metric",
        "metric_value": "value",
        "metric_change": "change vs fp32",
        "cv_flag": "noisy",
    }
    shown = table.assign(energy=energy)[list(columns)].rename(columns=columns)
    return markdown_table(shown)


def claims_markdown(
    trials: pd.DataFrame, metric_tolerance: float = claims_.KEPT_METRIC_DROP
) -> str:
    """The earlier study's claims judged (:func:`effbert.claims.claims`) as Markdown: one row
    per claim with its pooled verdict in bold (or the single task's), its ratio of total energy
    and of energy above idle with 95% intervals, the p of a task effect, the attention kernels
    that ran, and each task's ratio and verdict."""
    table = claims_.claims(trials, metric_tolerance)
    if table.empty:
        return "No measured cell: nothing to judge."
    rows = []
    for claim, group in table.groupby("claim", sort=False):
        pooled = group[group["task"] == claims_.POOLED]
        head = (pooled if not pooled.empty else group).iloc[0]
        tasks = group[group["task"] != claims_.POOLED]
        rows.append(
            {
                "claim": claim,
                "compared": head["compared"] if len(tasks) == 1 else _compared(tasks),
                "verdict": f"**{head['verdict']}**" + ("" if pooled.empty else " (pooled)"),
                "energy ratio [95%]": _interval(head, ""),
                "above idle [95%]": _interval(head, "above_idle"),
                "task effect p": _number(head["task_effect_p"], ".2f"),
                "attention ran": head["attention_ran"],
                "per task": " · ".join(
                    f"{r['task']} {_number(r['ratio'])} {r['verdict']}" for _, r in tasks.iterrows()
                ),
            }
        )
    n_tests = len(table)
    intro = (
        "The earlier study's claims: energy per sample of the first technique over the "
        "second's, from trials paired by round (geometric mean of the paired ratios, 95% t "
        "interval), per task and pooled over the tasks (at the original setting every task runs "
        f"the same shapes; the task-effect p says whether pooling is fair). The family is all "
        f"{n_tests} tests below, Holm-adjusted: a claim **holds** (or **does not hold**) where "
        "the adjusted test rejects a ratio of 1 on its side (or the other); it is **equivalent "
        f"within ±{stats.EQUIVALENCE_MARGIN:.0%}** where the 90% interval lies inside that "
        "band, and **not resolved** otherwise: more trials would resolve it. Where accuracy "
        f"must be kept, the metric may drop by {metric_tolerance} or one dev example, whichever "
        "is more. Attention is named by the kernel that ran (numerator / denominator)."
    )
    return intro + "\n\n" + markdown_table(pd.DataFrame(rows))


def _compared(tasks: pd.DataFrame) -> str:
    compared = tasks["compared"].unique()
    return compared[0] if len(compared) == 1 else "; ".join(compared)


def _interval(row, prefix: str) -> str:
    name = prefix or "ratio"
    low, high = (f"{prefix}_low", f"{prefix}_high") if prefix else ("low", "high")
    if pd.isna(row[name]):
        return ""
    return f"{row[name]:.3f} [{_number(row[low], '.3f')}, {_number(row[high], '.3f')}]"


def _number(value, spec: str = ".2f") -> str:
    return "" if pd.isna(value) else format(value, spec)


def _mean_ci(cell, measure: str) -> str:
    """Mean ± half-width, the half-width to two significant digits (never "± 0.00")."""
    return f"{cell[measure + '_mean']:.2f} ± {cell[measure + '_ci95']:.2g}"


def best_table(
    summary: pd.DataFrame, metric_tolerance: float = claims_.KEPT_METRIC_DROP
) -> pd.DataFrame:
    """Per task: the original configuration (fp32, batch 16, padded to max_length) beside the
    cheapest cell measured whose metric stays within ``metric_tolerance`` of it, in total and
    above idle, from the same records; a runner-up whose interval overlaps the best's is named
    as a tie. Empty where no task has the original configuration with energy."""
    cells = summary[(summary["scope"].fillna("model") == "model")]
    cells = single_device(cells[cells["j_per_1k_samples_mean"].notna()])
    rows = []
    for task, group in cells.groupby("task", sort=False):
        base = original_cell(group)
        if base is None:
            continue
        kept = group[group["metric_value"] >= base["metric_value"] - metric_tolerance]
        kept = (kept if not kept.empty else group).sort_values("j_per_1k_samples_mean")
        best = kept.iloc[0]
        ratio, half = energy_ratio(base, best)
        idle_ratio = base["dynamic_j_per_1k_samples_mean"] / best["dynamic_j_per_1k_samples_mean"]
        tie = ""
        if len(kept) > 1:
            second = kept.iloc[1]
            reach = best["j_per_1k_samples_mean"] + best["j_per_1k_samples_ci95"]
            if second["j_per_1k_samples_mean"] - second["j_per_1k_samples_ci95"] <= reach:
                tie = f" (a tie with {second['technique']}, batch {second['batch_size']})"
        rows.append(
            {
                "task": task,
                "original J/1k": _mean_ci(base, "j_per_1k_samples"),
                "above idle": f"{base['dynamic_j_per_1k_samples_mean']:.1f}",
                "best of the cells measured": f"{best['technique']}, batch "
                f"{best['batch_size']}, {best['padding']}{tie}",
                "best J/1k": _mean_ci(best, "j_per_1k_samples"),
                "best above idle": f"{best['dynamic_j_per_1k_samples_mean']:.2f}",
                "original / best": f"{ratio:.1f}× ± {half:.1f}",
                "above idle: original / best": f"{idle_ratio:.1f}×",
                "metric": f"{base['metric']} {base['metric_value']:.4f} → "
                f"{best['metric_value']:.4f}",
            }
        )
    return pd.DataFrame(rows)


def headline_markdown(
    summary: pd.DataFrame, metric_tolerance: float = claims_.KEPT_METRIC_DROP
) -> str:
    """``best_table`` as Markdown, or why there is none."""
    table = best_table(summary, metric_tolerance)
    if table.empty:
        return (
            "No task has the original configuration (fp32, batch 16, max_length) measured with "
            "energy."
        )
    return markdown_table(table)


def cell_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per cell: energy, throughput and metric, each mean ± its 95% half-width (columns
    with nothing measured, such as CPU energy off the end-to-end scope, left out)."""
    shown = (
        summarize(trials)
        .filter(
            regex="^(task|technique|batch_size|cv_flag)$|^samples_per_s_(mean|ci95)$|"
            "^(cpu_)?j_per_1k_samples_(mean|ci95)$|^metric$|^metric_value$"
        )
        .dropna(axis=1, how="all")
    )
    return with_intervals(shown, digits=4)


def skipped(trials: pd.DataFrame) -> pd.DataFrame:
    """Cells not measured, with the reason."""
    rows = trials[trials["status"].isin(["skipped", "failed"])]
    return rows[["task", "technique", "batch_size", "status", "reason"]].drop_duplicates()
