"""Tokenization rows per second on one core, side by side: ``tokenizer(...)`` against the
Rust-backend path of effbert's end-to-end workers (``e2e.TokenizedParts``), on the same parts.

    TOKENIZERS_PARALLELISM=false python scripts/bench_tokenize.py --tokenizer CHECKPOINT \
        --glue-dir GLUE [--part-rows 43] [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from effbert import data, e2e, models, packed, plan, techniques
from effbert.tasks import get_task


def rows_per_s(tokenize, parts: list[list[int]], seconds: float) -> float:
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for i, part in enumerate(parts):
            tokenize(i)
            done += len(part)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default=models.TINY_RANDOM, help="a checkpoint folder")
    parser.add_argument("--glue-dir", default="", help="glue_data folder (else synthetic rows)")
    parser.add_argument("--part-rows", type=int, default=43)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    task = get_task("sst2")
    source = "local" if args.glue_dir else "synthetic"
    rows = data.load_split(task, source, glue_dir=args.glue_dir, max_samples=872)
    tokenizer = models.load_tokenizer(args.tokenizer)
    order = list(np.argsort([len(t) for t in rows["text_a"]]))
    parts = [order[i : i + args.part_rows] for i in range(0, len(order), args.part_rows)]
    texts = rows["text_a"].tolist()
    for padding, technique in (("bucketed", "fp32"), ("packed", "bf16+varlen")):
        cell = plan.Cell(task, techniques.parse(technique), 512, padding, "", {})
        fast = e2e.TokenizedParts(tokenizer, texts, None, parts, cell, 128)
        plain = e2e.TokenizedParts(tokenizer, texts, None, parts, cell, 128)
        plain.backend = None

        def torch_tensors(i: int, padding: str = padding) -> dict:  # the path before
            encoded = tokenizer(
                [texts[j] for j in parts[i]],
                truncation=True,
                max_length=128,
                padding="longest",
                return_tensors="pt",
            )
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
            return packed.pack(ids, mask) if padding == "packed" else {"input_ids": ids}

        torch_rate = rows_per_s(torch_tensors, parts, args.seconds)
        plain_rate = rows_per_s(plain.__getitem__, parts, args.seconds)
        fast_rate = rows_per_s(fast.__getitem__, parts, args.seconds)
        print(
            f"{padding:9s} parts of {args.part_rows} rows, rows/s: tokenizer(..., 'pt') "
            f"{torch_rate:,.0f}, tokenizer(..., 'np') {plain_rate:,.0f}, Rust backend "
            f"{fast_rate:,.0f}; Rust / 'pt' {fast_rate / torch_rate:.2f}"
        )


if __name__ == "__main__":
    main()
