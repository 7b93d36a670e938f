"""The energy floor, measured side by side: the original configuration (fp32, batch 16, padded
to 128) and every candidate of a profile's ``combinations``, in one run on one GPU.

    python scripts/bench_floor.py --profile floor [--reports-dir reports/floor] [--quick]

Prints, per task and cell: J per 1000 samples (total and above idle) with 95% intervals,
samples/s, the task metric, the ratio to the original configuration, the fraction of the GPU's
dense peak reached (FP8's for FP8 cells), and the kernel check. Records go where notebooks put
them, so the frontier notebook reads the same cells.
"""

from __future__ import annotations

import argparse

import pandas as pd

from effbert import environment, floor, kernels, plan, profiles, results, stats, sweep


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
    facts = environment.describe(study.torch_device)
    print(", ".join(f"{k} {facts.get(k)}" for k in ("device_name", "driver", "cuda", "torch")))
    trials = sweep.Sweep(study).run(study.cells(combinations=True))
    summary = stats.summarize(trials)
    table = floor.floor_table(summary, trials)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False))
    failed = trials[trials["status"] != "ok"].drop_duplicates("cell_id")
    for row in failed.itertuples():
        print(f"{row.status}: {row.task} {row.technique} bs={row.batch_size}: {row.reason}")
    ok = summary.dropna(subset=["j_per_1k_samples_mean"])
    for _, cell in ok.sort_values("j_per_1k_samples_mean").iterrows():
        record = results.cell_record(study.paths["cells"], cell["cell_id"])
        recorded = record.get("kernels") or {}
        windows = trials[trials["cell_id"] == cell["cell_id"]]
        power_w = (windows["energy_j"] / windows["time_s"]).mean()
        print(
            f"{cell['task']} {cell['technique']} bs={cell['batch_size']}: "
            f"{cell['j_per_1k_samples_mean']:.2f} J/1k, {power_w:.0f} W "
            f"(idle {windows['idle_power_w'].iloc[0]:.0f} W), attention kernel "
            f"{recorded.get('attention_kernel')}; GPU time by kernel kind "
            f"{kernels.kernel_split(recorded)}; the windows' time "
            f"{kernels.window_split(recorded, windows)}"
        )
        print(
            "   top kernels: "
            + "; ".join(f"{k['name'][:60]} {k['share']:.1%}" for k in recorded.get("top", [])[:6])
        )


if __name__ == "__main__":
    main()
