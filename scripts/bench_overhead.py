"""Does effbert's cell measurement add energy? Side by side on one GPU, in one run.

Measures the same fp16 DistilBERT loop over a task's dev batches two ways, alternating:
  effbert: ``windows.warm_up`` then ``windows.measure_window`` with the NVML meter (what each cell's
  windows run, ``measure.CellRun``);
  bare:    one Zeus window around a bare loop of the same number of passes.
Prints energy per sample of each and their ratio (goal: within 2% of 1).

    python scripts/bench_overhead.py --checkpoint models/finetuned/sst2 --glue-dir GLUE
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from effbert import data, energy, models, stats, techniques, windows
from effbert.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=models.TINY_RANDOM)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default="", help="glue_data folder; synthetic rows if empty")
    parser.add_argument("--rounds", type=int, default=5, help="effbert/bare pairs")
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args()

    device = torch.device("cuda:0")
    task = get_task(args.task)
    rows = data.load_split(task, "local" if args.glue_dir else "synthetic", glue_dir=args.glue_dir)
    tokenizer = models.load_tokenizer(args.checkpoint)
    batches = data.make_batches(tokenizer, rows, args.batch_size, "max_length", 128)
    prepared = models.prepare(args.checkpoint, task, techniques.parse("fp16"), device)
    inputs = [b.to(device).inputs() for b in batches]
    forward = prepared.forward()
    samples_per_pass = sum(b.n_samples for b in batches)

    def run_pass() -> None:
        for batch in inputs:
            forward(batch)

    meter = energy.make_meter(device, "nvml")
    from zeus.monitor import ZeusMonitor

    bare = ZeusMonitor(gpu_indices=[0], cpu_indices=[])
    settings = windows.MeasureSettings(warmup_s=2.0, trials=2, min_window_s=args.window_s)
    effbert_j, bare_j = [], []
    with prepared.context():
        start = time.perf_counter()
        for _ in range(3):
            run_pass()
        torch.cuda.synchronize(device)
        seconds_per_pass = (time.perf_counter() - start) / 3
        for round_index in range(args.rounds):
            # alternate which goes first, so that drift (heat, clocks) favours neither
            order = ("effbert", "bare") if round_index % 2 == 0 else ("bare", "effbert")
            passes = None
            for way in order:
                if way == "effbert":
                    windows.warm_up(run_pass, settings)
                    measured = [
                        windows.measure_window(run_pass, meter, settings, time.perf_counter)
                        for _ in range(settings.trials)
                    ]
                    done = sum(w.passes for w in measured)
                    energy_j = sum(w.energy_j for w in measured)
                    effbert_j.append(energy_j / (done * samples_per_pass))
                    passes = passes or done
                else:
                    passes = passes or math.ceil(2 * args.window_s / seconds_per_pass)
                    for _ in range(passes // 2):  # warm as the effbert trial was
                        run_pass()
                    bare.begin_window("bare")
                    for _ in range(passes):
                        run_pass()
                    m = bare.end_window("bare")
                    bare_j.append(m.gpu_energy[0] / (passes * samples_per_pass))

    ratios = [e / b for e, b in zip(effbert_j, bare_j, strict=True)]
    result = {
        "device": torch.cuda.get_device_name(device),
        "checkpoint": args.checkpoint,
        "task": task.name,
        "batch_size": args.batch_size,
        "window_s": args.window_s,
        "samples_per_pass": samples_per_pass,
        "effbert_mj_per_sample": [1000 * x for x in effbert_j],
        "bare_mj_per_sample": [1000 * x for x in bare_j],
        "ratio_mean": statistics.mean(ratios),
        "ratio_ci95": stats.ci95_half_width(ratios),
    }
    print(
        f"device {result['device']}, fp16, {task.name} dev, batch {args.batch_size}, padded to 128"
    )
    for i, (e, b) in enumerate(zip(effbert_j, bare_j, strict=True)):
        print(
            f"round {i}: effbert {1000 * e:.3f} mJ/sample  bare {1000 * b:.3f} mJ/sample  "
            f"ratio {e / b:.4f}"
        )
    print(
        f"effbert / bare energy per sample: {result['ratio_mean']:.4f} "
        f"± {result['ratio_ci95']:.4f} (95% CI, {len(ratios)} rounds)"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
