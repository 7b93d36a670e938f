"""The energy floor, measured side by side: the original configuration (fp32, batch 16, padded
to 128) and every candidate of a profile's ``combinations``, in one run on one GPU.

    python scripts/bench_floor.py --profile floor [--reports-dir reports/floor] [--quick]

Prints, per task and cell: J per 1000 samples (total and above idle) with 95% intervals,
samples/s, the task metric, the ratio to the original configuration, the fraction of the GPU's
dense 16-bit peak reached, and the kernel check. Records go where notebooks put them, so the
frontier notebook reads the same cells.
"""

from __future__ import annotations

import argparse

import pandas as pd

from effbert import floor, kernels, plan, profiles, results, stats, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="floor")
    parser.add_argument("--reports-dir", default="reports/floor")
    parser.add_argument("--quick", action="store_true", help="3 trials of 1 s (a first look)")
    parser.add_argument("--tasks", nargs="*", help="only these of the profile's tasks")
    args = parser.parse_args()
    overrides = {"trials": 3, "min_window_s": 1.0, "warmup_s": 1.0} if args.quick else {}
    if args.tasks:
        overrides["tasks"] = args.tasks
    study = plan.Plan(profiles.load(args.profile, **overrides), args.reports_dir)
    trials = sweep.Sweep(study).run(study.cells(combinations=True))
    summary = stats.summarize(trials)
    table = floor.floor_table(summary, trials)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False))
    failed = trials[trials["status"] != "ok"].drop_duplicates("cell_id")
    for row in failed.itertuples():
        print(f"{row.status}: {row.task} {row.technique} bs={row.batch_size}: {row.reason}")
    ok = summary.dropna(subset=["j_per_1k_samples_mean"])
    for task, cells in ok.groupby("task", sort=False):
        best = cells.loc[cells["j_per_1k_samples_mean"].idxmin()]
        record = results.cell_record(study.paths["cells"], best["cell_id"])
        print(
            f"{task}: GPU time of the best cell ({best['technique']}, bs={best['batch_size']},"
            f" {best['padding']}) by kernel kind: "
            f"{kernels.kernel_split(record.get('kernels') or {})}"
        )
        windows = trials[trials["cell_id"] == best["cell_id"]]
        power_w = (windows["energy_j"] / windows["time_s"]).mean()
        idle_w = windows["idle_power_w"].iloc[0]
        print(f"  card power {power_w:.0f} W in the windows, idle {idle_w:.0f} W")
        split = kernels.window_split(record.get("kernels") or {}, windows)
        if split:
            print(f"  the windows' time by kernel kind, and with no kernel running: {split}")


if __name__ == "__main__":
    main()
