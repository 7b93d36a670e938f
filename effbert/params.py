"""Every parameter of the study, with its type, default and help: the only place defaults live.

A profile (``params/<name>.yaml``) is a flat mapping of these names to values. ``load`` reads
one, checks every key, type and value, and returns a frozen ``Params``; the notebooks' Setup
cells call it, so JupyterLab and papermill see the same settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from effbert import config as cfg

SOURCES = ("hub", "local", "synthetic")
PADDINGS = ("max_length", "longest", "bucketed", "packed")
ENERGY_SOURCES = ("auto", "nvml", "rapl", "none")
METRICS_BACKENDS = ("auto", "evaluate", "sklearn")
ON_MISSING = ("error", "skip")
TINY_RANDOM = "tiny-random"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_PROFILE_BYTES = 1_000_000

# Who reads a parameter, for ``python -m effbert params``.
ALL = "every notebook"
MEASURE = "00-check and the measurement notebooks (20-60)"
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
    max_samples: int = _param(0, "rows per task (0: the whole split)", ALL, minimum=0)
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
        "presets (effbert.models.TECHNIQUES) or axes joined by '+', e.g. bf16+flash+compile",
    )
    batch_sizes: list[int] = _param([16], "sequences per forward pass", minimum=1)
    padding: str = _param(
        "max_length",
        "max_length (pad to max_length), longest, bucketed (sorted by length, then longest) or "
        "packed (sorted, no pad tokens: needs varlen attention)",
        choices=PADDINGS,
    )
    combinations: list[dict] = _param(
        [],
        "cells beyond the grid: [{technique: bf16+flash+compile, batch_size: 512, padding: "
        "bucketed}, ...] (measured by 70-frontier)",
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
    )
    tokenize_workers: int = _param(
        4,
        "end_to_end scope: DataLoader worker processes tokenizing ahead of the device",
        minimum=1,
    )
    order: str = _param(
        "sequential",
        "sequential (each cell's trials back to back) or interleaved (a task's cells take "
        "their windows in seeded random rounds, so drift hits every technique alike)",
        choices=("sequential", "interleaved"),
    )
    kernel_check: bool = _param(
        True, "record the kernels each cell ran (torch.profiler, outside the windows; CUDA)"
    )
    max_length: int = _param(128, "tokens per input after truncation", minimum=1, maximum=512)
    warmup_s: float = _param(3.0, "unmeasured passes first, at least this long", minimum=0)
    trials: int = _param(5, "measured windows per cell", minimum=2)
    min_window_s: float = _param(
        2.0, "each window repeats whole passes (or batches) at least this long", minimum=0.001
    )
    max_cv: float = _param(
        0.05, "flag cells whose trials vary more than this (coefficient of variation)", minimum=0
    )
    idle_s: float = _param(3.0, "seconds of idle power measurement per run (0: skip)", minimum=0)
    latency_batches: int = _param(50, "batches timed for latency percentiles", minimum=1)
    carbon_intensity_g_per_kwh: float = _param(
        475.0, "grid intensity (IEA world average, 2019)", minimum=0
    )
    metrics_backend: str = _param(
        "auto", "auto (evaluate where it loads), evaluate or sklearn", choices=METRICS_BACKENDS
    )
    metric_tolerance: float = _param(
        0.02, "largest metric difference from fp32 the checks accept", minimum=0
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
        0, "rows of each train split (0: all)", FINETUNE, minimum=0
    )
    finetunes_per_gpu: int = _param(
        1,
        "fine-tunes run at once on each GPU, each in its own worker process (a small model's "
        "training steps leave a GPU idle between kernels, so a few share it well)",
        FINETUNE,
        minimum=1,
    )

    baseline_technique: str = _param("fp32", "techniques are compared with this one", ANALYSIS)

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


ProfileError = cfg.ProfileError


PARAMS = {f.name: f for f in fields(Params)}


def type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is not None:
        return str(annotation)
    return getattr(annotation, "__name__", str(annotation))


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Params)


def _type_problem(key: str, value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (str, int, float, bool, list[T], dict[str, T])."""
    origin = typing.get_origin(annotation)
    shown = f"{value!r}" if len(repr(value)) < 80 else f"{repr(value)[:77]}..."
    if origin is list:
        if not isinstance(value, list):
            return f"{key} should be a list, got {type(value).__name__} {shown}"
        (item,) = typing.get_args(annotation)
        for i, v in enumerate(value):
            problem = _type_problem(f"{key}[{i}]", v, item)
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
            problem = _type_problem(f"{key}.{k}", v, item)
            if problem:
                return problem
        return None
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation in (str, bool, dict, list):
        ok = isinstance(value, annotation)
    else:
        ok = True
    if ok:
        return None
    return f"{key} should be {type_name(annotation)}, got {type(value).__name__} {shown}"


def _value_problems(key: str, value: Any, metadata: dict) -> list[str]:
    problems = []
    items = value if isinstance(value, list) else [value]
    if "choices" in metadata:
        for v in items:
            if v not in metadata["choices"]:
                problems.append(
                    f"{key} is {v!r}: choose one of {', '.join(metadata['choices'])}"
                    + _did_you_mean(v, metadata["choices"])
                )
    for bound, below in (("minimum", True), ("maximum", False)):
        if bound in metadata:
            limit = metadata[bound]
            for v in items:
                if (v < limit) if below else (v > limit):
                    word = "at least" if below else "at most"
                    problems.append(f"{key} is {v!r}: it must be {word} {limit}")
    return problems


def _did_you_mean(value: Any, known) -> str:
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _names_problems(key: str, names, known, what: str, extra: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for name in names:
        if name not in known and name not in extra:
            choices = ", ".join([*known, *extra])
            problems.append(
                f"{key} names the unknown {what} {name!r}{_did_you_mean(name, known)}: "
                f"choose from {choices}"
            )
    return problems


def looks_like_path(spec: str) -> bool:
    """A checkpoint spec meant as a folder (``/``, ``./``, ``~`` or an existing path)."""
    return spec.startswith(("/", "./", "../", "~")) or cfg.resolve_path(spec).exists()


def _padding_problems(where: str, techniques: list[str], padding: str) -> list[str]:
    from effbert.models import get_technique, padding_problem

    problems = []
    for name in techniques:
        try:
            problem = padding_problem(get_technique(name), padding)
        except ValueError:
            continue  # reported with the technique names
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def validate(values: dict[str, Any], where: str = "profile", inputs: bool = True) -> Params:
    """Check a profile's keys, types and values, then build its ``Params``.

    Args:
        inputs: also check that the folders the profile names exist (off for analysis alone).

    Raises:
        ProfileError: listing every problem, each naming the key, the value and the fix.
    """
    from effbert.models import TECHNIQUES, get_technique, spelling_problem
    from effbert.tasks import TASKS

    problems = []
    hints = _hints()
    for key, value in values.items():
        if key not in PARAMS:
            problems.append(f"unknown key {key!r}{_did_you_mean(key, PARAMS)}")
            continue
        problem = _type_problem(key, value, hints[key])
        if problem:
            problems.append(problem)
            continue
        problems += _value_problems(key, value, PARAMS[key].metadata)
    if problems:
        raise ProfileError(
            f"{where}: " + "; ".join(problems) + f". Valid keys: {', '.join(PARAMS)}"
        )

    params = Params(**values)
    model_tasks = sorted({t.model_task for t in TASKS.values()} | set(TASKS))
    if not PROFILE_NAME.fullmatch(params.profile):
        problems.append(
            f"profile name {params.profile!r} may hold only letters, digits, '-' and '_' "
            "(up to 64): it becomes a folder and a file name"
        )
    for key, names in (("tasks", params.tasks), ("techniques", params.techniques)):
        if not names:
            problems.append(f"{key} is empty: name at least one")
    problems += _names_problems("tasks", params.tasks, list(TASKS), "task")
    for key, names in (
        ("techniques", params.techniques),
        ("baseline_technique", [params.baseline_technique]),
        ("combinations", [c.get("technique", "") for c in params.combinations]),
    ):
        seen = set()
        for name in names:
            try:
                technique = get_technique(name)
            except ValueError as err:
                problems.append(f"{key}: {err}{_did_you_mean(name, TECHNIQUES)}")
                continue
            problem = spelling_problem(name)
            if problem:
                problems.append(f"{key}: {problem}")
            if key == "techniques" and technique.name in seen:
                problems.append(f"techniques lists {technique.name!r} twice")
            seen.add(technique.name)
    for i, combination in enumerate(params.combinations):
        unknown = set(combination) - {"technique", "batch_size", "padding", "tasks"}
        if unknown or "technique" not in combination:
            problems.append(
                f"combinations[{i}] is {combination!r}: give technique, and optionally "
                "batch_size, padding and tasks"
            )
        only = combination.get("tasks", params.tasks)
        if not isinstance(only, list) or not set(only) <= set(params.tasks):
            problems.append(
                f"combinations[{i}].tasks is {only!r}: give a list of the profile's tasks "
                f"({', '.join(params.tasks)})"
            )
        problems += _value_problems(
            f"combinations[{i}].batch_size", combination.get("batch_size", 1), {"minimum": 1}
        )
        if combination.get("padding", PADDINGS[0]) not in PADDINGS:
            problems.append(
                f"combinations[{i}].padding is {combination['padding']!r}: choose one of "
                + ", ".join(PADDINGS)
            )
        else:
            problems += _padding_problems(
                f"combinations[{i}]",
                [combination.get("technique", "")],
                combination.get("padding", params.padding),
            )
    problems += _padding_problems("techniques", params.techniques, params.padding)
    for key in ("checkpoints", "label_maps"):
        problems += _names_problems(key, getattr(params, key), model_tasks, "task")
    problems += _names_problems("finetune", params.finetune, model_tasks, "task", ("default",))
    for task, settings in params.finetune.items():
        problems += _names_problems(
            f"finetune.{task}", settings, list(FINETUNE_FIELDS), "FinetuneSettings field"
        )
        for name, value in settings.items():
            if name in FINETUNE_FIELDS:
                annotation = FINETUNE_FIELDS[name].type
                annotation = {"float": float, "int": int}.get(annotation, annotation)
                problem = _type_problem(f"finetune.{task}.{name}", value, annotation)
                problems += [problem] if problem else []
    if params.workers > 1 and params.device == "cpu" and params.energy != "none":
        problems.append(
            f"workers: {params.workers} on device cpu: the workers would share one CPU package, "
            "so their energy and time would mix; set workers: 1, or energy: none"
        )
    if params.scope == "end_to_end" and params.order == "interleaved":
        problems.append(
            "order: interleaved with scope: end_to_end: each prepared cell keeps its tokenizer "
            "workers, whose work would land in the other cells' windows; use order: sequential"
        )
    if params.scope == "model":
        piped = [
            n
            for n in [*params.techniques, *(c.get("technique", "") for c in params.combinations)]
            if n.split("+")[-1] == "pipeline"
        ]
        if piped:
            problems.append(
                f"{', '.join(sorted(set(piped)))}: the pipeline takes raw text, so it is measured "
                "end to end; set scope: end_to_end (or leave it out of this profile)"
            )
    if params.workers > 1 and params.scope == "end_to_end":
        problems.append(
            f"workers: {params.workers} with scope end_to_end: the workers' tokenizers would share "
            "the host's CPUs and its one CPU energy counter; set workers: 1"
        )
    if params.workers > 1 and params.device.startswith("cuda:"):
        problems.append(
            f"workers: {params.workers} with device {params.device!r}: a device pinned by "
            "number runs in one process; set device: cuda (all visible GPUs) or workers: 1"
        )
    if inputs:
        problems += _input_problems(params)
    if problems:
        raise ProfileError(f"{where}: " + "; ".join(problems))
    return params


def _input_problems(params: Params) -> list[str]:
    """Folders and checkpoints the profile names that do not exist."""
    problems = []
    if params.data_source == "local":
        if not params.glue_dir:
            problems.append("data_source is local: set glue_dir to the glue_data folder")
        elif not cfg.resolve_path(params.glue_dir).is_dir():
            problems.append(
                f"glue_dir {params.glue_dir!r} does not exist (or is no folder): give the "
                "glue_data folder"
            )
    if params.checkpoints_dir and not params.base_model:
        if not cfg.resolve_path(params.checkpoints_dir).is_dir():
            problems.append(
                f"checkpoints_dir {params.checkpoints_dir!r} does not exist and no base_model "
                "is set to fine-tune into it"
            )
    if params.base_model and not params.checkpoints_dir:
        problems.append("base_model is set: also set checkpoints_dir, where checkpoints go")
    specs = {"base_model": params.base_model, "model": params.model}
    specs.update({f"checkpoints.{k}": v for k, v in params.checkpoints.items()})
    for key, spec in specs.items():
        if spec and spec != TINY_RANDOM and spec.startswith(("/", "./", "../", "~")):
            if not cfg.resolve_path(spec).is_dir():
                problems.append(f"{key} {spec!r} does not exist (or is no folder)")
    return problems


def _reject_aliases(text: str, where: str) -> None:
    """YAML aliases can expand exponentially (a billion-laughs profile): refuse them."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise ProfileError(
                    f"{where}:{mark.line + 1}: YAML aliases (*name) are not allowed in "
                    "profiles: write the value out"
                )
    except yaml.YAMLError as err:
        raise ProfileError(f"{where}: not valid YAML: {err}") from None


def _expand_env(value: Any, key: str, strict: bool = True) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                if not strict:
                    return match.group(0)
                raise ProfileError(
                    f"profile key {key!r} needs the environment variable {name}: "
                    f"set it, e.g. `export {name}=...`, or edit the profile"
                )
            return os.environ[name]

        return cfg.ENV_REF.sub(substitute, value)
    if isinstance(value, list):
        return [_expand_env(v, key, strict) for v in value]
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{key}.{k}", strict) for k, v in value.items()}
    return value


def read(name_or_path: str | Path, strict: bool = True) -> dict[str, Any]:
    """A profile file's mapping, ``${VAR}`` expanded, ``profile`` defaulting to the file's stem.

    Args:
        strict: a ``${VAR}`` that is not set is an error (else it stays as written).
    """
    path = cfg.profile_path(name_or_path)
    where = cfg.project_relative(path)
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{where}: larger than {MAX_PROFILE_BYTES} bytes; is it a profile?")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ProfileError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ProfileError(f"{where}: cannot be read ({err.strerror})") from None
    _reject_aliases(text, where)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ProfileError(f"{where}: not valid YAML: {err}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: a profile is a flat mapping of parameter: value")
    values = {key: _expand_env(value, key, strict) for key, value in raw.items()}
    values.setdefault("profile", path.stem)
    return values


def load(name_or_path: str | Path, inputs: bool = True, **overrides: Any) -> Params:
    """Read, check and build a profile's ``Params`` (``overrides`` win over the file).

    Args:
        inputs: check the data and checkpoint folders and environment variables the profile
            names; off where only its records are read (analysis on another machine).
    """
    values = {**read(name_or_path, strict=inputs), **overrides}
    return validate(values, cfg.project_relative(cfg.profile_path(name_or_path)), inputs)


def describe() -> str:
    """Every parameter's name, type, default and help, grouped by the notebooks that read it."""
    hints = _hints()
    lines = []
    for group in (ALL, MEASURE, FINETUNE, ANALYSIS):
        lines.append(f"\n{group}:")
        for f in fields(Params):
            if f.metadata["group"] != group:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(
                f"  {f.name:28} {type_name(hints[f.name]):21} {_short(repr(default), 24):24} "
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
