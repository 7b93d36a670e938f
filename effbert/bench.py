"""Measure cells of the sweep: warmup, energy windows of whole passes, metrics outside them.

One cell = one (task, technique, batch size, padding) configuration. After warmup, each trial
is one meter window that repeats full passes over the task's batches until ``min_window_s`` has
passed; the device is synchronized only at the window's ends. Latency per batch and the task
metric come from separate, unmeasured passes over the same model and batches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from effbert import config as cfg
from effbert import data, energy, environment, metrics, models, results
from effbert.tasks import GlueTask, get_task

J_PER_KWH = 3.6e6

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One measured trial: how many full passes ran and what the meter read."""

    passes: int
    time_s: float
    energy_j: float


@dataclass(frozen=True)
class MeasureSettings:
    """How a cell is measured.

    Attributes:
        warmup_s: passes run unmeasured first, for at least this long (one pass at least).
        trials: measured windows per cell.
        min_window_s: each window repeats full passes until this long has elapsed.
        max_retries: a window that reads 0 J is measured again this many times, each twice
            as long, before failing.
    """

    warmup_s: float = 3.0
    trials: int = 5
    min_window_s: float = 2.0
    max_retries: int = 2

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
    """Warm up, then measure ``settings.trials`` windows of whole passes."""
    settings.check(meter)
    start, passes = clock(), 0
    while passes == 0 or clock() - start < settings.warmup_s:
        run_pass()
        passes += 1
    windows = []
    for _ in range(settings.trials):
        window_s = settings.min_window_s
        for attempt in range(settings.max_retries + 1):
            try:
                windows.append(_window(run_pass, meter, window_s, clock))
                break
            except energy.EnergyError:
                if attempt == settings.max_retries:
                    raise
                window_s *= 2
    return windows


def _window(run_pass, meter: energy.Meter, window_s: float, clock) -> Window:
    meter.begin()
    start, passes = clock(), 0
    while passes == 0 or clock() - start < window_s:
        run_pass()
        passes += 1
    reading = meter.end()
    return Window(passes, reading.time_s, reading.energy_j)


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
        n_samples, n_tokens = w.passes * samples_per_pass, w.passes * tokens_per_pass
        records.append(
            {
                "trial": trial,
                "passes": w.passes,
                "n_samples": n_samples,
                "n_tokens": n_tokens,
                "time_s": w.time_s,
                "energy_j": w.energy_j,
                "dynamic_energy_j": w.energy_j - idle_power_w * w.time_s,
                "samples_per_s": n_samples / w.time_s,
                "tokens_per_s": n_tokens / w.time_s,
                "j_per_1k_samples": 1000 * w.energy_j / n_samples,
                "j_per_token": w.energy_j / n_tokens,
                "co2_mg": 1000 * w.energy_j / J_PER_KWH * carbon_intensity_g_per_kwh,
            }
        )
    return records


def variation(trials: list[dict[str, float]]) -> float:
    """Coefficient of variation over trials: of J per sample, or of throughput without energy."""
    key = "j_per_1k_samples" if not math.isnan(trials[0]["energy_j"]) else "samples_per_s"
    values = np.array([t[key] for t in trials])
    return float(values.std(ddof=1) / values.mean()) if len(values) > 1 else math.nan


def latency_ms(forward, inputs: list[dict], device: torch.device, min_batches: int = 50):
    """Per-batch latency percentiles from device events, in a pass of its own."""
    rounds = max(1, math.ceil(min_batches / len(inputs)))
    batches = [b for _ in range(rounds) for b in inputs]
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


def predict(prepared: models.Prepared, batches: list[data.Batch], n_rows: int) -> np.ndarray:
    """Logits in GLUE label order for every row, in the split's original order."""
    out = None
    for batch in batches:
        logits = prepared.logits(batch.to(prepared.device).inputs()).cpu().numpy()
        if out is None:
            out = np.empty((n_rows, logits.shape[1]), dtype=np.float32)
        out[batch.row_index.numpy()] = logits
    return out


@dataclass
class Study(data.TaskInputs):
    """A profile's sweep over tasks, techniques and batch sizes.

    Field names are the notebooks' parameter names; ``Study.from_namespace(globals())`` in a
    notebook picks them up after papermill injected the profile.
    """

    energy: str = "auto"
    model: str = models.TINY_RANDOM
    checkpoints: dict = field(default_factory=dict)
    checkpoints_dir: str = ""
    label_maps: dict = field(default_factory=dict)
    techniques: list = field(default_factory=lambda: list(models.TECHNIQUES))
    batch_sizes: list = field(default_factory=lambda: [16])
    padding: str = "max_length"
    max_length: int = 128
    warmup_s: float = 3.0
    trials: int = 5
    min_window_s: float = 2.0
    max_cv: float = 0.05
    idle_s: float = 3.0
    latency_batches: int = 50
    carbon_intensity_g_per_kwh: float = 475.0
    metrics_backend: str = "auto"
    metric_tolerance: float = 0.02
    force: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.techniques:
            models.get_technique(name)
        self.paths = cfg.reports_paths(self.reports_dir)
        self.torch_device = environment.resolve_device(self.device)
        self.settings = MeasureSettings(self.warmup_s, self.trials, self.min_window_s)
        self._meter = None
        self._idle_power_w = None

    # -- inputs ---------------------------------------------------------------------------

    def checkpoint_for(self, task: GlueTask) -> str | None:
        """The profile's checkpoint, else a fine-tuned one in checkpoints_dir, else ``model``."""
        for key in (task.name, task.model_task):
            if key in self.checkpoints:
                return str(self.checkpoints[key])
        if self.checkpoints_dir:
            folder = cfg.resolve_path(self.checkpoints_dir) / task.model_task
            if (folder / "config.json").exists():
                return cfg.project_relative(folder)
        return self.model or None

    def label_map_for(self, task: GlueTask) -> list[str] | None:
        return self.label_maps.get(task.name) or self.label_maps.get(task.model_task)

    def inputs(self) -> pd.DataFrame:
        """Per task: rows found, the checkpoint that would run, and any problem."""
        rows = []
        for name in self.tasks:
            task = get_task(name)
            checkpoint = self.checkpoint_for(task)
            problem, n_rows = "", 0
            try:
                n_rows = len(self.load_rows(task))
            except data.DataError as err:
                problem = str(err)
            if checkpoint is None:
                problem = problem or f"no checkpoint for {name}"
            rows.append(
                {"task": name, "rows": n_rows, "checkpoint": checkpoint, "problem": problem}
            )
        return pd.DataFrame(rows)

    def technique_support(self) -> pd.DataFrame:
        """Which of the profile's techniques can run on this device, and why not."""
        return pd.DataFrame(
            {
                "technique": name,
                "unsupported_because": models.unsupported_reason(
                    models.get_technique(name), self.torch_device
                )
                or "",
            }
            for name in self.techniques
        )

    # -- measurement ----------------------------------------------------------------------

    @property
    def meter(self) -> energy.Meter:
        if self._meter is None:
            self._meter = energy.make_meter(self.torch_device, self.energy)
        return self._meter

    @property
    def idle_power_w(self) -> float:
        if self._idle_power_w is None:
            self._idle_power_w = energy.idle_power_w(self.meter, self.idle_s)
        return self._idle_power_w

    def cell_config(self, task: GlueTask, technique: str, batch_size: int, checkpoint) -> dict:
        return {
            "profile": self.profile,
            "task": task.name,
            "technique": technique,
            "batch_size": int(batch_size),
            "padding": self.padding,
            "max_length": self.max_length,
            "data_source": self.data_source,
            "max_samples": self.max_samples,
            "checkpoint": checkpoint,
            "checkpoint_version": _fingerprint(checkpoint),
            "label_map": self.label_map_for(task),
            "device": self.torch_device.type,
            "energy": self.energy,
            "measure": asdict(self.settings),
            "seed": self.seed,
        }

    def run(self, techniques: list[str]) -> pd.DataFrame:
        """Measure every cell of ``techniques`` (those the profile selects) and save each.

        Returns:
            The trial rows of this run's cells (finished earlier ones included).
        """
        chosen = [t for t in techniques if t in self.techniques]
        plan = [
            (get_task(name), technique, bs)
            for name in self.tasks
            for technique in chosen
            for bs in self.batch_sizes
        ]
        cells = []
        progress = tqdm(plan, desc=f"{self.profile}", unit="cell")
        rows_cache: dict[str, Any] = {}
        for task, technique, batch_size in progress:
            progress.set_postfix_str(f"{task.name} {technique} bs={batch_size}")
            cells.append(self._run_cell(task, technique, batch_size, rows_cache))
        results.write_tables(self.paths["results"], self.paths["cells"])
        return results.trial_rows(cells) if cells else pd.DataFrame()

    def check(self, trials: pd.DataFrame, baseline: str = "fp32") -> pd.DataFrame:
        """Assert the measured cells are sound and each metric is near the baseline's.

        Returns:
            Per cell: the task metric, the baseline's, and their difference.
        """
        failed = trials[trials["status"] == "failed"]
        assert failed.empty, f"cells failed:\n{failed[['task', 'technique', 'reason']]}"
        skipped = trials[trials["status"] == "skipped"]
        assert (skipped["reason"].str.len() > 0).all(), "a skipped cell gives no reason"
        ok = trials[trials["status"] == "ok"]
        assert (ok["time_s"] >= self.min_window_s).all(), "a window shorter than min_window_s"
        assert (ok["n_samples"] > 0).all(), "a window processed no samples"
        assert ok["metric_value"].notna().all(), "a cell without its task metric"
        if self.meter.source != "none":
            assert (ok["energy_j"] > 0).all(), "a window read no energy"
        everything = results.read_results(self.paths["results"], self.profile)
        reference = everything[
            (everything["technique"] == baseline) & (everything["status"] == "ok")
        ]
        keys = ["task", "batch_size", "padding", "max_length"]
        compared = ok.drop_duplicates("cell_id")[
            keys + ["technique", "metric", "metric_value"]
        ].merge(
            reference.drop_duplicates("cell_id")[keys + ["metric_value"]],
            on=keys,
            how="left",
            suffixes=("", f"_{baseline}"),
        )
        compared["difference"] = compared["metric_value"] - compared[f"metric_value_{baseline}"]
        far = compared[compared["difference"].abs() > self.metric_tolerance]
        assert far.empty, f"metric further than {self.metric_tolerance} from {baseline}:\n{far}"
        return compared

    def _run_cell(self, task: GlueTask, technique_name: str, batch_size: int, cache) -> dict:
        technique = models.get_technique(technique_name)
        checkpoint = self.checkpoint_for(task)
        config = self.cell_config(task, technique_name, batch_size, checkpoint)
        done = results.find_cell(self.paths["cells"], config)
        if done and done["status"] == "ok" and not self.force:
            return done
        reason = models.unsupported_reason(technique, self.torch_device)
        if reason is None and checkpoint is None:
            reason = (
                f"no checkpoint for {task.name}: set checkpoints.{task.model_task}, or fine-tune "
                "one (base_model) into checkpoints_dir"
            )
        if reason is None:
            try:
                if task.name not in cache:
                    cache[task.name] = self.load_rows(task)
            except data.DataError as err:
                if self.on_missing_task == "error":
                    raise
                reason = str(err)
        if reason is not None:
            return self._save(config, status="skipped", reason=reason)
        try:
            record = self._measure(task, technique, batch_size, checkpoint, cache[task.name])
        except (data.DataError, models.ModelError, ValueError):
            raise  # the profile's inputs are wrong: stop and say so
        except Exception as err:  # the technique broke on this device: record it, go on
            logger.exception("%s %s bs=%s failed", task.name, technique_name, batch_size)
            return self._save(config, status="failed", reason=f"{type(err).__name__}: {err}")
        finally:
            if self.torch_device.type == "cuda":
                torch.cuda.empty_cache()  # the cell's model is gone; free its memory
        return self._save(config, status="ok", **record)

    def _measure(self, task, technique, batch_size, checkpoint, rows: pd.DataFrame) -> dict:
        device = self.torch_device
        tokenizer = models.load_tokenizer(checkpoint)
        batches = data.make_batches(tokenizer, rows, batch_size, self.padding, self.max_length)
        prepared = models.prepare(
            checkpoint, task, technique, device, self.label_map_for(task), self.seed
        )
        inputs = [b.to(device).inputs() for b in batches]
        forward = prepared.forward()

        def run_pass() -> None:
            for batch in inputs:
                forward(batch)

        idle_power_w = self.idle_power_w
        state_before = environment.gpu_state(device)
        with prepared.context():
            windows = measure_windows(run_pass, self.meter, self.settings)
            latency = latency_ms(forward, inputs, device, self.latency_batches)
        state_after = environment.gpu_state(device)
        logits = predict(prepared, batches, len(rows))
        scores, backend = metrics.compute(
            task, logits, rows["label"].to_numpy(), self.metrics_backend
        )
        trials = trial_records(
            windows,
            sum(b.n_samples for b in batches),
            sum(b.n_tokens for b in batches),
            idle_power_w,
            self.carbon_intensity_g_per_kwh,
        )
        cv = variation(trials)
        return {
            "trials": trials,
            "metric": task.primary_metric,
            "metric_value": scores[task.primary_metric],
            "metrics": scores,
            "metrics_backend": backend,
            "latency": latency,
            "idle_power_w": idle_power_w,
            "cv": cv,
            "cv_flag": bool(cv > self.max_cv),
            "state_before": state_before,
            "state_after": state_after,
        }

    def _save(self, config: dict, status: str, reason: str = "", **record) -> dict:
        full = {
            "config": config,
            "status": status,
            "reason": reason,
            "energy_source": self.meter.source if status == "ok" else None,
            "energy_reason": self.meter.reason if status == "ok" else None,
            "environment": environment.describe(self.torch_device),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **record,
        }
        path = results.write_cell(self.paths["cells"], full)
        return {**full, "cell_id": path.stem}


def _fingerprint(checkpoint: str | None) -> str | None:
    """Size and modification time of a local checkpoint's weights (None for Hub ids)."""
    if not checkpoint:
        return None
    folder = cfg.resolve_path(checkpoint)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not weights:
        return None
    return ";".join(f"{w.name}:{w.stat().st_size}:{int(w.stat().st_mtime)}" for w in weights)
