"""Measure cells of the sweep: warmup, energy windows of whole units, metrics outside them.

One cell = one (task, technique, batch size, padding) configuration. After warmup, each trial
is one meter window that repeats a unit until ``min_window_s`` has passed: a full pass over the
task's batches, or one batch of a ``BatchCycle`` where they share one shape; the device is
synchronized only at the window's ends. Latency per batch and the task
metric come from separate, unmeasured passes over the same model and batches.

``Study`` plans a profile's cells and runs them; ``measure_cell`` measures one; the records are
saved and checked by ``effbert.results``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from effbert import config as cfg
from effbert import data, energy, environment, metrics, models, packed, results, workers
from effbert.params import ALL, MEASURE, Params, load, plan_points
from effbert.tasks import GlueTask, get_task

J_PER_KWH = 3.6e6

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One measured trial: how many units (passes, or batches of a ``BatchCycle``) ran, what
    the meter read and, for batches, the samples and tokens they held."""

    passes: int
    time_s: float
    energy_j: float
    cpu_energy_j: float = math.nan
    cpu_time_s: float = math.nan
    n_samples: float = math.nan
    n_tokens: float = math.nan


class BatchCycle:
    """The task's batches of the configured size, run one per call in a cycle: the unit a
    window repeats when they share one shape (padding ``max_length``), so that a window lasts
    ``min_window_s`` and not a whole pass more. The last, smaller batch is left out; the
    metric still covers every row."""

    def __init__(self, forward, inputs: list[dict], batches, batch_size: int) -> None:
        full = [
            (i, b.n_tokens)
            for i, b in zip(inputs, batches, strict=True)
            if b.n_samples == batch_size
        ]
        self.forward, self.batch_size = forward, batch_size
        self.inputs = [i for i, _ in full]
        self.tokens = [t for _, t in full]
        self.position = self.samples = self.tokens_run = 0

    @classmethod
    def of(cls, forward, inputs, batches, batch_size: int, padding: str) -> BatchCycle | None:
        """A cycle where the batches share one shape; else None (windows run whole passes)."""
        shapes = {tuple(b.input_ids.shape) for b in batches if b.n_samples == batch_size}
        if padding != "max_length" or len(shapes) != 1:
            return None
        return cls(forward, inputs, batches, batch_size)

    def __call__(self) -> None:
        self.forward(self.inputs[self.position])
        self.samples += self.batch_size
        self.tokens_run += self.tokens[self.position]
        self.position = (self.position + 1) % len(self.inputs)

    def take(self) -> tuple[int, int]:
        """Samples and tokens run since the last call."""
        counts = (self.samples, self.tokens_run)
        self.samples = self.tokens_run = 0
        return counts


@dataclass(frozen=True)
class MeasureSettings:
    """How a cell is measured (the profile's ``warmup_s``, ``trials`` and ``min_window_s``).

    Attributes:
        max_retries: a window that reads 0 J is measured again this many times, each twice
            as long, before failing.
    """

    warmup_s: float
    trials: int
    min_window_s: float
    max_retries: int = 2

    @classmethod
    def from_params(cls, params: Params) -> MeasureSettings:
        return cls(params.warmup_s, params.trials, params.min_window_s)

    def check(self, meter: energy.Meter) -> None:
        if self.trials < 2:
            raise ValueError(
                f"trials must be at least 2 for a confidence interval, got {self.trials}"
            )
        if meter.source != "none" and self.min_window_s < 1.0:
            raise ValueError(
                f"min_window_s={self.min_window_s} is too short for the {meter.source} energy "
                f"counter (updates every ~{energy.COUNTER_PERIOD_S} s): use at least 1 s"
            )


def measure_windows(
    run_pass: Callable[[], None],
    meter: energy.Meter,
    settings: MeasureSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Window]:
    """Warm up, then measure ``settings.trials`` windows of whole ``run_pass`` calls."""
    settings.check(meter)
    warm_up(run_pass, settings, clock)
    return [measure_window(run_pass, meter, settings, clock) for _ in range(settings.trials)]


def warm_up(run_pass: Callable[[], None], settings: MeasureSettings, clock=time.perf_counter):
    """Whole passes, unmeasured, for at least ``warmup_s`` (one pass at least)."""
    start, passes = clock(), 0
    while passes == 0 or clock() - start < settings.warmup_s:
        run_pass()
        passes += 1


def measure_window(
    run_pass: Callable[[], None],
    meter: energy.Meter,
    settings: MeasureSettings,
    clock,
    cycle: BatchCycle | None = None,
) -> Window:
    """One window of whole passes (of whole batches with ``cycle``, which is then the unit);
    one that reads 0 J is measured again, twice as long."""
    window_s = settings.min_window_s
    for attempt in range(settings.max_retries + 1):
        try:
            return _window(cycle or run_pass, meter, window_s, clock, cycle)
        except energy.EnergyError:
            if attempt == settings.max_retries:
                raise
            window_s *= 2
    raise AssertionError("unreachable")


def _window(run_unit, meter: energy.Meter, window_s: float, clock, cycle=None) -> Window:
    if cycle is not None:
        cycle.take()
    meter.begin()
    start, units = clock(), 0
    while units == 0 or clock() - start < window_s:
        run_unit()
        units += 1
    r = meter.end()
    n_samples, n_tokens = cycle.take() if cycle is not None else (math.nan, math.nan)
    return Window(units, r.time_s, r.energy_j, r.cpu_energy_j, r.cpu_time_s, n_samples, n_tokens)


def trial_records(
    windows: list[Window],
    samples_per_pass: int,
    tokens_per_pass: int,
    idle_power_w: float,
    carbon_intensity_g_per_kwh: float,
) -> list[dict[str, float]]:
    """Per-trial figures: totals over the window divided by what it processed."""
    records = []
    for trial, w in enumerate(windows):
        if math.isnan(w.n_samples):
            n_samples, n_tokens, passes = (
                w.passes * samples_per_pass,
                w.passes * tokens_per_pass,
                w.passes,
            )
        else:  # whole batches of a BatchCycle: passes as a fraction of the dev set
            n_samples, n_tokens = w.n_samples, w.n_tokens
            passes = round(n_samples / samples_per_pass, 4)
        records.append(
            {
                "trial": trial,
                "passes": passes,
                "n_samples": n_samples,
                "n_tokens": n_tokens,
                "time_s": w.time_s,
                "energy_j": w.energy_j,
                "dynamic_energy_j": w.energy_j - idle_power_w * w.time_s,
                "dynamic_j_per_1k_samples": 1000
                * (w.energy_j - idle_power_w * w.time_s)
                / n_samples,
                "samples_per_s": n_samples / w.time_s,
                "tokens_per_s": n_tokens / w.time_s,
                "j_per_1k_samples": 1000 * w.energy_j / n_samples,
                "j_per_token": w.energy_j / n_tokens,
                "co2_mg": 1000 * w.energy_j / J_PER_KWH * carbon_intensity_g_per_kwh,
                "cpu_energy_j": w.cpu_energy_j,
                "cpu_j_per_1k_samples": 1000 * w.cpu_energy_j / n_samples,
                "cpu_time_s": w.cpu_time_s,
                "cpu_cores_busy": w.cpu_time_s / w.time_s,
            }
        )
    return records


def variation(trials: list[dict[str, float]]) -> float:
    """Coefficient of variation over trials: of J per sample, or of throughput without energy."""
    key = "j_per_1k_samples" if not math.isnan(trials[0]["energy_j"]) else "samples_per_s"
    values = np.array([t[key] for t in trials])
    return float(values.std(ddof=1) / values.mean()) if len(values) > 1 else math.nan


def spread(n: int, k: int) -> list[int]:
    """``k`` positions among ``n`` items, evenly spaced from the first (repeating where
    ``k > n``)."""
    return [i * n // k for i in range(k)]


def latency_ms(forward, inputs: list[dict], device: torch.device, min_batches: int = 50):
    """Per-batch latency percentiles from device events over ``min_batches`` batches, spread
    evenly over the pass (its batches repeated where it has fewer), outside the windows."""
    batches = [inputs[i] for i in spread(len(inputs), min_batches)]
    if device.type == "cuda":
        marks = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in batches
        ]
        for (start, end), batch in zip(marks, batches, strict=True):
            start.record()
            forward(batch)
            end.record()
        torch.cuda.synchronize(device)
        times_ms = [start.elapsed_time(end) for start, end in marks]
    else:
        times_ms = []
        for batch in batches:
            start = time.perf_counter()
            forward(batch)
            times_ms.append(1000 * (time.perf_counter() - start))
    return {
        "latency_p50_ms": float(np.percentile(times_ms, 50)),
        "latency_p99_ms": float(np.percentile(times_ms, 99)),
    }


@dataclass(frozen=True)
class Cell:
    """One configuration of the sweep, and the record key that identifies it."""

    task: GlueTask
    technique: models.Technique
    batch_size: int
    padding: str
    checkpoint: str | None
    config: dict


class Study:
    """A profile's sweep over tasks, techniques and batch sizes, and where it is recorded."""

    def __init__(self, params: Params, reports_dir: str = "reports", force: bool = False):
        self.params = params
        self.force = force
        self.paths = cfg.reports_paths(reports_dir)
        self.torch_device = environment.resolve_device(params.device)
        self.techniques = [models.get_technique(name) for name in params.techniques]
        self.settings = MeasureSettings.from_params(params)
        self._meter = None
        self._idle_power_w = None
        self._rows: dict[str, pd.DataFrame] = {}
        self.log_path = self.paths["logs"] / f"{params.profile}.log"
        environment.import_libraries(self.log_path)
        print(f"library warnings and logs: {cfg.project_relative(self.log_path)}")

    @classmethod
    def from_profile(cls, profile: str, reports_dir: str = "reports", force: bool = False):
        """The study of a profile by name (``params/<name>.yaml``) or path."""
        return cls(load(profile), reports_dir, force)

    def settings_table(self) -> pd.DataFrame:
        """The resolved parameters this study runs with (``default`` where the profile differs)."""
        return self.params.table(groups=(ALL, MEASURE))

    def environment(self) -> pd.Series:
        """The device, its software, the energy meter and the device's idle power."""
        facts = environment.describe(self.torch_device)
        facts.update(
            energy_source=self.meter.source,
            energy_reason=self.meter.reason,
            idle_power_w=self.idle_power_w,
        )
        return pd.Series(facts, name="value", dtype=object)

    def check_inputs(self, inputs: pd.DataFrame) -> None:
        """Every task can run, unless the profile skips those that cannot."""
        missing = inputs[inputs["problem"] != ""]
        assert self.params.on_missing_task == "skip" or missing.empty, (
            f"tasks that cannot run (on_missing_task: error):\n{missing.to_string()}"
        )

    # -- inputs ---------------------------------------------------------------------------

    def checkpoint_for(self, task: GlueTask) -> str | None:
        """The profile's checkpoint, else one in checkpoints_dir, else ``model`` (None: none)."""
        p = self.params
        for key in (task.name, task.model_task):
            if key in p.checkpoints:
                return str(p.checkpoints[key])
        folder = self.finetuned_folder(task)
        if folder is not None and (folder / "config.json").exists():
            return cfg.project_relative(folder)
        return p.model or None

    def finetuned_folder(self, task: GlueTask):
        if not self.params.checkpoints_dir:
            return None
        return cfg.resolve_path(self.params.checkpoints_dir) / task.model_task

    def label_map_for(self, task: GlueTask) -> list[str] | None:
        maps = self.params.label_maps
        return maps.get(task.name) or maps.get(task.model_task)

    def rows(self, task: GlueTask, split: str = "dev", max_samples: int | None = None):
        """The task's rows from the profile's source, read once per study."""
        key = f"{task.name}/{split}/{max_samples}"
        if key not in self._rows:
            self._rows[key] = data.load_rows(self.params, task, split, max_samples)
        return self._rows[key]

    def inputs(self) -> pd.DataFrame:
        """Per task: rows found, the checkpoint that will run, and any problem.

        A checkpoint that 10-finetune will train (``base_model`` set, train rows present) is
        ``planned``, not missing.
        """
        out = []
        for name in self.params.tasks:
            task = get_task(name)
            checkpoint, problem, n_rows = self.checkpoint_for(task), "", 0
            try:
                n_rows = len(self.rows(task))
            except data.DataError as err:
                problem = str(err)
            if self.params.base_model and checkpoint in (None, self.params.model):
                try:
                    self.rows(task, "train", max_samples=1)
                    checkpoint = f"planned: {cfg.project_relative(self.finetuned_folder(task))}"
                except data.DataError as err:
                    problem = problem or f"nothing to fine-tune: {err}"
            if checkpoint is None:
                problem = problem or f"no checkpoint for {name}"
            out.append({"task": name, "rows": n_rows, "checkpoint": checkpoint, "problem": problem})
        return pd.DataFrame(out, columns=["task", "rows", "checkpoint", "problem"])

    def technique_support(self) -> pd.DataFrame:
        """Which of the profile's techniques can run on this device, and why not."""
        return pd.DataFrame(
            {
                "technique": t.name,
                "unsupported_because": models.unsupported_reason(t, self.torch_device) or "",
            }
            for t in self.techniques
        )

    # -- measurement ----------------------------------------------------------------------

    @property
    def meter(self) -> energy.Meter:
        if self._meter is None:
            if self.params.scope == "end_to_end":
                self._meter = energy.make_host_meter(self.torch_device, self.params.energy)
            else:
                self._meter = energy.make_meter(self.torch_device, self.params.energy)
        return self._meter

    @property
    def idle_power_w(self) -> float:
        if self._idle_power_w is None:
            self._idle_power_w = energy.idle_power_w(self.meter, self.params.idle_s)
        return self._idle_power_w

    def cell_config(
        self, task: GlueTask, technique: str, batch_size: int, checkpoint, padding: str
    ) -> dict:
        return cell_config(
            self.params,
            task,
            technique,
            batch_size,
            padding,
            checkpoint,
            self.label_map_for(task),
            self.torch_device.type,
            self.fingerprints(task, checkpoint),
        )

    def fingerprints(self, task: GlueTask, checkpoint: str | None) -> dict:
        """What the cell's numbers depend on beyond its settings: the rows, the checkpoint and
        the software. A task whose rows cannot be read has no data fingerprint (it is skipped
        or stops the run, as ``on_missing_task`` says)."""
        try:
            rows = data.fingerprint(self.rows(task))
        except data.DataError:
            rows = None
        return {
            "data": rows,
            "checkpoint": models.fingerprint(checkpoint, self.params.seed) if checkpoint else None,
            "environment": environment.measured_with(self.torch_device),
        }

    def plan(self, techniques: list[str], combinations: bool = False) -> list[Cell]:
        """The cells of ``techniques`` that the profile selects, task by task: the grid of
        techniques and batch sizes, or with ``combinations`` the profile's listed cells."""
        p = self.params
        chosen = [t.name for t in self.techniques if t.name in techniques]
        points = plan_points(p, chosen, combinations)
        cells = []
        for name in p.tasks:
            task = get_task(name)
            checkpoint = self.checkpoint_for(task)
            for technique, batch_size, padding, only in points:
                if name not in only:
                    continue
                config = self.cell_config(task, technique, batch_size, checkpoint, padding)
                cells.append(
                    Cell(
                        task,
                        models.get_technique(technique),
                        int(batch_size),
                        padding,
                        checkpoint,
                        config,
                    )
                )
        return cells

    def run(self, techniques: list[str] = (), combinations: bool = False) -> pd.DataFrame:
        """Measure (or read back) every planned cell (see ``plan``) and save each.

        Returns:
            The trial rows of these cells; an empty table when the profile selects none.
        """
        cells = self.plan(list(techniques), combinations)
        if not cells:
            what = "combinations" if combinations else f"of {', '.join(techniques)}"
            print(f"profile {self.params.profile!r} selects none {what}")
            return results.trial_rows([])
        slots = workers.worker_slots(self.params)
        if slots:
            with environment.captured(self.log_path):
                return workers.run(self, techniques, combinations, cells, slots)
        records = []
        cells_dir = self.paths["cells"]
        pending = [
            c.task.name for c in cells if self.force or not results.finished(cells_dir, c.config)
        ]
        started = time.perf_counter()
        progress = tqdm(
            cells, desc=self.params.profile, unit="cell", mininterval=5.0, file=sys.stdout
        )
        with environment.captured(self.log_path):
            if self.params.order == "interleaved":
                for task in self.params.tasks:
                    records += self._run_interleaved([c for c in cells if c.task.name == task])
                    progress.update(sum(c.task.name == task for c in cells))
            else:
                for cell in progress:
                    progress.set_postfix_str(
                        f"{cell.task.name} {cell.technique.name} bs={cell.batch_size}",
                        refresh=False,
                    )
                    records.append(self._run_cell(cell))
        progress.close()
        results.write_tables(self.paths["results"], self.paths["cells"])
        if pending:
            wall_s = time.perf_counter() - started
            workers.record_here(
                self.paths["results"], self.params.profile, "measure", pending, wall_s
            )
        return results.trial_rows(records)

    def _run_interleaved(self, cells: list[Cell]) -> list[dict]:
        """A task's cells, prepared together, take their windows in rounds: each round every
        cell one window, in a seeded random order, so drift in GPU temperature and clocks hits
        all techniques alike. Each trial records its place in that order and the GPU's state."""
        import random

        records, runs = [], []
        for cell in cells:
            done = results.find_cell(self.paths["cells"], cell.config)
            if done and done["status"] == "ok" and not self.force:
                records.append(done)
                continue
            reason = self._skip_reason(cell)
            if reason is not None:
                records.append(self._save(cell.config, status="skipped", reason=reason))
                continue
            run = self._guarded(
                cell,
                lambda c=cell: CellRun(
                    c, self.rows(c.task), self.params, self.meter, self.label_map_for(c.task)
                ),
            )
            if isinstance(run, dict):
                records.append(run)
            else:
                runs.append(run)
        idle_power_w = self.idle_power_w if runs else math.nan
        live = [r for r in runs if not isinstance(self._guarded(r.cell, r.warm_up), dict)]
        rng = random.Random(f"{self.params.profile}/{cells[0].task.name}/{self.params.seed}")
        for trial in range(self.params.trials):
            order = rng.sample(live, len(live))
            for position, run in enumerate(order, start=trial * len(order)):
                failed = self._guarded(run.cell, lambda r=run, p=position: r.window(p))
                if isinstance(failed, dict):
                    records.append(failed)
                    live.remove(run)
        for run in live:
            record = self._guarded(run.cell, lambda r=run: r.finish(idle_power_w))
            ok = not (isinstance(record, dict) and record.get("status") == "failed")
            records.append(self._save(run.cell.config, status="ok", **record) if ok else record)
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
        return records

    def _guarded(self, cell: Cell, step: Callable):
        """``step()``, or the cell's saved ``failed`` record where the technique broke; wrong
        inputs (data, checkpoint, settings) stop the run."""
        try:
            return step()
        except (data.DataError, models.ModelError, ValueError):
            raise
        except Exception as err:
            logger.exception("%s %s failed", cell.task.name, cell.technique.name)
            reason = f"{type(err).__name__}: {err}"
            return self._save(cell.config, status="failed", reason=reason)

    def recorded(self) -> pd.DataFrame:
        """Every recorded trial row of this profile (an empty table before the first cell)."""
        if not (self.paths["results"] / results.RESULTS_CSV).exists():
            return results.trial_rows([])
        recorded = results.read_results(self.paths["results"])
        return recorded[recorded["profile"] == self.params.profile]

    def summary(self, trials: pd.DataFrame) -> pd.DataFrame:
        """Per cell: energy, throughput and metric, each mean ± its 95% half-width (columns
        with nothing measured, such as CPU energy off the end-to-end scope, left out)."""
        shown = (
            results.summarize(trials)
            .filter(
                regex="^(task|technique|batch_size|cv_flag)$|^samples_per_s_(mean|ci95)$|"
                "^(cpu_)?j_per_1k_samples_(mean|ci95)$|^metric$|^metric_value$"
            )
            .dropna(axis=1, how="all")
        )
        return results.with_intervals(shown, digits=4)

    def skipped(self, trials: pd.DataFrame) -> pd.DataFrame:
        """Cells not measured, with the reason."""
        rows = trials[trials["status"].isin(["skipped", "failed"])]
        return rows[["task", "technique", "batch_size", "status", "reason"]].drop_duplicates()

    def figure(self, techniques: list[str]):
        """``techniques`` beside the baseline, from every recorded cell of the profile."""
        from effbert import plots

        summary = results.summarize(self.recorded())
        return plots.compare(summary, techniques, self.params.baseline_technique)

    def check(self, trials: pd.DataFrame) -> pd.DataFrame:
        """``results.check`` of these trials against the profile's recorded baseline."""
        return results.check(
            trials,
            self.recorded(),
            min_window_s=self.params.min_window_s,
            metric_tolerance=self.params.metric_tolerance,
            baseline=self.params.baseline_technique,
        )

    def _skip_reason(self, cell: Cell) -> str | None:
        reason = models.unsupported_reason(cell.technique, self.torch_device)
        if reason is None and cell.checkpoint is None:
            reason = (
                f"no checkpoint for {cell.task.name}: set checkpoints.{cell.task.model_task}, or "
                "fine-tune one (base_model) into checkpoints_dir"
            )
        if reason is None:
            try:
                self.rows(cell.task)
            except data.DataError as err:
                if self.params.on_missing_task == "error":
                    raise
                reason = str(err)
        return reason

    def _run_cell(self, cell: Cell) -> dict:
        done = results.find_cell(self.paths["cells"], cell.config)
        if done and done["status"] == "ok" and not self.force:
            return done
        reason = self._skip_reason(cell)
        if reason is not None:
            return self._save(cell.config, status="skipped", reason=reason)
        try:
            record = self._guarded(
                cell,
                lambda: measure_cell(
                    cell,
                    self.rows(cell.task),
                    self.params,
                    self.meter,
                    self.idle_power_w,
                    self.label_map_for(cell.task),
                ),
            )
        finally:
            if self.torch_device.type == "cuda":
                torch.cuda.empty_cache()  # the cell's model is gone; free its memory
        if record.get("status") == "failed":
            return record
        return self._save(cell.config, status="ok", **record)

    def _save(self, config: dict, status: str, reason: str = "", **record) -> dict:
        full = {
            "config": config,
            "status": status,
            "reason": reason,
            "energy_source": self.meter.source if status == "ok" else None,
            "energy_reason": self.meter.reason if status == "ok" else None,
            "scope": self.params.scope,
            "cpu_energy_source": getattr(self.meter, "cpu_source", None)
            if status == "ok"
            else None,
            "cpu_energy_reason": getattr(self.meter, "cpu_reason", None)
            if status == "ok"
            else None,
            "environment": environment.describe(self.torch_device),
            "worker": {
                "index": os.environ.get(workers.WORKER_ENV),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            },
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **record,
        }
        path = results.write_cell(self.paths["cells"], full)
        return {**full, "cell_id": path.stem}


def cell_config(
    params: Params,
    task: GlueTask,
    technique: str,
    batch_size: int,
    padding: str,
    checkpoint: str | None,
    label_map: list[str] | None,
    device_type: str,
    fingerprints: dict,
) -> dict:
    """Everything that identifies a cell's record (its id is a hash of this).

    ``fingerprints`` name the data rows, the checkpoint's content and the software, so that a
    changed input is a new cell, never a reused one.
    """
    execution = models.get_technique(technique).execution
    return {
        "profile": params.profile,
        "task": task.name,
        "technique": technique,
        "batch_size": int(batch_size),
        "padding": padding,
        "max_length": params.max_length,
        "data_source": params.data_source,
        "max_samples": params.max_samples,
        "checkpoint": checkpoint,
        "label_map": label_map,
        "device": device_type,
        "energy": params.energy,
        "measure": asdict(MeasureSettings.from_params(params)),
        "seed": params.seed,
        "fingerprints": fingerprints,
        # cells measured the default way keep the ids they had before these settings existed
        **({"scope": params.scope} if params.scope != "model" else {}),
        **(
            {"tokenize_workers": params.tokenize_workers}
            if params.scope == "end_to_end"
            and params.tokenize_workers != 1
            and execution != "pipeline"
            else {}
        ),
        **({"order": params.order} if params.order != "sequential" else {}),
        # inductor tuned by the compile mode alone (before, torchao's quantization turned on
        # coordinate-descent tuning for every later compile of the process)
        **({"inductor": "mode"} if execution in models.COMPILED_EXECUTIONS else {}),
        # compiled for one batch shape: measures other code than the compile for any shape
        **(
            {"compiled_shapes": "static"}
            if models.static_rows(
                models.get_technique(technique), batch_size, padding, params.scope
            )
            else {}
        ),
    }


class CellRun:
    """One cell's model ready to measure: prepared, and run once over every batch shape
    (compilation and autotuning happen there, unmeasured). Windows are taken one at a time, so
    the cells of a task can take theirs in interleaved rounds."""

    def __init__(self, cell: Cell, rows, params: Params, meter, label_map=None) -> None:
        self.cell, self.rows, self.params, self.meter = cell, rows, params, meter
        self.settings = MeasureSettings.from_params(params)
        self.settings.check(meter)
        device = self.device = meter.device
        self.tokenizer = models.load_tokenizer(cell.checkpoint)
        self.batches = data.make_batches(
            self.tokenizer, rows, cell.batch_size, cell.padding, params.max_length
        )
        cuda = device.type == "cuda"
        if cuda:  # other cells of the task may hold their models already: count above them
            torch.cuda.reset_peak_memory_stats(device)
            held_bytes = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        self.prepared = models.prepare(
            cell.checkpoint,
            cell.task,
            cell.technique,
            device,
            label_map,
            params.seed,
            models.static_rows(cell.technique, cell.batch_size, cell.padding, params.scope),
        )
        self.inputs = [self.prepared.inputs(b) for b in self.batches]
        self.forward = self.prepared.forward()
        if params.scope == "end_to_end" or cell.technique.execution == "pipeline":
            self.run_pass = end_to_end_pass(
                self.prepared,
                self.tokenizer,
                rows,
                cell,
                params.max_length,
                params.tokenize_workers,
            )
        with self.prepared.context():
            self.run_pass()
            energy.synchronize(device)
        self.prepare_s = time.perf_counter() - start
        self.model_scope = params.scope != "end_to_end" and cell.technique.execution != "pipeline"
        self.cycle = (
            BatchCycle.of(self.forward, self.inputs, self.batches, cell.batch_size, cell.padding)
            if self.model_scope
            else None
        )
        self.peak_memory_mb = (
            (torch.cuda.max_memory_allocated(device) - held_bytes) / 2**20 if cuda else None
        )
        self.warmup_s = math.nan
        self.windows: list[Window] = []
        self.window_facts: list[dict] = []

    def run_pass(self) -> None:
        forward = self.forward
        for batch in self.inputs:
            forward(batch)

    def warm_up(self) -> None:
        start = time.perf_counter()
        with self.prepared.context():
            warm_up(self.cycle or self.run_pass, self.settings)
        energy.synchronize(self.device)
        self.warmup_s = time.perf_counter() - start

    def window(self, position: int = 0) -> None:
        """One measured window; ``position`` is its place in the task's order of windows."""
        facts = {"order": position, **environment.gpu_state(self.device)}
        with self.prepared.context():
            window = measure_window(
                self.run_pass, self.meter, self.settings, time.perf_counter, self.cycle
            )
        self.windows.append(window)
        self.window_facts.append(facts)

    def kernel_record(self) -> dict:
        """``kernel_record`` over at most ``KERNEL_BATCHES`` batches spread over the pass (a
        pass of a slow cell holds ~10^5 kernels, which the profiler takes minutes to list),
        ``KERNEL_BATCHES_ONE_SHAPE`` where the batches share one shape (a ``BatchCycle``: they run
        the same kernels), its busy time scaled to the whole pass; end-to-end cells profile a
        whole pass."""
        if not self.model_scope:
            return kernel_record(self.run_pass, self.cell.technique, self.device)
        limit = KERNEL_BATCHES if self.cycle is None else KERNEL_BATCHES_ONE_SHAPE
        picked = spread(len(self.inputs), min(len(self.inputs), limit))
        filled = self.prepared.static_rows or 0
        rows = [max(b.n_samples, filled) for b in self.batches]  # the rows each batch runs
        share = sum(rows[i] for i in picked) / sum(rows)

        def run_part() -> None:
            for i in picked:
                self.forward(self.inputs[i])

        return kernel_record(run_part, self.cell.technique, self.device, share)

    def predictions(self) -> tuple[np.ndarray, str]:
        """Logits in GLUE order for every row, outside the windows: from effbert's end-to-end
        path itself (raw text in) where the cell is one, else from the forward pass."""
        end_to_end = self.params.scope == "end_to_end"
        if not end_to_end or self.cell.technique.execution == "pipeline":
            return self.prepared.predict(self.batches, len(self.rows)), "forward pass"
        with self.prepared.context():
            batches = self.run_pass(keep_logits=True)
        out = None
        for rows, logits in batches:
            if out is None:
                out = np.empty((len(self.rows), logits.shape[1]), dtype=np.float32)
            out[rows] = logits.numpy()
        order = self.prepared.output_order
        return (out if order is None else out[:, order]), "end to end"

    def finish(self, idle_power_w: float) -> dict:
        """Latency, kernels and the task metric, outside the windows; the cell's record."""
        cell, params, device = self.cell, self.params, self.device
        start = time.perf_counter()
        state_after = environment.gpu_state(device)
        with self.prepared.context():
            latency = latency_ms(self.forward, self.inputs, device, params.latency_batches)
            check = params.kernel_check and device.type == "cuda"
            kernels = self.kernel_record() if check else {}
        logits, metric_source = self.predictions()
        scores, backend = metrics.compute(
            cell.task, logits, self.rows["label"].to_numpy(), params.metrics_backend
        )
        trials = trial_records(
            self.windows,
            sum(b.n_samples for b in self.batches),
            sum(b.n_tokens for b in self.batches),
            idle_power_w,
            params.carbon_intensity_g_per_kwh,
        )
        getattr(self.run_pass, "close", lambda: None)()
        trials = [{**t, **facts} for t, facts in zip(trials, self.window_facts, strict=True)]
        cv = variation(trials)
        return {
            "trials": trials,
            "metric": cell.task.primary_metric,
            "metric_value": scores[cell.task.primary_metric],
            "metric_source": metric_source,
            "metrics": scores,
            "metrics_backend": backend,
            "latency": latency,
            "idle_power_w": idle_power_w,
            "cv": cv,
            "cv_flag": bool(cv > params.max_cv),
            "state_before": {k: v for k, v in self.window_facts[0].items() if k != "order"},
            "state_after": state_after,
            "axes": cell.technique.axes,
            "scope": params.scope,
            "order": params.order,
            "prepare_s": self.prepare_s,
            "warmup_s": self.warmup_s,
            "finish_s": time.perf_counter() - start,
            "peak_memory_mb": self.peak_memory_mb,
            "pad_tokens": 0
            if cell.technique.packed
            else sum(b.input_ids.numel() - b.n_tokens for b in self.batches),
            "kernels": kernels,
            "fallback": kernels.get("fallback"),
        }


def measure_cell(
    cell: Cell,
    rows: pd.DataFrame,
    params: Params,
    meter: energy.Meter,
    idle_power_w: float,
    label_map: list[str] | None = None,
) -> dict:
    """Prepare, warm up, measure the energy windows, then latency and the metric outside them."""
    run = CellRun(cell, rows, params, meter, label_map)
    run.warm_up()
    for trial in range(params.trials):
        run.window(trial)
    return run.finish(idle_power_w)


def end_to_end_pass(
    prepared, tokenizer, rows, cell: Cell, max_length: int, workers: int = 1
) -> Callable:
    """A pass from raw text to labels on the host: tokenization, batching, the copy to the
    device, the forward pass and the arg-max back, for every row.

    effbert's own path sorts rows by length first (``bucketed`` and ``packed`` padding),
    tokenizes in ``workers`` worker processes of a ``torch.utils.data.DataLoader`` that stay
    alive across passes and run ahead of the device, copies from pinned memory without
    blocking and brings the labels back without waiting batch by batch. The ``pipeline``
    execution hands the same model to ``transformers.pipeline("text-classification")`` as a
    user would.
    """
    texts = rows["text_a"].tolist()
    pairs = None if rows["text_b"].isna().all() else rows["text_b"].tolist()
    device = prepared.device
    if cell.technique.execution == "pipeline":
        from transformers import pipeline

        pipe = pipeline(
            "text-classification", model=prepared.model, tokenizer=tokenizer, device=device
        )
        items = (
            texts
            if pairs is None
            else [{"text": a, "text_pair": b} for a, b in zip(texts, pairs, strict=True)]
        )

        def run_pipeline() -> None:
            pipe(items, batch_size=cell.batch_size, truncation=True, max_length=max_length)

        return run_pipeline
    order = list(range(len(texts)))
    if cell.padding in ("bucketed", "packed"):
        order.sort(key=lambda i: len(texts[i]) + len(pairs[i] if pairs else ""))
    # each batch is tokenized in up to `workers` parts at once, then joined
    parts_per_batch = max(1, min(workers, cell.batch_size // 32))
    part_rows = -(-cell.batch_size // parts_per_batch)
    parts, batch_of_part = [], []
    for b, start in enumerate(range(0, len(order), cell.batch_size)):
        rows_b = order[start : start + cell.batch_size]
        for i in range(0, len(rows_b), part_rows):
            parts.append(rows_b[i : i + part_rows])
            batch_of_part.append(b)
    pin = device.type == "cuda"
    dataset = TokenizedParts(tokenizer, texts, pairs, parts, cell, max_length)
    # one endless stream over the parts, pass after pass: the workers tokenize the next pass
    # while the device computes this one
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        multiprocessing_context="fork",
    )
    forward = prepared.forward()
    stream = None
    int8 = cell.technique.quantize in ("int8_dynamic", "int8_weight")

    batch_rows: dict[int, list[int]] = {}
    for part, b in zip(parts, batch_of_part, strict=True):
        batch_rows.setdefault(b, []).extend(part)

    def run_e2e(keep_logits: bool = False) -> list:
        """One pass; the labels, or (outside windows) each batch's rows and float logits."""
        nonlocal stream
        if stream is None:
            stream = iter(loader)
        labels, pending = [], []
        for i in range(len(parts)):
            pending.append(next(stream))
            if i + 1 < len(parts) and batch_of_part[i + 1] == batch_of_part[i]:
                continue
            joined = join_parts(pending, dataset.pad_id)
            pending = []
            if int8 and "attention_mask" in joined:
                small = data.Batch(joined["input_ids"], joined["attention_mask"], None)
                small = models.pad_to_rows(small, models.INT8_MIN_ROWS)
                joined = {"input_ids": small.input_ids, "attention_mask": small.attention_mask}
            batch = {
                k: v.pin_memory().to(device, non_blocking=True) if pin else v
                for k, v in joined.items()
                if torch.is_tensor(v)
            }
            batch.update({k: v for k, v in joined.items() if not torch.is_tensor(v)})
            if keep_logits:
                logits = forward(batch).float().cpu()
                labels.append((batch_rows[batch_of_part[i]], logits))
            else:
                labels.append(forward(batch).argmax(-1).to("cpu", non_blocking=pin))
        energy.synchronize(device)  # the labels are on the host
        return labels

    def close() -> None:
        nonlocal stream
        stream = None  # the iterator's end stops its worker processes

    run_e2e.close = close
    return run_e2e


def join_parts(parts: list[dict], pad_id: int) -> dict:
    """One batch of tensors from its separately tokenized parts (NumPy arrays): packed parts
    end to end, padded parts padded to the longest."""
    if "cu_seqlens" in parts[0]:
        offsets = np.cumsum([0] + [int(p["cu_seqlens"][-1]) for p in parts[:-1]])
        cu = [parts[0]["cu_seqlens"][:1]]
        cu += [p["cu_seqlens"][1:] + o for p, o in zip(parts, offsets, strict=True)]
        return {
            "input_ids": torch.from_numpy(np.concatenate([p["input_ids"] for p in parts])),
            "position_ids": torch.from_numpy(np.concatenate([p["position_ids"] for p in parts])),
            "cu_seqlens": torch.from_numpy(np.concatenate(cu).astype(np.int32)),
            "max_len": max(p["max_len"] for p in parts),
            "lengths": [n for p in parts for n in p["lengths"]],
        }
    width = max(p["input_ids"].shape[1] for p in parts)

    def widened(key: str, value: int) -> torch.Tensor:
        arrays = [
            np.pad(p[key], ((0, 0), (0, width - p[key].shape[1])), constant_values=value)
            for p in parts
        ]
        return torch.from_numpy(np.concatenate(arrays))

    return {
        "input_ids": widened("input_ids", pad_id),
        "attention_mask": widened("attention_mask", 0),
    }


class TokenizedParts(torch.utils.data.Dataset):
    """Raw rows cut into parts of batches, each tokenized on demand (in a DataLoader worker)
    into NumPy arrays: padded, or packed for a padding-free technique. Index ``i`` is part
    ``i % len(parts)``: the stream runs pass after pass.

    Fast tokenizers are called through their Rust backend (``encode_batch_fast``), which gives
    the ids ``tokenizer(...)`` gives without its per-call Python conversions."""

    def __init__(self, tokenizer, texts, pairs, parts, cell: Cell, max_length: int) -> None:
        self.texts, self.pairs, self.parts = texts, pairs, parts
        self.packed = cell.technique.packed
        self.pad_id = tokenizer.pad_token_id or 0
        self.tokenizer, self.max_length = tokenizer, max_length
        self.fixed = cell.padding == "max_length"
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = None
        if backend is not None:
            import copy

            self.backend = copy.deepcopy(backend)
            self.backend.enable_truncation(max_length)
            if self.packed:
                self.backend.no_padding()
            else:
                self.backend.enable_padding(
                    pad_id=self.pad_id,
                    pad_token=tokenizer.pad_token or "[PAD]",
                    length=max_length if self.fixed else None,
                )

    def __len__(self) -> int:
        return len(self.parts) * 10**9

    def __getitem__(self, i: int) -> dict:
        part = self.parts[i % len(self.parts)]
        texts = [self.texts[j] for j in part]
        if self.pairs:
            texts = list(zip(texts, [self.pairs[j] for j in part], strict=True))
        if self.backend is None:
            return self._slow(texts)
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encodings = encode(texts)
        if self.packed:
            lengths = [len(e.ids) for e in encodings]
            cu = np.zeros(len(lengths) + 1, dtype=np.int32)
            cu[1:] = np.cumsum(lengths)
            return {
                "input_ids": np.fromiter(
                    (t for e in encodings for t in e.ids), dtype=np.int64, count=int(cu[-1])
                ),
                "position_ids": np.concatenate([np.arange(n) for n in lengths]),
                "cu_seqlens": cu,
                "max_len": max(lengths),
                "lengths": lengths,
            }
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    def _slow(self, texts) -> dict:
        first = [t[0] for t in texts] if self.pairs else texts
        second = [t[1] for t in texts] if self.pairs else None
        encoded = self.tokenizer(
            first,
            second,
            truncation=True,
            max_length=self.max_length,
            padding="max_length" if self.fixed else "longest",
            return_tensors="np",
        )
        ids, mask = encoded["input_ids"].astype(np.int64), encoded["attention_mask"]
        if not self.packed:
            return {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        out = packed.pack(torch.from_numpy(ids), torch.from_numpy(mask))
        return {k: v.numpy() if torch.is_tensor(v) else v for k, v in out.items()}


def busy_time(spans: list[tuple[float, float]]) -> float:
    """The time in which at least one of ``spans`` (start, end) was running."""
    busy, start, end = 0.0, None, None
    for s, e in sorted(spans):
        if start is None or s > end:
            busy += 0.0 if start is None else end - start
            start, end = s, e
        else:
            end = max(end, e)
    return busy + (0.0 if start is None else end - start)


def idle_gap_share(spans: list[tuple[float, float]]) -> float | None:
    """The share of a lone pass's GPU span (first kernel start to last kernel end) in which no
    kernel ran. The pass starts from an empty queue under the profiler, so this overstates the
    gaps of the windows, whose passes queue up behind each other; ``busy_ms`` beside the
    windows' time per pass gives theirs (``report.window_split``)."""
    if not spans:
        return None
    span = max(e for _, e in spans) - min(s for s, _ in spans)
    return round(1 - busy_time(spans) / max(span, 1e-9), 4)


# Substrings of CUDA kernel names that show which path ran.
KERNEL_SIGNS = {
    "flash": ("flash", "fmha", "efficient_attention", "cudnn", "attention"),
    "int8": ("int8", "i8", "imma", "s8", "_int_mm", "igemm"),
    "fp8": ("e4m3", "e5m2", "fp8", "f8", "_scaled_mm", "qqtst"),
}


KERNEL_BATCHES = 16  # batches a cell's kernel record profiles at most
KERNEL_BATCHES_ONE_SHAPE = 4  # the same, where every batch has one shape (max_length)


def kernel_record(
    run_pass: Callable[[], None], technique: models.Technique, device, share: float = 1.0
) -> dict:
    """The CUDA kernels of one pass (torch.profiler, outside the energy windows): the top ones
    by GPU time, and whether the technique's own kernels ran (else a recorded fallback).
    ``share``: the part of a pass that ``run_pass`` runs; ``busy_ms`` is scaled to a pass."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_pass()
        energy.synchronize(device)
    times: dict[str, float] = {}
    spans = []
    for event in prof.events():
        if event.device_type.name == "CUDA":
            times[event.name] = times.get(event.name, 0.0) + event.device_time_total
            spans.append((event.time_range.start, event.time_range.end))
    total = sum(times.values()) or 1.0
    top = sorted(times.items(), key=lambda kv: -kv[1])
    names = " ".join(times).lower()
    expected = []
    if technique.fused_attention_only or technique.packed:
        expected.append("flash")
    if technique.quantize in ("int8_dynamic",):
        expected.append("int8")
    if technique.quantize == "fp8":
        expected.append("fp8")
    missing = [e for e in expected if not any(sign in names for sign in KERNEL_SIGNS[e])]
    return {
        "top": [{"name": n[:120], "share": round(t / total, 4)} for n, t in top[:12]],
        "idle_gap_share": idle_gap_share(spans),
        "busy_ms": round(busy_time(spans) / 1e3 / share, 4),  # profiler times are in µs
        "profiled_share": round(share, 4),
        "expected": expected,
        "found": {e: e not in missing for e in expected},
        "fallback": f"no {', '.join(missing)} kernel ran" if missing else None,
    }
