"""Tidy records on disk: one JSON file per finished cell, written atomically, and results.csv.

A cell is one (profile, task, technique, batch size, padding, ...) configuration. Its id is a
hash of that configuration, so re-running a profile finds finished cells and never duplicates
them; an interrupted run leaves at most a temporary file, which is ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"

# results.csv columns, in order: identity, per-trial measures, cell-level facts.
TRIAL_COLUMNS = [
    "n_samples",
    "n_tokens",
    "passes",
    "time_s",
    "energy_j",
    "dynamic_energy_j",
    "samples_per_s",
    "tokens_per_s",
    "j_per_1k_samples",
    "j_per_token",
    "co2_mg",
]
IDENTITY_COLUMNS = [
    "profile",
    "task",
    "technique",
    "batch_size",
    "padding",
    "max_length",
    "trial",
    "status",
]


def cell_id(config: dict[str, Any]) -> str:
    """A stable id for a cell configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cell_path(cells_dir: Path, config: dict[str, Any]) -> Path:
    return Path(cells_dir) / str(config["profile"]) / f"{cell_id(config)}.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` so that ``path`` holds either the old or the whole new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, default=_jsonable)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def write_cell(cells_dir: Path, record: dict[str, Any]) -> Path:
    """Save one finished cell; ``record['config']`` identifies it."""
    path = cell_path(cells_dir, record["config"])
    write_json_atomic(path, {**record, "cell_id": path.stem})
    return path


def find_cell(cells_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    path = cell_path(cells_dir, config)
    return json.loads(path.read_text()) if path.exists() else None


def load_cells(cells_dir: Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Every finished cell (of one profile, if given), oldest first."""
    pattern = f"{profile}/*.json" if profile else "*/*.json"
    cells = [json.loads(p.read_text()) for p in sorted(Path(cells_dir).glob(pattern))]
    return sorted(cells, key=lambda c: c.get("measured_at", ""))


def trial_rows(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """One tidy row per (cell, trial); a skipped cell is one row with status ``skipped``."""
    rows = []
    for cell in cells:
        config = cell["config"]
        shared = {
            **{k: config.get(k) for k in IDENTITY_COLUMNS if k in config},
            "status": cell["status"],
            "reason": cell.get("reason", ""),
            "metric": cell.get("metric"),
            "metric_value": cell.get("metric_value"),
            "metrics": json.dumps(cell.get("metrics", {})),
            "metrics_backend": cell.get("metrics_backend"),
            "energy_source": cell.get("energy_source"),
            "idle_power_w": cell.get("idle_power_w"),
            "cv": cell.get("cv"),
            "cv_flag": cell.get("cv_flag"),
            **cell.get("latency", {}),
            **{f"{k}_before": v for k, v in cell.get("state_before", {}).items()},
            **{f"{k}_after": v for k, v in cell.get("state_after", {}).items()},
            **cell.get("environment", {}),
            "checkpoint": config.get("checkpoint"),
            "data_source": config.get("data_source"),
            "cell_id": cell["cell_id"],
            "measured_at": cell.get("measured_at"),
        }
        trials = cell.get("trials") or [{}]
        for trial in trials:
            rows.append({**shared, **trial})
    frame = pd.DataFrame(rows)
    leading = IDENTITY_COLUMNS + TRIAL_COLUMNS
    return frame.reindex(columns=leading + [c for c in frame.columns if c not in leading])


def ci95_half_width(values) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (NaN for n < 2)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan
    return float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, std and 95% CI half-width of each per-trial measure."""
    keys = ["profile", "task", "technique", "batch_size", "padding", "max_length", "cell_id"]
    ok = trials[trials["status"] == "ok"]
    rows = []
    for key, group in ok.groupby(keys, sort=False):
        first = group.iloc[0]
        row = dict(zip(keys, key, strict=True))
        row.update(
            trials=len(group),
            metric=first["metric"],
            metric_value=first["metric_value"],
            energy_source=first["energy_source"],
            cv_flag=first["cv_flag"],
            device_name=first.get("device_name"),
        )
        for column in (
            "time_s",
            "energy_j",
            "dynamic_energy_j",
            "samples_per_s",
            "j_per_1k_samples",
            "j_per_token",
            "co2_mg",
        ):
            values = group[column].astype(float).to_numpy()
            row[f"{column}_mean"] = float(np.mean(values))
            row[f"{column}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            row[f"{column}_ci95"] = ci95_half_width(values)
        for column in ("latency_p50_ms", "latency_p99_ms"):
            row[column] = first.get(column)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else keys)


def write_tables(results_dir: Path, cells_dir: Path) -> pd.DataFrame:
    """Rebuild results.csv (every trial of every profile) and summary.csv from the cells."""
    results_dir = Path(results_dir)
    cells = load_cells(cells_dir)
    if not cells:
        return pd.DataFrame()
    trials = trial_rows(cells)
    _write_csv_atomic(trials, results_dir / RESULTS_CSV)
    _write_csv_atomic(summarize(trials), results_dir / SUMMARY_CSV)
    return trials


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def read_results(results_dir: Path, profile: str | None = None) -> pd.DataFrame:
    """results.csv, optionally of one profile, with a clear error when nothing was measured."""
    path = Path(results_dir) / RESULTS_CSV
    if not path.exists():
        raise FileNotFoundError(
            f"no {path}: run the measurement notebooks first (python -m effbert run)"
        )
    frame = pd.read_csv(path)
    if profile is not None:
        frame = frame[frame["profile"] == profile]
        if frame.empty:
            raise ValueError(f"{path} holds no rows of profile {profile!r}")
    return frame


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
    ok = trials[trials["status"] == "ok"]
    columns = ["profile"] + [c for c in PROVENANCE_COLUMNS if c in ok.columns]
    table = ok.groupby(columns, dropna=False)["measured_at"].agg(["min", "max", "count"])
    return table.rename(columns={"min": "first", "max": "last", "count": "trials"}).reset_index()


def comparison(summary: pd.DataFrame, baseline: str = "fp32") -> pd.DataFrame:
    """Each cell beside the baseline at the same task and batch size: ratios and metric change."""
    keys = ["task", "batch_size", "padding", "max_length"]
    base = summary[summary["technique"] == baseline][
        keys + ["j_per_1k_samples_mean", "samples_per_s_mean", "metric_value"]
    ]
    table = summary.merge(base, on=keys, how="left", suffixes=("", "_base"))
    table["energy_vs_base"] = table["j_per_1k_samples_mean"] / table["j_per_1k_samples_mean_base"]
    table["speedup_vs_base"] = table["samples_per_s_mean"] / table["samples_per_s_mean_base"]
    table["metric_change"] = table["metric_value"] - table["metric_value_base"]
    columns = keys + [
        "technique",
        "j_per_1k_samples_mean",
        "j_per_1k_samples_ci95",
        "energy_vs_base",
        "samples_per_s_mean",
        "samples_per_s_ci95",
        "speedup_vs_base",
        "metric",
        "metric_value",
        "metric_change",
        "latency_p50_ms",
        "cv_flag",
    ]
    return table[columns].sort_values(keys + ["technique"]).reset_index(drop=True)


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table for the README (no extra dependency)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def check(
    trials: pd.DataFrame,
    recorded: pd.DataFrame,
    min_window_s: float,
    metric_tolerance: float,
    baseline: str = "fp32",
) -> pd.DataFrame:
    """Assert that measured cells are sound and each metric is near the baseline's.

    A pure function of the records: a published ``results.csv`` is re-checked without a GPU.

    Args:
        trials: the trial rows to check.
        recorded: every recorded row of the profile, where the baseline's cells are found.

    Returns:
        Per ok cell: the task metric, the baseline's, and their difference.
    """
    keys = ["task", "batch_size", "padding", "max_length"]
    columns = [*keys, "technique", "metric", "metric_value", f"metric_value_{baseline}"]
    if trials.empty:
        return pd.DataFrame(columns=[*columns, "difference"])
    failed = trials[trials["status"] == "failed"]
    assert failed.empty, f"cells failed:\n{failed[['task', 'technique', 'reason']]}"
    skipped = trials[trials["status"] == "skipped"]
    assert (skipped["reason"].fillna("").str.len() > 0).all(), "a skipped cell gives no reason"
    ok = trials[trials["status"] == "ok"]
    assert (ok["time_s"] >= min_window_s).all(), "a window shorter than min_window_s"
    assert (ok["n_samples"] > 0).all(), "a window processed no samples"
    assert ok["metric_value"].notna().all(), "a cell without its task metric"
    metered = ok[ok["energy_source"].fillna("none") != "none"]
    assert (metered["energy_j"] > 0).all(), "a window read no energy"
    reference = recorded[(recorded["technique"] == baseline) & (recorded["status"] == "ok")]
    compared = ok.drop_duplicates("cell_id")[[*keys, "technique", "metric", "metric_value"]].merge(
        reference.drop_duplicates("cell_id")[[*keys, "metric_value"]],
        on=keys,
        how="left",
        suffixes=("", f"_{baseline}"),
    )
    compared["difference"] = compared["metric_value"] - compared[f"metric_value_{baseline}"]
    far = compared[compared["difference"].abs() > metric_tolerance]
    assert far.empty, f"metric further than {metric_tolerance} from {baseline}:\n{far}"
    return compared
