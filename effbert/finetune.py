"""The fine-tuning notebook's work: a checkpoint per task that has train data, trained (or
reused) and scored, spread over worker processes where a GPU can hold several; meanwhile the
measurement notebooks' compiled models are compiled once into torch.compile's caches."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from effbert import config as cfg
from effbert import data, fp8, models, pool, runs
from effbert.config import project_relative, resolve_path
from effbert.environment import captured, resolve_device
from effbert.params import ALL, FINETUNE, FinetuneSettings, Params, plan_points
from effbert.profiles import load
from effbert.tasks import GlueTask, get_task
from effbert.techniques import parse, static_rows, unsupported_reason
from effbert.train import REPORT_FILE, _identity, dev_scores, finetune, trained


def scores_table(reports: pd.DataFrame) -> pd.DataFrame:
    """``Plan.run``'s reports with each dev metric in a column of its own, rounded to read."""
    scores = pd.DataFrame(list(reports["dev_metrics"]), index=reports.index).add_prefix("dev_")
    table = reports.drop(columns=["dev_metrics", "dev_metric"]).join(scores)
    return table.round({"train_time_s": 1, **{c: 4 for c in scores.columns}})


class FinetunePlan:
    """The fine-tuning notebook's work: one checkpoint per task that has train data."""

    def __init__(self, params: Params, reports_dir: str = "reports") -> None:
        self.params = params
        self.paths = cfg.reports_paths(reports_dir)
        self.log_path = self.paths["logs"] / f"{params.profile}.log"

    @classmethod
    def from_profile(
        cls, profile: str, reports_dir: str = "reports", shard: str = ""
    ) -> FinetunePlan:
        return cls(load(profile, shard=shard), reports_dir)

    def settings(self, task: GlueTask) -> FinetuneSettings:
        return self.params.finetune_settings(task)

    def settings_table(self) -> pd.DataFrame:
        return self.params.table(groups=(ALL, FINETUNE))

    def _rows(self, task: GlueTask, split: str) -> pd.DataFrame:
        limit = self.params.finetune_max_train_samples if split == "train" else None
        return data.load_rows(self.params, task, split, limit)

    def overview(self) -> pd.DataFrame:
        """Per task: whether it has train data, and the settings it would be trained with."""
        rows = []
        for name in self.tasks_to_train():
            task = get_task(name)
            try:
                n_train, problem = len(self._rows(task, "train")), ""
            except data.DataError as err:
                n_train, problem = 0, str(err)
            rows.append(
                {
                    "task": name,
                    "train_rows": n_train,
                    "problem": problem,
                    **asdict(self.settings(task)),
                }
            )
        return pd.DataFrame(rows)

    def check(self, reports: pd.DataFrame) -> None:
        """With ``base_model`` set, some task was fine-tuned, and every one was scored."""
        assert not self.params.base_model or not reports.empty, (
            "base_model is set but no task could be fine-tuned"
        )
        assert reports["dev_metric"].notna().all(), (
            f"a checkpoint without its dev score:\n{reports}"
        )

    def tasks_to_train(self) -> list[str]:
        return self.params.tasks if self.params.base_model else []

    def run(self) -> pd.DataFrame:
        """Fine-tune (or reuse) and score each task; a task without train data is skipped
        when ``on_missing_task`` is ``skip``. With several GPUs visible, the tasks to train are
        spread over one worker process per GPU first (``effbert.workers``)."""
        with captured(self.log_path):
            return self._run()

    def _out_dir(self, task: GlueTask) -> Path:
        return resolve_path(self.params.checkpoints_dir) / task.model_task

    def _tasks_with_data(self):
        """(task, train rows, dev rows) of each task to train that has its data."""
        for name in self.tasks_to_train():
            task = get_task(name)
            try:
                yield task, self._rows(task, "train"), self._rows(task, "dev")
            except data.DataError:
                if self.params.on_missing_task == "skip":
                    continue
                raise

    def train(self) -> list[str]:
        """Fine-tune and score each task not trained yet (a worker's share of ``run``): the
        scores are kept with the checkpoint, for ``run`` to read.

        Returns:
            The tasks trained, not reused.
        """
        device = resolve_device(self.params.device)
        done = []
        for task, train_rows, dev_rows in self._tasks_with_data():
            out_dir = self._out_dir(task)
            report = finetune(
                self.params.base_model, task, train_rows, out_dir, self.settings(task), device
            )
            dev_scores(out_dir, task, dev_rows, device)
            if not report["reused"]:
                done.append(task.name)
        return done

    def _untrained_steps(self) -> dict[str, int]:
        """Per task still to train: its optimizer steps, the cost that balances pool."""
        steps, seen = {}, set()
        for task, train_rows, _ in self._tasks_with_data():
            if task.model_task in seen:  # mnli_m and mnli_mm share one checkpoint
                continue
            seen.add(task.model_task)
            settings = self.settings(task)
            identity = _identity(self.params.base_model, task, train_rows, settings)
            if trained(self._out_dir(task), identity) is None:
                per_epoch = math.ceil(len(train_rows) / settings.batch_size)
                steps[task.name] = math.ceil(settings.epochs * per_epoch)
        return steps

    def _train_on_workers(self) -> None:
        """Train the untrained tasks in ``finetunes_per_gpu`` workers per visible GPU, where
        that makes several pool.

        Raises:
            pool.WorkerError: a worker failed; the checkpoints finished are kept.
        """
        slots = pool.finetune_slots(self.params)
        steps = self._untrained_steps() if len(slots) > 1 and self.params.base_model else {}
        if len(steps) < 2:
            return
        groups = pool.balance_slots(steps, slots)
        values = dataclasses.asdict(self.params)

        def spec(tasks: list[str]) -> dict:
            return {
                "stage": "finetune",
                # a worker checks its share as a profile: combinations may name other tasks
                "params": {**values, "tasks": tasks, "combinations": []},
                "reports_dir": str(self.paths["root"]),
            }

        # the compiles of the measurement notebooks, done meanwhile on the CPU's idle cores
        warmups = {f"compile {w['technique']} ({w['task']})": w for w in self.compile_warmups()}
        gpus = list(dict.fromkeys(slots))
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, ((cpus or 1) - len(slots)) // max(1, len(warmups)))

        def spec_or_warmup(tasks: list[str]) -> dict:
            if tasks[0] not in warmups:
                return spec(tasks)
            return {
                "stage": "compile",
                "params": {**values, "combinations": []},
                "reports_dir": str(self.paths["root"]),
                "points": [warmups[tasks[0]]],
                "compile_threads": threads,
            }

        slots = slots + [gpus[i % len(gpus)] for i in range(len(warmups))]
        groups = groups + [[name] for name in warmups]
        watched = [self._out_dir(get_task(t)) / REPORT_FILE for t in steps]
        spawned = pool.spawn(
            self.paths, self.params.profile, "finetune", slots, groups, spec_or_warmup, watched
        )
        trainers = [w for w in spawned if w["tasks"][0] not in warmups]
        for worker in spawned:
            if worker not in trainers and worker["process"].returncode != 0:
                print(f"a compile warm-up failed (the notebook compiles it): see {worker['log']}")
        failed = pool.failures(trainers)
        if failed:
            raise pool.WorkerError(
                f"{failed}. Finished checkpoints are kept; run again to train the rest"
            )

    def compile_warmups(self) -> list[dict]:
        """A point (task, technique, batch size, padding) per distinct compiled model that the
        measurement notebooks will build: one per technique, shapes and head size."""
        p = self.params
        points = plan_points(p, p.techniques, False) + plan_points(p, [], True)
        seen, warmups = set(), []
        for technique, batch_size, padding, tasks in points:
            if not parse(technique).compiled:
                continue
            for name in (t for t in tasks if t in p.tasks):
                key = (technique, int(batch_size), padding, get_task(name).num_labels)
                if key not in seen:
                    seen.add(key)
                    warmups.append(
                        {
                            "task": name,
                            "technique": technique,
                            "batch_size": int(batch_size),
                            "padding": padding,
                        }
                    )
        return warmups

    def warm_compile(self, points: list[dict], compile_threads: int | None = None) -> None:
        """Compile each point's model once, unmeasured: the base model with the task's head,
        over the task's dev batches. torch.compile's caches (FX graphs, kernels) key on code
        and shapes, not weights, so the measurement notebooks' compiles of the fine-tuned
        models read them."""
        if compile_threads:
            torch._inductor.config.compile_threads = compile_threads
        device = resolve_device(self.params.device)
        base = self.params.base_model
        tokenizer = models.load_tokenizer(base)
        for point in points:
            task, technique = get_task(point["task"]), parse(point["technique"])
            if unsupported_reason(technique, device):
                continue
            try:
                rows = self._rows(task, "dev")
                # static FP8: the base model's scales, enough to warm the compile
                calibration = fp8.calibration_for(technique, self.params, task, tokenizer)
            except data.DataError:
                continue
            start = time.perf_counter()
            model = models.load_base_classifier(base, task, technique.attn_implementation).eval()
            batch_size, padding = point["batch_size"], point["padding"]
            shape_rows = static_rows(technique, batch_size, padding, self.params.scope)
            prepared = models.apply_technique(
                model, technique, device, None, shape_rows, calibration
            )
            batches = data.make_batches(
                tokenizer, rows, batch_size, padding, self.params.max_length
            )
            forward = prepared.forward()
            with prepared.context():
                for batch in batches:
                    forward(prepared.inputs(batch))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            print(f"compiled {technique.name} ({task.name}) in {time.perf_counter() - start:.1f} s")

    def _run(self) -> pd.DataFrame:
        self._train_on_workers()
        device = resolve_device(self.params.device)
        reports, trained_here = [], []
        started = time.perf_counter()
        for task, train_rows, dev_rows in self._tasks_with_data():
            out_dir = self._out_dir(task)
            report = finetune(
                self.params.base_model, task, train_rows, out_dir, self.settings(task), device
            )
            if not report["reused"]:
                trained_here.append(task.name)
            scores = dev_scores(out_dir, task, dev_rows, device)
            reports.append(
                {
                    "task": task.name,
                    "metric": task.primary_metric,
                    "dev_metric": scores[task.primary_metric],
                    "dev_metrics": scores,
                    "train_time_s": report["train_time_s"],
                    "reused": report["reused"],
                    "checkpoint": project_relative(out_dir),
                }
            )
        if trained_here:
            wall_s = time.perf_counter() - started
            runs.record_here(
                self.paths["results"], self.params.profile, "finetune", trained_here, wall_s
            )
        columns = ["task", "metric", "dev_metric", "dev_metrics", "train_time_s", "reused"]
        return pd.DataFrame(reports, columns=[*columns, "checkpoint"])
