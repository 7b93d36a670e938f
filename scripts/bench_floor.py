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

from effbert import bench, params, results

# DistilBERT's encoder: 6 layers of 4 d^2 (attention projections) + 2 d f (FFN) multiply-adds
# per token, d = 768, f = 3072; attention scores add little at GLUE lengths.
FLOP_PER_TOKEN = 2 * 6 * (4 * 768**2 + 2 * 768 * 3072)
# Dense 16-bit tensor-core peak (FLOP/s), from the vendors' data sheets.
PEAK_16BIT = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def peak_flops(device_name: str) -> float:
    return next((v for k, v in PEAK_16BIT.items() if k in str(device_name)), float("nan"))


# Kernel name substrings, in the order they are tried, for the split of a cell's GPU time.
KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "cudnn")),
    ("matrix products", ("gemm", "sm90_", "cutlass", "_mm", "xmma", "nvjet", "matmul")),
    ("layer norm", ("layer_norm", "layernorm", "norm")),
    ("copies", ("memcpy", "memset", "copy")),
)


def kernel_split(kernels: dict) -> dict[str, float]:
    """Shares of a cell's GPU time by kind, from its recorded top kernels (the rest: other)."""
    split: dict[str, float] = {}
    for kernel in kernels.get("top", []):
        name = kernel["name"].lower()
        kind = next((k for k, signs in KERNEL_KINDS if any(s in name for s in signs)), None)
        split[kind or "element-wise and other"] = (
            split.get(kind or "element-wise and other", 0) + kernel["share"]
        )
    listed = sum(split.values())
    if listed < 0.999:
        split["not in the top 12"] = 1 - listed
    return {k: round(v, 3) for k, v in sorted(split.items(), key=lambda kv: -kv[1])}


def _mean_ci(cell, measure: str) -> str:
    return f"{cell[measure + '_mean']:.2f} ± {cell[measure + '_ci95']:.2f}"


def floor_table(summary: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each cell beside the task's original configuration (fp32, batch 16, max_length)."""
    tokens = trials[trials["status"] == "ok"].groupby("cell_id")["tokens_per_s"].mean()
    rows = []
    for task, cells in summary.groupby("task", sort=False):
        original = cells[
            (cells["technique"] == "fp32")
            & (cells["batch_size"] == 16)
            & (cells["padding"] == "max_length")
        ]
        base = original.iloc[0] if not original.empty else None
        for _, cell in cells.iterrows():
            achieved = FLOP_PER_TOKEN * tokens[cell["cell_id"]]
            ratio = half = float("nan")
            if base is not None:
                ratio, half = results.ratio_ci95(
                    cell["j_per_1k_samples_mean"],
                    cell["j_per_1k_samples_ci95"],
                    base["j_per_1k_samples_mean"],
                    base["j_per_1k_samples_ci95"],
                )
            rows.append(
                {
                    "task": task,
                    "technique": cell["technique"],
                    "batch": cell["batch_size"],
                    "padding": cell["padding"],
                    "J/1k": _mean_ci(cell, "j_per_1k_samples"),
                    "J/1k above idle": f"{cell['dynamic_j_per_1k_samples_mean']:.2f}",
                    "samples/s": round(cell["samples_per_s_mean"]),
                    "metric": f"{cell['metric']} {cell['metric_value']:.4f}",
                    "metric change": (
                        cell["metric_value"] - base["metric_value"] if base is not None else None
                    ),
                    "original / this": f"{1 / ratio:.1f}× (this {ratio:.3f} ± {half:.3f})",
                    "16-bit peak": f"{achieved / peak_flops(cell['device_name']):.1%}",
                    "kernel check": cell["fallback"] if isinstance(cell["fallback"], str) else "ok",
                    "prepare s": round(cell["prepare_s"], 1),
                    "peak MB": round(cell["peak_memory_mb"])
                    if pd.notna(cell.get("peak_memory_mb"))
                    else None,
                }
            )
    return pd.DataFrame(rows)


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
    study = bench.Study(params.load(args.profile, **overrides), args.reports_dir)
    trials = study.run(combinations=True)
    summary = results.summarize(trials)
    table = floor_table(summary, trials)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False))
    failed = trials[trials["status"] != "ok"].drop_duplicates("cell_id")
    for row in failed.itertuples():
        print(f"{row.status}: {row.task} {row.technique} bs={row.batch_size}: {row.reason}")
    ok = summary.dropna(subset=["j_per_1k_samples_mean"])
    for task, cells in ok.groupby("task", sort=False):
        best = cells.loc[cells["j_per_1k_samples_mean"].idxmin()]
        record = next(
            c for c in results.load_cells(study.paths["cells"]) if c["cell_id"] == best["cell_id"]
        )
        print(
            f"{task}: GPU time of the best cell ({best['technique']}, bs={best['batch_size']},"
            f" {best['padding']}) by kernel kind: {kernel_split(record.get('kernels') or {})}"
        )
        windows = trials[trials["cell_id"] == best["cell_id"]]
        power_w = (windows["energy_j"] / windows["time_s"]).mean()
        idle_w = windows["idle_power_w"].iloc[0]
        print(f"  card power {power_w:.0f} W in the windows, idle {idle_w:.0f} W")


if __name__ == "__main__":
    main()
