"""The earlier student study's claims, judged on the records: each a ratio of two cells' energy
per sample at the study's setting, with its interval and a verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from effbert.schema import SUMMARY_COLUMNS, with_columns
from effbert.stats import ORIGINAL_SETTING, energy_ratio, single_device
from effbert.tasks import TASKS
from effbert.techniques import parse

CLAIM_PRESETS = ("fp32", "int8", "autocast_fp16", "autocast_bf16", "fp16", "flash")
"""The techniques claim 4 ranks fp16_flash against."""


CLAIM_COLUMNS = [
    "claim",
    "task",
    "compared",
    "setting",
    "energy_ratio",
    "ratio_ci95_low",
    "ratio_ci95_high",
    "metric_change",
    "verdict",
    "cells",
]


VERDICTS = ("holds", "does not hold", "not resolved")


NOT_MEASURED = "not measured"


ALL_TASKS = "all tasks"


# (claim, numerator, denominator or None for "the cheapest other preset", the claim holds when
# the ratio is "above" or "below" 1, accuracy must be kept, a row for every task)
CLAIMS = [
    ("1 int8 quantization raises energy", "int8", "fp32", "above", False, True),
    ("1b int8 raises energy, compiled", "int8+compile", "fp32+compile", "above", False, False),
    ("2 Flash Attention lowers energy, same accuracy", "flash", "fp32", "below", True, True),
    ("2b Flash Attention lowers energy in fp16", "fp16_flash", "fp16", "below", True, True),
    ("3 fp16 weights beat mixed precision", "fp16", "autocast_fp16", "below", False, True),
    ("4 fp16 + Flash Attention is cheapest", "fp16_flash", None, "below", False, True),
]


def _technique_key(name) -> str:
    """What a technique runs (its axes), so that ``compile+int8`` is found as ``int8+compile``;
    an unknown name stands for itself."""
    try:
        t = parse(str(name))
    except ValueError:
        return str(name)
    return "|".join((t.precision, t.attention, t.execution, t.shortcut))


def _claim_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's ok, model-scope cells at the original setting, indexed by (task, technique
    key), one per pair, each task at the max length holding most of its techniques (the
    smallest among equals)."""
    frame = with_columns(summary, SUMMARY_COLUMNS)
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    frame = frame[frame["scope"].isna() | (frame["scope"] == "model")]
    frame = single_device(frame)
    frame = frame[
        (frame["batch_size"] == ORIGINAL_SETTING["batch_size"])
        & (frame["padding"] == ORIGINAL_SETTING["padding"])
    ]
    if frame.empty:
        return frame.assign(key=None).set_index(["task", "key"])
    counts = (
        frame.groupby(["task", "max_length"], dropna=False)["technique"]
        .nunique()
        .reset_index(name="n")
        .sort_values(["task", "n", "max_length"], ascending=[True, False, True])
        .drop_duplicates("task")
    )
    frame = frame.merge(counts[["task", "max_length"]], on=["task", "max_length"])
    frame = frame.assign(key=[_technique_key(t) for t in frame["technique"]])
    # the same cell measured by several profiles: the one with the most trials
    frame = frame.sort_values("trials", ascending=False, kind="stable")
    return frame.drop_duplicates(["task", "key"]).set_index(["task", "key"])


def _ordered_tasks(tasks) -> list[str]:
    tasks = set(tasks)
    return [t for t in TASKS if t in tasks] + sorted(tasks - set(TASKS), key=str)


def _setting_text(row: pd.Series) -> str:
    setting = f"batch {int(row['batch_size'])}, {row['padding']}"
    return setting + (f" {int(row['max_length'])}" if pd.notna(row["max_length"]) else "")


def _verdict(
    low: float, high: float, change: float, direction: str, keep_metric: bool, tolerance: float
) -> str:
    if keep_metric and pd.notna(change) and change < -tolerance:
        return "does not hold"
    if pd.isna(low) or pd.isna(high):
        return "not resolved"
    confirms, refutes = (low > 1, high < 1) if direction == "above" else (high < 1, low > 1)
    if refutes:
        return "does not hold"
    if confirms and (not keep_metric or pd.notna(change)):
        return "holds"
    return "not resolved"


def _pair_row(claim, task, numerator, denominator, cells, direction, keep_metric, tolerance):
    """One (claim, task) row: ``numerator / denominator`` from ``cells`` (either may be absent)."""
    a, b = (_cell(cells, task, name) for name in (numerator, denominator))
    present = a if a is not None else b
    row = {
        "claim": claim,
        "task": task,
        "compared": f"{numerator} / {denominator or 'runner-up'}",
        "setting": _setting_text(present) if present is not None else "",
        "energy_ratio": math.nan,
        "ratio_ci95_low": math.nan,
        "ratio_ci95_high": math.nan,
        "metric_change": math.nan,
        "verdict": NOT_MEASURED,
        "cells": " / ".join(str(c["cell_id"]) if c is not None else "-" for c in (a, b)),
    }
    if a is None or b is None:
        return row
    ratio, half = energy_ratio(a, b)
    change = float(a["metric_value"]) - float(b["metric_value"])
    row.update(energy_ratio=ratio, ratio_ci95_low=ratio - half, ratio_ci95_high=ratio + half)
    row["metric_change"] = change
    if not math.isnan(ratio):
        row["verdict"] = _verdict(
            row["ratio_ci95_low"],
            row["ratio_ci95_high"],
            change,
            direction,
            keep_metric,
            tolerance,
        )
    return row


def _cell(cells: pd.DataFrame, task: str, technique: str | None) -> pd.Series | None:
    key = (task, _technique_key(technique))
    return cells.loc[key] if technique and key in cells.index else None


def _runner_up(cells: pd.DataFrame, task: str) -> str | None:
    """The cheapest technique of ``CLAIM_PRESETS`` measured for ``task`` (None if none)."""
    found = {t: _cell(cells, task, t) for t in CLAIM_PRESETS}
    energy = {
        t: c["j_per_1k_samples_mean"]
        for t, c in found.items()
        if c is not None and pd.notna(c["j_per_1k_samples_mean"])
    }
    return min(energy, key=energy.get) if energy else None


def _overall(claim: str, compared: str, rows: list[dict]) -> dict:
    """The "all tasks" row: the verdicts counted, the per-task ratios' geometric mean."""
    measured = [r for r in rows if r["verdict"] != NOT_MEASURED]
    counts = {v: sum(r["verdict"] == v for r in measured) for v in VERDICTS}
    if not measured:
        verdict = NOT_MEASURED
    elif max(counts.values()) == len(measured):
        verdict = max(counts, key=counts.get)
    else:
        parts = [(v, n) for v, n in counts.items() if n]
        verdict = ", ".join(
            f"{v} on {n} of {len(measured)} tasks" if i == 0 else f"{v} on {n}"
            for i, (v, n) in enumerate(parts)
        )
    ratios = np.array([r["energy_ratio"] for r in measured], dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    shown = sorted({r["compared"] for r in measured}) or [compared]
    settings = sorted({r["setting"] for r in measured if r["setting"]})
    changes = [r["metric_change"] for r in measured if pd.notna(r["metric_change"])]
    return {
        "claim": claim,
        "task": ALL_TASKS,
        "compared": shown[0] if len(shown) == 1 else ", ".join(shown),
        "setting": "; ".join(settings),
        "energy_ratio": float(np.exp(np.log(ratios).mean())) if len(ratios) else math.nan,
        "ratio_ci95_low": math.nan,
        "ratio_ci95_high": math.nan,
        "metric_change": min(changes) if changes else math.nan,
        "verdict": verdict,
        "cells": "",
    }


def claims(summary: pd.DataFrame, metric_tolerance: float = 0.005) -> pd.DataFrame:
    """The earlier student study's four claims judged on the records, per task and overall.

    Each claim compares two cells of one task at the original setting (batch size 16, padding
    to max_length; ok, model-scope cells): the energy per sample of the numerator technique over
    the denominator's, with its 95% interval (:func:`ratio_ci95`), and the numerator's metric
    minus the denominator's. Verdicts, from the interval ``[low, high]``:

    - 1 ``int8 / fp32`` and 1b ``int8+compile / fp32+compile`` ("int8 raises energy"): holds if
      ``low > 1``, does not hold if ``high < 1``.
    - 2 ``flash / fp32`` and 2b ``fp16_flash / fp16`` ("Flash Attention lowers energy without
      hurting accuracy"): holds if ``high < 1`` and the metric drops by at most
      ``metric_tolerance``; does not hold if ``low > 1`` or it drops by more.
    - 3 ``fp16 / autocast_fp16`` ("fp16 weights beat mixed precision"): holds if ``high < 1``,
      does not hold if ``low > 1``.
    - 4 ``fp16_flash / runner-up``, the runner-up the cheapest of :data:`CLAIM_PRESETS` on the
      task ("fp16 + Flash Attention is cheapest"): holds if ``high < 1``, does not hold if
      ``low > 1``.

    Otherwise (the interval includes 1, or is unknown: a single trial) "not resolved"; "not
    measured" where a cell, or its energy, is missing. Claim 1b has rows only for tasks where
    one of its cells exists; the others have a row for every task of the summary.

    The "all tasks" row of a claim: "holds" ("does not hold", "not resolved") if so on every
    measured task, else the counts (``holds on 4 of 6 tasks, not resolved on 2``); its
    ``energy_ratio`` is the geometric mean of the per-task ratios, its ``metric_change`` the
    smallest (the largest drop).

    Returns:
        ``CLAIM_COLUMNS``, claims in order, tasks in GLUE order then "all tasks"; no rows when
        the summary holds no cell.
    """
    frame = with_columns(summary, SUMMARY_COLUMNS)
    scoped = frame[frame["scope"].isna() | (frame["scope"] == "model")]
    if "status" in scoped.columns:
        scoped = scoped[scoped["status"] == "ok"]
    if scoped.empty:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    cells = _claim_cells(frame)
    tasks = _ordered_tasks(scoped["task"].dropna())
    out = []
    for claim, numerator, denominator, direction, keep_metric, every_task in CLAIMS:
        rows = []
        for task in tasks:
            other = denominator or _runner_up(cells, task)
            row = _pair_row(
                claim, task, numerator, other, cells, direction, keep_metric, metric_tolerance
            )
            if every_task or row["cells"] != "- / -":
                rows.append(row)
        compared = f"{numerator} / {denominator or 'runner-up'}"
        out += [*rows, _overall(claim, compared, rows)]
    return pd.DataFrame(out, columns=CLAIM_COLUMNS)
