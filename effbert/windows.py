"""Energy windows: warmup, then trials of whole units read from the meter, and the per-trial
figures they give.

After warmup, each trial is one meter window that repeats a unit until ``min_window_s`` has
passed: a full pass over the task's batches, or one batch of a ``BatchCycle`` where they share
one shape; the device is synchronized only at the window's ends, and nothing else runs inside.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from effbert import energy
from effbert.params import Params

J_PER_KWH = 3.6e6


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
        preroll_s: the same cell's units run unmeasured right before each window, so that a
            window starts from the state its own work leaves, not the previous cell's.
    """

    warmup_s: float
    trials: int
    min_window_s: float
    max_retries: int = 2
    preroll_s: float = 0.0

    @classmethod
    def from_params(cls, params: Params) -> MeasureSettings:
        return cls(params.warmup_s, params.trials, params.min_window_s, preroll_s=params.preroll_s)

    def identity(self) -> dict:
        """What a cell's id holds of these (a pre-roll of 0 s leaves the ids it had before)."""
        values = dataclasses.asdict(self)
        return values if self.preroll_s else {k: v for k, v in values.items() if k != "preroll_s"}

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
    unit = cycle or run_pass
    start = clock()
    while clock() - start < settings.preroll_s:  # unmeasured, right before the window
        unit()
    for attempt in range(settings.max_retries + 1):
        try:
            return _window(unit, meter, window_s, clock, cycle)
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
