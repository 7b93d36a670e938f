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
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from effbert.kernels import attention_family
from effbert.schema import (
    CELL_COLUMNS,
    IDENTITY_COLUMNS,
    TRIAL_COLUMNS,
    cell_id,
    record_problem,
    with_columns,
)
from effbert.stats import summarize

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"


SUMMARY_CSV = "summary.csv"


MANIFEST_JSON = "results.manifest.json"


RERUN = "python -m effbert run"


class StoreError(RuntimeError):
    """A record on disk that cannot be trusted, or one that cannot be written."""


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds either the old or the whole new content.

    Raises:
        OSError: the page could not be written; its ``filename`` names ``path``.
    """
    try:
        write_file_atomic(path, lambda handle: handle.write(text))
    except OSError as err:
        if not err.filename:
            err.filename = str(path)
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
    """One cell file, trusted only after its content passes ``schema.record_problem``.

    Raises:
        StoreError: the file is unreadable, truncated or not JSON, or its content fails the
            check (the message says what, and how to go on).
    """
    path = Path(path)
    fix = f"delete {path} to measure that cell again ({RERUN}), or restore it from a copy"
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read cell {path} ({err}): {fix}") from err
    problem = record_problem(cell, path)
    if problem is not None:
        raise StoreError(f"cell {path} cannot be trusted: {problem}. To go on, {fix}")
    return {**cell, "cell_id": path.stem}


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


def successor_key(config: dict[str, Any]) -> str:
    """What a cell measures, its inputs' fingerprints aside (the device kept): two records
    with one key measured the same configuration of other rows, weights or software."""
    fingerprints = config.get("fingerprints") or {}
    device = (fingerprints.get("environment") or {}).get("device_name")
    rest = {k: v for k, v in config.items() if k != "fingerprints"}
    return json.dumps({**rest, "device": device}, sort_keys=True, default=str)


def superseded(cells: list[dict[str, Any]]) -> set[str]:
    """Ids of the records a newer record of the same configuration replaced (its rows,
    checkpoint or software changed since): kept on disk, left out of every table."""
    newest: dict[str, dict] = {}
    for cell in cells:
        key = successor_key(cell["config"])
        if key not in newest or str(cell.get("measured_at")) > str(newest[key].get("measured_at")):
            newest[key] = cell
    current = {c["cell_id"] for c in newest.values()}
    return {c["cell_id"] for c in cells} - current


def _attention_kernel(kernels: dict) -> str | None:
    """The attention family a cell ran: recorded, or read from its top kernels (records made
    before the family was kept)."""
    if "attention_kernel" in kernels:
        return kernels["attention_kernel"]
    return attention_family([k["name"] for k in kernels.get("top", [])])


def trial_rows(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """One tidy row per (cell, trial); a skipped cell is one row with status ``skipped``;
    records replaced by a newer one of the same configuration are marked ``superseded``."""
    rows = []
    replaced = superseded(cells)
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
            "attention_kernel": _attention_kernel(cell.get("kernels") or {}),
            "worker_gpu": (cell.get("worker") or {}).get("cuda_visible_devices"),
            "kernels_checked": bool((cell.get("kernels") or {}).get("top")),
            "cell_id": cell["cell_id"],
            "measured_at": cell.get("measured_at"),
            "superseded": cell["cell_id"] in replaced,
        }
        trials = cell.get("trials") or [{}]
        for trial in trials:
            rows.append({**shared, **trial})
    frame = pd.DataFrame(rows)
    leading = IDENTITY_COLUMNS + TRIAL_COLUMNS
    frame = frame.reindex(columns=leading + [c for c in frame.columns if c not in leading])
    return with_columns(frame, CELL_COLUMNS)


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
    if expected is not None and data != _csv_text(expected).encode("utf-8"):
        return None, "disagrees with the cell files (edited, or other cells or values)"
    return frame, None


def read_results(
    results_dir: Path, profile: str | None = None, cells_dir: Path | None = None
) -> pd.DataFrame:
    """results.csv, optionally of one profile, checked before it is trusted.

    The table is checked against its manifest (sha256) and, when there are cell files, against
    the table they give, byte for byte: a table that is missing, truncated, edited or stale is
    rebuilt from the cells, with a warning naming it.

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
