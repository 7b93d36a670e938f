"""Fine-tune a base DistilBERT on a GLUE task's train split, for hosts without task checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from effbert import config as cfg
from effbert import data, metrics, models, results, workers
from effbert.config import project_relative, resolve_path
from effbert.environment import captured, resolve_device
from effbert.params import ALL, FINETUNE, FinetuneSettings, Params, load, plan_points
from effbert.tasks import GlueTask, get_task

REPORT_FILE = "effbert_finetune.json"
SCORES_FILE = "effbert_dev_scores-{task}.json"  # a checkpoint's dev scores, per GLUE task


def _label_config(task: GlueTask) -> dict:
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.label_names)),
        "label2id": {name: i for i, name in enumerate(task.label_names)},
    }


def _base_classifier(base_model: str, task: GlueTask, attention: str | None = None):
    """The base model with a new head sized and labelled for ``task`` (``attention``: the
    attention implementation, transformers' default where None)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        models.locate(base_model),
        ignore_mismatched_sizes=True,
        attn_implementation=attention,
        **_label_config(task),
    )


def finetune(
    base_model: str,
    task: GlueTask,
    train_rows: pd.DataFrame,
    out_dir: Path,
    settings: FinetuneSettings,
    device: torch.device,
    after_epoch: Callable[[torch.nn.Module, int], None] | None = None,
) -> dict:
    """Train ``base_model`` on ``train_rows`` and save a checkpoint with GLUE label names.

    A checkpoint already in ``out_dir`` from the same base model and settings is reused.
    ``after_epoch(model, epoch)``, if given, runs after each full epoch (its time counts in
    the fine-tune's wall time); the model is back in training mode afterwards.

    Returns:
        A report: task, settings, wall time of the fine-tune, whether it was reused.
    """
    from transformers import get_linear_schedule_with_warmup

    out_dir = Path(out_dir)
    report_path = out_dir / REPORT_FILE
    identity = _identity(base_model, task, train_rows, settings)
    previous = trained(out_dir, identity)
    if previous is not None:
        return {**previous, "reused": True}

    torch.manual_seed(settings.seed)
    tokenizer = models.load_tokenizer(base_model)
    model = _base_classifier(base_model, task)
    if settings.reinit_layers:
        _reinit(model.distilbert.transformer.layer[-settings.reinit_layers :], model.config)
    model = model.to(device)
    steps_per_epoch = math.ceil(len(train_rows) / settings.batch_size)
    steps = math.ceil(settings.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, settings),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=device.type == "cuda",
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * steps), steps)
    label_dtype = torch.float32 if task.is_regression else torch.long

    start = time.perf_counter()
    model.train()
    # Executed notebooks keep every redraw of a text progress bar: redraw every 5 s at most.
    progress = tqdm(
        total=steps,
        desc=f"fine-tune {task.model_task}",
        unit="step",
        mininterval=5.0,
        file=sys.stdout,
    )
    step, epoch = 0, 0
    while step < steps:
        # GLUE train files keep related rows together (SST-2 phrases of one sentence, CoLA
        # sentences of one source): shuffle rows, not just batches, every epoch.
        rows = train_rows.sample(frac=1, random_state=settings.seed + epoch).reset_index(drop=True)
        labels = torch.tensor(rows["label"].to_numpy(), dtype=label_dtype)
        epoch += 1
        for batch in data.make_batches(
            tokenizer, rows, settings.batch_size, "longest", settings.max_length
        ):
            if step == steps:
                break
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**batch.inputs(), labels=labels[batch.row_index].to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update()
            if step % 50 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        else:
            if after_epoch is not None:
                after_epoch(model, epoch)
                model.train()
    progress.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time_s = time.perf_counter() - start

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {
        **identity,
        "train_time_s": train_time_s,
        "steps": steps,
        "device_name": device_name,
        "reused": False,
    }
    report_path.write_text(json.dumps(report, indent=1))
    return report


def _identity(base_model: str, task: GlueTask, train_rows: pd.DataFrame, settings) -> dict:
    """What a checkpoint was trained from: reused only where all of it matches."""
    return {
        "task": task.model_task,
        "base_model": str(base_model),
        "train_rows": len(train_rows),
        "settings": asdict(settings),
    }


def trained(out_dir: Path, identity: dict) -> dict | None:
    """The report of a checkpoint in ``out_dir`` trained as ``identity`` says, else None."""
    report_path = Path(out_dir) / REPORT_FILE
    if not report_path.exists():
        return None
    try:
        previous = json.loads(report_path.read_text())
    except ValueError:
        return None  # a damaged report: train again
    return previous if {k: previous.get(k) for k in identity} == identity else None


def _parameter_groups(model: torch.nn.Module, settings: FinetuneSettings) -> list[dict]:
    """Per-group learning rates: the head at ``head_lr``, encoder layer ``i`` of ``n`` at
    ``lr * layer_lr_decay ** (n - i)`` counted from the head, the embeddings lowest."""
    encoder = model.distilbert
    layers = list(encoder.transformer.layer)
    below_head = [encoder.embeddings, *layers]  # bottom to top
    groups = [
        {
            "params": list(module.parameters()),
            "lr": settings.lr * settings.layer_lr_decay ** (len(layers) - i),
        }
        for i, module in enumerate(below_head)
    ]
    in_encoder = {id(p) for p in encoder.parameters()}
    head = [p for p in model.parameters() if id(p) not in in_encoder]
    groups.append({"params": head, "lr": settings.head_lr or settings.lr})
    return groups


def _reinit(layers: torch.nn.Module, config) -> None:
    """Draw encoder layers afresh, as a new DistilBERT would (BERT's initialisation)."""
    for module in layers.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=config.initializer_range)
            torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)


def score(
    checkpoint: Path,
    task: GlueTask,
    dev_rows: pd.DataFrame,
    device: torch.device,
    max_length: int = 128,
) -> dict[str, float]:
    """The task's dev metrics of a saved checkpoint, in fp32."""
    prepared = models.prepare(str(checkpoint), task, models.get_technique("fp32"), device)
    return _dev_scores(prepared, models.load_tokenizer(str(checkpoint)), task, dev_rows, max_length)


def dev_scores(
    checkpoint: Path,
    task: GlueTask,
    dev_rows: pd.DataFrame,
    device: torch.device,
    max_length: int = 128,
) -> dict[str, float]:
    """``score``, kept in the checkpoint folder: read back where the weights, the dev rows and
    ``max_length`` are the ones scored (a fine-tune worker scores its checkpoints, so the
    notebook reads them), else scored again."""
    key = {
        "task": task.name,
        "checkpoint": models.folder_digest(Path(checkpoint)),  # weights retrained since count
        "dev_rows": data.fingerprint(dev_rows),
        "max_length": max_length,
    }
    path = Path(checkpoint) / SCORES_FILE.format(task=task.name)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved, dict) and saved.get("key") == key:
        return saved["scores"]
    scores = score(checkpoint, task, dev_rows, device, max_length)
    try:
        results.write_json_atomic(path, {"key": key, "scores": scores})
    except results.StoreError as err:
        print(f"dev scores of {task.name} not kept ({err}); they are scored again next run")
    return scores


def score_model(
    model: torch.nn.Module,
    tokenizer,
    task: GlueTask,
    dev_rows: pd.DataFrame,
    device: torch.device,
    max_length: int = 128,
) -> dict[str, float]:
    """Dev metrics of a model being fine-tuned (labels already in GLUE order), in fp32."""
    model.eval()
    prepared = models.Prepared(model, models.get_technique("fp32"), device)
    return _dev_scores(prepared, tokenizer, task, dev_rows, max_length)


def _dev_scores(prepared, tokenizer, task, dev_rows, max_length) -> dict[str, float]:
    batches = data.make_batches(tokenizer, dev_rows, 64, "longest", max_length)
    scores, _ = metrics.compute(
        task, prepared.predict(batches, len(dev_rows)), dev_rows["label"].to_numpy()
    )
    return scores


def scores_table(reports: pd.DataFrame) -> pd.DataFrame:
    """``Plan.run``'s reports with each dev metric in a column of its own, rounded to read."""
    scores = pd.DataFrame(list(reports["dev_metrics"]), index=reports.index).add_prefix("dev_")
    table = reports.drop(columns=["dev_metrics", "dev_metric"]).join(scores)
    return table.round({"train_time_s": 1, **{c: 4 for c in scores.columns}})


class Plan:
    """The fine-tuning notebook's work: one checkpoint per task that has train data."""

    def __init__(self, params: Params, reports_dir: str = "reports") -> None:
        self.params = params
        self.paths = cfg.reports_paths(reports_dir)
        self.log_path = self.paths["logs"] / f"{params.profile}.log"

    @classmethod
    def from_profile(cls, profile: str, reports_dir: str = "reports") -> Plan:
        return cls(load(profile), reports_dir)

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
        """Per task still to train: its optimizer steps, the cost that balances workers."""
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
        that makes several workers.

        Raises:
            workers.WorkerError: a worker failed; the checkpoints finished are kept.
        """
        slots = workers.finetune_slots(self.params)
        steps = self._untrained_steps() if len(slots) > 1 and self.params.base_model else {}
        if len(steps) < 2:
            return
        groups = workers.balance_slots(steps, slots)
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
        spawned = workers.spawn(
            self.paths, self.params.profile, "finetune", slots, groups, spec_or_warmup, watched
        )
        trainers = [w for w in spawned if w["tasks"][0] not in warmups]
        for worker in spawned:
            if worker not in trainers and worker["process"].returncode != 0:
                print(f"a compile warm-up failed (the notebook compiles it): see {worker['log']}")
        failed = workers.failures(trainers)
        if failed:
            raise workers.WorkerError(
                f"{failed}. Finished checkpoints are kept; run again to train the rest"
            )

    def compile_warmups(self) -> list[dict]:
        """A point (task, technique, batch size, padding) per distinct compiled model that the
        measurement notebooks will build: one per technique, shapes and head size."""
        p = self.params
        points = plan_points(p, p.techniques, False) + plan_points(p, [], True)
        seen, warmups = set(), []
        for technique, batch_size, padding, tasks in points:
            if models.get_technique(technique).execution not in models.COMPILED_EXECUTIONS:
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
            task, technique = get_task(point["task"]), models.get_technique(point["technique"])
            if models.unsupported_reason(technique, device):
                continue
            try:
                rows = self._rows(task, "dev")
            except data.DataError:
                continue
            start = time.perf_counter()
            model = _base_classifier(base, task, technique.attn_implementation).eval()
            batch_size, padding = point["batch_size"], point["padding"]
            shape_rows = models.static_rows(technique, batch_size, padding, self.params.scope)
            prepared = models.apply_technique(model, technique, device, None, shape_rows)
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
            workers.record_here(
                self.paths["results"], self.params.profile, "finetune", trained_here, wall_s
            )
        columns = ["task", "metric", "dev_metric", "dev_metrics", "train_time_s", "reused"]
        return pd.DataFrame(reports, columns=[*columns, "checkpoint"])
