"""The study's figures, one function each, drawn from the per-cell summary (``stats.summarize``).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: they need no backend
to be saved, and a notebook shows one returned as a cell's value as an image.
"""

from __future__ import annotations

import functools
import io
import math
import zlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from effbert.kernels import ran_labels
from effbert.stats import main_setting, ratio_ci95
from effbert.tasks import TASKS
from effbert.techniques import TECHNIQUES

ENERGY = "j_per_1k_samples"
THROUGHPUT = "samples_per_s"
_COLUMNS = {
    "profile": None,
    "device_name": None,
    "batch_size": np.nan,
    "metric": "metric",
    "metric_value": np.nan,
    "energy_source": None,
    f"{ENERGY}_mean": np.nan,
    f"{ENERGY}_ci95": np.nan,
    f"{THROUGHPUT}_mean": np.nan,
    f"{THROUGHPUT}_ci95": np.nan,
    "dynamic_j_per_1k_samples_mean": np.nan,
}
_MARKERS = "osD^vP*Xhp<>"
_EMPTY = "No measured cells in this summary, so there is nothing to plot."
_TRIALS = "95% interval over trials"
# tab10, then ten darker tones for the techniques beyond the presets
_COLOURS = [f"C{i}" for i in range(10)] + [
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#e7ba52",
    "#d6616b",
    "#000000",
    "#9e9ac8",
    "#fdae6b",
]
_LEGEND = {"loc": "outside right upper", "frameon": False, "fontsize": 8}


class ReportFigure(Figure):
    """A Figure that shows itself as a PNG wherever IPython displays it (no pyplot needed)."""

    message: str | None = None  # set where the figure only says there is nothing to draw

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=110)
        return buffer.getvalue()


def says_what_ran(draw):
    """A figure function of a summary whose legends name what ran where a technique's cells
    ran another attention kernel than its name promises (``kernels.ran_labels``)."""

    @functools.wraps(draw)
    def drawn(summary: pd.DataFrame, *args, **kwargs) -> Figure:
        fig = draw(summary, *args, **kwargs)
        labels = ran_labels(summary)
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
        for text in (t for legend in legends if legend for t in legend.get_texts()):
            text.set_text(labels.get(text.get_text(), text.get_text()))
        return fig

    return drawn


def ordered(names, reference) -> list[str]:
    """Distinct ``names`` in the order of ``reference``, unknown names after, sorted."""
    present = {str(n) for n in names if isinstance(n, str) or not pd.isna(n)}
    return [n for n in reference if n in present] + sorted(present - set(reference))


def _style(technique: str, among=()) -> dict:
    """A colour and marker per technique: the presets' fixed, every other technique's drawn
    from its name into the colours the presets leave free, so it stays the same from figure to
    figure; where two of ``among`` (the techniques of one figure) would share a colour, the
    later in name order takes the next free one."""
    known = list(TECHNIQUES)
    if technique in known:
        i = known.index(technique)
        return {"color": _COLOURS[i], "marker": _MARKERS[i % len(_MARKERS)]}
    free = len(_COLOURS) - len(known)
    taken = {known.index(t) for t in among if t in known}
    slots: dict[str, int] = {}
    for name in sorted({*among, technique} - set(known)):
        start = zlib.crc32(name.encode()) % free
        for step in range(free):  # more techniques than colours: the first slot is shared
            slot = len(known) + (start + step) % free
            if slot not in taken:
                break
        else:
            slot = len(known) + start
        taken.add(slot)
        slots[name] = slot
    i = slots[technique]
    return {"color": _COLOURS[i], "marker": _MARKERS[i % len(_MARKERS)]}


def _filled(summary: pd.DataFrame, **defaults) -> pd.DataFrame:
    """A copy of ``summary`` with every optional column (``_COLUMNS``, then ``defaults``)
    present, filled with its default where missing."""
    frame = summary.copy()
    for column, default in {**_COLUMNS, **defaults}.items():
        if column not in frame.columns:
            frame[column] = default
    return frame


def _prepare(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, technique) at the smallest batch size, optional columns filled in.

    Energy is NaN in rows whose ``energy_source`` is ``none``.
    """
    frame = _filled(summary)
    frame = frame.dropna(subset=["task", "technique"])
    frame = main_setting(frame)
    unmeasured = frame["energy_source"].eq("none")
    frame.loc[unmeasured, [f"{ENERGY}_mean", f"{ENERGY}_ci95"]] = np.nan
    return frame.drop_duplicates(["task", "technique"])


def _has_energy(rows: pd.DataFrame) -> bool:
    return bool(rows[f"{ENERGY}_mean"].notna().any())


def _subtitle(rows: pd.DataFrame) -> str:
    parts = [
        ", ".join(str(v) for v in sorted(rows[c].dropna().astype(str).unique()))
        for c in ("profile", "device_name")
    ]
    return " · ".join(p for p in parts if p)


def _title(fig: Figure, text: str, rows: pd.DataFrame) -> None:
    subtitle = _subtitle(rows)
    fig.suptitle(f"{text}\n{subtitle}" if subtitle else text, fontsize=10)


def _message(text: str, size=(7, 2.5)) -> Figure:
    """A figure holding one centred sentence instead of empty axes."""
    fig = ReportFigure(figsize=size)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color="dimgray", fontsize=11)
    fig.message = text  # nothing drawn: figures.save_all writes no file for it
    return fig


def _no_energy(rows: pd.DataFrame) -> Figure:
    if rows.empty:
        return _message(_EMPTY)
    return _message("No energy was measured for these cells (energy_source none or empty).")


def _tables(rows: pd.DataFrame, value: str, error: str | None = None):
    """``value`` (and ``error``) as task x technique tables in the study's order."""
    tasks = ordered(rows["task"], TASKS)
    techniques = ordered(rows["technique"], TECHNIQUES)
    index = rows.set_index(["task", "technique"])
    table = index[value].unstack().reindex(index=tasks, columns=techniques)
    errors = None if error is None else index[error].unstack().reindex_like(table)
    return table, errors


def _error_bars(values: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Asymmetric ``yerr`` with the lower arm clipped so that no bar's interval goes below 0."""
    errors = np.where(np.isfinite(errors), errors, 0.0)
    lower = np.minimum(errors, np.clip(np.nan_to_num(values), 0, None))
    return np.vstack([lower, errors])


def _grouped_bars(ax, table: pd.DataFrame, errors: pd.DataFrame | None = None) -> None:
    """Bars grouped by task (the table's index), one colour per technique (its columns)."""
    total = 0.8 if len(table.columns) > 1 else 0.6
    width = total / max(len(table.columns), 1)
    x = np.arange(len(table.index))
    for i, technique in enumerate(table.columns):
        values = table[technique].to_numpy(dtype=float)
        yerr = None
        if errors is not None and errors[technique].notna().any():
            yerr = _error_bars(values, errors[technique].to_numpy(dtype=float))
        ax.bar(
            x - total / 2 + (i + 0.5) * width,
            values,
            width,
            yerr=yerr,
            capsize=2,
            error_kw={"elinewidth": 0.8},
            label=technique,
            color=_style(technique, table.columns)["color"],
        )
    ax.set_xticks(x, table.index)
    _pad(ax, len(x))


def _pad(ax, n: int) -> None:
    """Room around the bars, so that one task does not fill the axes."""
    pad = max(0.6, (3 - n) / 2)
    ax.set_xlim(-pad, n - 1 + pad)


def _note(ax, errors: pd.DataFrame | None, text: str = _TRIALS) -> None:
    """Say under the axes what the error bars are, or that there are none."""
    if errors is None:
        text = "one evaluation per cell"
    elif not errors.notna().any().any():
        text = "no interval: one trial per cell"
    else:
        text = f"error bars: {text}"
    ax.set_xlabel(text, fontsize=8, color="dimgray")


def _bar_figure(table, errors, ylabel: str, title: str, rows, interval: str = _TRIALS) -> Figure:
    fig = ReportFigure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, table, errors)
    ax.set_ylabel(ylabel)
    _note(ax, errors, interval)
    fig.legend(title="technique", **_LEGEND)
    _title(fig, title, rows)
    return fig


@says_what_ran
def baseline(summary: pd.DataFrame, technique: str = "fp32") -> Figure:
    """Energy per 1000 samples of the baseline technique, per task, with 95% intervals; the
    hatched inner bar is the part above the device's idle power."""
    rows = _prepare(summary)
    rows = rows[rows["technique"] == technique]
    if not _has_energy(rows):
        if rows.empty and not summary.empty:
            return _message(f"No {technique} cells in this summary, so no baseline to show.")
        return _no_energy(rows)
    table, errors = _tables(rows, f"{ENERGY}_mean", f"{ENERGY}_ci95")
    fig = ReportFigure(figsize=(7, 3.8), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, table, errors)
    dynamic, _ = _tables(rows, "dynamic_j_per_1k_samples_mean")
    if dynamic.notna().to_numpy().any():
        x = np.arange(len(dynamic.index))
        ax.bar(
            x,
            dynamic.iloc[:, 0].to_numpy(),
            width=0.3,
            color="none",
            edgecolor="black",
            hatch="//",
            label="above idle power",
        )
        fig.legend(**_LEGEND)
    ax.set_ylabel("energy per 1000 samples (J)")
    _note(ax, errors)
    _title(fig, f"Baseline ({technique}) energy per task", rows)
    return fig


def _relative(rows: pd.DataFrame, technique: str) -> pd.DataFrame:
    """Each non-baseline cell's energy ratio to the baseline, its interval and metric change."""
    base = rows[rows["technique"] == technique].set_index("task")
    other = rows[(rows["technique"] != technique) & rows["task"].isin(base.index)].copy()
    matched = base.loc[other["task"]]
    ratio, half = ratio_ci95(
        other[f"{ENERGY}_mean"].to_numpy(dtype=float),
        other[f"{ENERGY}_ci95"].to_numpy(dtype=float),
        matched[f"{ENERGY}_mean"].to_numpy(dtype=float),
        matched[f"{ENERGY}_ci95"].to_numpy(dtype=float),
    )
    other["ratio"], other["ratio_ci95"] = ratio, half
    other["metric_change"] = other["metric_value"].to_numpy() - matched["metric_value"].to_numpy()
    return other


def _ratios(summary: pd.DataFrame, technique: str, what: str):
    """Energy ratios to ``technique`` (and None), or (None and) a figure saying why none exist."""
    rows = _prepare(summary)
    if not _has_energy(rows):
        return None, _no_energy(rows)
    relative = _relative(rows, technique)
    relative = relative[relative["ratio"].notna()]
    if relative.empty:
        return None, _message(
            f"No technique was measured beside {technique}, so there is no {what}."
        )
    return relative, None


@says_what_ran
def energy(summary: pd.DataFrame, technique: str = "fp32") -> Figure:
    """Energy per sample of each technique relative to the baseline, per task."""
    relative, why = _ratios(summary, technique, "ratio")
    if why is not None:
        return why
    table, errors = _tables(relative, "ratio", "ratio_ci95")
    fig = _bar_figure(
        table,
        errors,
        f"energy per sample / {technique}",
        f"Energy per sample relative to {technique} (below 1 saves energy)",
        relative,
        "95% interval of the ratio, from both cells' intervals",
    )
    fig.axes[0].axhline(1.0, color="black", lw=0.8, ls="--")
    return fig


def glue(summary: pd.DataFrame) -> Figure:
    """Each task's own GLUE metric under each technique."""
    rows = _prepare(summary)
    if rows.empty:
        return _message(_EMPTY)
    if rows["metric_value"].isna().all():
        return _message("No task metric in this summary, so there is nothing to plot.")
    table, _ = _tables(rows, "metric_value")
    fig = _bar_figure(table, None, "task metric", "Task metric per technique", rows)
    ax = fig.axes[0]
    names = rows.drop_duplicates("task").set_index("task")["metric"]
    ax.set_xticks(ax.get_xticks(), [f"{t}\n{names[t]}" for t in table.index], fontsize=8)
    ax.axhline(0.0, color="black", lw=0.6)
    return fig


@says_what_ran
def throughput(summary: pd.DataFrame) -> Figure:
    """Samples per second of each technique, per task, with 95% intervals."""
    rows = _prepare(summary)
    if rows.empty:
        return _message(_EMPTY)
    if rows[f"{THROUGHPUT}_mean"].isna().all():
        return _message("No throughput in this summary, so there is nothing to plot.")
    table, errors = _tables(rows, f"{THROUGHPUT}_mean", f"{THROUGHPUT}_ci95")
    return _bar_figure(
        table,
        errors,
        "samples per second",
        "Throughput per technique (higher is faster)",
        rows,
    )


@says_what_ran
def tradeoff(summary: pd.DataFrame, technique: str = "fp32") -> Figure:
    """Per task, energy per sample relative to the baseline against the change in its metric.

    Left of the dashed vertical line saves energy; above the dashed horizontal line the task's
    own metric improved. The baseline sits where the lines cross.
    """
    relative, why = _ratios(summary, technique, "trade-off")
    if why is not None:
        return why
    tasks = ordered(relative["task"], TASKS)
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = ReportFigure(figsize=(max(8, 3.3 * ncols + 2), 2.8 * nrows + 1), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    for ax, task in zip(axes, tasks, strict=False):
        cells = relative[relative["task"] == task].set_index("technique")
        for name in ordered(cells.index, TECHNIQUES):
            cell = cells.loc[name]
            half = 0.0 if pd.isna(cell["ratio_ci95"]) else cell["ratio_ci95"]
            ax.errorbar(
                cell["ratio"],
                cell["metric_change"],
                xerr=[[min(half, 0.95 * cell["ratio"])], [half]],
                ls="none",
                ms=6,
                capsize=2,
                elinewidth=0.8,
                label=name,
                **_style(name, relative["technique"].unique()),
            )
        ax.plot(1, 0, "o", color="black", ms=10, mfc="none", label=f"{technique} (baseline)")
        ax.axvline(1.0, color="gray", lw=0.8, ls="--")
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(f"Δ {cells['metric'].iloc[0]}", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[len(tasks) :]:
        ax.set_axis_off()
    for ax in axes[-ncols:]:
        ax.set_xlabel(f"energy per sample / {technique} (log scale)", fontsize=8)
    seen = {}
    for ax in axes[: len(tasks)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    labels = ordered(seen, TECHNIQUES)
    fig.legend([seen[n] for n in labels], labels, title="technique", **_LEGEND)
    bars = "95% interval" if relative["ratio_ci95"].notna().any() else "no interval (one trial)"
    _title(
        fig,
        f"Energy vs task metric, relative to {technique} (x bars: {bars})\n"
        "left of 1 uses less energy, above 0 scores better",
        relative,
    )
    return fig


@says_what_ran
def compare(summary: pd.DataFrame, techniques: list[str], baseline: str = "fp32") -> Figure:
    """A technique notebook's figure: its techniques beside the baseline, per task.

    Energy per 1000 samples where energy was measured, else throughput, with 95% intervals.
    """
    rows = _prepare(summary)
    rows = rows[rows["technique"].isin([baseline, *techniques])]
    if rows.empty:
        return _message(f"No cells of {', '.join([baseline, *techniques])} in this summary yet.")
    measure = ENERGY if _has_energy(rows) else THROUGHPUT
    if rows[f"{measure}_mean"].isna().all():
        return _message("Neither energy nor throughput was measured for these cells.")
    table, errors = _tables(rows, f"{measure}_mean", f"{measure}_ci95")
    others = [t for t in ordered(techniques, TECHNIQUES) if t != baseline]
    title = f"{', '.join(others)} vs {baseline}" if others else f"{baseline}"
    ylabel = "energy per 1000 samples (J)" if measure == ENERGY else "samples per second"
    return _bar_figure(
        table,
        errors,
        ylabel,
        f"{title}: {'lower' if measure == ENERGY else 'higher'} is better",
        rows,
    )
