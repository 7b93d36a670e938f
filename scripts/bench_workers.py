"""Do worker GPUs agree? Re-measure some of a study's cells on each visible GPU alone and set
them beside the records the study's workers wrote; print the study's wall time beside the sum
of its workers' wall times (what one GPU would have taken for both shares).

    python scripts/bench_workers.py --profile study --reports-dir reports/study \
        --tasks sst2 mrpc --techniques fp32 fp16_flash

A cell agrees when the two means differ by less than the combined 95% half-widths.
"""

from __future__ import annotations

import argparse
import math
import tempfile

import pandas as pd
import torch

from effbert import config, plan, profiles, results, runs, stats, sweep

MEASURE = "j_per_1k_samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="study")
    parser.add_argument("--reports-dir", default="reports/study")
    parser.add_argument("--tasks", nargs="+", default=["sst2"])
    parser.add_argument("--techniques", nargs="+", default=["fp32", "fp16_flash"])
    args = parser.parse_args()
    paths = config.reports_paths(args.reports_dir)
    study = stats.summarize(results.read_results(paths["results"], args.profile))
    rows = []
    for gpu in range(torch.cuda.device_count()):
        chosen = profiles.load(
            args.profile,
            tasks=args.tasks,
            techniques=args.techniques,
            combinations=[],
            workers=1,
            device=f"cuda:{gpu}",
        )
        with tempfile.TemporaryDirectory() as folder:
            alone_plan = plan.Plan(chosen, folder)
            cells = alone_plan.cells(args.techniques)
            alone = stats.summarize(sweep.Sweep(alone_plan, force=True).run(cells))
        for _, cell in alone.iterrows():
            match = study[study["cell_id"] == cell["cell_id"]]
            if match.empty:
                continue
            recorded = match.iloc[0]
            gap = cell[f"{MEASURE}_mean"] - recorded[f"{MEASURE}_mean"]
            allowed = math.hypot(cell[f"{MEASURE}_ci95"], recorded[f"{MEASURE}_ci95"])
            rows.append(
                {
                    "task": cell["task"],
                    "technique": cell["technique"],
                    "study worker GPU": _worker_gpu(paths, cell["cell_id"]),
                    "study J/1k": f"{recorded[f'{MEASURE}_mean']:.2f} ± "
                    f"{recorded[f'{MEASURE}_ci95']:.2f}",
                    "alone on GPU": gpu,
                    "alone J/1k": f"{cell[f'{MEASURE}_mean']:.2f} ± {cell[f'{MEASURE}_ci95']:.2f}",
                    "alone / study": round(
                        cell[f"{MEASURE}_mean"] / recorded[f"{MEASURE}_mean"], 3
                    ),
                    "agrees": bool(abs(gap) <= allowed),
                }
            )
    with pd.option_context("display.width", 200):
        print(pd.DataFrame(rows).to_string(index=False))
    for run in runs.worker_runs(args.reports_dir, args.profile):
        walls = run["worker_wall_s"]
        print(
            f"{run['name']}: wall {run['wall_s']:.0f} s with {len(walls)} workers; "
            f"their wall times add up to {sum(walls):.0f} s"
        )


def _worker_gpu(paths, cell_id: str):
    record = results.cell_record(paths["cells"], cell_id)
    return (record.get("worker") or {}).get("cuda_visible_devices")


if __name__ == "__main__":
    main()
