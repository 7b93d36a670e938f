"""A study's cells spread over every visible GPU: one worker process per GPU.

Each worker is ``python -m effbert.workers SPEC``, pinned to its GPU with
``CUDA_VISIBLE_DEVICES``, and measures whole tasks (so a task's cells can interleave), each cell
read from its own GPU's energy counter and saved to its own record file; workers never write the
same file. The parent waits, shows progress, and reads the records back. Each run leaves
``results/runs/<profile>-<time>.json``: which worker measured which tasks, on which GPU, and its
wall time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from effbert import results

WORKER_ENV = "EFFBERT_WORKER"


class WorkerError(RuntimeError):
    """A worker that failed: the message names its GPU, tasks and log."""


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [g.strip() for g in listed.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_slots(params) -> list[str]:
    """One entry per worker to start (its ``CUDA_VISIBLE_DEVICES``); empty: measure in this
    process. ``workers: 0`` means one per visible GPU when the device is ``auto`` or ``cuda``.

    Raises:
        WorkerError: more workers asked for than GPUs visible.
    """
    if os.environ.get(WORKER_ENV) is not None or params.workers == 1:
        return []
    if params.scope == "end_to_end":
        return []  # its CPU share would be read from one package shared by every worker
    if params.device == "cpu":
        return [""] * params.workers if params.workers > 1 else []
    gpus = visible_gpus() if params.device in ("auto", "cuda") else []
    if len(gpus) > 1:
        import torch

        models = {torch.cuda.get_device_name(i) for i in range(len(gpus))}
        if len(models) > 1:
            raise WorkerError(
                f"the visible GPUs are of different models ({', '.join(sorted(models))}): a cell's "
                "record names one model, so workers cannot share a study; set "
                "CUDA_VISIBLE_DEVICES to GPUs of one model, or workers: 1"
            )
    if params.workers == 0:
        return gpus if len(gpus) > 1 else []
    if params.workers > len(gpus):
        raise WorkerError(
            f"workers: {params.workers} asks for one GPU each, but {len(gpus)} "
            f"{'is' if len(gpus) == 1 else 'are'} visible (device {params.device!r}); set "
            "workers: 0 (one per visible GPU) or fewer"
        )
    return gpus[: params.workers]


CELL_COST_S = 10.0  # a cell's prepare, warmup and windows, whatever its rows
COMPILED_COST_S = 60.0  # what torch.compile or graph capture adds to a cell
ROWS_PER_S = 2000.0  # a cell's accuracy and kernel passes over its rows


def cell_cost_s(cell, rows: int) -> float:
    """A rough guess of a cell's time on a GPU, to balance workers: fixed costs dominate."""
    compiled = cell.technique.execution in ("compile", "compile_max", "graphs")
    return CELL_COST_S + COMPILED_COST_S * compiled + rows / ROWS_PER_S


def assign(cells, n_workers: int, rows_of) -> list[list[str]]:
    """Whole tasks to workers, the costliest first to the least loaded (``cell_cost_s``)."""
    cost: dict[str, float] = {}
    for cell in cells:
        cost[cell.task.name] = cost.get(cell.task.name, 0.0) + cell_cost_s(cell, rows_of(cell.task))
    groups: list[list[str]] = [[] for _ in range(n_workers)]
    load = [0.0] * n_workers
    for task in sorted(cost, key=lambda t: -cost[t]):
        i = load.index(min(load))
        groups[i].append(task)
        load[i] += cost[task]
    return groups


def run(study, techniques, combinations: bool, cells, slots: list[str]) -> pd.DataFrame:
    """Measure ``cells`` in one worker process per slot; returns their trial rows."""
    params = study.params
    cells_dir = study.paths["cells"]
    pending = [
        c
        for c in cells
        if study.force
        or (results.find_cell(cells_dir, c.config) or {}).get("status") not in ("ok", "skipped")
    ]
    if not pending:  # every cell is recorded: nothing to start a worker for
        return results.trial_rows([results.find_cell(cells_dir, c.config) for c in cells])
    groups = assign(pending, len(slots), lambda task: _rows_or_one(study, task))
    values = dataclasses.asdict(params)
    logs = study.paths["logs"]
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = []
    try:
        with _terminate_as_interrupt():
            _start(study, techniques, combinations, slots, groups, values, logs, workers)
            _wait(workers, cells, study.paths["cells"], study.force)
    except BaseException:
        _stop(workers)  # Ctrl-C, kill, a kernel restart, a failed start: no worker outlives it
        raise
    wall_s = time.perf_counter() - started
    return _finish(study, workers, cells, wall_s)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``, ``timeout``) raises KeyboardInterrupt while workers run, so they are
    stopped too: they run in sessions of their own, which the signal does not reach."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start(study, techniques, combinations, slots, groups, values, logs, workers) -> None:
    params = study.params
    for index, (gpu, tasks) in enumerate(zip(slots, groups, strict=True)):
        if not tasks:
            continue
        combos = [
            {**c, "tasks": [t for t in c.get("tasks", tasks) if t in tasks]}
            for c in values["combinations"]
        ]
        spec = {
            "params": {
                **values,
                "tasks": tasks,
                "combinations": [c for c in combos if c["tasks"]],
            },
            "reports_dir": str(study.paths["root"]),
            "force": study.force,
            "techniques": list(techniques),
            "combinations": combinations,
        }
        env = {
            **os.environ,
            WORKER_ENV: str(index),
            "CUDA_VISIBLE_DEVICES": gpu,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        log_path = logs / f"{params.profile}-worker{index}.log"
        spec_path = logs / f"{params.profile}-worker{index}.json"
        spec_path.write_text(json.dumps(spec))
        with open(log_path, "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "effbert.workers", str(spec_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the parent, which stops the workers
            )
        workers.append(
            {
                "index": index,
                "gpu": gpu,
                "tasks": tasks,
                "log": log_path,
                "process": process,
                "start": time.perf_counter(),
            }
        )
        print(f"worker {index} (GPU {gpu or 'none'}): {', '.join(tasks)}")


def _finish(study, workers, cells, wall_s: float) -> pd.DataFrame:
    _write_run(study, workers, wall_s)
    failed = [w for w in workers if w["process"].returncode != 0]
    records = [results.find_cell(study.paths["cells"], c.config) for c in cells]
    results.write_tables(study.paths["results"], study.paths["cells"])
    if failed:
        raise WorkerError(
            "; ".join(
                f"worker {w['index']} (GPU {w['gpu'] or 'none'}, tasks {', '.join(w['tasks'])}) "
                f"exited "
                f"{w['process'].returncode}: see {w['log']}"
                for w in failed
            )
            + f". The cells it finished are kept ({sum(r is not None for r in records)} of "
            f"{len(cells)} recorded); run again to measure the rest"
        )
    return results.trial_rows([r for r in records if r is not None])


def _rows_or_one(study, task) -> int:
    try:
        return len(study.rows(task))
    except Exception:
        return 1  # a task that will be skipped costs little


def _wait(workers, cells, cells_dir: Path, force: bool, every_s: float = 1.0) -> None:
    """Poll the workers, counting the cells whose record appeared (or was rewritten)."""
    from tqdm.auto import tqdm

    progress = tqdm(total=len(cells), desc="cells", unit="cell", file=sys.stdout)
    paths = [results.cell_path(cells_dir, c.config) for c in cells]
    kept = set()
    if not force:
        kept = {
            p
            for p in paths
            if (results.read_cell(p) if p.exists() else {}).get("status") in ("ok", "skipped")
        }
    since = time.time()
    while True:
        running = [w for w in workers if w["process"].poll() is None]
        for w in workers:
            if w["process"].returncode is not None and "wall_s" not in w:
                w["wall_s"] = time.perf_counter() - w["start"]
        done = sum(p in kept or (p.exists() and p.stat().st_mtime >= since) for p in paths)
        if done != progress.n:  # a line per cell in logs, not one per poll
            progress.n = done
            progress.refresh()
        if not running:
            break
        time.sleep(every_s)
    progress.close()


def _stop(workers) -> None:
    for w in workers:
        if w["process"].poll() is None:
            try:
                os.killpg(w["process"].pid, signal.SIGINT)  # the worker and its tokenizers
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 30
    for w in workers:
        try:
            w["process"].wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(w["process"].pid, signal.SIGKILL)
            w["process"].wait()


def _write_run(study, workers, wall_s: float) -> Path:
    now = datetime.now(timezone.utc)
    record = {
        "profile": study.params.profile,
        "finished_at": now.isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "workers": [
            {
                "index": w["index"],
                "cuda_visible_devices": w["gpu"],
                "tasks": w["tasks"],
                "wall_s": round(w.get("wall_s", wall_s), 1),
                "exit": w["process"].returncode,
            }
            for w in workers
        ],
    }
    path = study.paths["results"] / "runs" / f"{study.params.profile}-{now:%Y%m%dT%H%M%S}.json"
    results.write_json_atomic(path, record)
    return path


def main(argv: list[str]) -> int:
    """A worker: measure the spec's tasks in this process."""
    from effbert import bench, params

    spec = json.loads(Path(argv[0]).read_text())
    settings = params.validate(spec["params"], inputs=False)
    study = bench.Study(settings, spec["reports_dir"], spec["force"])
    try:
        study.run(spec["techniques"], spec["combinations"])
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
