"""What a record holds: the columns of the trial and summary tables, in order."""

from __future__ import annotations

import pandas as pd

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
    "kernels_checked",
    "worker_gpu",
    "cell_id",
    "measured_at",
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
