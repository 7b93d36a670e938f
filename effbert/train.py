"""Fine-tuning one checkpoint: a base DistilBERT trained on a task's train split (reused where
the same base, rows and settings trained it before), and its dev scores kept beside it."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from effbert import data, metrics, models, results
from effbert.config import resolve_path
from effbert.params import FinetuneSettings
from effbert.tasks import GlueTask
from effbert.techniques import parse

REPORT_FILE = "effbert_finetune.json"


SCORES_FILE = "effbert_dev_scores-{task}.json"  # a checkpoint's dev scores, per GLUE task


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
    model = models.load_base_classifier(base_model, task)
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
    """What a checkpoint was trained from, by content: the base's weights (read now), the
    train rows' texts and labels, and the settings. Reused only where all of it matches."""
    folder = resolve_path(base_model)
    base = models.folder_digest(folder) if folder.is_dir() else models.fingerprint(base_model)
    return {
        "task": task.model_task,
        "base_model": str(base_model),
        "base_weights": base,
        "train_rows": len(train_rows),
        "train_data": data.fingerprint(train_rows),
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
    prepared = models.prepare(str(checkpoint), task, parse("fp32"), device)
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
    prepared = models.Prepared(model, parse("fp32"), device)
    return _dev_scores(prepared, tokenizer, task, dev_rows, max_length)


def _dev_scores(prepared, tokenizer, task, dev_rows, max_length) -> dict[str, float]:
    batches = data.make_batches(tokenizer, dev_rows, 64, "longest", max_length)
    scores, _ = metrics.compute(
        task, prepared.predict(batches, len(dev_rows)), dev_rows["label"].to_numpy()
    )
    return scores
