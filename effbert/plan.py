"""A profile's cells: what each one measures (its config and id, with fingerprints of its
inputs), the inputs themselves (rows, checkpoints, label maps), and the plan's share of them.

One cell = one (task, technique, batch size, padding) configuration of a profile. Its id is a
hash of its config, which names the rows, the checkpoint's content and the software, so that a
changed input is a new cell, never a reused one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from effbert import config as cfg
from effbert import data, environment, models, results
from effbert.checks import check
from effbert.params import ALL, MEASURE, Params, plan_points
from effbert.profiles import load
from effbert.schema import cell_id
from effbert.tasks import GlueTask, get_task
from effbert.techniques import (
    COMPILED_EXECUTIONS,
    Technique,
    parse,
    static_rows,
    unsupported_reason,
)
from effbert.windows import MeasureSettings

__all__ = ["Cell", "Plan", "cell_config", "cell_id"]


@dataclass(frozen=True)
class Cell:
    """One configuration of the sweep, and the record key that identifies it."""

    task: GlueTask
    technique: Technique
    batch_size: int
    padding: str
    checkpoint: str | None
    config: dict

    @property
    def point(self) -> dict:
        """What a worker process needs to find this cell in its own plan."""
        return {
            "task": self.task.name,
            "technique": self.technique.name,
            "batch_size": self.batch_size,
            "padding": self.padding,
        }


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
    execution = parse(technique).execution
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
        "measure": MeasureSettings.from_params(params).identity(),
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
        **({"inductor": "mode"} if execution in COMPILED_EXECUTIONS else {}),
        # compiled for one batch shape: measures other code than the compile for any shape
        **(
            {"compiled_shapes": "static"}
            if static_rows(parse(technique), batch_size, padding, params.scope)
            else {}
        ),
    }


class Plan:
    """A profile's cells and their inputs; where its records go (``reports_dir``)."""

    def __init__(self, params: Params, reports_dir: str | Path = "reports") -> None:
        self.params = params
        self.paths = cfg.reports_paths(reports_dir)
        self.torch_device = environment.resolve_device(params.device)
        self.techniques = [parse(name) for name in params.techniques]
        self._rows: dict[str, pd.DataFrame] = {}

    @classmethod
    def from_profile(cls, profile: str, reports_dir: str = "reports", shard: str = "") -> Plan:
        """The plan of a profile by name (``params/<name>.yaml``) or path; ``shard`` ``I/N``
        keeps this host's share of its tasks (``effbert run --shard``)."""
        return cls(load(profile, shard=shard), reports_dir)

    def settings_table(self) -> pd.DataFrame:
        """The resolved parameters the plan runs with (``default`` where the profile differs)."""
        return self.params.table(groups=(ALL, MEASURE))

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

    def finetuned_folder(self, task: GlueTask) -> Path | None:
        if not self.params.checkpoints_dir:
            return None
        return cfg.resolve_path(self.params.checkpoints_dir) / task.model_task

    def label_map_for(self, task: GlueTask) -> list[str] | None:
        maps = self.params.label_maps
        return maps.get(task.name) or maps.get(task.model_task)

    def rows(self, task: GlueTask, split: str = "dev", max_samples: int | None = None):
        """The task's rows from the profile's source, read once per plan."""
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

    def check_inputs(self, inputs: pd.DataFrame) -> None:
        """Every task can run, unless the profile skips those that cannot."""
        missing = inputs[inputs["problem"] != ""]
        assert self.params.on_missing_task == "skip" or missing.empty, (
            f"tasks that cannot run (on_missing_task: error):\n{missing.to_string()}"
        )

    def technique_support(self) -> pd.DataFrame:
        """Which of the profile's techniques can run on this device, and why not."""
        return pd.DataFrame(
            {
                "technique": t.name,
                "unsupported_because": unsupported_reason(t, self.torch_device) or "",
            }
            for t in self.techniques
        )

    # -- cells ----------------------------------------------------------------------------

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

    def cell(self, task: GlueTask, technique: str, batch_size: int, padding: str) -> Cell:
        checkpoint = self.checkpoint_for(task)
        config = cell_config(
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
        return Cell(task, parse(technique), int(batch_size), padding, checkpoint, config)

    def cells(self, techniques: list[str] = (), combinations: bool = False) -> list[Cell]:
        """The cells of ``techniques`` that the profile selects, task by task: the grid of
        techniques and batch sizes, or with ``combinations`` the profile's listed cells."""
        p = self.params
        chosen = [t.name for t in self.techniques if t.name in techniques]
        points = plan_points(p, chosen, combinations)
        return [
            self.cell(get_task(name), technique, batch_size, padding)
            for name in p.tasks
            for technique, batch_size, padding, only in points
            if name in only
        ]

    def select(self, points: list[dict]) -> list[Cell]:
        """The cells named by ``Cell.point`` dicts (a worker's share of its parent's plan)."""
        return [
            self.cell(get_task(p["task"]), p["technique"], p["batch_size"], p["padding"])
            for p in points
        ]

    def recorded(self) -> pd.DataFrame:
        """Every recorded trial row of this profile (an empty table before the first cell)."""
        if not (self.paths["results"] / results.RESULTS_CSV).exists():
            return results.trial_rows([])
        recorded = results.read_results(self.paths["results"])
        return recorded[recorded["profile"] == self.params.profile]

    def check(self, trials: pd.DataFrame) -> pd.DataFrame:
        """``checks.check`` of these trials against the plan's recorded baseline."""
        return check(
            trials,
            self.recorded(),
            min_window_s=self.params.min_window_s,
            metric_tolerance=self.params.metric_tolerance,
            baseline=self.params.baseline_technique,
        )
