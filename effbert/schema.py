"""What a record holds: a cell's identity, the checks its content must pass before it is
trusted, and the columns of the trial and summary tables, in order."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

STATUSES = ("ok", "skipped", "failed")
ENERGY_METERS = ("nvml", "rapl")  # sources whose windows must have read energy

# results.csv columns, in order: identity, per-trial measures, cell-level facts.
TRIAL_COLUMNS = [
    "n_samples",
    "n_tokens",
    "passes",
    "time_s",
    "energy_j",
    "dynamic_energy_j",
    "dynamic_j_per_1k_samples",
    "samples_per_s",
    "tokens_per_s",
    "j_per_1k_samples",
    "j_per_token",
    "co2_mg",
    "cpu_energy_j",
    "cpu_j_per_1k_samples",
    "cpu_time_s",
    "cpu_cores_busy",
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


# how a cell ran: its technique's axes, padding left, time outside the windows (preparing,
# compiling included; warming up; latency, kernel and metric passes) and peak memory
CELL_FACTS = [
    "precision",
    "attention",
    "execution",
    "shortcut",
    "fusion",
    "pad_tokens",
    "prepare_s",
    "warmup_s",
    "finish_s",
    "peak_memory_mb",
]


CELL_COLUMNS = [
    "reason",
    "metric",
    "metric_value",
    "metric_source",
    "metrics",
    "metrics_backend",
    "energy_source",
    "idle_power_w",
    "cv",
    "cv_flag",
    "checkpoint",
    "data_source",
    "data_fingerprint",
    "checkpoint_fingerprint",
    "legacy",
    "scope",
    "cpu_energy_source",
    "cpu_energy_reason",
    *CELL_FACTS,
    "fallback",
    "attention_kernel",
    "kernels_checked",
    "worker_gpu",
    "cell_id",
    "measured_at",
    "superseded",
]


SUMMARY_KEYS = [*IDENTITY_COLUMNS[:6], "scope", "cell_id"]


SUMMARY_MEASURES = [
    "time_s",
    "energy_j",
    "dynamic_energy_j",
    "samples_per_s",
    "j_per_1k_samples",
    "dynamic_j_per_1k_samples",
    "j_per_token",
    "co2_mg",
    "cpu_j_per_1k_samples",
    "cpu_cores_busy",
]


SUMMARY_COLUMNS = [
    *SUMMARY_KEYS,
    "trials",
    "metric",
    "metric_value",
    "energy_source",
    "cv_flag",
    "legacy",
    "fallback",
    "attention_kernel",
    "device_name",
    *(f"{m}_{stat}" for m in SUMMARY_MEASURES for stat in ("mean", "std", "ci95")),
    "latency_p50_ms",
    "latency_p99_ms",
    *CELL_FACTS,
    "kernels_checked",
    "metric_source",
]


def with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with every one of ``columns`` (missing ones empty), its own columns kept."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.reindex(columns=[*frame.columns, *missing]) if missing else frame


def cell_id(config: dict[str, Any]) -> str:
    """A stable id for a cell configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value > 0


def record_problem(record: Any, path: Path) -> str | None:
    """Why a cell record cannot be trusted, or None: its identity (the file name is the hash
    of its config), its status, and for a measured cell its trials and metric, each a finite
    number where one was measured."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return "it holds no config"
    config = record["config"]
    if record.get("status") not in STATUSES:
        return f"its status {record.get('status')!r} is none of {', '.join(STATUSES)}"
    if cell_id(config) != Path(path).stem:
        return f"its config hashes to {cell_id(config)}, not to its file name (a copied record?)"
    if record.get("cell_id") not in (None, Path(path).stem):
        return f"it names the cell {record.get('cell_id')!r}, not its file name"
    for key, kind in (("task", str), ("technique", str), ("batch_size", int)):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            return f"its config's {key} is {config.get(key)!r}"
    if record["status"] != "ok":
        return None
    trials = record.get("trials")
    if not isinstance(trials, list) or not trials or not all(isinstance(t, dict) for t in trials):
        return "it is marked ok but holds no trials"
    metered = record.get("energy_source") in ENERGY_METERS
    for i, trial in enumerate(trials):
        for key in ("time_s", "n_samples", "samples_per_s") + (("energy_j",) if metered else ()):
            if not _positive(trial.get(key)):
                return f"trial {i}'s {key} is {trial.get(key)!r}, not a positive number"
    value = record.get("metric_value")
    if not _number(value) or not math.isfinite(value):
        return f"its metric_value is {value!r}, not a finite number"
    return None
