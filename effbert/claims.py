"""The earlier student study's claims, judged on the trials: each a ratio of two cells' energy
per sample, paired by round, per task and pooled over tasks, with the whole family of tests
Holm-adjusted, and a verdict that can also be "equivalent within ±3%".

The family: every (claim, task) test and every pooled test of one judgement, adjusted
together. A task's ratio pairs trial ``i`` of the two cells (measured in the same round of an
interleaved run); the pooled ratio pools the tasks' paired log-ratios, shown with the p of a
task effect (one-way ANOVA): at the original setting every task runs the same shapes, so the
workload does not depend on the task. Total energy decides; energy above idle is shown beside.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from effbert import stats
from effbert.schema import with_columns
from effbert.stats import ORIGINAL_SETTING, single_device
from effbert.tasks import TASKS
from effbert.techniques import parse

KEPT_METRIC_DROP = 0.005
"""How far a metric may drop and still count as kept (the answer's best cell, the claims that
keep accuracy; the claims also allow one dev example)."""
POOLED_SETTINGS = ("original",)
"""Settings whose workload does not depend on the task (every input padded to one length):
only there are a claim's tasks pooled into one verdict."""
CLAIM_PRESETS = ("fp32", "int8", "autocast_fp16", "autocast_bf16", "fp16", "flash")
"""The techniques claim 4 ranks fp16_flash against."""
POOLED = "pooled"
NOT_MEASURED = "not measured"
SETTINGS = {"original": ORIGINAL_SETTING, "packed": {"padding": "packed"}}
# (claim, numerator, denominator or None for "the cheapest other preset", the claim holds when
# the ratio is "above" or "below" 1, the metric must be kept, the setting it is judged at)
CLAIMS = [
    ("1 int8 quantization raises energy", "int8", "fp32", "above", False, "original"),
    ("1b int8 raises energy, compiled", "int8+compile", "fp32+compile", "above", False, "original"),
    (
        "2 fused SDPA attention lowers energy in fp32, same accuracy",
        "flash",
        "fp32",
        "below",
        True,
        "original",
    ),
    (
        "2b fused SDPA attention lowers energy in fp16",
        "fp16_flash",
        "fp16",
        "below",
        True,
        "original",
    ),
    (
        "2c FlashAttention lowers energy (packed bf16, against the memory-efficient kernel)",
        "bf16+varlen+graphs+cls_last",
        "bf16+varlen_mem+graphs+cls_last",
        "below",
        True,
        "packed",
    ),
    ("3 fp16 weights beat mixed precision", "fp16", "autocast_fp16", "below", False, "original"),
    ("4 fp16 + fused attention is cheapest", "fp16_flash", None, "below", False, "original"),
]
CLAIM_COLUMNS = [
    "claim",
    "task",
    "compared",
    "setting",
    "n",
    "ratio",
    "low",
    "high",
    "p_holm",
    "above_idle",
    "above_idle_low",
    "above_idle_high",
    "task_effect_p",
    "metric_change",
    "examples_changed",
    "attention_ran",
    "verdict",
    "cells",
]


def _technique_key(name) -> str:
    """What a technique runs (its axes), so that ``compile+int8`` is found as ``int8+compile``;
    an unknown name stands for itself."""
    try:
        t = parse(str(name))
    except ValueError:
        return str(name)
    return "|".join((t.precision, t.attention, t.execution, t.shortcut, t.fusion))


def cell_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per measured, current, model-scope cell of one device: its identity, metric,
    the attention kernel that ran, and its per-trial energies in round order."""
    frame = with_columns(trials, ["superseded", "scope", "attention_kernel", "device_name"])
    frame = frame[(frame["status"] == "ok") & ~frame["superseded"].fillna(False).astype(bool)]
    frame = single_device(frame[frame["scope"].fillna("model") == "model"])
    rows = []
    for cell_id, group in frame.sort_values("trial").groupby("cell_id", sort=False):
        first = group.iloc[0]
        rows.append(
            {
                "cell_id": cell_id,
                "task": first["task"],
                "technique": first["technique"],
                "key": _technique_key(first["technique"]),
                "batch_size": int(first["batch_size"]),
                "padding": first["padding"],
                "metric": first["metric"],
                "metric_value": float(first["metric_value"]),
                "dev_rows": float(first["n_samples"] / first["passes"]),
                "attention_kernel": first["attention_kernel"]
                if isinstance(first["attention_kernel"], str)
                else "none seen",
                "energy": group["j_per_1k_samples"].to_numpy(float),
                "above_idle": group["dynamic_j_per_1k_samples"].to_numpy(float),
            }
        )
    return pd.DataFrame(rows)


def _at(cells: pd.DataFrame, setting: str) -> pd.DataFrame:
    wanted = SETTINGS[setting]
    mask = np.logical_and.reduce([cells[k] == v for k, v in wanted.items()])
    return cells[mask]


def _pairs(cells: pd.DataFrame, numerator: str, denominator: str | None, setting: str):
    """(task, numerator cell, denominator cell) for each task where both exist at the
    claim's setting (the same batch size and padding)."""
    chosen = _at(cells, setting) if not cells.empty else cells
    for task in [t for t in TASKS if t in set(chosen.get("task", []))]:
        mine = chosen[chosen["task"] == task]
        top = _one(mine, numerator)
        if top is None:
            continue
        bottom = _one(mine, denominator) if denominator else _runner_up(mine)
        if bottom is not None and bottom["batch_size"] == top["batch_size"]:
            yield task, top, bottom


def _one(cells: pd.DataFrame, technique: str) -> pd.Series | None:
    found = cells[cells["key"] == _technique_key(technique)]
    return None if found.empty else found.sort_values("batch_size").iloc[0]


def _runner_up(cells: pd.DataFrame) -> pd.Series | None:
    """The cheapest of ``CLAIM_PRESETS`` on the task (chosen from the same records, so claim
    4's test is optimistic for the runner-up: read it with that in mind)."""
    found = [c for c in (_one(cells, t) for t in CLAIM_PRESETS) if c is not None]
    return min(found, key=lambda c: float(np.mean(c["energy"])), default=None)


def claims(trials: pd.DataFrame, metric_tolerance: float = KEPT_METRIC_DROP) -> pd.DataFrame:
    """Every claim judged per task, and pooled at ``POOLED_SETTINGS``: ``CLAIM_COLUMNS``,
    claims in order, the pooled row after each claim's tasks; no rows where no claim has its
    two cells.

    A kept metric (claims 2, 2b, 2c) may drop by at most ``metric_tolerance`` or one example
    of the dev set, whichever is more (one example of WNLI's 71 is 0.014)."""
    cells = cell_trials(trials)
    rows = []
    for claim, numerator, denominator, direction, keep, setting in CLAIMS:
        if cells.empty:
            break
        per_task = list(_pairs(cells, numerator, denominator, setting))
        mine = []
        for task, a, b in per_task:
            r = stats.paired_log_ratio(a["energy"], b["energy"])
            mine.append(_row(claim, task, a, b, r, setting, keep, metric_tolerance, direction))
        if len(per_task) > 1 and setting in POOLED_SETTINGS:
            mine.append(_pooled_row(claim, per_task, mine, direction))
        rows += mine
    if not rows:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    adjusted = stats.holm([row["_ratio"].p_value for row in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_holm"] = p
        broken, r, direction = row.pop("_metric_broken"), row.pop("_ratio"), row.pop("_direction")
        row["verdict"] = "does not hold (metric)" if broken else stats.verdict(r, p, direction)
    return pd.DataFrame(rows)[CLAIM_COLUMNS]


def _logs(a: pd.Series, b: pd.Series, column: str) -> np.ndarray:
    n = min(len(a[column]), len(b[column]))
    return np.log(a[column][:n]) - np.log(b[column][:n])


def _pooled_row(claim: str, per_task: list, task_rows: list[dict], direction: str) -> dict:
    """The claim over all its tasks: their paired log-ratios pooled, the p of a task effect,
    the largest metric drop, broken where any task's metric is."""
    pooled, p_task = stats.pooled_log_ratio([_logs(a, b, "energy") for _, a, b in per_task])
    idle, _ = stats.pooled_log_ratio([_logs(a, b, "above_idle") for _, a, b in per_task])
    worst = min(task_rows, key=lambda row: row["metric_change"])
    return {
        **worst,
        "task": POOLED,
        "n": pooled.n,
        "ratio": pooled.ratio,
        "low": pooled.low,
        "high": pooled.high,
        "above_idle": idle.ratio,
        "above_idle_low": idle.low,
        "above_idle_high": idle.high,
        "task_effect_p": p_task,
        "attention_ran": ", ".join(sorted({row["attention_ran"] for row in task_rows})),
        "cells": "",
        "_metric_broken": any(row["_metric_broken"] for row in task_rows),
        "_ratio": pooled,
        "_direction": direction,
    }


def _change(a: pd.Series, b: pd.Series) -> tuple[float, int]:
    """The numerator's metric minus the denominator's, and in examples where the metric
    counts them (accuracy), else NaN."""
    change = a["metric_value"] - b["metric_value"]
    examples = round(change * a["dev_rows"]) if a["metric"] == "accuracy" else math.nan
    return change, examples


def _row(claim, task, a, b, r, setting, keep, tolerance, direction) -> dict:
    change, examples = _change(a, b)
    idle = stats.paired_log_ratio(a["above_idle"], b["above_idle"])
    allowed = max(tolerance, 1 / a["dev_rows"]) if a["dev_rows"] else tolerance
    return {
        "claim": claim,
        "task": task,
        "compared": f"{a['technique']} / {b['technique']}",
        "setting": f"batch {a['batch_size']}, {a['padding']}",
        "n": r.n,
        "ratio": r.ratio,
        "low": r.low,
        "high": r.high,
        "above_idle": idle.ratio,
        "above_idle_low": idle.low,
        "above_idle_high": idle.high,
        "task_effect_p": math.nan,
        "metric_change": change,
        "examples_changed": examples,
        "attention_ran": f"{a['attention_kernel']} / {b['attention_kernel']}",
        "cells": f"{a['cell_id']} / {b['cell_id']}",
        "_metric_broken": bool(keep and change < -allowed - 1e-12),
        "_ratio": r,
        "_direction": direction,
    }
