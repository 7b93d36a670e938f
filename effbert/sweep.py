"""Running a plan's cells: in this process or over worker processes, task by task, in their
order (sequential, or interleaved rounds of windows), with the failure policy, and saving each
cell's record as it finishes.

A cell whose technique breaks is saved ``failed`` with the reason and the sweep goes on; wrong
inputs (data, checkpoint, settings) stop it. Cells already recorded with the same inputs are
read back, not measured again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pandas as pd
import torch
from tqdm import tqdm

from effbert import config as cfg
from effbert import data, energy, environment, models, pool, results, runs
from effbert.measure import CellRun, measure_cell
from effbert.plan import Cell, Plan
from effbert.techniques import unsupported_reason

logger = logging.getLogger(__name__)


def window_rounds(n: int, trials: int, order: str, rng: random.Random) -> list[list[int]]:
    """The order of ``n`` cells' windows, a round per trial: shuffled each round
    (``interleaved``), or the rows of a Williams design over shuffled cells (``balanced``:
    within a round each cell follows every other equally often over ``n`` rounds, ``2 n``
    where ``n`` is odd), repeated as needed."""
    if order != "balanced" or n < 2:
        return [rng.sample(range(n), n) for _ in range(trials)]
    first = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    rows = [[(x + i) % n for x in first] for i in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    labels = rng.sample(range(n), n)
    return [[labels[x] for x in rows[t % len(rows)]] for t in range(trials)]


class Sweep:
    """Measures a plan's cells with one meter and one idle-power reading, saving each record."""

    def __init__(self, plan: Plan, force: bool = False) -> None:
        self.plan, self.params, self.force = plan, plan.params, force
        self.abort = os._exit  # a hung device cannot be stopped from Python: end the process
        self.paths = plan.paths
        self._meter = None
        self._idle_power_w = None
        self.log_path = self.paths["logs"] / f"{self.params.profile}.log"
        environment.import_libraries(self.log_path)
        print(f"library warnings and logs: {cfg.project_relative(self.log_path)}")

    @property
    def meter(self) -> energy.Meter:
        if self._meter is None:
            device, source = self.plan.torch_device, self.params.energy
            if self.params.scope == "end_to_end":
                self._meter = energy.make_host_meter(device, source)
            else:
                self._meter = energy.make_meter(device, source)
        return self._meter

    @property
    def idle_power_w(self) -> float:
        if self._idle_power_w is None:
            self._idle_power_w = energy.idle_power_w(self.meter, self.params.idle_s)
        return self._idle_power_w

    def environment(self) -> pd.Series:
        """The device, its software, the energy meter and the device's idle power."""
        facts = environment.describe(self.plan.torch_device)
        facts.update(
            energy_source=self.meter.source,
            energy_reason=self.meter.reason,
            idle_power_w=self.idle_power_w,
        )
        return pd.Series(facts, name="value", dtype=object)

    def run(self, cells: list[Cell]) -> pd.DataFrame:
        """Measure (or read back) ``cells``, over one worker per GPU where the profile has
        several, and save each.

        Returns:
            The trial rows of these cells; an empty table when there are none.
        """
        if not cells:
            print(f"profile {self.params.profile!r} selects no cell here")
            return results.trial_rows([])
        slots = pool.worker_slots(self.params)
        with environment.captured(self.log_path):
            if slots:
                return self._run_on_workers(cells, slots)
            return self.measure(cells)

    def measure(self, cells: list[Cell]) -> pd.DataFrame:
        """Measure ``cells`` in this process (a worker's share, or a one-GPU run)."""
        cells_dir = self.paths["cells"]
        pending = [
            c.task.name for c in cells if self.force or not results.finished(cells_dir, c.config)
        ]
        started = time.perf_counter()
        progress = tqdm(
            cells, desc=self.params.profile, unit="cell", mininterval=5.0, file=sys.stdout
        )
        records = []
        if self.params.order in ("interleaved", "balanced"):
            for task in dict.fromkeys(c.task.name for c in cells):
                records += self._run_interleaved([c for c in cells if c.task.name == task])
                progress.update(sum(c.task.name == task for c in cells))
        else:
            for cell in progress:
                progress.set_postfix_str(
                    f"{cell.task.name} {cell.technique.name} bs={cell.batch_size}", refresh=False
                )
                records.append(self._run_cell(cell))
        progress.close()
        results.write_tables(self.paths["results"], cells_dir)
        if pending:
            wall_s = time.perf_counter() - started
            runs.record_here(self.paths["results"], self.params.profile, "measure", pending, wall_s)
        return results.trial_rows(records)

    def _reusable(self, cell: Cell) -> dict | None:
        done = results.find_cell(self.paths["cells"], cell.config)
        return done if done and done["status"] == "ok" and not self.force else None

    def _run_interleaved(self, cells: list[Cell]) -> list[dict]:
        """A task's cells, prepared together, take their windows in rounds: each round every
        cell one window, in a seeded random order (``interleaved``) or in the rows of a Williams
        design (``balanced``: each cell follows every other equally often), so drift in GPU
        temperature and clocks hits all techniques alike. Each trial records its place in that
        order, the cell before it and that window's power, and the GPU's state."""
        records, live = [], []
        for cell in cells:
            done = self._reusable(cell)
            reason = None if done else self._skip_reason(cell)
            if done or reason is not None:
                records.append(done or self._save(cell.config, status="skipped", reason=reason))
                continue
            run = self._guarded(cell, lambda c=cell: self._cell_run(c))
            (records if isinstance(run, dict) else live).append(run)
        idle_power_w = self.idle_power_w if live else math.nan
        live = [r for r in live if not isinstance(self._guarded(r.cell, r.warm_up), dict)]
        rng = random.Random(f"{self.params.profile}/{cells[0].task.name}/{self.params.seed}")
        rounds = window_rounds(len(live), self.params.trials, self.params.order, rng)
        previous, position = None, 0
        for indices in rounds:
            for run in [live[i] for i in indices if live[i] is not None]:
                failed = self._guarded(
                    run.cell, lambda r=run, p=position, b=previous: r.window(p, b)
                )
                position += 1
                if isinstance(failed, dict):
                    records.append(failed)
                    live[live.index(run)] = None
                else:
                    previous = run
        live = [r for r in live if r is not None]
        for run in live:
            record = self._guarded(run.cell, lambda r=run: r.finish(idle_power_w))
            ok = not (isinstance(record, dict) and record.get("status") == "failed")
            records.append(self._save(run.cell.config, status="ok", **record) if ok else record)
        self._free_memory()
        return records

    def _cell_run(self, cell: Cell) -> CellRun:
        rows, label_map = self.plan.rows(cell.task), self.plan.label_map_for(cell.task)
        return CellRun(cell, rows, self.params, self.meter, label_map)

    def _run_cell(self, cell: Cell) -> dict:
        done = self._reusable(cell)
        if done:
            return done
        reason = self._skip_reason(cell)
        if reason is not None:
            return self._save(cell.config, status="skipped", reason=reason)
        try:
            record = self._guarded(
                cell,
                lambda: measure_cell(
                    cell,
                    self.plan.rows(cell.task),
                    self.params,
                    self.meter,
                    self.idle_power_w,
                    self.plan.label_map_for(cell.task),
                ),
            )
        finally:
            self._free_memory()  # the cell's model is gone; free its memory
        if record.get("status") == "failed":
            return record
        return self._save(cell.config, status="ok", **record)

    def _free_memory(self) -> None:
        if self.plan.torch_device.type == "cuda":
            torch.cuda.empty_cache()

    def _guarded(self, cell: Cell, step: Callable):
        """``step()``, or the cell's saved ``failed`` record where the technique broke; wrong
        inputs (data, checkpoint, settings) stop the run. A step that outlasts
        ``cell_timeout_s`` saves the cell ``failed`` and ends the process (``abort``)."""
        timeout_s = self.params.cell_timeout_s
        watchdog = threading.Timer(timeout_s, self._timed_out, (cell, timeout_s))
        watchdog.daemon = True
        if timeout_s:
            watchdog.start()
        try:
            return step()
        except (data.DataError, models.ModelError, ValueError):
            raise
        except Exception as err:
            logger.exception("%s %s failed", cell.task.name, cell.technique.name)
            reason = f"{type(err).__name__}: {err}"
            return self._save(cell.config, status="failed", reason=reason)
        finally:
            watchdog.cancel()

    def _timed_out(self, cell: Cell, timeout_s: float) -> None:
        reason = (
            f"no answer from the device in {timeout_s:.0f} s (cell_timeout_s): it hung, so this "
            "process ended; check the GPU (nvidia-smi) and run again"
        )
        self._save(cell.config, status="failed", reason=reason)
        print(f"{cell.task.name} {cell.technique.name}: {reason}", file=sys.stderr, flush=True)
        self.abort(3)

    def _skip_reason(self, cell: Cell) -> str | None:
        reason = unsupported_reason(cell.technique, self.plan.torch_device)
        if reason is None and cell.checkpoint is None:
            reason = (
                f"no checkpoint for {cell.task.name}: set checkpoints.{cell.task.model_task}, or "
                "fine-tune one (base_model) into checkpoints_dir"
            )
        if reason is None:
            try:
                self.plan.rows(cell.task)
            except data.DataError as err:
                if self.params.on_missing_task == "error":
                    raise
                reason = str(err)
        return reason

    def _save(self, config: dict, status: str, reason: str = "", **record) -> dict:
        ok = status == "ok"
        meter = self.meter
        full = {
            "config": config,
            "status": status,
            "reason": reason,
            "energy_source": meter.source if ok else None,
            "energy_reason": meter.reason if ok else None,
            "scope": self.params.scope,
            "cpu_energy_source": getattr(meter, "cpu_source", None) if ok else None,
            "cpu_energy_reason": getattr(meter, "cpu_reason", None) if ok else None,
            "environment": environment.describe(self.plan.torch_device),
            "worker": {
                "index": os.environ.get(cfg.WORKER_ENV),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            },
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **record,
        }
        path = results.write_cell(self.paths["cells"], full)
        return {**full, "cell_id": path.stem}

    # -- over worker processes ------------------------------------------------------------

    def _run_on_workers(self, cells: list[Cell], slots: list[str]) -> pd.DataFrame:
        """Measure ``cells`` in one worker process per slot, whole tasks each."""
        cells_dir = self.paths["cells"]
        paths = [results.cell_path(cells_dir, c.config) for c in cells]
        kept = set()
        if not self.force:
            kept = {
                p
                for c, p in zip(cells, paths, strict=True)
                if results.finished(cells_dir, c.config)
            }
        pending = [c for c, p in zip(cells, paths, strict=True) if p not in kept]
        if not pending:  # every cell is recorded: nothing to start a worker for
            return results.trial_rows([results.find_cell(cells_dir, c.config) for c in cells])
        groups = pool.assign(pending, len(slots), self._rows_or_one)
        values = dataclasses.asdict(self.params)

        def spec(tasks: list[str]) -> dict:
            return {
                "stage": "measure",
                "params": {**values, "tasks": tasks, "combinations": []},
                "reports_dir": str(self.paths["root"]),
                "force": self.force,
                "cells": [c.point for c in pending if c.task.name in tasks],
            }

        workers = pool.spawn(
            self.paths, self.params.profile, "measure", slots, groups, spec, paths, kept
        )
        results.write_tables(self.paths["results"], cells_dir)
        failed = pool.failures(workers)
        if failed:
            done = sum(results.find_cell(cells_dir, c.config) is not None for c in cells)
            raise pool.WorkerError(
                f"{failed}. The cells it finished are kept ({done} of {len(cells)} recorded); "
                "run again to measure the rest"
            )
        found = (results.find_cell(cells_dir, c.config) for c in cells)
        return results.trial_rows([r for r in found if r is not None])

    def _rows_or_one(self, task) -> int:
        try:
            return len(self.plan.rows(task))
        except Exception:
            return 1  # a task that will be skipped costs little
