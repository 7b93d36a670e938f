"""Tidy records on disk: one JSON file per finished cell, written atomically, and results.csv.

A cell is one (profile, task, technique, batch size, padding, ...) configuration. Its id is a
hash of that configuration, so re-running a profile finds finished cells and never duplicates
them; an interrupted run leaves at most a temporary file, which is ignored.

results.csv is rebuilt from the cells and checked when read: against results.manifest.json
(its sha256) and against the cell files. A table that fails either check is rebuilt from the
cells; one that cannot be rebuilt raises :class:`StoreError` rather than being read partially.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
MANIFEST_JSON = "results.manifest.json"
RERUN = "python -m effbert run"

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


class StoreError(RuntimeError):
    """A record on disk that cannot be trusted, or one that cannot be written."""


def cell_id(config: dict[str, Any]) -> str:
    """A stable id for a cell configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cell_path(cells_dir: Path, config: dict[str, Any]) -> Path:
    return Path(cells_dir) / str(config["profile"]) / f"{cell_id(config)}.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` so that ``path`` holds either the old or the whole new content.

    Raises:
        StoreError: the file could not be written (disk full, read-only folder).
    """
    _write_atomic(
        Path(path), lambda handle: json.dump(payload, handle, indent=1, default=_jsonable)
    )


def write_file_atomic(path: Path, write: Callable[[IO[str]], Any]) -> None:
    """Let ``write`` fill a unique temporary file beside ``path``, then move it over ``path``,
    readable by all (``mkstemp`` makes it private): ``path`` holds either the old or the whole
    new content.

    Raises:
        OSError: the file could not be written.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _write_atomic(path: Path, write: Callable[[IO[str]], Any]) -> None:
    """``write_file_atomic``, its failure as a StoreError that says how to go on."""
    try:
        write_file_atomic(path, write)
    except OSError as err:
        raise _write_error(path, err) from err


def _write_error(path: Path, err: OSError) -> StoreError:
    return StoreError(
        f"cannot write {path}: {err.strerror or err}. Free disk space or make {path.parent} "
        f"writable, then re-run ({RERUN}); the finished cells are kept and not measured again"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def write_cell(cells_dir: Path, record: dict[str, Any]) -> Path:
    """Save one finished cell; ``record['config']`` identifies it."""
    path = cell_path(cells_dir, record["config"])
    write_json_atomic(path, {**record, "cell_id": path.stem})
    return path


def read_cell(path: Path) -> dict[str, Any]:
    """One cell file, checked to hold a config and a status.

    Raises:
        StoreError: the file is truncated, not JSON, or lacks ``config`` or ``status``.
    """
    path = Path(path)
    fix = f"delete {path} to measure that cell again ({RERUN}), or restore it from a copy"
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read cell {path} ({err}): {fix}") from err
    if (
        not isinstance(cell, dict)
        or not isinstance(cell.get("config"), dict)
        or "status" not in cell
    ):
        raise StoreError(f"cell {path} lacks its config or status: {fix}")
    return {**cell, "cell_id": cell.get("cell_id") or path.stem}


def find_cell(cells_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    path = cell_path(cells_dir, config)
    return read_cell(path) if path.exists() else None


def finished(cells_dir: Path, config: dict[str, Any]) -> bool:
    """Whether a cell's record is final (measured, or skipped): a re-run reads it back."""
    return (find_cell(cells_dir, config) or {}).get("status") in ("ok", "skipped")


def load_cells(cells_dir: Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Every finished cell (of one profile, if given), oldest first; temporary files ignored.

    Raises:
        StoreError: a cell file is damaged (the message names it).
    """
    pattern = f"{profile}/*.json" if profile else "*/*.json"
    paths = sorted(p for p in Path(cells_dir).glob(pattern) if not p.name.startswith("."))
    cells = [read_cell(p) for p in paths]
    return sorted(cells, key=lambda c: str(c.get("measured_at") or ""))


def cell_record(cells_dir: Path, cell_id: str) -> dict[str, Any]:
    """One cell's full record (kernels, trials, worker) by its id, whatever its profile.

    Raises:
        StoreError: no record has that id, or its file is damaged.
    """
    path = next(Path(cells_dir).glob(f"*/{cell_id}.json"), None)
    if path is None:
        raise StoreError(f"no cell record {cell_id!r} under {cells_dir}")
    return read_cell(path)


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with every one of ``columns`` (missing ones empty), its own columns kept."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.reindex(columns=[*frame.columns, *missing]) if missing else frame


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
            "metric_source": cell.get("metric_source", "forward pass"),
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
            "data_fingerprint": config.get("fingerprints", {}).get("data"),
            "checkpoint_fingerprint": config.get("fingerprints", {}).get("checkpoint"),
            # made before cells were identified by their inputs' fingerprints: shown, never reused
            "legacy": "fingerprints" not in config,
            "scope": cell.get("scope", "model"),
            "cpu_energy_source": cell.get("cpu_energy_source"),
            "cpu_energy_reason": cell.get("cpu_energy_reason"),
            **cell.get("axes", {}),
            "prepare_s": cell.get("prepare_s"),
            "warmup_s": cell.get("warmup_s"),
            "finish_s": cell.get("finish_s"),
            "peak_memory_mb": cell.get("peak_memory_mb"),
            "pad_tokens": cell.get("pad_tokens"),
            "fallback": cell.get("fallback"),
            "worker_gpu": (cell.get("worker") or {}).get("cuda_visible_devices"),
            "kernels_checked": bool((cell.get("kernels") or {}).get("top")),
            "cell_id": cell["cell_id"],
            "measured_at": cell.get("measured_at"),
        }
        trials = cell.get("trials") or [{}]
        for trial in trials:
            rows.append({**shared, **trial})
    frame = pd.DataFrame(rows)
    leading = IDENTITY_COLUMNS + TRIAL_COLUMNS
    frame = frame.reindex(columns=leading + [c for c in frame.columns if c not in leading])
    return _with_columns(frame, CELL_COLUMNS)


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
    trials = _with_columns(trials, IDENTITY_COLUMNS + TRIAL_COLUMNS + CELL_COLUMNS)
    ok = trials[trials["status"] == "ok"]
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


def write_tables(results_dir: Path, cells_dir: Path) -> pd.DataFrame:
    """Rebuild results.csv (every trial of every profile), summary.csv and the manifest.

    Writers of one ``results_dir`` take turns (an exclusive lock on the folder), so two
    processes finishing at once leave the three files consistent.

    Returns:
        The trial rows written (no rows, and nothing written, when there are no cells).

    Raises:
        StoreError: a cell is damaged, or a table cannot be written (the old one stays).
    """
    results_dir = Path(results_dir)
    path = results_dir / RESULTS_CSV
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        lock = os.open(results_dir, os.O_RDONLY)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cells = load_cells(cells_dir)
        trials = trial_rows(cells)
        if not cells:
            return trials
        text = _csv_text(trials)
        _write_atomic(path, lambda handle: handle.write(text))
        summary = _csv_text(summarize(trials))
        _write_atomic(results_dir / SUMMARY_CSV, lambda handle: handle.write(summary))
        manifest = {
            "rows": len(trials),
            "cells": len(cells),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "cell_ids": sorted({c["cell_id"] for c in cells}),
        }
        write_json_atomic(results_dir / MANIFEST_JSON, manifest)
        return trials
    finally:
        os.close(lock)


def _csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _parse_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype={"cell_id": str, "measured_at": str})


def _fingerprint(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """(cell id, measured at) of every row, sorted: which cells a table holds, and how many rows."""
    trials = _with_columns(trials, ["cell_id", "measured_at"])
    ids = trials["cell_id"].fillna("").astype(str)
    times = trials["measured_at"].fillna("").astype(str)
    return sorted(zip(ids, times, strict=True))


def _manifest_problem(results_dir: Path, data: bytes) -> str | None:
    """Why the bytes of results.csv fail their manifest (None when they pass or there is none)."""
    path = results_dir / MANIFEST_JSON
    if not path.exists():
        return None
    try:
        expected = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"cannot be checked: its manifest {path} is damaged ({err})"
    if hashlib.sha256(data).hexdigest() != expected:
        return f"does not match the sha256 in {path} (truncated or edited)"
    return None


def _checked_table(
    path: Path, expected: pd.DataFrame | None
) -> tuple[pd.DataFrame | None, str | None]:
    """results.csv parsed and checked against its manifest and the cells' rows (``expected``).

    Returns:
        The table and None, or None and why the table cannot be trusted.
    """
    if not path.exists():
        return None, "is missing"
    data = path.read_bytes()
    problem = _manifest_problem(path.parent, data)
    if problem is not None:
        return None, problem
    try:
        frame = _parse_csv(data)
    except ValueError as err:
        return None, f"cannot be parsed ({err})"
    if expected is not None and _fingerprint(frame) != _fingerprint(expected):
        return None, "disagrees with the cell files (other cells, rows or measurement times)"
    return frame, None


def read_results(
    results_dir: Path, profile: str | None = None, cells_dir: Path | None = None
) -> pd.DataFrame:
    """results.csv, optionally of one profile, checked before it is trusted.

    The table is checked against its manifest (sha256) and, when there are cell files, against
    them (which cells, how many rows, when measured). A table that is missing, truncated,
    edited or stale is rebuilt from the cells, with a warning naming it.

    Args:
        results_dir: Folder of results.csv.
        profile: Keep only the rows of this profile.
        cells_dir: Folder of the cell files (default ``results_dir / "cells"``).

    Raises:
        FileNotFoundError: nothing was measured yet.
        StoreError: results.csv fails its checks and there are no cells to rebuild it from.
        ValueError: no rows of ``profile``.
    """
    results_dir = Path(results_dir)
    path = results_dir / RESULTS_CSV
    cells_dir = results_dir / "cells" if cells_dir is None else Path(cells_dir)
    cells = load_cells(cells_dir) if cells_dir.is_dir() else []
    if not path.exists() and not cells:
        raise FileNotFoundError(f"no {path}: run the measurement notebooks first ({RERUN})")
    expected = trial_rows(cells) if cells else None
    frame, problem = _checked_table(path, expected)
    if problem is not None:
        if expected is None:
            raise StoreError(
                f"{path} {problem}, and there are no cells in {cells_dir} to rebuild it from: "
                f"restore it (with {MANIFEST_JSON}) from a copy, or measure again ({RERUN})"
            )
        logger.warning(
            "%s %s; rebuilt it from the %d cells in %s", path, problem, len(cells), cells_dir
        )
        text = _csv_text(expected)
        try:
            write_tables(results_dir, cells_dir)
        except StoreError as err:
            logger.warning("using the rebuilt table without saving it: %s", err)
        frame = _parse_csv(text.encode("utf-8"))
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
    trials = _with_columns(trials, ["profile", "status", "measured_at"])
    ok = trials[trials["status"] == "ok"]
    columns = ["profile"] + [c for c in PROVENANCE_COLUMNS if c in ok.columns]
    table = ok.groupby(columns, dropna=False)["measured_at"].agg(["min", "max", "count"])
    table = table.rename(columns={"min": "first", "max": "last", "count": "trials"}).reset_index()
    return table.reindex(columns=[*columns, "first", "last", "trials"])


def provenance_sheet(trials: pd.DataFrame) -> pd.DataFrame:
    """``provenance`` turned on its side, a column per environment and a row per field: a run
    has one or two environments, so it fits the page where a row of 16 fields would not."""
    table = provenance(trials)
    table.index = [f"environment {i + 1}" for i in range(len(table))]
    return table.T.rename_axis(None)


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
    """Each cell beside the baseline at the same task and batch size: ratios and metric change."""
    keys = ["task", "batch_size", "padding", "max_length", "scope"]
    summary = _with_columns(summary, SUMMARY_COLUMNS)
    base = summary[summary["technique"] == baseline][
        keys
        + ["j_per_1k_samples_mean", "j_per_1k_samples_ci95", "samples_per_s_mean", "metric_value"]
    ]
    table = summary.merge(base, on=keys, how="left", suffixes=("", "_base"))
    table["energy_vs_base"], table["energy_vs_base_ci95"] = ratio_ci95(
        table["j_per_1k_samples_mean"],
        table["j_per_1k_samples_ci95"],
        table["j_per_1k_samples_mean_base"],
        table["j_per_1k_samples_ci95_base"],
    )
    table["speedup_vs_base"] = table["samples_per_s_mean"] / table["samples_per_s_mean_base"]
    table["metric_change"] = table["metric_value"] - table["metric_value_base"]
    columns = keys + [
        "technique",
        "j_per_1k_samples_mean",
        "j_per_1k_samples_ci95",
        "energy_vs_base",
        "energy_vs_base_ci95",
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


def headline(summary: pd.DataFrame, baseline: str = "fp32") -> pd.DataFrame:
    """Energy per sample relative to the baseline, task by technique, at the smallest batch size
    (throughput relative to the baseline where no energy was measured), as text with the 95%
    interval, e.g. ``0.21× ±0.01``."""
    from effbert.models import TECHNIQUES
    from effbert.tasks import TASKS

    table = comparison(summary, baseline)
    if table.empty:
        return pd.DataFrame()
    table = main_setting(table)
    measured = table["energy_vs_base"].notna().any()
    value, half = ("energy_vs_base", "energy_vs_base_ci95") if measured else ("speedup_vs_base", "")
    table = table.assign(
        shown=[
            "1× (reference)"
            if technique == baseline
            else f"{v:.2f}×" + (f" ±{h:.2f}" if half and pd.notna(h) else "")
            for technique, v, h in zip(
                table["technique"], table[value], table[half or value], strict=True
            )
        ]
    )
    out = table.pivot_table(index="task", columns="technique", values="shown", aggfunc="first")
    tasks = [t for t in TASKS if t in out.index] + sorted(set(out.index) - set(TASKS))
    techniques = [t for t in TECHNIQUES if t in out.columns]
    techniques += sorted(set(out.columns) - set(techniques))
    out = out.reindex(index=tasks, columns=techniques).fillna("")
    out.columns.name = f"{'energy' if measured else 'throughput'} / {baseline}"
    return out


def with_intervals(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary`` narrower for a page: each ``<name>_mean`` and ``<name>_ci95`` pair as one
    column ``<name>`` reading "mean ± half-width", every float to ``digits`` significant
    digits (whole numbers from 10^digits up)."""

    def number(value: float) -> str:
        if pd.isna(value):
            return ""
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"

    out = {}
    for column in summary.columns:
        if column.endswith("_ci95") and f"{column[:-5]}_mean" in summary:
            continue
        values = summary[column]
        if column.endswith("_mean"):
            name, ci = column[:-5], summary.get(f"{column[:-5]}_ci95")
            if ci is not None:
                out[name] = [
                    number(m) if pd.isna(c) else f"{number(m)} ± {number(c)}"
                    for m, c in zip(values, ci, strict=True)
                ]
                continue
        if pd.api.types.is_float_dtype(values):
            values = values.map(number)
        out[column] = values
    return pd.DataFrame(out, index=summary.index)


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table for the README (no extra dependency)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def _main_setting_first(column: pd.Series) -> pd.Series:
    """Sort key: padding ``max_length`` first, then smaller batches (the original setting)."""
    if column.name == "padding":
        return column.ne("max_length")
    return column


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
    assert (skipped["reason"].fillna("").astype(str).str.len() > 0).all(), (
        "a skipped cell gives no reason"
    )
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
    compared["compared_with"] = np.where(
        compared[f"metric_value_{baseline}"].notna(),
        "same batch and padding",
        f"no {baseline} cell",
    )
    # cells of a setting the baseline was not measured at: its cell of the task's main setting
    per_task = (
        reference.drop_duplicates("cell_id")
        .sort_values(["padding", "batch_size"], key=_main_setting_first)
        .drop_duplicates("task")
        .set_index("task")
    )
    missing = compared[f"metric_value_{baseline}"].isna() & compared["task"].isin(per_task.index)
    fallback = per_task.loc[compared.loc[missing, "task"]]
    compared.loc[missing, f"metric_value_{baseline}"] = fallback["metric_value"].to_numpy()
    compared.loc[missing, "compared_with"] = [
        f"batch {r.batch_size}, {r.padding}" for r in fallback.itertuples()
    ]
    compared["difference"] = compared["metric_value"] - compared[f"metric_value_{baseline}"]
    far = compared[compared["difference"].abs() > metric_tolerance]
    assert far.empty, f"metric further than {metric_tolerance} from {baseline}:\n{far}"
    return compared


def signed_change(value: float) -> str:
    """A metric change with its sign: ``0`` where none, small ones in scientific notation so
    that a change never reads as ``+0.0000``."""
    if pd.isna(value):
        return ""
    if value == 0:
        return "0"
    return f"{value:+.1e}" if abs(value) < 5e-5 else f"{value:+.4f}"


def findings(summary: pd.DataFrame, baseline: str = "fp32") -> str:
    """The analysis' conclusion as Markdown, generated from the records: per technique, its
    energy relative to the baseline across tasks (each ratio with its 95% interval), the largest
    change in a task metric, and the cells each finding comes from."""
    table = comparison(summary, baseline)
    if table.empty:
        return "No measured cell: nothing to conclude."
    table = main_setting(table)
    measured = table["energy_vs_base"].notna().any()
    ratio, half, what = (
        ("energy_vs_base", "energy_vs_base_ci95", "energy per sample")
        if measured
        else ("speedup_vs_base", None, "throughput")
    )
    ids = summary.set_index(["task", "technique", "batch_size"])["cell_id"]
    lines = [
        f"At batch size {table['batch_size'].iloc[0]}, padding {table['padding'].iloc[0]} (the "
        f"setting with the most techniques), {what} relative to {baseline} "
        f"(mean over trials, 95% interval), and the largest change of a task metric:",
        "",
    ]
    ranked = table[table["technique"] != baseline].groupby("technique")[ratio].median()
    for technique in ranked.sort_values().index:
        rows = table[(table["technique"] == technique) & table[ratio].notna()]
        if rows.empty:
            continue
        low, high = rows.loc[rows[ratio].idxmin()], rows.loc[rows[ratio].idxmax()]

        def shown(row):
            interval = f" ± {row[half]:.2f}" if half and pd.notna(row[half]) else ""
            return f"{row[ratio]:.2f}×{interval} ({row['task']})"

        change = rows.loc[rows["metric_change"].abs().idxmax()]
        cells = ", ".join(
            str(ids.get((r.task, technique, r.batch_size), ""))[:8] for r in rows.itertuples()
        )
        width = rows[half].fillna(0) if half else 0
        below, above = int((rows[ratio] + width < 1).sum()), int((rows[ratio] - width > 1).sum())
        words = ("less energy", "more energy") if measured else ("slower", "faster")
        verdict = [f"{n} {w}" for n, w in ((below, words[0]), (above, words[1])) if n]
        unresolved = len(rows) - below - above
        if unresolved:
            verdict.append(f"{unresolved} not separable from {baseline}")
        lines.append(
            f"- **{technique}**: {shown(low)} to {shown(high)} over {len(rows)} tasks "
            f"({', '.join(verdict)}); largest metric change "
            f"{signed_change(change['metric_change'])} {change['metric']} on {change['task']}. "
            f"Cells: {cells}."
        )
    noisy = int(summary["cv_flag"].fillna(False).astype(bool).sum())
    if noisy:
        lines += ["", f"{noisy} cells vary between trials more than `max_cv`: read them with care."]
    return "\n".join(lines)


def pareto_optimal(frame: pd.DataFrame, minimize: list[str], maximize: list[str] = ()) -> pd.Series:
    """Rows no other row beats: at least as good in every column and better in one."""
    signs = {c: 1.0 for c in minimize} | {c: -1.0 for c in maximize}
    values = np.column_stack([frame[c].to_numpy(dtype=float) * s for c, s in signs.items()])
    optimal = []
    for row in values:
        dominated = (np.all(values <= row, axis=1) & np.any(values < row, axis=1)).any()
        optimal.append(not dominated and not np.isnan(row).any())
    return pd.Series(optimal, index=frame.index)


ORIGINAL_SETTING = {"batch_size": 16, "padding": "max_length"}
"""Where the earlier student study measured: batch size 16, every sequence padded to max_length."""
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
    from effbert.models import get_technique

    try:
        t = get_technique(str(name))
    except ValueError:
        return str(name)
    return "|".join((t.precision, t.attention, t.execution, t.shortcut))


def single_device(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells of one GPU (or CPU) model only, the one holding the most cells: ratios are
    never taken between cells measured on different devices."""
    if "device_name" not in frame.columns or frame["device_name"].nunique() <= 1:
        return frame
    counts = frame["device_name"].value_counts()
    chosen = sorted(counts[counts == counts.max()].index)[0]
    return frame[frame["device_name"] == chosen]


def _claim_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's ok, model-scope cells at the original setting, indexed by (task, technique
    key), one per pair, each task at the max length holding most of its techniques (the
    smallest among equals)."""
    frame = _with_columns(summary, SUMMARY_COLUMNS)
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
    from effbert.tasks import TASKS

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
    frame = _with_columns(summary, SUMMARY_COLUMNS)
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
