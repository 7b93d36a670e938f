"""The energy floor's tables: each cell beside the task's original configuration, with the
share of the GPU's dense peak it reached; end-to-end cells beside the forward pass."""

from __future__ import annotations

import pandas as pd

from effbert.kernels import kernel_check_text, kernel_split, window_split
from effbert.stats import energy_ratio, original_cell, paired_log_ratio, single_device
from effbert.tables import _mean_ci
from effbert.techniques import parse

# DistilBERT's encoder: 6 layers of 4 d^2 (attention projections) + 2 d f (FFN) multiply-adds
# per token, d = 768, f = 3072; attention scores add little at GLUE lengths.
LAYER_FLOP_PER_TOKEN = 2 * (4 * 768**2 + 2 * 768 * 3072)


FLOP_PER_TOKEN = 6 * LAYER_FLOP_PER_TOKEN


def flop_per_token(shortcut: str) -> float:
    """Matrix-product FLOPs per token of the work a cell does: with ``cls_last`` the last layer
    computes only its key and value projections for every token (its first token's rest is
    negligible)."""
    if shortcut == "cls_last":
        return 5 * LAYER_FLOP_PER_TOKEN + 2 * 2 * 768**2
    return FLOP_PER_TOKEN


# Dense tensor-core peaks (FLOP/s), 16-bit and FP8, from the vendors' data sheets.
PEAK_16BIT = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
PEAK_FP8 = {"H100": 1979e12, "H200": 1979e12, "L4": 242e12}


def peak_flops(device_name: str, peaks: dict[str, float] = PEAK_16BIT) -> float:
    return next((v for k, v in peaks.items() if k in str(device_name)), float("nan"))


def peak_share(technique: str, device_name: str, flop_per_s: float) -> str:
    """Achieved FLOP/s against the dense peak of the products the cell runs: FP8's for the FP8
    precisions, 16-bit's for the rest (fp32's products run below it)."""
    fp8 = str(parse(technique).quantize).startswith("fp8")
    peak = peak_flops(device_name, PEAK_FP8 if fp8 else PEAK_16BIT)
    return f"{flop_per_s / peak:.1%} of {'FP8' if fp8 else '16-bit'}"


def floor_table(summary: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each cell beside the task's original configuration (fp32, batch 16, max_length)."""
    tokens = trials[trials["status"] == "ok"].groupby("cell_id")["tokens_per_s"].mean()
    summary = single_device(summary[summary["j_per_1k_samples_mean"].notna()])
    rows = []
    for task, cells in summary.groupby("task", sort=False):
        base = original_cell(cells)
        for _, cell in cells.iterrows():
            achieved = flop_per_token(cell.get("shortcut")) * tokens[cell["cell_id"]]
            ratio = half = float("nan")
            if base is not None:
                ratio, half = energy_ratio(cell, base)
            rows.append(
                {
                    "task": task,
                    "technique": cell["technique"],
                    "batch": cell["batch_size"],
                    "padding": cell["padding"],
                    "J/1k": _mean_ci(cell, "j_per_1k_samples"),
                    "J/1k above idle": f"{cell['dynamic_j_per_1k_samples_mean']:.2f}",
                    "samples/s": f"{cell['samples_per_s_mean']:,.0f}",
                    "metric": f"{cell['metric']} {cell['metric_value']:.4f}",
                    "metric change": (
                        cell["metric_value"] - base["metric_value"] if base is not None else None
                    ),
                    "original / this": (
                        f"{1 / ratio:.1f}× (this {ratio:.3f} ± {half:.3f})"
                        if base is not None
                        else "no original cell"
                    ),
                    "dense peak": peak_share(cell["technique"], cell["device_name"], achieved),
                    "kernel check": kernel_check_text(cell),
                    "prepare s": round(cell["prepare_s"], 1),
                    "peak MB": round(cell["peak_memory_mb"])
                    if pd.notna(cell.get("peak_memory_mb"))
                    else None,
                }
            )
    return pd.DataFrame(rows)


SPLIT_KINDS = (
    "matrix products",
    "attention",
    "element-wise and other",
    "layer norm",
    "no kernel running",
)


def attempt_rows(
    run: str, summary: pd.DataFrame, trials: pd.DataFrame, kernels: dict[str, dict], task: str
) -> list:
    """One run's cells of ``task``, each against the original configuration measured in that
    run, with the share of its windows' time by kernel kind and with no kernel running
    (``kernels``: cell id to its kernel record; the GPU's busy time where a record has no
    window split)."""
    cells = single_device(summary[(summary["task"] == task)])
    cells = cells[cells["j_per_1k_samples_mean"].notna()]
    base = original_cell(cells)
    rows = []
    for _, cell in cells.iterrows():
        record = kernels.get(cell["cell_id"]) or {}
        windows = trials[(trials["cell_id"] == cell["cell_id"]) & (trials["status"] == "ok")]
        split = window_split(record, windows) or kernel_split(record)
        row = {
            "run": run,
            "device": str(cell["device_name"]).replace("NVIDIA ", ""),
            "technique": cell["technique"],
            "batch": cell["batch_size"],
            "J/1k": _mean_ci(cell, "j_per_1k_samples"),
            "above idle": round(float(cell["dynamic_j_per_1k_samples_mean"]), 2),
            "original / this": "no original in the run",
            "metric change": "",
        }
        if base is not None:
            ratio, _ = energy_ratio(cell, base)
            row["original / this"] = f"{1 / ratio:.1f}×"
            row["metric change"] = f"{cell['metric_value'] - base['metric_value']:+.4f}"
        row.update({kind: f"{split[kind]:.0%}" if kind in split else "" for kind in SPLIT_KINDS})
        row["j_per_1k"] = float(cell["j_per_1k_samples_mean"])
        rows.append(row)
    return rows


def attempts_table(rows: list[dict]) -> pd.DataFrame:
    """Every attempt of every run, cheapest first (``attempt_rows``)."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values("j_per_1k").drop(columns="j_per_1k").reset_index(drop=True)


def paired_rows(trials: pd.DataFrame, task: str, reference: tuple[str, int]) -> pd.DataFrame:
    """Each of one run's ``task`` cells against the ``reference`` cell (technique, batch) of the
    same run: J per 1000 samples, paired by round, with 95% intervals."""
    ok = trials[(trials["status"] == "ok") & (trials["task"] == task)]
    per_cell = {
        key: group.sort_values("trial")["j_per_1k_samples"].to_numpy()
        for key, group in ok.groupby(["technique", "batch_size"], sort=False)
    }
    if reference not in per_cell:
        raise ValueError(f"no {task} cell {reference[0]} at batch {reference[1]} in these trials")
    rows = []
    for (technique, batch), values in per_cell.items():
        r = paired_log_ratio(values, per_cell[reference])
        rows.append(
            {
                "technique": technique,
                "batch": batch,
                "J/1k": round(float(values.mean()), 3),
                "this / reference": f"{r.ratio:.3g} [{r.low:.3g}, {r.high:.3g}]",
                "reference / this": f"{1 / r.ratio:.3g}× [{1 / r.high:.3g}, {1 / r.low:.3g}]",
                "rounds": r.n,
            }
        )
    return pd.DataFrame(rows).sort_values("J/1k").reset_index(drop=True)


def every_task_rows(trials: pd.DataFrame, original: tuple[str, int] = ("fp32", 16)) -> pd.DataFrame:
    """Each task's cells against that task's ``original`` cell of the same run, paired by
    round, with the metric's change: one configuration carried to every task, as measured."""
    ok = trials[trials["status"] == "ok"]
    rows = []
    for task in sorted(ok["task"].unique()):
        on_task = ok[ok["task"] == task]
        base = on_task[
            (on_task["technique"] == original[0]) & (on_task["batch_size"] == original[1])
        ]
        if base.empty:
            continue
        paired = paired_rows(trials, task, original)
        metrics = on_task.groupby(["technique", "batch_size"])["metric_value"].first()
        base_metric = float(base["metric_value"].iloc[0])
        for _, row in paired.iterrows():
            if (row["technique"], row["batch"]) == original:
                continue
            change = float(metrics[(row["technique"], row["batch"])]) - base_metric
            rows.append(
                {
                    "task": task,
                    "technique": row["technique"],
                    "batch": row["batch"],
                    "J/1k": row["J/1k"],
                    "original / this": row["reference / this"],
                    "metric": str(base["metric"].iloc[0]),
                    "original's": round(base_metric, 4),
                    "change": f"{change:+.4f}",
                }
            )
    return pd.DataFrame(rows)


def cpu_estimate_j_per_1k(cell, cpu_power_per_core_w: float) -> float:
    """CPU energy per 1000 samples where no counter reads it: the cores the cell kept busy (a
    forward-only cell's one Python thread where it was not measured) times a stated power per
    core, an estimate (CodeCarbon's way)."""
    busy = cell["cpu_cores_busy_mean"] if pd.notna(cell["cpu_cores_busy_mean"]) else 1.0
    return 1000 * busy * cpu_power_per_core_w / cell["samples_per_s_mean"]


def end_to_end_table(summary: pd.DataFrame, cpu_power_per_core_w: float = 7.5) -> pd.DataFrame:
    """End-to-end cells (raw text to labels) beside the pipeline at its defaults and the best
    forward-only cell of the same records: J per 1000 samples, speed, CPU use, an estimate of
    CPU energy (``cpu_estimate_j_per_1k``) and the ratios without and with it."""
    cells = summary[summary["task"].notna() & summary["j_per_1k_samples_mean"].notna()]
    cells = single_device(cells)
    if cells["task"].nunique() > 1:
        raise ValueError("end_to_end_table compares the cells of one task: select it first")
    e2e = cells[cells["scope"] == "end_to_end"]
    model = cells[cells["scope"] == "model"]
    default = e2e[(e2e["execution"] == "pipeline") & (e2e["technique"] == "pipeline")]
    default = default[default["batch_size"] == 1]
    best_model = model.loc[model["j_per_1k_samples_mean"].idxmin()] if not model.empty else None
    rows = []
    for _, cell in pd.concat([e2e, model]).iterrows():
        row = {
            "scope": cell["scope"],
            "technique": cell["technique"],
            "batch": cell["batch_size"],
            "padding": cell["padding"],
            "GPU J/1k": _mean_ci(cell, "j_per_1k_samples"),
            "above idle": f"{cell['dynamic_j_per_1k_samples_mean']:.2f}",
            "samples/s": f"{cell['samples_per_s_mean']:,.0f}",
            "CPU cores busy": (
                f"{cell['cpu_cores_busy_mean']:.2f}"
                if pd.notna(cell["cpu_cores_busy_mean"])
                else ""
            ),
            "accuracy": f"{cell['metric_value']:.4f}",
            "accuracy from": (
                cell["metric_source"]
                if isinstance(cell.get("metric_source"), str)
                else "forward pass"
            ),
        }
        if not default.empty:
            base = default.iloc[0]
            r, h = energy_ratio(base, cell)
            row["pipeline defaults / this"] = f"{r:.1f} ± {h:.1f}"
        cpu = cpu_estimate_j_per_1k(cell, cpu_power_per_core_w)
        row["CPU J/1k (estimate)"] = f"{cpu:.2f}"
        if best_model is not None:
            r, h = energy_ratio(cell, best_model)
            row["this / best forward"] = f"{r:.2f} ± {h:.2f}"
            best_cpu = cpu_estimate_j_per_1k(best_model, cpu_power_per_core_w)
            with_cpu = (cell["j_per_1k_samples_mean"] + cpu) / (
                best_model["j_per_1k_samples_mean"] + best_cpu
            )
            row["with CPU estimate"] = f"{with_cpu:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)
