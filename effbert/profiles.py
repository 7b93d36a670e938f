"""Profiles: a YAML file read, every key, type and value checked, and a frozen ``Params`` built.

``load`` is what the notebooks and the runner call; a problem raises ``ProfileError`` naming
the key, the value and the fix, all problems of a profile at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from effbert import config as cfg
from effbert.config import ProfileError
from effbert.data import PADDINGS
from effbert.models import TINY_RANDOM
from effbert.params import (
    FINETUNE_FIELDS,
    PARAMS,
    Params,
    did_you_mean,
    hints,
    names_problems,
    type_problem,
    value_problems,
)
from effbert.tasks import TASKS
from effbert.techniques import TECHNIQUES, padding_problem, parse, spelling_problem

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


MAX_PROFILE_BYTES = 1_000_000


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_like_path(spec: str) -> bool:
    """A checkpoint spec meant as a folder: ``/``, ``./``, ``~``, an existing path, more than
    one ``/``, or a first part that is a local folder (``models/base``); else a Hub id."""
    if spec.startswith(("/", "./", "../", "~")) or cfg.resolve_path(spec).exists():
        return True
    first = spec.split("/")[0]
    return not HUB_ID.fullmatch(spec) or (first != spec and cfg.resolve_path(first).is_dir())


def _padding_problems(where: str, techniques: list[str], padding: str) -> list[str]:
    problems = []
    for name in techniques:
        try:
            problem = padding_problem(parse(name), padding)
        except ValueError:
            continue  # reported with the technique names
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


COMBINATION_KEYS = {"technique": str, "batch_size": int, "padding": str, "tasks": list[str]}


def validate(values: dict[str, Any], where: str = "profile", inputs: bool = True) -> Params:
    """Check a profile's keys, types and values, then build its ``Params``.

    Args:
        inputs: also check that the folders the profile names exist (off for analysis alone).

    Raises:
        ProfileError: listing every problem, each naming the key, the value and the fix.
    """
    problems = _key_problems(values)
    if problems:
        raise ProfileError(
            f"{where}: " + "; ".join(problems) + f". Valid keys: {', '.join(PARAMS)}"
        )
    params = Params(**values)
    problems += _name_problems(params)
    for i, combination in enumerate(params.combinations):
        problems += _combination_problems(f"combinations[{i}]", combination, params)
    problems += _padding_problems("techniques", params.techniques, params.padding)
    problems += _finetune_problems(params)
    problems += _scope_problems(params)
    if inputs:
        problems += _input_problems(params)
    if problems:
        raise ProfileError(f"{where}: " + "; ".join(problems))
    return params


def _key_problems(values: dict[str, Any]) -> list[str]:
    """Unknown keys, wrong types and values out of their choices or bounds."""
    problems = []
    types = hints()
    for key, value in values.items():
        if key not in PARAMS:
            problems.append(f"unknown key {key!r}{did_you_mean(key, PARAMS)}")
            continue
        problem = type_problem(key, value, types[key])
        if problem:
            problems.append(problem)
            continue
        problems += value_problems(key, value, PARAMS[key].metadata)
    return problems


def _name_problems(params: Params) -> list[str]:
    """The profile's name, and the tasks and techniques it names."""
    problems = []
    if not PROFILE_NAME.fullmatch(params.profile):
        problems.append(
            f"profile name {params.profile!r} may hold only letters, digits, '-' and '_' "
            "(up to 64): it becomes a folder and a file name"
        )
    for key, names in (("tasks", params.tasks), ("techniques", params.techniques)):
        if not names:
            problems.append(f"{key} is empty: name at least one")
    problems += names_problems("tasks", params.tasks, list(TASKS), "task")
    combined = [c.get("technique") for c in params.combinations]
    for key, names in (
        ("techniques", params.techniques),
        ("baseline_technique", [params.baseline_technique]),
        ("combinations", [n for n in combined if isinstance(n, str)]),
    ):
        seen = set()
        for name in names:
            try:
                technique = parse(name)
            except ValueError as err:
                problems.append(f"{key}: {err}{did_you_mean(name, TECHNIQUES)}")
                continue
            problem = spelling_problem(name)
            if problem:
                problems.append(f"{key}: {problem}")
            if key == "techniques" and technique.name in seen:
                problems.append(f"techniques lists {technique.name!r} twice")
            seen.add(technique.name)
    return problems


def _combination_problems(where: str, combination: dict, params: Params) -> list[str]:
    """One entry of ``combinations``: its keys, their types and values."""
    unknown = set(combination) - set(COMBINATION_KEYS)
    if unknown or "technique" not in combination:
        return [
            f"{where} is {combination!r}: give technique, and optionally batch_size, padding "
            "and tasks"
        ]
    typed = [type_problem(f"{where}.{k}", v, COMBINATION_KEYS[k]) for k, v in combination.items()]
    if any(typed):
        return [p for p in typed if p]
    problems = value_problems(
        f"{where}.batch_size", combination.get("batch_size", 1), PARAMS["batch_sizes"].metadata
    )
    only = combination.get("tasks", params.tasks)
    if not set(only) <= set(params.tasks):
        problems.append(
            f"{where}.tasks is {only!r}: give a list of the profile's tasks "
            f"({', '.join(params.tasks)})"
        )
    padding = combination.get("padding", params.padding)
    if padding not in PADDINGS:
        return problems + [f"{where}.padding is {padding!r}: choose one of {', '.join(PADDINGS)}"]
    return problems + _padding_problems(where, [combination["technique"]], padding)


def _finetune_problems(params: Params) -> list[str]:
    model_tasks = sorted({t.model_task for t in TASKS.values()} | set(TASKS))
    problems = []
    for key in ("checkpoints", "label_maps"):
        problems += names_problems(key, getattr(params, key), model_tasks, "task")
    problems += names_problems("finetune", params.finetune, model_tasks, "task", ("default",))
    for task, settings in params.finetune.items():
        problems += names_problems(
            f"finetune.{task}", settings, list(FINETUNE_FIELDS), "FinetuneSettings field"
        )
        for name, value in settings.items():
            if name in FINETUNE_FIELDS:
                annotation = FINETUNE_FIELDS[name].type
                annotation = {"float": float, "int": int}.get(annotation, annotation)
                problem = type_problem(f"finetune.{task}.{name}", value, annotation)
                problems += [problem] if problem else []
    return problems


def _scope_problems(params: Params) -> list[str]:
    """Settings that cannot go together: workers, scope, order and device."""
    problems = []
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
            if isinstance(n, str) and n.split("+")[-1] == "pipeline"
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
    return problems


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
        if spec and spec != TINY_RANDOM and looks_like_path(spec):
            if not cfg.resolve_path(spec).is_dir():
                problems.append(
                    f"{key} {spec!r} is a folder that does not exist "
                    f"({cfg.resolve_path(spec)}): fix the path, or give a Hub id"
                )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last
    silently, so an edit lower in the file would undo one above it unseen)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ProfileError(
                    f"{mark.name}:{mark.line + 1}: the key {key!r} is given twice: keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _loader(where: str):
    """``_UniqueKeyLoader`` whose error marks name the profile as the user gave it."""

    def make(stream):
        loader = _UniqueKeyLoader(stream)
        loader.name = where
        return loader

    return make


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
        raw = yaml.load(text, Loader=_loader(where))
    except yaml.YAMLError as err:
        raise ProfileError(f"{where}: not valid YAML: {err}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: a profile is a flat mapping of parameter: value")
    values = {key: _expand_env(value, key, strict) for key, value in raw.items()}
    values.setdefault("profile", path.stem)
    return values


SHARD = re.compile(r"([1-9][0-9]*)/([1-9][0-9]*)")


def shard_values(values: dict[str, Any], shard: str) -> dict[str, Any]:
    """A profile's values cut to shard ``I/N``: every N-th of its tasks from the I-th, whole
    tasks (so a task's cells can interleave), the combinations' task lists cut alike. The N
    shards of a profile hold each of its cells exactly once.

    Raises:
        ProfileError: ``shard`` is not ``I/N`` with 1 <= I <= N.
    """
    match = SHARD.fullmatch(shard.strip())
    if not match or int(match.group(1)) > int(match.group(2)):
        raise ProfileError(
            f"shard {shard!r}: give I/N with 1 <= I <= N, e.g. --shard 1/2 on one host and "
            "--shard 2/2 on another"
        )
    index, count = int(match.group(1)), int(match.group(2))
    tasks = values.get("tasks", PARAMS["tasks"].default_factory())
    mine = tasks[index - 1 :: count] if isinstance(tasks, list) else tasks
    if isinstance(tasks, list) and not mine:
        raise ProfileError(
            f"shard {shard}: the profile has {len(tasks)} tasks, so shard {index} of {count} "
            f"would hold none; use at most {len(tasks)} shards"
        )
    left_out = {t for t in tasks if t not in mine} if isinstance(tasks, list) else set()
    return {**without_tasks(values, left_out), "tasks": mine}


def without_tasks(values: dict[str, Any], left_out: set[str]) -> dict[str, Any]:
    """A profile's combinations without the tasks ``left_out`` of this run (a shard, or
    ``tasks`` given on the command line): each task list cut, a list left empty dropped. A
    name that is none of the profile's tasks stays, for the check to refuse."""
    combinations = []
    for combination in values.get("combinations", []):
        if isinstance(combination, dict) and isinstance(combination.get("tasks"), list):
            only = [t for t in combination["tasks"] if t not in left_out]
            if only:
                combinations.append({**combination, "tasks": only})
        else:
            combinations.append(combination)
    return {**values, "combinations": combinations}


def load(
    name_or_path: str | Path, inputs: bool = True, shard: str = "", **overrides: Any
) -> Params:
    """Read, check and build a profile's ``Params`` (``overrides`` win over the file).

    Args:
        inputs: check the data and checkpoint folders and environment variables the profile
            names; off where only its records are read (analysis on another machine).
        shard: ``I/N``: this host's share of the profile's tasks (``shard_values``).
    """
    from_file = read(name_or_path, strict=inputs)
    values = {**from_file, **overrides}
    file_tasks = from_file.get("tasks", PARAMS["tasks"].default_factory())
    if isinstance(overrides.get("tasks"), list) and isinstance(file_tasks, list):
        values = without_tasks(values, set(file_tasks) - set(overrides["tasks"]))
    if shard:
        values = shard_values(values, shard)
    return validate(values, cfg.project_relative(cfg.profile_path(name_or_path)), inputs)
