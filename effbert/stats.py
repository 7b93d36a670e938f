"""Statistics of the records: per-cell means with intervals, ratios between cells, and the
cells a comparison may use (one device, the original setting)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from effbert.schema import (
    CELL_COLUMNS,
    IDENTITY_COLUMNS,
    SUMMARY_COLUMNS,
    SUMMARY_KEYS,
    SUMMARY_MEASURES,
    TRIAL_COLUMNS,
    with_columns,
)


def ci95_half_width(values) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (NaN for n < 2)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan
    return float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, std and 95% CI half-width of each per-trial measure.

    Returns:
        ``SUMMARY_COLUMNS``; no rows when no cell finished ``ok``.
    """
    trials = with_columns(trials, IDENTITY_COLUMNS + TRIAL_COLUMNS + CELL_COLUMNS)
    ok = trials[(trials["status"] == "ok") & ~trials["superseded"].fillna(False).astype(bool)]
    rows = []
    for key, group in ok.groupby(SUMMARY_KEYS, sort=False, dropna=False):
        first = group.iloc[0]
        row = dict(zip(SUMMARY_KEYS, key, strict=True))
        row.update(
            trials=len(group),
            metric=first["metric"],
            metric_value=first["metric_value"],
            energy_source=first["energy_source"],
            cv_flag=first["cv_flag"],
            legacy=bool(first["legacy"]) if pd.notna(first["legacy"]) else True,
            fallback=first["fallback"],
            attention_kernel=first["attention_kernel"],
            device_name=first.get("device_name"),
        )
        for column in SUMMARY_MEASURES:
            values = group[column].astype(float).to_numpy()
            row[f"{column}_mean"] = float(np.mean(values))
            row[f"{column}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            row[f"{column}_ci95"] = ci95_half_width(values)
        for column in SUMMARY_COLUMNS[SUMMARY_COLUMNS.index("latency_p50_ms") :]:
            row[column] = first.get(column)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def ratio_ci95(a, ca, b, cb):
    """The ratio ``a / b`` and the half-width of its 95% interval, propagated from both.

    First-order propagation for independent means: ``r * sqrt((ca / a)**2 + (cb / b)**2)``.

    Args:
        a: Numerator mean(s).
        ca: 95% half-width(s) of ``a``; NaN where unknown (a single trial).
        b: Denominator mean(s).
        cb: 95% half-width(s) of ``b``.

    Returns:
        ``(ratio, half_width)``, scalars or arrays like the inputs; the half-width is NaN
        where either input interval is unknown.
    """
    a, ca, b, cb = (np.asarray(v, dtype=float) for v in (a, ca, b, cb))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
        half = np.abs(ratio) * np.hypot(ca / a, cb / b)
    if ratio.ndim == 0:
        return float(ratio), float(half)
    return ratio, half


def energy_ratio(a, b) -> tuple[float, float]:
    """Energy per sample of summary row ``a`` over row ``b``, and its 95% half-width."""
    return ratio_ci95(
        a["j_per_1k_samples_mean"],
        a["j_per_1k_samples_ci95"],
        b["j_per_1k_samples_mean"],
        b["j_per_1k_samples_ci95"],
    )


def pareto_optimal(frame: pd.DataFrame, minimize: list[str], maximize: list[str] = ()) -> pd.Series:
    """Rows no other row beats: at least as good in every column and better in one."""
    signs = {c: 1.0 for c in minimize} | {c: -1.0 for c in maximize}
    values = np.column_stack([frame[c].to_numpy(dtype=float) * s for c, s in signs.items()])
    optimal = []
    for row in values:
        dominated = (np.all(values <= row, axis=1) & np.any(values < row, axis=1)).any()
        optimal.append(not dominated and not np.isnan(row).any())
    return pd.Series(optimal, index=frame.index)


def single_device(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells of one GPU (or CPU) model only, the one holding the most cells: ratios are
    never taken between cells measured on different devices."""
    if "device_name" not in frame.columns or frame["device_name"].nunique() <= 1:
        return frame
    counts = frame["device_name"].value_counts()
    chosen = sorted(counts[counts == counts.max()].index)[0]
    return frame[frame["device_name"] == chosen]


ORIGINAL_SETTING = {"batch_size": 16, "padding": "max_length"}
"""Where the earlier student study measured: batch size 16, every sequence padded to max_length."""


def original_cell(cells: pd.DataFrame):
    """The fp32 cell at the original study's setting (batch 16, padded to max_length) among
    one task's ``cells``, or None."""
    original = cells[
        (cells["technique"] == "fp32")
        & (cells["batch_size"] == ORIGINAL_SETTING["batch_size"])
        & (cells["padding"] == ORIGINAL_SETTING["padding"])
    ]
    return None if original.empty else original.iloc[0]


def main_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows at the setting (batch size, padding, max length) that holds the most
    techniques, the smallest batch size among equals: where techniques are compared."""
    keys = [k for k in ("batch_size", "padding", "max_length", "scope") if k in frame.columns]
    if frame.empty or not keys or frame[keys].isna().all().all():
        return frame
    counts = frame.groupby(keys, dropna=False)["technique"].nunique().reset_index(name="n")
    best = counts.sort_values(["n", "batch_size"], ascending=[False, True]).iloc[0]
    mask = np.logical_and.reduce(
        [frame[k].eq(best[k]) | (frame[k].isna() & pd.isna(best[k])) for k in keys]
    )
    return frame[mask]


def comparison(summary: pd.DataFrame, baseline: str = "fp32") -> pd.DataFrame:
    """Each cell beside the baseline at the same task and batch size: ratios (energy in total
    and above idle, speed) and metric change."""
    keys = ["task", "batch_size", "padding", "max_length", "scope"]
    summary = with_columns(summary, SUMMARY_COLUMNS)
    base = summary[summary["technique"] == baseline][
        keys
        + [
            "j_per_1k_samples_mean",
            "j_per_1k_samples_ci95",
            "dynamic_j_per_1k_samples_mean",
            "samples_per_s_mean",
            "metric_value",
        ]
    ]
    table = summary.merge(base, on=keys, how="left", suffixes=("", "_base"))
    table["energy_vs_base"], table["energy_vs_base_ci95"] = ratio_ci95(
        table["j_per_1k_samples_mean"],
        table["j_per_1k_samples_ci95"],
        table["j_per_1k_samples_mean_base"],
        table["j_per_1k_samples_ci95_base"],
    )
    table["above_idle_vs_base"] = (
        table["dynamic_j_per_1k_samples_mean"] / table["dynamic_j_per_1k_samples_mean_base"]
    )
    table["speedup_vs_base"] = table["samples_per_s_mean"] / table["samples_per_s_mean_base"]
    table["metric_change"] = table["metric_value"] - table["metric_value_base"]
    columns = keys + [
        "technique",
        "j_per_1k_samples_mean",
        "j_per_1k_samples_ci95",
        "dynamic_j_per_1k_samples_mean",
        "energy_vs_base",
        "energy_vs_base_ci95",
        "above_idle_vs_base",
        "samples_per_s_mean",
        "samples_per_s_ci95",
        "speedup_vs_base",
        "metric",
        "metric_value",
        "metric_change",
        "latency_p50_ms",
        "attention_kernel",
        "cv_flag",
    ]
    return table[columns].sort_values(keys + ["technique"]).reset_index(drop=True)


# -- paired ratios, the family of tests, verdicts ------------------------------------------

EQUIVALENCE_MARGIN = 0.03  # "no effect larger than ±3%"
ALPHA = 0.05


@dataclass(frozen=True)
class Ratio:
    """A ratio of two cells' per-trial values from paired log-ratios: its geometric mean, the
    95% t interval, the 90% one (for equivalence), the two-sided p of ratio 1, the pairs."""

    ratio: float
    low: float
    high: float
    low90: float
    high90: float
    p_value: float
    n: int


def paired_log_ratio(a, b) -> Ratio:
    """``a / b`` from trials paired by round (``a[i]`` and ``b[i]`` taken in one round):
    the mean of ``log(a[i] / b[i])`` with a Student-t interval, exponentiated.

    Args:
        a, b: per-trial values of the two cells, in round order (the shorter length is used).
    """
    n = min(len(a), len(b))
    logs = np.log(np.asarray(a, float)[:n]) - np.log(np.asarray(b, float)[:n])
    mean = float(np.mean(logs)) if n else math.nan
    return _ratio_from_logs(mean, logs, n)


def pooled_log_ratio(groups: list) -> tuple[Ratio, float]:
    """One ratio over several tasks' paired log-ratios (``groups``: an array per task), and
    the p of a task effect (one-way ANOVA; NaN with fewer than two tasks of two pairs): pool
    only where the workload does not depend on the task."""
    from scipy.stats import f_oneway

    usable = [np.asarray(g, float) for g in groups if len(g)]
    logs = np.concatenate(usable) if usable else np.array([])
    p_task = math.nan
    if sum(len(g) >= 2 for g in usable) >= 2:
        p_task = float(f_oneway(*[g for g in usable if len(g) >= 2]).pvalue)
    return _ratio_from_logs(
        float(np.mean(logs)) if len(logs) else math.nan, logs, len(logs)
    ), p_task


def _ratio_from_logs(mean: float, logs: np.ndarray, n: int) -> Ratio:
    from scipy.stats import t

    if n < 2:
        nan = math.nan
        return Ratio(math.exp(mean) if n else nan, nan, nan, nan, nan, nan, n)
    se = float(np.std(logs, ddof=1) / math.sqrt(n))
    if se == 0:
        p = 0.0 if mean != 0 else 1.0
        value = math.exp(mean)
        return Ratio(value, value, value, value, value, p, n)
    q95, q90 = t.ppf(0.975, n - 1), t.ppf(0.95, n - 1)
    p = float(2 * t.sf(abs(mean / se), n - 1))
    return Ratio(
        *(math.exp(mean + s) for s in (0.0, -q95 * se, q95 * se, -q90 * se, q90 * se)), p, n
    )


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p values (NaN stays NaN)."""
    p = np.asarray(p_values, float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite])]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def verdict(r: Ratio, p_adjusted: float, direction: str, margin: float = EQUIVALENCE_MARGIN) -> str:
    """``holds`` / ``does not hold`` where the family-adjusted test rejects ratio 1 on the
    claim's side / the other (``direction``: ``above`` or ``below``); ``equivalent within
    ±x%`` where the 90% interval lies inside ``[1 / (1 + margin), 1 + margin]`` (two one-sided
    tests); else ``not resolved``: more trials would resolve it."""
    if not math.isnan(p_adjusted) and p_adjusted < ALPHA:
        above = r.ratio > 1
        return "holds" if above == (direction == "above") else "does not hold"
    if equivalent(r, margin):
        return f"equivalent within ±{margin:.0%}"
    return "not resolved"


def equivalent(r: Ratio, margin: float = EQUIVALENCE_MARGIN) -> bool:
    """Whether the 90% interval lies inside ``[1 / (1 + margin), 1 + margin]`` (two one-sided
    tests at 5%): no effect larger than ±margin."""
    return not math.isnan(r.low90) and 1 / (1 + margin) <= r.low90 and r.high90 <= 1 + margin


CELL_SETTING = ["task", "technique", "batch_size", "padding", "max_length"]


def precision_group(precision: str) -> str:
    """A recorded precision as a group of cells: fp16, bf16 and autocast as 16-bit; int8, fp8
    and fp32 as themselves."""
    return "16-bit" if "16" in str(precision) else str(precision)


def run_agreement(this: pd.DataFrame, other: pd.DataFrame, margin: float = EQUIVALENCE_MARGIN):
    """Energy per sample in this run against another, over the cells of one configuration
    measured in both (trial tables): per recorded precision group and over all, the geometric mean
    ratio (this / other) with a t interval over the cells' log ratios, and its verdict:
    ``differ`` where the 95% interval excludes 1, ``agree within ±x%`` where the 90% interval
    lies inside the margin, else ``not resolved`` (more cells would resolve it)."""
    a, b = summarize(this), summarize(other)
    value = "j_per_1k_samples_mean"
    shared = a.merge(b[[*CELL_SETTING, value]], on=CELL_SETTING, suffixes=("", "_other"))
    shared = shared[(shared[value] > 0) & (shared[f"{value}_other"] > 0)]
    logs = np.log(shared[value].to_numpy(float) / shared[f"{value}_other"].to_numpy(float))
    precision = this.drop_duplicates("technique").set_index("technique")["precision"]
    groups = shared["technique"].map(precision).map(precision_group).to_numpy()
    rows = []
    for name in [*sorted(set(groups)), "all"]:
        chosen = logs if name == "all" else logs[groups == name]
        r = _ratio_from_logs(
            float(np.mean(chosen)) if len(chosen) else math.nan, chosen, len(chosen)
        )
        if not math.isnan(r.low) and not r.low <= 1 <= r.high:
            said = "differ"
        elif equivalent(r, margin):
            said = f"agree within ±{margin:.0%}"
        else:
            said = "not resolved"
        rows.append(
            {
                "cells": name,
                "shared": r.n,
                "ratio": r.ratio,
                "low": r.low,
                "high": r.high,
                "verdict": said,
            }
        )
    return pd.DataFrame(rows)


# The headline taken apart: from the original configuration to the best, one lever a step.
WATERFALL_STEPS = [
    ("original: fp32, batch 16, padded to 128", "fp32", 16, "max_length"),
    ("batch 512", "fp32", 512, "max_length"),
    ("pad to the batch's longest", "fp32", 512, "bucketed"),
    ("bf16 weights", "bf16", 512, "bucketed"),
    ("fused SDPA attention", "bf16+sdpa", 512, "bucketed"),
    ("no pad tokens (packed, varlen kernel)", "bf16+varlen_mem", 512, "packed"),
    ("CUDA graphs", "bf16+varlen_mem+graphs", 512, "packed"),
    ("last layer for the first token", "bf16+varlen_mem+graphs+cls_last", 512, "packed"),
    ("GELU in the GEMM epilogue", "bf16+varlen_mem+graphs+cls_last+epilogue", 512, "packed"),
]


def waterfall(summary: pd.DataFrame, task: str, steps=WATERFALL_STEPS) -> pd.DataFrame:
    """Per lever, the task's cell with it and the factor from the step before (ratio of mean
    energy per sample, 95% interval by the delta method on logs); steps without a measured
    cell are left out, so a factor may span two levers (its label says so)."""
    frame = with_columns(summary, SUMMARY_COLUMNS)
    frame = frame[(frame["task"] == task) & frame["j_per_1k_samples_mean"].notna()]
    rows, previous, skipped = [], None, []
    for lever, technique, batch_size, padding in steps:
        found = frame[
            (frame["technique"] == technique)
            & (frame["batch_size"] == batch_size)
            & (frame["padding"] == padding)
        ]
        if found.empty:
            skipped.append(lever)
            continue
        cell = found.iloc[0]
        row = {
            "lever": " + ".join([*skipped, lever]) if previous is not None else lever,
            "technique": technique,
            "batch": batch_size,
            "padding": padding,
            "j_per_1k": cell["j_per_1k_samples_mean"],
            "above_idle_j_per_1k": cell["dynamic_j_per_1k_samples_mean"],
            "metric_value": cell["metric_value"],
            "factor": math.nan,
            "low": math.nan,
            "high": math.nan,
        }
        if previous is not None:
            ratio, half = ratio_ci95(
                previous["j_per_1k_samples_mean"],
                previous["j_per_1k_samples_ci95"],
                cell["j_per_1k_samples_mean"],
                cell["j_per_1k_samples_ci95"],
            )
            spread = half / ratio if ratio else math.nan
            row.update(factor=ratio, low=ratio * math.exp(-spread), high=ratio * math.exp(spread))
        rows.append(row)
        previous, skipped = cell, []
    return pd.DataFrame(rows)
