"""Worker processes, one per GPU slot: which slots a run has, how whole tasks are spread over
them, and starting, watching and stopping the workers (``python -m effbert.worker SPEC``).

Each worker is pinned to its GPU with ``CUDA_VISIBLE_DEVICES`` and writes only its own record
files; the parent waits, shows progress and leaves a run record (``effbert.runs``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from effbert.config import WORKER_ENV
from effbert.runs import write_run
from effbert.techniques import COMPILED_EXECUTIONS


class WorkerError(RuntimeError):
    """A worker that failed: the message names its GPU, tasks and log."""


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
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


def finetune_slots(params) -> list[str]:
    """Fine-tune workers to start (their ``CUDA_VISIBLE_DEVICES``): ``finetunes_per_gpu``
    on each GPU that measurement workers would use, else on the first visible GPU; empty:
    train in this process."""
    if os.environ.get(WORKER_ENV) is not None:
        return []
    gpus = worker_slots(params)
    if not gpus and params.device in ("auto", "cuda"):
        gpus = visible_gpus()[:1]
    slots = [gpu for gpu in gpus for _ in range(params.finetunes_per_gpu)]
    return slots if len(slots) > 1 else []


CELL_COST_S = 10.0  # a cell's prepare, warmup and windows, whatever its rows


COMPILED_COST_S = 60.0  # what torch.compile or graph capture adds to a worker's first such cell


COMPILED_WARM_S = 10.0  # ... and to its later cells of that technique (the compile cache hits)


ROWS_PER_S = 2000.0  # a cell's accuracy and kernel passes over its rows


def cell_cost_s(cell, rows: int, compiled_before: bool = False) -> float:
    """A rough guess of a cell's time on a GPU, to balance workers: fixed costs dominate, and a
    technique compiled before in the same worker mostly reads the compile cache."""
    compile_s = (COMPILED_WARM_S if compiled_before else COMPILED_COST_S) * (
        cell.technique.execution in COMPILED_EXECUTIONS
    )
    return CELL_COST_S + compile_s + rows / ROWS_PER_S


def assign(cells, n_workers: int, rows_of, max_tries: int = 50_000) -> list[list[str]]:
    """Whole tasks to workers so that the last worker finishes soonest (then: least GPU time,
    loads most even), by ``cell_cost_s``: a technique a worker has compiled already costs it
    less. Every assignment is tried where there are few (``max_tries``); else the costliest
    task first goes to the worker it finishes earliest on."""
    by_task: dict[str, list] = {}
    for cell in cells:
        by_task.setdefault(cell.task.name, []).append(cell)

    def cost(task: str, compiled: set) -> float:
        return sum(
            cell_cost_s(c, rows_of(c.task), c.technique.name in compiled) for c in by_task[task]
        )

    tasks = sorted(by_task, key=lambda t: -cost(t, set()))

    def loads(choice) -> list[float]:
        load = [0.0] * n_workers
        compiled: list[set] = [set() for _ in range(n_workers)]
        for task, i in zip(tasks[: len(choice)], choice, strict=True):
            load[i] += cost(task, compiled[i])
            compiled[i] |= {c.technique.name for c in by_task[task]}
        return load

    if n_workers ** max(len(tasks) - 1, 0) <= max_tries:
        choices = (
            (0, *rest) for rest in itertools.product(range(n_workers), repeat=len(tasks) - 1)
        )

        def rank(choice) -> tuple:
            load = loads(choice)
            return max(load), sum(load), sum(x * x for x in load)

        best = min(choices, key=rank)
    else:
        best = []
        for _ in tasks:
            ends = [loads([*best, i])[i] for i in range(n_workers)]
            best.append(ends.index(min(ends)))
    groups: list[list[str]] = [[] for _ in range(n_workers)]
    for task, i in zip(tasks, best, strict=True):
        groups[i].append(task)
    return groups


def balance(costs: dict[str, float], n_workers: int) -> list[list[str]]:
    """Tasks to workers by cost, the costliest first to the least loaded."""
    groups: list[list[str]] = [[] for _ in range(n_workers)]
    load = [0.0] * n_workers
    for task in sorted(costs, key=lambda t: -costs[t]):
        i = load.index(min(load))
        groups[i].append(task)
        load[i] += costs[task]
    return groups


def balance_slots(costs: dict[str, float], slots: list[str]) -> list[list[str]]:
    """Tasks to worker slots (a GPU named once per worker on it): balanced over the GPUs
    first, then over each GPU's workers."""
    gpus = list(dict.fromkeys(slots))
    groups: list[list[str]] = [[] for _ in slots]
    for gpu, tasks in zip(gpus, balance(costs, len(gpus)), strict=True):
        mine = [i for i, slot in enumerate(slots) if slot == gpu]
        shares = balance({t: costs[t] for t in tasks}, len(mine))
        for i, share in zip(mine, shares, strict=True):
            groups[i] = share
    return groups


def spawn(paths, profile: str, kind: str, slots, groups, spec_for, watched, kept=()) -> list:
    """Run one worker per non-empty group (``spec_for(tasks)`` tells it what to do), show
    progress as ``watched`` files appear, and record the run (``write_run``). Returns the
    workers, exited; Ctrl-C or SIGTERM stops them all first."""
    logs = paths["logs"]
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers: list[dict] = []
    try:
        with terminate_as_interrupt():
            for index, (gpu, tasks) in enumerate(zip(slots, groups, strict=True)):
                if tasks:
                    workers.append(
                        _start(index, gpu, tasks, spec_for(tasks), logs, f"{profile}-{kind}")
                    )
            _wait(workers, watched, set(kept), "cells" if kind == "measure" else "tasks")
    except BaseException:
        _stop(workers)  # Ctrl-C, kill, a kernel restart, a failed start: no worker outlives it
        raise
    entries = [
        {
            "index": w["index"],
            "cuda_visible_devices": w["gpu"],
            "tasks": w["tasks"],
            "wall_s": w["wall_s"],
            "exit": w["process"].returncode,
        }
        for w in workers
    ]
    write_run(paths["results"], profile, kind, time.perf_counter() - started, entries)
    return workers


@contextlib.contextmanager
def terminate_as_interrupt():
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


def _start(index: int, gpu: str, tasks: list[str], spec: dict, logs: Path, name: str) -> dict:
    env = {
        **os.environ,
        WORKER_ENV: str(index),
        "CUDA_VISIBLE_DEVICES": gpu,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    log_path = logs / f"{name}-worker{index}.log"
    spec_path = logs / f"{name}-worker{index}.json"
    spec_path.write_text(json.dumps(spec))
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "effbert.worker", str(spec_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the parent, which stops the workers
        )
    print(f"worker {index} (GPU {gpu or 'none'}): {', '.join(tasks)}")
    return {
        "index": index,
        "gpu": gpu,
        "tasks": tasks,
        "log": log_path,
        "process": process,
        "start": time.perf_counter(),
    }


def failures(workers: list) -> str:
    """What went wrong in the workers that failed ("" where none did)."""
    return "; ".join(
        f"worker {w['index']} (GPU {w['gpu'] or 'none'}, tasks {', '.join(w['tasks'])}) exited "
        f"{w['process'].returncode}: see {w['log']}"
        for w in workers
        if w["process"].returncode != 0
    )


def _wait(workers, watched: list[Path], kept: set, unit: str, every_s: float = 1.0) -> None:
    """Poll the workers, counting the ``watched`` files that appeared (or were rewritten)."""
    progress = tqdm(total=len(watched), desc=unit, unit=unit[:-1], file=sys.stdout)
    since = time.time()
    while True:
        running = [w for w in workers if w["process"].poll() is None]
        for w in workers:
            if w["process"].returncode is not None and "wall_s" not in w:
                w["wall_s"] = time.perf_counter() - w["start"]
        done = sum(p in kept or (p.exists() and p.stat().st_mtime >= since) for p in watched)
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
