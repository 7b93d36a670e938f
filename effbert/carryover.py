"""Carry-over between interleaved windows: does a window's power follow the power of the
window before it (another cell's, heating the card or leaving its clocks up)? A slope near 0
means the windows are independent; the pre-roll before each window is there to make it so."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from effbert.schema import with_columns

SWEEP_GAP_S = 120.0
"""Records of one task written further apart than this come from different sweeps."""


def sweep_numbers(task: pd.DataFrame) -> pd.Series:
    """Which sweep each window of one task came from (0, 1, ...): a run may measure a task in
    several sweeps (notebooks 20 and 25), each numbering its windows from 0. A sweep writes its
    cells' records within its last round, so a gap of ``SWEEP_GAP_S`` between the cells'
    record times starts a new sweep."""
    written = pd.to_datetime(task["measured_at"], utc=True, errors="coerce")
    cell_written = written.groupby(task["cell_id"]).transform("max").sort_values()
    gap_s = cell_written.diff().dt.total_seconds()
    return gap_s.gt(SWEEP_GAP_S).cumsum().reindex(task.index)


def lagged_power(trials: pd.DataFrame) -> pd.DataFrame:
    """Each interleaved window with its power, its deviation from its cell's mean power, and
    the power of the window before it in its sweep: as recorded by the sweep where it was
    (``previous_power_w``), else from the windows' order."""
    frame = with_columns(trials, ["order", "superseded", "measured_at", "previous_power_w"])
    frame = frame[(frame["status"] == "ok") & frame["order"].notna()]
    frame = frame[~frame["superseded"].fillna(False).astype(bool)].copy()
    frame["power_w"] = frame["energy_j"] / frame["time_s"]
    frame["deviation_w"] = frame["power_w"] - frame.groupby("cell_id")["power_w"].transform("mean")
    out = []
    for _, task in frame.groupby(["profile", "task"], sort=False):
        task = task.assign(sweep=sweep_numbers(task)).sort_values(["sweep", "order"])
        before = task.groupby("sweep")
        recorded = pd.to_numeric(task["previous_power_w"], errors="coerce")
        task["previous_power_w"] = recorded.fillna(before["power_w"].shift(1))
        task["previous_cell"] = before["cell_id"].shift(1)
        out.append(task[before.cumcount() > 0])
    columns = ["task", "technique", "order", "power_w", "deviation_w", "previous_power_w"]
    return pd.concat(out)[columns + ["previous_cell"]] if out else pd.DataFrame(columns=columns)


def lag_regression(lagged: pd.DataFrame) -> dict[str, float]:
    """Slope of a window's power deviation on the previous window's power (W per W), its
    correlation and the windows counted; NaN where fewer than three windows."""
    usable = lagged.dropna(subset=["deviation_w", "previous_power_w"])
    if len(usable) < 3:
        return {"slope": math.nan, "r": math.nan, "windows": len(usable)}
    x = usable["previous_power_w"].to_numpy(float)
    y = usable["deviation_w"].to_numpy(float)
    slope = float(np.polyfit(x, y, 1)[0])
    spread = float(np.std(x) * np.std(y))
    r = float(np.mean((x - x.mean()) * (y - y.mean())) / spread) if spread > 0 else math.nan
    return {"slope": slope, "r": r, "windows": len(usable)}


def carry_over_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The lag regression per task and over all tasks."""
    lagged = lagged_power(trials)
    rows = [{"task": t, **lag_regression(g)} for t, g in lagged.groupby("task", sort=False)]
    rows.append({"task": "all", **lag_regression(lagged)})
    return pd.DataFrame(rows)
