"""One cell's run: its model prepared and run once over every batch shape (compilation and
autotuning happen there, unmeasured), warmup, the energy windows, then latency, the kernels
that ran and the task metric from passes of their own, outside the windows."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from effbert import data, energy, environment, fp8, metrics, models
from effbert.e2e import end_to_end_pass
from effbert.kernels import KERNEL_BATCHES, KERNEL_BATCHES_ONE_SHAPE, kernel_record
from effbert.params import Params
from effbert.plan import Cell
from effbert.techniques import static_rows
from effbert.windows import (
    BatchCycle,
    MeasureSettings,
    Window,
    measure_window,
    trial_records,
    variation,
    warm_up,
)


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


class NonFiniteOutputs(RuntimeError):
    """A cell whose model gave NaN or infinite outputs: its metric would be silently wrong."""


def check_finite(logits: np.ndarray, cell: Cell) -> np.ndarray:
    """``logits``, or ``NonFiniteOutputs`` naming how many are NaN or infinite."""
    bad = int((~np.isfinite(logits)).sum())
    if bad:
        raise NonFiniteOutputs(
            f"{bad} of {logits.size} outputs of {cell.technique.name} on {cell.task.name} are "
            "NaN or infinite (an overflow in this precision?): its metric would be wrong"
        )
    return logits


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
            static_rows(cell.technique, cell.batch_size, cell.padding, params.scope),
            fp8.calibration_for(cell.technique, params, cell.task, self.tokenizer),
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

    def window(self, position: int = 0, previous: CellRun | None = None) -> None:
        """One measured window; ``position`` is its place in the task's order of windows,
        ``previous`` the cell whose window came just before (its technique and power kept)."""
        facts = {"order": position, **environment.gpu_state(self.device)}
        if previous is not None and previous.windows:
            last = previous.windows[-1]
            facts["previous_technique"] = previous.cell.technique.name
            facts["previous_power_w"] = last.energy_j / last.time_s
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
        check_finite(logits, cell)
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
