"""The energy floor's figures (frontier, scopes), and every figure saved by name.

Figures are ``matplotlib.figure.Figure`` objects built without pyplot (see ``effbert.plots``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from effbert.plots import (
    _LEGEND,
    ENERGY,
    ReportFigure,
    _error_bars,
    _filled,
    _message,
    _style,
    _title,
    baseline,
    energy,
    glue,
    ordered,
    says_what_ran,
    throughput,
    tradeoff,
)
from effbert.stats import WATERFALL_STEPS, pareto_optimal
from effbert.stats import waterfall as waterfall_table
from effbert.tasks import TASKS
from effbert.techniques import TECHNIQUES

FIGURES = (
    "baseline",
    "energy",
    "glue",
    "throughput",
    "tradeoff",
    "frontier",
    "scopes",
    "waterfall",
)


@says_what_ran
def frontier(summary: pd.DataFrame) -> Figure:
    """Per task: energy per sample against latency p99 and against the task metric, every cell
    of every batch size and padding; Pareto-optimal cells (lower energy, lower latency, higher
    metric) are ringed and labelled."""
    frame = _filled(summary, padding="", latency_p99_ms=np.nan)
    frame = frame[frame["energy_source"].ne("none") & (frame[f"{ENERGY}_mean"] > 0)]
    frame = frame.reset_index(drop=True)  # the Pareto mask is looked up by row label
    if frame.empty:
        return _message("No energy was measured, so there is no energy frontier to draw.")
    tasks = ordered(frame["task"], list(TASKS))
    fig = ReportFigure(figsize=(11, 3.6 * len(tasks)), layout="constrained")
    axes = fig.subplots(len(tasks), 2, squeeze=False)
    for (ax_latency, ax_metric), task in zip(axes, tasks, strict=True):
        rows = frame[frame["task"] == task]
        best = pareto_optimal(rows, [f"{ENERGY}_mean", "latency_p99_ms"], ["metric_value"])
        for ax, x, label in (
            (ax_latency, "latency_p99_ms", "latency p99 per batch (ms)"),
            (ax_metric, "metric_value", f"{rows['metric'].iloc[0]}"),
        ):
            shown = rows[rows[x].notna()]
            if shown.empty:
                ax.text(0.5, 0.5, f"no {label} recorded", ha="center", transform=ax.transAxes)
                continue
            placed: list[float] = []  # energies labelled: labels of near ones stack down
            span = shown[x].max() - shown[x].min() or 1.0
            for _, cell in shown.sort_values(f"{ENERGY}_mean", ascending=False).iterrows():
                style = _style(cell["technique"], frame["technique"].unique())
                ax.scatter(
                    cell[x],
                    cell[f"{ENERGY}_mean"],
                    color=style["color"],
                    marker=style["marker"],
                    s=30,
                )
                if best[cell.name]:
                    near = sum(1 / 1.5 < y / cell[f"{ENERGY}_mean"] < 1.5 for y in placed)
                    right = cell[x] - shown[x].min() > 0.6 * span  # label to the point's left
                    ax.scatter(
                        cell[x],
                        cell[f"{ENERGY}_mean"],
                        s=160,
                        facecolors="none",
                        edgecolors="black",
                        linewidths=0.8,
                    )
                    ax.annotate(
                        f"{cell['technique']} bs{cell['batch_size']} {cell['padding']}",
                        (cell[x], cell[f"{ENERGY}_mean"]),
                        fontsize=7,
                        xytext=(-6 if right else 6, 4 - 9 * near),
                        ha="right" if right else "left",
                        textcoords="offset points",
                    )
                    placed.append(cell[f"{ENERGY}_mean"])
            ax.set_yscale("log")
            ax.margins(x=0.1, y=0.15)  # room for the labels of the outermost points
            ax.set_xlabel(label)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            if x == "latency_p99_ms" and (rows[x] > 0).any():
                ax.set_xscale("log")
                # ticks at 1, 2 and 5 of each decade: a span under one decade still gets some
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel("J per 1000 samples (log)")
            ax.set_title(task, fontsize=9)
    handles = [
        Line2D([], [], linestyle="", **_style(t, frame["technique"].unique()), label=t)
        for t in ordered(frame["technique"], list(TECHNIQUES))
    ]
    handles.append(
        Line2D(
            [],
            [],
            linestyle="",
            marker="o",
            markerfacecolor="none",
            markeredgecolor="black",
            markersize=9,
            label="Pareto-optimal",
        )
    )
    fig.legend(handles=handles, **{**_LEGEND, "loc": "outside lower center", "ncol": 3})
    _title(fig, "Energy frontier: every cell, ringed where no other is better on all counts", frame)
    return fig


SCOPE_COLOURS = {"model": "C0", "end_to_end": "C1"}


def has_waterfall(summary: pd.DataFrame) -> bool:
    """Whether some task has three steps of the waterfall measured."""
    tasks = set(summary.get("task", []))
    return any(len(waterfall_table(summary, t)) >= 3 for t in tasks)


def waterfall(summary: pd.DataFrame) -> Figure:
    """Per task with the levers measured (``stats.waterfall``): energy per sample after each
    lever, total and above idle, on a log scale, each bar labelled with its step's factor.
    Tasks with every step measured, where some task has them all (else those with three)."""
    tasks = [t for t in TASKS if t in set(summary.get("task", []))]
    tables = {t: waterfall_table(summary, t) for t in tasks}
    complete = {t: w for t, w in tables.items() if len(w) == len(WATERFALL_STEPS)}
    tables = complete or {t: w for t, w in tables.items() if len(w) >= 3}
    if not tables:
        return _message("No task has the waterfall's cells (stats.WATERFALL_STEPS) measured.")
    fig = ReportFigure(figsize=(9, 1.2 + 0.45 * max(len(w) for w in tables.values()) * len(tables)))
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    for ax, (task, table) in zip(axes, tables.items(), strict=True):
        _log_bars(ax, table.assign(lever=table["lever"].map(_short_lever)), task)
    fig.suptitle("From the original configuration to the best, one lever at a time", fontsize=10)
    fig.set_layout_engine("constrained")
    return fig


def _short_lever(lever: str) -> str:
    """A bar's label: levers measured only together are counted, first and last named."""
    parts = lever.split(" + ")
    return lever if len(parts) < 3 else f"{len(parts)} levers: {parts[0]} … {parts[-1]}"


def floor(summary: pd.DataFrame, task: str) -> Figure:
    """One task's cells, cheapest last: energy per sample in total and above idle on a log
    scale, each labelled with how many times less than the original configuration it uses."""
    cells = summary[(summary["task"] == task) & summary[f"{ENERGY}_mean"].notna()]
    if cells.empty:
        return _message(f"No cell of {task} was measured with energy.")
    cells = cells.sort_values(f"{ENERGY}_mean", ascending=False)
    original = cells.iloc[0][f"{ENERGY}_mean"]
    table = pd.DataFrame(
        {
            "lever": [
                f"{t}, batch {b}"
                for t, b in zip(cells["technique"], cells["batch_size"], strict=True)
            ],
            "j_per_1k": cells[f"{ENERGY}_mean"].to_numpy(),
            "above_idle_j_per_1k": cells["dynamic_j_per_1k_samples_mean"].to_numpy(),
            "factor": original / cells[f"{ENERGY}_mean"].to_numpy(),
            "low": np.nan,
            "high": np.nan,
        }
    )
    table.loc[0, "factor"] = np.nan
    fig = ReportFigure(figsize=(9, 1.4 + 0.42 * len(table)))
    _log_bars(fig.subplots(), table, task)
    fig.suptitle(f"{task}: energy per sample, each cell against the first", fontsize=10)
    fig.set_layout_engine("constrained")
    return fig


def _log_bars(ax, table: pd.DataFrame, title: str) -> None:
    """Horizontal bars of ``j_per_1k`` (total) over ``above_idle_j_per_1k``, log scale, each
    labelled with its value and ``factor`` (with ``low``-``high`` where known)."""
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["j_per_1k"], color="C0", label="total")
    ax.barh(y, table["above_idle_j_per_1k"], color="C1", height=0.45, label="above idle")
    ax.set_xscale("log")
    ax.set_yticks(y, table["lever"], fontsize=8)
    for yi, row in zip(y, table.itertuples(), strict=True):
        label = f"{row.j_per_1k:.3g} J/1k"
        if pd.notna(row.factor):
            interval = f" [{row.low:.2f}, {row.high:.2f}]" if pd.notna(row.low) else ""
            label += f"  ({row.factor:.2f}×{interval})"
        ax.text(row.j_per_1k * 1.08, yi, label, va="center", fontsize=7)
    ax.set_xlim(right=table["j_per_1k"].max() * 12)
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("J per 1000 samples (log scale)")
    ax.legend(loc="lower right", fontsize=7, frameon=False)


def scopes(summary: pd.DataFrame) -> Figure:
    """Per task: energy per sample of each configuration (technique, batch, padding) in each
    scope side by side, the forward pass alone (``model``) and raw text to labels
    (``end_to_end``), with 95% intervals over trials."""
    frame = _filled(summary, padding="", scope="model")
    frame["scope"] = frame["scope"].fillna("model")
    frame = frame[frame["energy_source"].ne("none") & frame[f"{ENERGY}_mean"].notna()]
    if not frame["scope"].eq("end_to_end").any():
        return _message("No end-to-end cells in these records: every cell is forward-only.")
    tasks = ordered(frame["task"], list(TASKS))
    frame["configuration"] = (
        frame["technique"] + " · bs" + frame["batch_size"].astype(str) + " · " + frame["padding"]
    )
    height = sum(frame[frame["task"] == t]["configuration"].nunique() for t in tasks)
    fig = ReportFigure(figsize=(10, 1.2 + 0.45 * height + 0.6 * len(tasks)), layout="constrained")
    axes = fig.subplots(len(tasks), 1, squeeze=False)[:, 0]
    for ax, task in zip(axes, tasks, strict=True):
        rows = frame[frame["task"] == task]
        order = rows.groupby("configuration")[f"{ENERGY}_mean"].min().sort_values(ascending=False)
        y = {c: i for i, c in enumerate(order.index)}
        for k, scope in enumerate(("model", "end_to_end")):
            shown = rows[rows["scope"] == scope]
            if shown.empty:
                continue
            values = shown[f"{ENERGY}_mean"].to_numpy()
            errors = _error_bars(values, shown[f"{ENERGY}_ci95"].to_numpy())
            ax.barh(
                [y[c] + (k - 0.5) * 0.4 for c in shown["configuration"]],
                values,
                height=0.4,
                xerr=errors,
                color=SCOPE_COLOURS[scope],
                label=scope,
                capsize=2,
            )
        ax.set_yticks(range(len(y)), list(y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("J per 1000 samples (log)")
        ax.set_title(task, fontsize=9)
    handles = [Line2D([], [], color=c, linewidth=6, label=s) for s, c in SCOPE_COLOURS.items()]
    fig.legend(handles=handles, **_LEGEND)
    _title(fig, "Forward pass alone and raw text to labels, per configuration", frame)
    return fig


def save_all(summary: pd.DataFrame, figures_dir: Path, technique: str = "fp32") -> list[Path]:
    """Draw every figure of ``FIGURES`` that the records can fill and save it as
    ``figures_dir/<name>.png``: ``scopes`` only where they hold end-to-end cells, none where
    the figure would only say that there is nothing to draw (a file left by an earlier run is
    removed, so no figure outlives its records).

    Args:
        summary: Per-cell summary, as ``results.summarize`` returns it.
        figures_dir: Folder for the PNG files; created if missing.
        technique: The baseline technique that ratios and changes are taken against.

    Returns:
        The paths written, in the order of ``FIGURES``.
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    draw = {
        "baseline": lambda: baseline(summary, technique),
        "energy": lambda: energy(summary, technique),
        "glue": lambda: glue(summary),
        "throughput": lambda: throughput(summary),
        "tradeoff": lambda: tradeoff(summary, technique),
        "frontier": lambda: frontier(summary),
        "scopes": lambda: scopes(summary),
        "waterfall": lambda: waterfall(summary),
    }
    end_to_end = "scope" in summary and summary["scope"].eq("end_to_end").any()
    paths = []
    for name in FIGURES:
        path = figures_dir / f"{name}.png"
        skip = (name == "scopes" and not end_to_end) or (
            name == "waterfall" and not has_waterfall(summary)
        )
        fig = None if skip else draw[name]()
        if fig is None or fig.message:
            path.unlink(missing_ok=True)  # no figure outlives its records, none says "nothing"
            continue
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths
