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
from pathlib import Path

import torch

from effbert import data, finetune
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
    parser.add_argument("--json", help="append one JSON line per setting here")
    args = parser.parse_args()

    task = get_task(args.task)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    train = data.load_split(task, "local", split="train", glue_dir=args.glue_dir)
    dev = data.load_split(task, "local", glue_dir=args.glue_dir)
    grid = itertools.product(args.lr, args.epochs, args.batch_size, args.seed)
    for lr, epochs, batch_size, seed in grid:
        settings = finetune.FinetuneSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        with tempfile.TemporaryDirectory() as out:
            report = finetune.finetune(args.base_model, task, train, Path(out), settings, device)
            scores = finetune.score(Path(out), task, dev, device)
        row = {
            "task": task.name,
            "lr": lr,
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            **scores,
            "train_time_s": round(report["train_time_s"], 1),
        }
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
