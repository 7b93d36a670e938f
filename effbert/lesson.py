"""What a technique notebook shows: the code that applies a family of techniques (from its one
source), the model before and after, the kernels that ran on a few unmeasured batches, the
numerical effect against fp32, and the family's records from the sweep, in a table, a figure
and sentences generated from the numbers."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from torch.profiler import ProfilerActivity, profile

from effbert import data, fp8, kernels, models, packed, plots, techniques
from effbert.environment import captured
from effbert.plan import Plan
from effbert.stats import comparison, summarize
from effbert.tables import text, with_intervals
from effbert.tasks import get_task

# Each family: the techniques its notebook demonstrates (those the device cannot run are
# listed with the reason) and the functions that apply them.
FAMILIES: dict[str, dict] = {
    "quantization": {
        "techniques": ["int8", "int8_weight", "int8+compile", "fp8+sdpa", "fp8s+sdpa"],
        "code": [techniques.apply_precision, techniques.quantize, fp8.StaticFP8Linear],
    },
    "precision": {
        "techniques": ["autocast_bf16", "bf16", "autocast_fp16", "fp16", "tf32"],
        "code": [techniques.apply_precision, techniques.inference_context],
    },
    "attention": {
        "techniques": ["sdpa", "flash", "bf16+sdpa", "fp16_flash"],
        "code": [techniques.apply_attention, techniques.inference_context],
    },
    "packing": {
        "techniques": [
            "bf16+varlen",
            "bf16+varlen_mem",
            "bf16+varlen_mem+cls_last",
            "bf16+varlen_mem+cls_last+epilogue",
        ],
        "code": [packed.pack, techniques.apply_attention, packed.PackedClassifier._block],
    },
    "compile": {
        "techniques": [
            "fp32+compile",
            "bf16+varlen_mem+compile+cls_last",
            "bf16+varlen_mem+graphs+cls_last",
        ],
        "code": [techniques.apply_execution],
    },
}
DEMO_ROWS = 48  # rows of the first task the demonstrations run on (unmeasured)


def source(function: Callable) -> Markdown:
    """A function's source as a code block, read from its one definition (never copied)."""
    where = f"{function.__module__}.{function.__qualname__}"
    return Markdown(f"`{where}`:\n\n```python\n{inspect.getsource(function).rstrip()}\n```")


RECORD_COLUMNS = {
    "task": "task",
    "technique": "technique",
    "batch_size": "batch",
    "padding": "padding",
    "j_per_1k_samples": "J/1k",
    "dynamic_j_per_1k_samples_mean": "above idle",
    "energy_vs_base": "energy / baseline",
    "above_idle_vs_base": "above idle / baseline",
    "speedup_vs_base": "speed / baseline",
    "attention_kernel": "attention ran",
    "metric": "metric",
    "metric_value": "value",
    "metric_change": "change",
}
"""The columns a family's records show, and their headings."""


class Family:
    """One family's demonstration on the plan's first task, and its records."""

    def __init__(self, plan: Plan, family: str) -> None:
        self.plan, self.name = plan, family
        self.spec = FAMILIES[family]
        self.device = plan.torch_device
        self.task = get_task(plan.params.tasks[0])
        self.checkpoint = plan.checkpoint_for(self.task)
        chosen = [techniques.parse(n) for n in self.spec["techniques"]]
        self.skipped = {t.name: techniques.unsupported_reason(t, self.device) for t in chosen}
        self.techniques = [t for t in chosen if self.skipped[t.name] is None]
        self.rows = plan.rows(self.task).iloc[:DEMO_ROWS] if self.checkpoint else None
        self._models: dict[str, models.Prepared] = {}
        self.log_path = plan.paths["logs"] / f"{plan.params.profile}.log"

    @functools.cached_property
    def tokenizer(self):
        """The first task's checkpoint's tokenizer, loaded once."""
        return models.load_tokenizer(self.checkpoint)

    def code(self) -> list[Markdown]:
        """The functions that apply this family's techniques, from their source."""
        return [source(f) for f in self.spec["code"]]

    def support(self) -> pd.DataFrame:
        """Which of the family's techniques this device runs, and why not."""
        return pd.DataFrame(
            {"technique": name, "runs here": reason is None, "why not": reason or ""}
            for name, reason in self.skipped.items()
        )

    def _prepared(self, technique: techniques.Technique) -> models.Prepared:
        """The first task's model under ``technique``, prepared (compiled) once."""
        if technique.name not in self._models:
            label_map = self.plan.label_map_for(self.task)
            with captured(self.log_path):
                params = self.plan.params
                calibration = fp8.calibration_for(technique, params, self.task, self.tokenizer)
                self._models[technique.name] = models.prepare(
                    self.checkpoint,
                    self.task,
                    technique,
                    self.device,
                    label_map,
                    calibration=calibration,
                )
        return self._models[technique.name]

    def _batches(self, technique: techniques.Technique):
        padding = "packed" if technique.packed else "max_length"
        return data.make_batches(
            self.tokenizer, self.rows, 16, padding, self.plan.params.max_length
        )

    def models_table(self) -> pd.DataFrame:
        """The model before (fp32, as loaded) and after each technique: its outer module,
        whether it is compiled, and an encoder layer's query projection (class, weight type,
        the dtype its values are stored in)."""
        rows = [_model_row("fp32 (as loaded)", self._prepared(techniques.parse("fp32")).model)]
        rows += [_model_row(t.name, self._prepared(t).model) for t in self.techniques]
        return pd.DataFrame(rows)

    def kernels_table(self, top: int = 5) -> pd.DataFrame:
        """The kernels (CUDA) or operators (CPU) that ran on two unmeasured batches, the top
        ones by time, with the attention family and the kernel check on a GPU."""
        rows = []
        for technique in [techniques.parse("fp32"), *self.techniques]:
            prepared = self._prepared(technique)
            inputs = [prepared.inputs(b) for b in self._batches(technique)[:2]]
            forward = prepared.forward()
            with prepared.context(), captured(self.log_path):
                forward(inputs[0])  # compile and warm up outside the profile
                times = _profiled(lambda f=forward, xs=inputs: [f(x) for x in xs], self.device)
            total = sum(times.values()) or 1.0
            names = sorted(times, key=lambda n: -times[n])
            check = kernels.kernel_check(names, technique) if self.device.type == "cuda" else {}
            rows.append(
                {
                    "technique": technique.name,
                    "top kernels (share of time)": "; ".join(
                        f"{n[:48]} {times[n] / total:.0%}" for n in names[:top]
                    ),
                    "attention family": check.get("attention_kernel") or "",
                    "kernel check": (check.get("fallback") or "ok") if check else "GPU only",
                }
            )
        return pd.DataFrame(rows)

    def numerical_effect(self) -> pd.DataFrame:
        """Each technique's logits against fp32's on the same rows: the largest difference and
        the predictions that change."""
        reference = self._logits(techniques.parse("fp32"))
        rows = []
        for technique in self.techniques:
            logits = self._logits(technique)
            changed = int((logits.argmax(1) != reference.argmax(1)).sum())
            rows.append(
                {
                    "technique": technique.name,
                    "rows": len(logits),
                    "largest logit difference": float(np.abs(logits - reference).max()),
                    "predictions changed": changed if logits.shape[1] > 1 else "regression",
                    "all finite": bool(np.isfinite(logits).all()),
                }
            )
        return pd.DataFrame(rows)

    def _logits(self, technique: techniques.Technique) -> np.ndarray:
        prepared = self._prepared(technique)
        with captured(self.log_path):
            return prepared.predict(self._batches(technique), len(self.rows))

    # -- records ----------------------------------------------------------------------

    def records(self) -> pd.DataFrame:
        """The family's measured cells, narrow enough for a page: energy per sample (95%
        interval) in total and above idle, its ratio to the baseline at the same task, batch
        and padding, speed against the baseline, the attention kernel that ran, the metric."""
        table = self._records()
        if table.empty:
            return table
        shown = with_intervals(table.rename(columns={"energy_vs_base": "energy_vs_base_mean"}))
        return shown[list(RECORD_COLUMNS)].rename(columns=RECORD_COLUMNS).reset_index(drop=True)

    def _records(self) -> pd.DataFrame:
        """The family's rows of ``stats.comparison`` (every column)."""
        summary = summarize(self.plan.recorded())
        if summary.empty:
            return pd.DataFrame()
        names = set(self.spec["techniques"]) | set(self._family_records(summary))
        table = comparison(summary, self.plan.params.baseline_technique)
        return table[table["technique"].isin(names)]

    def _family_records(self, summary: pd.DataFrame) -> list[str]:
        """Recorded techniques of this family beyond the demonstrated ones (the sweep's)."""
        keep = []
        for name in summary["technique"].unique():
            try:
                t = techniques.parse(str(name))
            except ValueError:
                continue
            if _family_of(t) == self.name:
                keep.append(name)
        return keep

    def figure(self):
        """The family's techniques beside the baseline, from every recorded cell."""
        summary = summarize(self.plan.recorded())
        wanted = set(self.spec["techniques"]) | set(self._family_records(summary))
        names = sorted(wanted & set(summary.get("technique", [])))  # the title names no other
        return plots.compare(summary, names, self.plan.params.baseline_technique)

    def sentences(self) -> Markdown:
        """What the records say, one sentence per measured technique and task."""
        table = self._records()
        if table.empty:
            return Markdown("No cell of this family is recorded yet: run notebook 20 or 25.")
        lines, energy = [], table["energy_vs_base"].notna().any()
        for row in table.itertuples():
            if row.technique == self.plan.params.baseline_technique:
                continue
            if energy and pd.notna(row.energy_vs_base):
                amount = (
                    f"used {row.energy_vs_base:.2f}× the energy per sample of the baseline "
                    f"(± {row.energy_vs_base_ci95:.2f}; above idle "
                    f"{row.above_idle_vs_base:.2f}×)"
                )
            else:
                amount = f"ran at {row.speedup_vs_base:.2f}× the baseline's samples per second"
            change = row.metric_change
            lines.append(
                f"- **{text(row.technique)}** on {text(row.task)} (batch {row.batch_size}, "
                f"{text(row.padding)}) {amount}; its {text(row.metric)} "
                + (f"changed by {change:+.3g}." if change else "did not change.")
                if pd.notna(change)
                else f"- **{text(row.technique)}** {amount}."
            )
        return Markdown("\n".join(lines) or "Only the baseline is recorded.")

    def check(self) -> None:
        """The demonstrations ran: finite outputs for every technique this device runs."""
        effect = self.numerical_effect()
        assert effect["all finite"].all(), effect


def _family_of(technique: techniques.Technique) -> str:
    if technique.execution in techniques.COMPILED_EXECUTIONS:
        return "compile"
    if technique.packed:
        return "packing"
    if technique.quantize:
        return "quantization"
    if technique.attention != "eager":
        return "attention"
    return "precision"


def _model_row(name: str, model: torch.nn.Module) -> dict:
    """The outer module and the first encoder layer's query projection: its class, its
    weight's type and the dtype its values are stored in (a quantized tensor's own data)."""
    inner = getattr(model, "_orig_mod", model)
    layer = next(m for n, m in inner.named_modules() if n.endswith("q_lin"))
    weight = layer.weight if hasattr(layer, "weight") else layer.weight_t
    stored = getattr(weight, "qdata", weight)
    return {
        "technique": name,
        "outer module": type(inner).__name__,
        "compiled": inner is not model,
        "query projection": type(layer).__name__,
        "weight": "Parameter" if type(weight) is torch.nn.Parameter else type(weight).__name__,
        "stored as": str(stored.dtype).replace("torch.", ""),
    }


def _profiled(run: Callable, device: torch.device) -> dict[str, float]:
    """Time per kernel (CUDA) or per operator (CPU) of ``run``, in µs."""
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    times: dict[str, float] = {}
    for event in prof.key_averages():
        time_us = event.device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if time_us > 0 and (device.type == "cuda" or event.key.startswith("aten::")):
            times[event.key] = times.get(event.key, 0.0) + time_us
    return times
