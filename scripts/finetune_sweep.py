"""Fine-tune one task under several settings and print every dev score (none is hidden).

    python scripts/finetune_sweep.py --task rte --glue-dir GLUE --base-model BASE \
        --lr 2e-5 5e-5 --epochs 5 10 --batch-size 16

Choosing settings by dev score tunes on the evaluation split: say so wherever a chosen setting
is reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import torch

from effbert import data, models
from effbert.params import FinetuneSettings
from effbert.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--lr", type=float, nargs="+", default=[3e-5])
    parser.add_argument("--epochs", type=float, nargs="+", default=[3.0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32])
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--warmup-ratio", type=float, nargs="+", default=[0.1])
    parser.add_argument("--weight-decay", type=float, nargs="+", default=[0.01])
    parser.add_argument("--reinit-layers", type=int, nargs="+", default=[0])
    parser.add_argument("--layer-lr-decay", type=float, nargs="+", default=[1.0])
    parser.add_argument("--head-lr", type=float, nargs="+", default=[0.0])
    parser.add_argument(
        "--each-epoch", action="store_true", help="also score dev after every epoch"
    )
    parser.add_argument("--max-train-rows", type=int, default=0, help="0: all")
    parser.add_argument("--json", help="append one JSON line per setting here")
    args = parser.parse_args()

    task = get_task(args.task)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    train = data.load_split(
        task, "local", split="train", glue_dir=args.glue_dir, max_samples=args.max_train_rows
    )
    dev = data.load_split(task, "local", glue_dir=args.glue_dir)
    tokenizer = models.load_tokenizer(args.base_model)
    # every FinetuneSettings field with a flag of the same name is swept
    swept = {
        f.name: getattr(args, f.name) for f in fields(FinetuneSettings) if hasattr(args, f.name)
    }
    for values in itertools.product(*swept.values()):
        settings = FinetuneSettings(**dict(zip(swept, values, strict=True)))
        by_epoch = []

        def score_epoch(model, epoch, by_epoch=by_epoch):
            scores = train.score_model(model, tokenizer, task, dev, device)
            by_epoch.append(round(scores[task.primary_metric], 4))

        with tempfile.TemporaryDirectory() as out:
            report = train.finetune(
                args.base_model,
                task,
                train,
                Path(out),
                settings,
                device,
                after_epoch=score_epoch if args.each_epoch else None,
            )
            scores = train.score(Path(out), task, dev, device)
        row = {
            "task": task.name,
            **asdict(settings),
            **scores,
            "train_time_s": round(report["train_time_s"], 1),
        }
        if args.each_epoch:
            row[f"{task.primary_metric}_by_epoch"] = by_epoch
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
