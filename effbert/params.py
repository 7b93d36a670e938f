"""Every parameter of the study, with its type, default and help: the only place defaults live.

A profile (``params/<name>.yaml``) is a flat mapping of these names to values;
``effbert.profiles.load`` reads and checks one into a frozen ``Params``. The notebooks' Setup
cells call it, so JupyterLab and papermill see the same settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from effbert.data import PADDINGS, SOURCES

ENERGY_SOURCES = ("auto", "nvml", "rapl", "none")
METRICS_BACKENDS = ("auto", "evaluate", "sklearn")
ON_MISSING = ("error", "skip")

# Who reads a parameter, for ``python -m effbert params``.
ALL = "every notebook"


MEASURE = "00-check, the measurement (20, 25) and technique (30-60) notebooks"


FINETUNE = "10-finetune"


ANALYSIS = "90-analyze"


def _param(default: Any, help: str, group: str = MEASURE, **checks: Any) -> Any:
    """A dataclass field whose metadata carries the help line, its readers and value checks."""
    metadata = {"help": help, "group": group, **checks}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FinetuneSettings:
    """How one task is fine-tuned: AdamW with linear warmup and decay, bf16 autocast on a GPU."""

    epochs: float = 3.0
    lr: float = 3e-5
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    reinit_layers: int = 0  # top encoder layers drawn afresh before training
    layer_lr_decay: float = 1.0  # each layer below the top trains at this times the lr above
    head_lr: float = 0.0  # learning rate of the new classification head (0: lr)


FINETUNE_FIELDS = {f.name: f for f in fields(FinetuneSettings)}


@dataclass(frozen=True)
class Params:
    """A profile: what to run, on what, and how to measure it."""

    profile: str = _param(
        "smoke", "name of the run, recorded with every result (default: the file's stem)", ALL
    )
    device: str = _param("auto", "auto (first GPU, else CPU), cpu or cuda:N", ALL)
    tasks: list[str] = _param(
        ["sst2", "cola", "mrpc", "mnli_m"], "GLUE tasks, see effbert.tasks.TASKS", ALL
    )
    on_missing_task: str = _param(
        "error", "error, or skip tasks whose data or checkpoint is missing", ALL, choices=ON_MISSING
    )
    data_source: str = _param(
        "hub", "hub (nyu-mll/glue), local (glue_data folder) or synthetic", ALL, choices=SOURCES
    )
    glue_dir: str = _param("", "the glue_data folder, for data_source local", ALL)
    max_samples: int = _param(
        0, "rows per task (0: the whole split)", ALL, minimum=0, maximum=10_000_000
    )
    seed: int = _param(0, "seed of synthetic data, tiny models and fine-tuning", ALL)
    checkpoints_dir: str = _param(
        "", "fine-tuned checkpoints, one folder per task (written by 10-finetune)", ALL
    )

    energy: str = _param(
        "auto",
        "energy meter: auto (NVML on a GPU, RAPL on a CPU), nvml, rapl or none",
        choices=ENERGY_SOURCES,
    )
    model: str = _param(
        "", "checkpoint for tasks without their own (tiny-random: a random model, no download)"
    )
    checkpoints: dict[str, str] = _param({}, "task -> Hub id or local folder", task_keys=True)
    label_maps: dict[str, list[str]] = _param(
        {}, "task -> GLUE label names in the checkpoint's output order", task_keys=True
    )
    techniques: list[str] = _param(
        ["fp32", "int8", "autocast_fp16", "autocast_bf16", "fp16", "flash", "fp16_flash"],
        "presets (effbert.techniques.TECHNIQUES) or axes joined by '+', e.g. bf16+flash+compile",
    )
    batch_sizes: list[int] = _param([16], "sequences per forward pass", minimum=1, maximum=65536)
    padding: str = _param(
        "max_length",
        "max_length (pad to max_length), longest, bucketed (sorted by length, then longest) or "
        "packed (sorted, no pad tokens: needs varlen attention)",
        choices=PADDINGS,
    )
    combinations: list[dict] = _param(
        [],
        "cells beyond the grid: [{technique: bf16+flash+compile, batch_size: 512, padding: "
        "bucketed}, ...] (measured by 25-frontier)",
    )
    scope: str = _param(
        "model",
        "model (forward passes on tokens already on the device) or end_to_end (raw text to "
        "labels: tokenization, copies, forward, arg-max; CPU energy where RAPL is readable)",
        choices=("model", "end_to_end"),
    )
    workers: int = _param(
        0,
        "measurement processes, one per GPU pinned with CUDA_VISIBLE_DEVICES (0: one per "
        "visible GPU when device is auto or cuda; 1: this process only)",
        minimum=0,
        maximum=64,
    )
    tokenize_workers: int = _param(
        4,
        "end_to_end scope: DataLoader worker processes tokenizing ahead of the device",
        minimum=1,
        maximum=256,
    )
    order: str = _param(
        "sequential",
        "sequential (each cell's trials back to back), interleaved (a task's cells take "
        "their windows in seeded random rounds, so drift hits every technique alike) or "
        "balanced (rounds in a Williams design: each cell follows every other equally often)",
        choices=("sequential", "interleaved", "balanced"),
    )
    kernel_check: bool = _param(
        True, "record the kernels each cell ran (torch.profiler, outside the windows; CUDA)"
    )
    max_length: int = _param(128, "tokens per input after truncation", minimum=1, maximum=512)
    warmup_s: float = _param(
        3.0, "unmeasured passes first, at least this long", minimum=0, maximum=3600
    )
    trials: int = _param(5, "measured windows per cell", minimum=2, maximum=1000)
    min_window_s: float = _param(
        2.0,
        "each window repeats whole passes (or batches) at least this long",
        minimum=0.001,
        maximum=600,
    )
    preroll_s: float = _param(
        0.5,
        "the cell's own work, unmeasured, right before each window (so a window does not "
        "start hot or cold from the previous cell's)",
        minimum=0,
        maximum=60,
    )
    max_cv: float = _param(
        0.05,
        "flag cells whose trials vary more than this (coefficient of variation)",
        minimum=0,
        maximum=10,
    )
    idle_s: float = _param(
        3.0, "seconds of idle power measurement per run (0: skip)", minimum=0, maximum=600
    )
    cell_timeout_s: float = _param(
        1800.0,
        "a cell's step (prepare, warmup, a window, the passes after) that runs longer fails "
        "the cell and ends the process: the device stopped answering (0: no limit)",
        minimum=0,
        maximum=86400,
    )
    latency_batches: int = _param(
        50, "batches timed for latency percentiles", minimum=1, maximum=100_000
    )
    cpu_power_per_core_w: float = _param(
        7.5,
        "estimated power of one busy CPU core where no counter reads the CPU (RAPL is not "
        "readable on most GPU hosts), as CodeCarbon estimates from TDP per core",
        ANALYSIS,
        minimum=0,
        maximum=100,
    )
    carbon_intensity_g_per_kwh: float = _param(
        475.0, "grid intensity (IEA world average, 2019)", minimum=0, maximum=5000
    )
    metrics_backend: str = _param(
        "auto", "auto (evaluate where it loads), evaluate or sklearn", choices=METRICS_BACKENDS
    )
    metric_tolerance: float = _param(
        0.02, "largest metric difference from fp32 the checks accept", minimum=0, maximum=2
    )

    base_model: str = _param(
        "", 'Hub id or local folder of a base DistilBERT to fine-tune ("": none)', FINETUNE
    )
    finetune: dict[str, dict] = _param(
        {},
        "task (or default) -> FinetuneSettings fields, e.g. {default: {epochs: 3}, rte: {seed: 2}}",
        FINETUNE,
    )
    finetune_max_train_samples: int = _param(
        0, "rows of each train split (0: all)", FINETUNE, minimum=0, maximum=100_000_000
    )
    finetunes_per_gpu: int = _param(
        1,
        "fine-tunes run at once on each GPU, each in its own worker process (a small model's "
        "training steps leave a GPU idle between kernels, so a few share it well)",
        FINETUNE,
        minimum=1,
        maximum=32,
    )

    baseline_technique: str = _param("fp32", "techniques are compared with this one", ANALYSIS)
    compare_with: str = _param(
        "",
        "another run's reports folder holding cells of this profile's configurations: energy "
        "per sample here against there, per precision (run-to-run agreement)",
        ANALYSIS,
    )

    def finetune_settings(self, task) -> FinetuneSettings:
        """The task's fine-tune settings: its own entry over ``default`` over the field defaults."""
        merged = {"seed": self.seed}
        for key in ("default", task.model_task, task.name):
            merged.update(self.finetune.get(key, {}))
        as_float = {name for name, f in FINETUNE_FIELDS.items() if f.type == "float"}
        return FinetuneSettings(**{k: float(v) if k in as_float else v for k, v in merged.items()})

    def changed(self) -> dict[str, Any]:
        """The parameters whose value differs from the default."""
        default = Params()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    def table(self, groups: tuple[str, ...] = (ALL, MEASURE, FINETUNE, ANALYSIS)):
        """Name, value, default (where the value differs) and help of the groups' parameters."""
        import pandas as pd

        default = Params()
        return pd.DataFrame(
            {
                "parameter": f.name,
                "value": _short(getattr(self, f.name)),
                "default": ""
                if getattr(self, f.name) == getattr(default, f.name)
                else _short(getattr(default, f.name)),
                "help": f.metadata["help"],
            }
            for f in fields(self)
            if f.metadata["group"] in groups
        ).set_index("parameter")


def _short(value: Any, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


PARAMS = {f.name: f for f in fields(Params)}


def type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is not None:
        return str(annotation)
    return getattr(annotation, "__name__", str(annotation))


def hints() -> dict[str, Any]:
    return typing.get_type_hints(Params)


def describe() -> str:
    """Every parameter's name, type, default and help, grouped by the notebooks that read it."""
    types = hints()
    lines = []
    for group in (ALL, MEASURE, FINETUNE, ANALYSIS):
        lines.append(f"\n{group}:")
        for f in fields(Params):
            if f.metadata["group"] != group:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(
                f"  {f.name:28} {type_name(types[f.name]):21} {_short(repr(default), 24):24} "
                f"{f.metadata['help']}"
            )
    lines.append(
        "\nfinetune.<task> fields: "
        + ", ".join(f"{f.name}={f.default!r}" for f in fields(FinetuneSettings))
    )
    return "\n".join(lines).lstrip("\n")


def plan_points(params: Params, techniques: list[str], combinations: bool) -> list[tuple]:
    """(technique, batch size, padding, tasks) of each planned point: the grid of
    ``techniques`` and batch sizes, or with ``combinations`` the profile's listed cells."""
    p = params
    if combinations:
        return [
            (
                c["technique"],
                c.get("batch_size", p.batch_sizes[0]),
                c.get("padding", p.padding),
                c.get("tasks", p.tasks),
            )
            for c in p.combinations
        ]
    return [(t, bs, p.padding, p.tasks) for t in techniques for bs in p.batch_sizes]


# -- checking values against the fields ----------------------------------------------


def type_problem(key: str, value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (str, int, float, bool, list[T], dict[str, T])."""
    origin = typing.get_origin(annotation)
    shown = f"{value!r}" if len(repr(value)) < 80 else f"{repr(value)[:77]}..."
    if origin is list:
        if not isinstance(value, list):
            return f"{key} should be a list, got {type(value).__name__} {shown}"
        (item,) = typing.get_args(annotation)
        for i, v in enumerate(value):
            problem = type_problem(f"{key}[{i}]", v, item)
            if problem:
                return problem
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"{key} should be a mapping, got {type(value).__name__} {shown}"
        _, item = typing.get_args(annotation)
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{key} keys should be names, got {k!r}"
            problem = type_problem(f"{key}.{k}", v, item)
            if problem:
                return problem
        return None
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return f"{key} is {value!r}: give a finite number"
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation in (str, bool, dict, list):
        ok = isinstance(value, annotation)
    else:
        ok = True
    if ok:
        return None
    hint = ""
    if annotation in (int, float) and isinstance(value, str):
        try:
            float(value)
            hint = " (YAML reads 1e9 as text: write 1.0e+9, or the number in full)"
        except ValueError:
            pass
    return f"{key} should be {type_name(annotation)}, got {type(value).__name__} {shown}{hint}"


def value_problems(key: str, value: Any, metadata: dict) -> list[str]:
    problems = []
    items = value if isinstance(value, list) else [value]
    if "choices" in metadata:
        for v in items:
            if v not in metadata["choices"]:
                problems.append(
                    f"{key} is {v!r}: choose one of {', '.join(metadata['choices'])}"
                    + did_you_mean(v, metadata["choices"])
                )
    for bound, below in (("minimum", True), ("maximum", False)):
        if bound in metadata:
            limit = metadata[bound]
            for v in items:
                if (v < limit) if below else (v > limit):
                    word = "at least" if below else "at most"
                    problems.append(f"{key} is {v!r}: it must be {word} {limit}")
    return problems


def did_you_mean(value: Any, known) -> str:
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def names_problems(key: str, names, known, what: str, extra: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for name in names:
        if name not in known and name not in extra:
            choices = ", ".join([*known, *extra])
            problems.append(
                f"{key} names the unknown {what} {name!r}{did_you_mean(name, known)}: "
                f"choose from {choices}"
            )
    return problems
