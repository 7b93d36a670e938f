"""One function per figure, drawn from the per-cell summary (``results.summarize``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

FIGURES = ("baseline", "energy", "glue", "throughput", "pareto")


def _has_energy(summary: pd.DataFrame) -> bool:
    return bool((summary["energy_source"] != "none").any()) and bool(
        summary["j_per_1k_samples_mean"].notna().any()
    )


def _no_energy(ax, summary: pd.DataFrame) -> None:
    ax.text(
        0.5,
        0.5,
        "no energy measured on this device\n(energy_source = none)",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="gray",
    )


def _title(ax, text: str, summary: pd.DataFrame) -> None:
    devices = ", ".join(sorted(str(d) for d in summary["device_name"].dropna().unique()))
    profile = ", ".join(sorted(summary["profile"].unique()))
    ax.set_title(f"{text}\nprofile {profile} · {devices}", fontsize=10)


def _one_batch_size(summary: pd.DataFrame) -> pd.DataFrame:
    """Figures compare techniques at one batch size: the profile's first (smallest) one."""
    return summary[summary["batch_size"] == summary["batch_size"].min()]


def _grouped_bars(ax, table: pd.DataFrame, errors: pd.DataFrame | None = None) -> None:
    """Bars grouped by the table's index (tasks), one colour per column (technique)."""
    n = max(len(table.columns), 1)
    width = 0.8 / n
    x = np.arange(len(table.index))
    for i, column in enumerate(table.columns):
        err = None if errors is None else errors[column].to_numpy()
        ax.bar(
            x + i * width - 0.4 + width / 2, table[column], width, yerr=err, label=column, capsize=2
        )
    ax.set_xticks(x, table.index)
    ax.legend(fontsize=8, ncols=2)


def baseline(summary: pd.DataFrame, technique: str = "fp32") -> plt.Figure:
    """Energy per 1000 samples of the baseline technique, per task, with 95% CIs."""
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = _one_batch_size(summary[summary["technique"] == technique]).set_index("task")
    if _has_energy(summary) and not rows.empty:
        ax.bar(
            rows.index, rows["j_per_1k_samples_mean"], yerr=rows["j_per_1k_samples_ci95"], capsize=3
        )
        ax.set_ylabel("energy per 1000 samples (J)")
    else:
        _no_energy(ax, summary)
    _title(ax, f"Baseline ({technique}) energy per task", summary)
    return fig


def energy(summary: pd.DataFrame, technique: str = "fp32") -> plt.Figure:
    """Energy per sample of each technique relative to the baseline, per task."""
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = _one_batch_size(summary)
    if _has_energy(summary):
        table = rows.pivot_table(index="task", columns="technique", values="j_per_1k_samples_mean")
        if technique in table.columns:
            _grouped_bars(ax, table.div(table[technique], axis=0))
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_ylabel(f"energy per sample / {technique}")
    else:
        _no_energy(ax, summary)
    _title(ax, "Energy per sample relative to the baseline", summary)
    return fig


def glue(summary: pd.DataFrame) -> plt.Figure:
    """Each task's primary GLUE metric under each technique."""
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = _one_batch_size(summary)
    table = rows.pivot_table(index="task", columns="technique", values="metric_value")
    _grouped_bars(ax, table)
    metric_names = rows.drop_duplicates("task").set_index("task")["metric"]
    ax.set_xticks(
        range(len(table.index)), [f"{t}\n{metric_names[t]}" for t in table.index], fontsize=8
    )
    ax.set_ylabel("task metric")
    _title(ax, "GLUE metric per technique", summary)
    return fig


def throughput(summary: pd.DataFrame) -> plt.Figure:
    """Samples per second of each technique, per task, with 95% CIs."""
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = _one_batch_size(summary)
    table = rows.pivot_table(index="task", columns="technique", values="samples_per_s_mean")
    errors = rows.pivot_table(index="task", columns="technique", values="samples_per_s_ci95")
    _grouped_bars(ax, table, errors.reindex_like(table))
    ax.set_ylabel("samples per second")
    _title(ax, "Throughput per technique", summary)
    return fig


def pareto(summary: pd.DataFrame) -> plt.Figure:
    """Energy per sample against the task metric: lower left is cheaper, higher is better."""
    fig, ax = plt.subplots(figsize=(7, 5))
    if _has_energy(summary):
        markers = dict(zip(sorted(summary["technique"].unique()), "osD^vP*Xh", strict=False))
        for task, rows in summary.groupby("task"):
            colour = ax.scatter([], [], label=task).get_facecolor()
            for _, r in rows.iterrows():
                ax.scatter(
                    r["j_per_1k_samples_mean"],
                    r["metric_value"],
                    color=colour,
                    marker=markers[r["technique"]],
                )
        for technique, marker in markers.items():
            ax.scatter([], [], color="gray", marker=marker, label=technique)
        ax.set_xlabel("energy per 1000 samples (J)")
        ax.set_ylabel("task metric")
        ax.legend(fontsize=7, ncols=2)
    else:
        _no_energy(ax, summary)
    _title(ax, "Energy vs accuracy", summary)
    return fig


def compare(summary: pd.DataFrame, techniques: list[str], baseline: str = "fp32") -> plt.Figure:
    """A technique notebook's figure: its techniques beside the baseline, per task.

    Energy per 1000 samples where energy was measured, else throughput.
    """
    fig, ax = plt.subplots(figsize=(7, 3.5))
    rows = _one_batch_size(summary[summary["technique"].isin([baseline, *techniques])])
    measure = "j_per_1k_samples" if _has_energy(rows) else "samples_per_s"
    if not rows.empty:
        table = rows.pivot_table(index="task", columns="technique", values=f"{measure}_mean")
        errors = rows.pivot_table(index="task", columns="technique", values=f"{measure}_ci95")
        _grouped_bars(ax, table, errors.reindex_like(table))
        _title(ax, f"{', '.join(techniques)} vs {baseline}", rows)
    ax.set_ylabel(
        "energy per 1000 samples (J)" if measure == "j_per_1k_samples" else "samples per second"
    )
    return fig


def save_all(summary: pd.DataFrame, figures_dir: Path, technique: str = "fp32") -> list[Path]:
    """Draw the five figures and save them as ``figures_dir/<name>.png``."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    drawn = {
        "baseline": baseline(summary, technique),
        "energy": energy(summary, technique),
        "glue": glue(summary),
        "throughput": throughput(summary),
        "pareto": pareto(summary),
    }
    paths = []
    for name, fig in drawn.items():
        path = figures_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
