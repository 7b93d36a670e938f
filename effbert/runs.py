"""Run records (``results/runs/<profile>-<time>.json``) and the GPU time they account for:
each run's wall time, its workers, its notebooks, where the time went, and how two runs of the
same cells agree."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from effbert import config as cfg
from effbert import results
from effbert.config import WORKER_ENV
from effbert.tables import markdown_table
from effbert.techniques import COMPILED_EXECUTIONS


def write_run(
    results_dir: Path, profile: str, kind: str, wall_s: float, workers: list, **facts
) -> Path:
    """``results/runs/<profile>-<time>.json``: a run's wall time and, per worker (one entry
    for a run in this process), its GPU (``CUDA_VISIBLE_DEVICES``), tasks and wall time.
    ``kind``: ``measure``, ``finetune`` or ``reproduce`` (a whole ``effbert run``, whose
    ``facts`` give its GPUs and notebooks)."""
    now = datetime.now(timezone.utc)
    record = {
        "profile": profile,
        "kind": kind,
        "finished_at": now.isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "workers": [{**w, "wall_s": round(w["wall_s"], 1)} for w in workers],
        **facts,
    }
    path = Path(results_dir) / "runs" / f"{profile}-{now:%Y%m%dT%H%M%S%f}.json"
    results.write_json_atomic(path, record)
    return path


def record_here(results_dir: Path, profile: str, kind: str, tasks, wall_s: float) -> None:
    """A run record for work done in this process; none inside a worker, whose run its
    parent records."""
    if os.environ.get(WORKER_ENV) is not None:
        return
    entry = {
        "index": None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "tasks": list(dict.fromkeys(tasks)),
        "wall_s": wall_s,
        "exit": 0,
    }
    write_run(results_dir, profile, kind, wall_s, [entry])


def _read_run(path: Path) -> dict:
    """A run record (``workers.write_run``), reduced to what its GPU time needs."""
    try:
        run = json.loads(path.read_text())
        return {
            "name": path.name,
            "profile": run.get("profile"),
            "kind": run.get("kind", "measure"),  # records from before kinds were all measuring
            "wall_s": float(run["wall_s"]),
            "worker_wall_s": [float(w["wall_s"]) for w in run["workers"]],
            "gpus": {w["cuda_visible_devices"] for w in run["workers"]},
            "tasks": [t for w in run["workers"] for t in w["tasks"]],
            "in_process": any(w.get("index", 0) is None for w in run["workers"]),
            "notebooks": {n["stem"]: float(n["wall_s"]) for n in run.get("notebooks", [])},
            "gpu_count": int(run.get("gpus", 0)),
            "device_name": run.get("device_name"),
            "cells_measured": int(run.get("cells_measured", 0)),
            "finished_at": run.get("finished_at"),
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"run record {cfg.project_relative(path)} is damaged ({err!r}): restore it "
            "(git checkout) or delete it, and its run's wall time goes with it"
        ) from err


def run_records(reports_dir: str | Path, profile: str) -> list[dict]:
    """A profile's run records (``results/runs``), oldest first.

    Raises:
        ValueError: a run record is damaged (the message names it and the fix).
    """
    runs_dir = cfg.reports_paths(reports_dir)["results"] / "runs"
    runs = [_read_run(path) for path in sorted(runs_dir.glob(f"{profile}-*.json"))]
    return [r for r in runs if r["profile"] in (profile, None)]  # not "floor-packed" for "floor"


def _spread_runs(records: list[dict]) -> list[dict]:
    """The measuring runs among ``records`` that spread cells over worker processes."""
    return [r for r in records if r["kind"] == "measure" and not r["in_process"]]


def _whole_runs(records: list[dict]) -> list[dict]:
    """The whole runs (``effbert run``) among ``records`` that measured cells."""
    return [r for r in records if r["kind"] == "reproduce" and r["cells_measured"]]


def worker_runs(reports_dir: str | Path, profile: str) -> list[dict]:
    """A profile's measuring runs spread over worker processes, oldest first: each one's wall
    time, its workers' wall times, GPUs and tasks."""
    return _spread_runs(run_records(reports_dir, profile))


def gpu_time_markdown(reports_dir: str | Path, profile: str) -> str:
    """The GPU time a profile's records took: whole runs of its notebooks that measured or
    fine-tuned (their wall time per notebook, on how many GPUs), else the wall time of its
    worker runs and the sum of their workers' wall times. Empty where no run is recorded."""
    records = run_records(reports_dir, profile)
    whole = _whole_runs(records)
    if whole:
        return _reproduce_sentence(whole)
    runs = _spread_runs(records)
    if not runs:
        return ""
    wall_s = sum(r["wall_s"] for r in runs)
    gpu_s = sum(sum(r["worker_wall_s"]) for r in runs)
    gpus = set().union(*(r["gpus"] for r in runs))
    parts = ", ".join(f"{r['wall_s']:.0f} s ({', '.join(r['tasks'])})" for r in runs)
    return (
        f"Measuring took {wall_s:.0f} s of wall time ({wall_s / 60:.1f} min) in {len(runs)} "
        f"run{'s' if len(runs) > 1 else ''} of one worker per GPU on {len(gpus)} GPU"
        f"{'s' if len(gpus) > 1 else ''}: {parts}. The workers' wall times add up to "
        f"{gpu_s:.0f} s ({gpu_s / 60:.1f} GPU-minutes): about what one GPU would take for the "
        f"same cells, each worker's start included."
    )


def _reproduce_sentence(runs: list[dict]) -> str:
    wall_s = sum(r["wall_s"] for r in runs)
    gpu_count = max(r["gpu_count"] for r in runs)
    names = sorted({r["device_name"] for r in runs if r["device_name"]})
    notebooks: dict[str, float] = {}
    for r in runs:
        for stem, s in r["notebooks"].items():
            notebooks[stem] = notebooks.get(stem, 0.0) + s
    steps = ", ".join(f"{stem} {s:.0f} s" for stem, s in notebooks.items())
    times = f"in {len(runs)} runs" if len(runs) > 1 else "in one run"
    cells = sum(r["cells_measured"] for r in runs)
    return (
        f"`effbert run` measured {cells} cells {times} and took {wall_s:.0f} s of "
        f"wall time ({wall_s / 60:.1f} min) on {gpu_count} × {', '.join(names)} "
        f"({gpu_count * wall_s / 60:.1f} GPU-minutes held): {steps}."
    )


def time_split(reports_dir: str | Path, profile: str) -> pd.DataFrame:
    """Where a whole run's GPU time went (``effbert run`` that measured, its run record; the
    wall time times its GPUs): fine-tuning, then per phase of a cell summed over cells
    (preparing, compiling included; warming up; the energy windows; latency, kernel and
    metric passes after them), and the rest (notebook kernels starting, loading, idle power,
    HTML, a GPU waiting for another's worker). Empty without such a run or where cells lack
    phase times (recorded before they were kept)."""
    records = run_records(reports_dir, profile)
    whole = _whole_runs(records)
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    cells = trials[trials["status"] == "ok"].groupby("cell_id")
    if not whole or cells.ngroups == 0 or cells["finish_s"].first().isna().any():
        return pd.DataFrame()
    gpu_s = sum(r["wall_s"] * max(1, r["gpu_count"]) for r in whole)
    first = cells.first()
    compiled = first["execution"].isin(list(COMPILED_EXECUTIONS))
    finetune_s = sum(
        r["wall_s"] * max(1, len(r["gpus"]))
        for r in records
        if r["kind"] == "finetune" and _during(r, whole)
    )
    parts = {
        "fine-tuning the checkpoints": finetune_s,
        "preparing cells: compiled techniques": first.loc[compiled, "prepare_s"].sum(),
        "preparing cells: the others": first.loc[~compiled, "prepare_s"].sum(),
        "warming up": first["warmup_s"].sum(),
        "energy windows": cells["time_s"].sum().sum(),
        "latency, kernel and metric passes": first["finish_s"].sum(),
    }
    rest = "the rest (pre-rolls, teaching notebooks, kernels starting, loading, idle power, HTML)"
    parts[rest] = gpu_s - sum(parts.values())
    table = pd.DataFrame({"part": list(parts), "gpu_time_s": list(parts.values())})
    table["share"] = (table["gpu_time_s"] / gpu_s).round(3)
    table["gpu_time_s"] = table["gpu_time_s"].round(0).astype(int)
    total = pd.DataFrame({"part": ["whole run"], "gpu_time_s": [round(gpu_s)], "share": [1.0]})
    return pd.concat([table, total], ignore_index=True)


def _during(record: dict, whole: list[dict]) -> bool:
    """Whether ``record`` finished inside one of the ``whole`` runs (fine-tuning done before
    a run, by another command, is not part of its time); records without times count."""
    if not record["finished_at"] or any(not run["finished_at"] for run in whole):
        return True
    end = datetime.fromisoformat(record["finished_at"])
    for run in whole:
        run_end = datetime.fromisoformat(run["finished_at"])
        if run_end - timedelta(seconds=run["wall_s"]) <= end <= run_end:
            return True
    return False


def costliest_phases(reports_dir: str | Path, profile: str, n: int = 5) -> pd.DataFrame:
    """The cells whose preparing or after-window passes took longest (seconds)."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    first = trials[trials["status"] == "ok"].groupby("cell_id").first()
    rows = []
    for phase, column in (("preparing", "prepare_s"), ("after the windows", "finish_s")):
        for _, cell in first.nlargest(n, column).iterrows():
            rows.append(
                {
                    "phase": phase,
                    "task": cell["task"],
                    "technique": cell["technique"],
                    "batch_size": int(cell["batch_size"]),
                    "time_s": round(float(cell[column]), 1),
                }
            )
    return pd.DataFrame(rows)


def time_markdown(reports_dir: str | Path, profile: str) -> str:
    """A whole run's GPU time (``gpu_time_markdown``), where it went (``time_split``) and the
    costliest cells (``costliest_phases``), printed from its records."""
    split = time_split(reports_dir, profile)
    if split.empty:
        return gpu_time_markdown(reports_dir, profile)
    return "\n\n".join(
        [
            gpu_time_markdown(reports_dir, profile),
            markdown_table(split),
            "The costliest cells to prepare (compiling included) and to finish (latency, "
            "kernel and metric passes after the windows), in seconds:",
            markdown_table(costliest_phases(reports_dir, profile)),
        ]
    )
