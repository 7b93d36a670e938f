"""What a reader sees first: ``index.html``, the terminal's closing summary, ``summary`` tables."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from effbert import config as cfg
from effbert import results

FORMATS = ("markdown", "csv", "json")
LANDING_FIGURES = ("tradeoff", "energy")
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}.sub{color:#555;margin-top:0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}
.ok{color:#17692b}.failed,.interrupted{color:#b00020;font-weight:bold}.notrun{color:#777}
pre{white-space:pre-wrap;background:#fafafa;padding:.5rem;border:1px solid #eee}
"""


def profile_summary(reports_dir: str | Path, profile: str) -> pd.DataFrame | None:
    """The per-cell summary of a profile's records, or None where nothing was measured."""
    paths = cfg.reports_paths(reports_dir)
    if not (paths["results"] / results.RESULTS_CSV).exists():
        return None
    trials = results.read_results(paths["results"])
    trials = trials[trials["profile"] == profile]
    summary = results.summarize(trials)
    return None if summary.empty else summary


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return f'<div class="scroll">{frame.to_html(index=index, border=0, na_rep="")}</div>'


def write_index(root: Path, runs, profile: str, baseline: str = "fp32") -> Path:
    """The landing page: headline table and figures, provenance, then each notebook's status."""
    from effbert.runner import write_text_atomic

    root = Path(root)
    summary = profile_summary(root, profile)
    parts = [
        f"<h1>effbert · profile {html.escape(profile)}</h1>",
        '<p class="sub">Which inference techniques make DistilBERT cheaper in energy on GLUE, and '
        f"at what cost in accuracy. Page written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
        "</p>",
    ]
    if summary is None:
        parts.append("<p>No measured cell yet: the measurement notebooks have not finished.</p>")
    else:
        head = results.headline(summary, baseline)
        parts += [
            f"<h2>Headline: {html.escape(str(head.columns.name))} per sample</h2>",
            "<p>Mean over trials with its 95% interval, smallest batch size of the profile; the "
            "task metric's change is in the trade-off figure and notebook 90.</p>",
            _table(head.rename_axis(columns=None)),
        ]
        measured = (summary["energy_source"].fillna("none") != "none").any()
        if not measured:
            parts.append("<p>No energy was measured in this run (energy: none), so no figure.</p>")
        for name in LANDING_FIGURES if measured else ():
            if (root / "figures" / f"{name}.png").exists():
                parts.append(f'<p><img src="figures/{name}.png" alt="{name} figure"></p>')
        trials = results.read_results(cfg.reports_paths(root)["results"])
        provenance = results.provenance_sheet(trials[trials["profile"] == profile])
        parts += ["<h2>Provenance</h2>", _table(provenance)]
    items = []
    for run in runs:
        css = run.status.split(" ")[0].replace("not", "notrun")
        shown = run.status.replace("(earlier run)", "(from an earlier run)")
        name = html.escape(run.stem)
        link = f'<a href="{name}.html">{name}</a>' if (root / f"{run.stem}.html").exists() else name
        message = f"<pre>{html.escape(run.message)}</pre>" if run.message else ""
        items.append(f'<li>{link} — <span class="{css}">{html.escape(shown)}</span>{message}</li>')
    parts += [
        "<h2>Notebooks</h2>",
        f"<ol>{''.join(items)}</ol>",
        '<p>Records: <a href="results/results.csv">results.csv</a> (one row per trial), '
        '<a href="results/summary.csv">summary.csv</a> (one row per cell); executed notebooks '
        'in <a href="executed/">executed/</a>. Library messages go to <code>logs/</code> beside '
        "this page on the machine that ran it (published reports leave them out).</p>",
    ]
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>effbert · {html.escape(profile)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    path = root / "index.html"
    write_text_atomic(path, page)
    return path


def closing_summary(root: Path, runs, profile: str, baseline: str = "fp32") -> str:
    """What the terminal shows after a run: headline, failed notebooks, where the report is."""
    lines = []
    summary = profile_summary(root, profile)
    if summary is not None:
        head = results.headline(summary, baseline)
        lines += [f"{head.columns.name}, per sample:", head.to_string(), ""]
    failed = [r for r in runs if r.status.startswith(("failed", "interrupted"))]
    for run in failed:
        lines.append(f"FAILED {run.stem}: {run.message}")
    lines.append(f"report: {cfg.project_relative(Path(root) / 'index.html')}")
    return "\n".join(lines)


def summary_table(
    profile: str, reports_dir: str | Path, task: str | None = None, fmt: str = "markdown"
) -> str:
    """Per task and technique: energy and speed relative to the baseline, the metric's change.

    Raises:
        FileNotFoundError: the reports folder or its records do not exist (message says so).
    """
    root = cfg.resolve_path(reports_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"reports folder {reports_dir} does not exist")
    summary = profile_summary(root, profile)
    if summary is None:
        raise FileNotFoundError(
            f"no measured cell of profile {profile!r} in {reports_dir}: run "
            f"`python -m effbert run --profile {profile} --reports-dir {reports_dir}` first"
        )
    if fmt == "csv":
        return _comparison(summary, task).to_csv(index=False)
    if fmt == "json":
        return _comparison(summary, task).to_json(orient="records", indent=1)
    return comparison_markdown(summary, task)


def _comparison(summary: pd.DataFrame, task: str | None) -> pd.DataFrame:
    table = results.comparison(summary)
    return table[table["task"] == task] if task else table


def comparison_markdown(summary: pd.DataFrame, task: str | None = None) -> str:
    """The comparison as a Markdown table narrow enough for a page: each cell's energy with its
    interval, its ratios to the baseline and its metric change."""
    table = _comparison(summary, task)
    energy = [
        "" if pd.isna(m) else f"{m:.1f} ± {c:.1f}" if pd.notna(c) else f"{m:.1f}"
        for m, c in zip(table["j_per_1k_samples_mean"], table["j_per_1k_samples_ci95"], strict=True)
    ]
    columns = {
        "task": "task",
        "technique": "technique",
        "batch_size": "batch",
        "padding": "padding",
        "energy": "energy J/1k (±95%)",
        "energy_vs_base": "energy / fp32",
        "speedup_vs_base": "speed / fp32",
        "metric": "metric",
        "metric_value": "value",
        "metric_change": "change vs fp32",
        "cv_flag": "noisy",
    }
    shown = table.assign(energy=energy)[list(columns)].rename(columns=columns)
    return results.markdown_table(shown)


def claims_markdown(summary: pd.DataFrame, metric_tolerance: float = 0.005) -> str:
    """The earlier study's claims judged (:func:`effbert.results.claims`) as a Markdown table:
    one row per claim, its verdict over all tasks in bold, the geometric mean of the energy
    ratios, the worst (smallest) metric change, and each task's ratio with its 95% interval."""
    table = results.claims(summary, metric_tolerance)
    if table.empty:
        return "No measured cell: nothing to judge."
    overall = table[table["task"] == results.ALL_TASKS]
    settings = sorted({s for s in overall["setting"] if s}) or ["none measured"]
    rows = []
    for claim in overall["claim"]:
        tasks = table[(table["claim"] == claim) & (table["task"] != results.ALL_TASKS)]
        [total] = overall[overall["claim"] == claim].to_dict("records")
        mixed = total["verdict"] not in results.VERDICTS
        varied = tasks.loc[tasks["verdict"] != results.NOT_MEASURED, "compared"].nunique() > 1
        rows.append(
            {
                "claim": claim,
                "compared": total["compared"],
                "all tasks": f"**{total['verdict']}**",
                "ratio (geo. mean)": _number(total["energy_ratio"]),
                "worst metric change": results.signed_change(total["metric_change"]),
                "per task: ratio [95%]": " · ".join(
                    _task_ratio(row, mixed, varied) for row in tasks.to_dict("records")
                )
                or "no task has these cells",
            }
        )
    intro = (
        f"The earlier study's claims at its setting ({'; '.join(settings)}): energy per sample "
        "of the first technique over the second's (mean over trials, 95% interval; claim 4 "
        "against the cheapest other preset of each task). A claim holds where the interval lies "
        "on its side of 1 (for Flash Attention, with the task metric at most "
        f"{metric_tolerance} lower), does not hold where it lies on the other side (or the "
        "metric drops further), and is not resolved where the interval includes 1."
    )
    return intro + "\n\n" + results.markdown_table(pd.DataFrame(rows))


def _number(value, spec: str = ".2f") -> str:
    return "" if pd.isna(value) else format(value, spec)


def _task_ratio(row: dict, verdict: bool, runner_up: bool) -> str:
    """``sst2 2.52 [2.37, 2.67]``, with the task's verdict or runner-up where they vary."""
    if row["verdict"] == results.NOT_MEASURED:
        return f"{row['task']} not measured"
    text = f"{row['task']} {_number(row['energy_ratio'])}"
    if pd.notna(row["ratio_ci95_low"]):
        text += f" [{_number(row['ratio_ci95_low'])}, {_number(row['ratio_ci95_high'])}]"
    if runner_up:
        text += f" vs {row['compared'].split(' / ')[-1]}"
    return text + (f" {row['verdict']}" if verdict else "")


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


# Dense 16-bit tensor-core peak (FLOP/s), from the vendors' data sheets.
PEAK_16BIT = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def peak_flops(device_name: str) -> float:
    return next((v for k, v in PEAK_16BIT.items() if k in str(device_name)), float("nan"))


# Kernel name substrings, in the order they are tried, for the split of a cell's GPU time.
KERNEL_KINDS = (
    ("activation quantization", ("amax", "quantize")),
    ("attention", ("flash", "fmha", "attention", "cudnn")),
    ("matrix products", ("gemm", "sm90_", "cutlass", "_mm", "xmma", "nvjet", "matmul")),
    ("layer norm", ("layer_norm", "layernorm", "norm")),
    ("copies", ("memcpy", "memset", "copy")),
)


def kernel_split(kernels: dict) -> dict[str, float]:
    """Shares of a cell's GPU time by kind, from its recorded top kernels (the rest: other)."""
    split: dict[str, float] = {}
    if not kernels.get("top"):
        return split  # no kernel record (a CPU cell, or kernel_check off)
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


def window_split(kernels: dict, windows: pd.DataFrame) -> dict[str, float]:
    """Shares of the energy windows' wall time: each kind of kernel (``kernel_split`` scaled by
    the share in which a kernel ran) and the time with no kernel running. The busy time of one
    pass comes from the profiled pass (``busy_ms``), the time per pass from the windows; empty
    where the record has no busy time (kernel check off, or recorded before it was kept)."""
    busy_ms = kernels.get("busy_ms")
    if not busy_ms or windows.empty:
        return {}
    pass_ms = (windows["time_s"] / windows["passes"]).mean() * 1e3
    busy = min(busy_ms / pass_ms, 1.0)
    split = {kind: round(float(share * busy), 3) for kind, share in kernel_split(kernels).items()}
    return {**split, "no kernel running": round(float(1 - busy), 3)}


def _mean_ci(cell, measure: str) -> str:
    return f"{cell[measure + '_mean']:.2f} ± {cell[measure + '_ci95']:.2f}"


def _kernel_check(cell) -> str:
    if isinstance(cell["fallback"], str):
        return cell["fallback"]
    return "ok" if cell.get("kernels_checked") is True else "not checked"


def floor_table(summary: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each cell beside the task's original configuration (fp32, batch 16, max_length)."""
    tokens = trials[trials["status"] == "ok"].groupby("cell_id")["tokens_per_s"].mean()
    summary = results.single_device(summary[summary["j_per_1k_samples_mean"].notna()])
    rows = []
    for task, cells in summary.groupby("task", sort=False):
        base = results.original_cell(cells)
        for _, cell in cells.iterrows():
            achieved = flop_per_token(cell.get("shortcut")) * tokens[cell["cell_id"]]
            ratio = half = float("nan")
            if base is not None:
                ratio, half = results.energy_ratio(cell, base)
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
                    "16-bit peak": f"{achieved / peak_flops(cell['device_name']):.1%}",
                    "kernel check": _kernel_check(cell),
                    "prepare s": round(cell["prepare_s"], 1),
                    "peak MB": round(cell["peak_memory_mb"])
                    if pd.notna(cell.get("peak_memory_mb"))
                    else None,
                }
            )
    return pd.DataFrame(rows)


def end_to_end_table(summary: pd.DataFrame) -> pd.DataFrame:
    """End-to-end cells (raw text to labels) beside the pipeline at its defaults and the best
    forward-only cell of the same records: J per 1000 samples, speed, CPU use and ratios."""
    cells = summary[summary["task"].notna() & summary["j_per_1k_samples_mean"].notna()]
    cells = results.single_device(cells)
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
            r, h = results.energy_ratio(base, cell)
            row["pipeline defaults / this"] = f"{r:.1f} ± {h:.1f}"
        if best_model is not None:
            r, h = results.energy_ratio(cell, best_model)
            row["this / best forward"] = f"{r:.2f} ± {h:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


FLOOR_README_COLUMNS = [
    "technique",
    "batch",
    "padding",
    "J/1k",
    "J/1k above idle",
    "samples/s",
    "metric",
    "metric change",
    "original / this",
    "16-bit peak",
    "kernel check",
]


def floor_markdown(reports_dir: str | Path) -> str:
    """The README's energy-floor table, from a floor profile's committed records."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"])
    table = floor_table(results.summarize(trials), trials)
    return results.markdown_table(table[FLOOR_README_COLUMNS], digits=3)


def end_to_end_markdown(reports_dir: str | Path) -> str:
    """The README's end-to-end table, from the e2e profile's committed records."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"])
    return results.markdown_table(end_to_end_table(results.summarize(trials)))


def headline_markdown(summary: pd.DataFrame, metric_tolerance: float = 0.02) -> str:
    """Per task: the cheapest configuration whose metric stays within ``metric_tolerance`` of
    the original configuration's (fp32, batch 16, padded to max_length), both from the same
    records, with the energy ratio and its 95% interval."""
    cells = summary[(summary["scope"].fillna("model") == "model")]
    cells = results.single_device(cells[cells["j_per_1k_samples_mean"].notna()])
    rows = []
    for task, group in cells.groupby("task", sort=False):
        base = results.original_cell(group)
        if base is None:
            continue
        kept = group[group["metric_value"] >= base["metric_value"] - metric_tolerance]
        if kept.empty:  # no metric to compare (NaN): the cheapest cell, its metric shown
            kept = group
        best = kept.loc[kept["j_per_1k_samples_mean"].idxmin()]
        ratio, half = results.energy_ratio(base, best)
        rows.append(
            {
                "task": task,
                "original (fp32, batch 16, padded) J/1k": _mean_ci(base, "j_per_1k_samples"),
                "best configuration": f"{best['technique']}, batch {best['batch_size']}, "
                f"{best['padding']}",
                "best J/1k": _mean_ci(best, "j_per_1k_samples"),
                "original / best": f"{ratio:.1f}× ± {half:.1f}",
                "metric": f"{base['metric']} {base['metric_value']:.4f} → "
                f"{best['metric_value']:.4f}",
            }
        )
    if not rows:
        return (
            "No task has the original configuration (fp32, batch 16, max_length) measured with "
            "energy."
        )
    return results.markdown_table(pd.DataFrame(rows))


def _read_run(path: Path) -> dict:
    """A run record (``workers.write_run``), reduced to what its GPU time needs."""
    try:
        run = json.loads(path.read_text())
        return {
            "name": path.name,
            "profile": run.get("profile"),
            "kind": run.get("kind", "measure"),  # records from before kinds were all measuring
            "wall_s": float(run["wall_s"]),
            "worker_wall_s": [float(w["wall_s"]) for w in run["workers"]],
            "gpus": {w["cuda_visible_devices"] for w in run["workers"]},
            "tasks": [t for w in run["workers"] for t in w["tasks"]],
            "in_process": any(w.get("index", 0) is None for w in run["workers"]),
            "notebooks": {n["stem"]: float(n["wall_s"]) for n in run.get("notebooks", [])},
            "gpu_count": int(run.get("gpus", 0)),
            "device_name": run.get("device_name"),
            "cells_measured": int(run.get("cells_measured", 0)),
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"run record {cfg.project_relative(path)} is damaged ({err!r}): restore it "
            "(git checkout) or delete it, and its run's wall time goes with it"
        ) from err


def run_records(reports_dir: str | Path, profile: str) -> list[dict]:
    """A profile's run records (``results/runs``), oldest first.

    Raises:
        ValueError: a run record is damaged (the message names it and the fix).
    """
    runs_dir = cfg.reports_paths(reports_dir)["results"] / "runs"
    runs = [_read_run(path) for path in sorted(runs_dir.glob(f"{profile}-*.json"))]
    return [r for r in runs if r["profile"] in (profile, None)]  # not "floor-packed" for "floor"


def _spread_runs(records: list[dict]) -> list[dict]:
    """The measuring runs among ``records`` that spread cells over worker processes."""
    return [r for r in records if r["kind"] == "measure" and not r["in_process"]]


def _whole_runs(records: list[dict]) -> list[dict]:
    """The whole runs (``effbert run``) among ``records`` that measured cells."""
    return [r for r in records if r["kind"] == "reproduce" and r["cells_measured"]]


def worker_runs(reports_dir: str | Path, profile: str) -> list[dict]:
    """A profile's measuring runs spread over worker processes, oldest first: each one's wall
    time, its workers' wall times, GPUs and tasks."""
    return _spread_runs(run_records(reports_dir, profile))


def gpu_time_markdown(reports_dir: str | Path, profile: str) -> str:
    """The GPU time a profile's records took: whole runs of its notebooks that measured or
    fine-tuned (their wall time per notebook, on how many GPUs), else the wall time of its
    worker runs and the sum of their workers' wall times. Empty where no run is recorded."""
    records = run_records(reports_dir, profile)
    whole = _whole_runs(records)
    if whole:
        return _reproduce_sentence(whole)
    runs = _spread_runs(records)
    if not runs:
        return ""
    wall_s = sum(r["wall_s"] for r in runs)
    gpu_s = sum(sum(r["worker_wall_s"]) for r in runs)
    gpus = set().union(*(r["gpus"] for r in runs))
    parts = ", ".join(f"{r['wall_s']:.0f} s ({', '.join(r['tasks'])})" for r in runs)
    return (
        f"Measuring took {wall_s:.0f} s of wall time ({wall_s / 60:.1f} min) in {len(runs)} "
        f"run{'s' if len(runs) > 1 else ''} of one worker per GPU on {len(gpus)} GPU"
        f"{'s' if len(gpus) > 1 else ''}: {parts}. The workers' wall times add up to "
        f"{gpu_s:.0f} s ({gpu_s / 60:.1f} GPU-minutes): about what one GPU would take for the "
        f"same cells, each worker's start included."
    )


def _reproduce_sentence(runs: list[dict]) -> str:
    wall_s = sum(r["wall_s"] for r in runs)
    gpu_count = max(r["gpu_count"] for r in runs)
    names = sorted({r["device_name"] for r in runs if r["device_name"]})
    notebooks: dict[str, float] = {}
    for r in runs:
        for stem, s in r["notebooks"].items():
            notebooks[stem] = notebooks.get(stem, 0.0) + s
    steps = ", ".join(f"{stem} {s:.0f} s" for stem, s in notebooks.items())
    times = f"in {len(runs)} runs" if len(runs) > 1 else "in one run"
    cells = sum(r["cells_measured"] for r in runs)
    return (
        f"`effbert run` measured {cells} cells {times} and took {wall_s:.0f} s of "
        f"wall time ({wall_s / 60:.1f} min) on {gpu_count} × {', '.join(names)} "
        f"({gpu_count * wall_s / 60:.1f} GPU-minutes held): {steps}."
    )


def time_split(reports_dir: str | Path, profile: str) -> pd.DataFrame:
    """Where a whole run's GPU time went (``effbert run`` that measured, its run record; the
    wall time times its GPUs): fine-tuning, then per phase of a cell summed over cells
    (preparing, compiling included; warming up; the energy windows; latency, kernel and
    metric passes after them), and the rest (notebook kernels starting, loading, idle power,
    HTML, a GPU waiting for another's worker). Empty without such a run or where cells lack
    phase times (recorded before they were kept)."""
    from effbert.models import COMPILED_EXECUTIONS

    records = run_records(reports_dir, profile)
    whole = _whole_runs(records)
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    cells = trials[trials["status"] == "ok"].groupby("cell_id")
    if not whole or cells.ngroups == 0 or cells["finish_s"].first().isna().any():
        return pd.DataFrame()
    gpu_s = sum(r["wall_s"] * max(1, r["gpu_count"]) for r in whole)
    first = cells.first()
    compiled = first["execution"].isin(list(COMPILED_EXECUTIONS))
    finetune_s = sum(
        r["wall_s"] * max(1, len(r["gpus"])) for r in records if r["kind"] == "finetune"
    )
    parts = {
        "fine-tuning the checkpoints": finetune_s,
        "preparing cells: compiled techniques": first.loc[compiled, "prepare_s"].sum(),
        "preparing cells: the others": first.loc[~compiled, "prepare_s"].sum(),
        "warming up": first["warmup_s"].sum(),
        "energy windows": cells["time_s"].sum().sum(),
        "latency, kernel and metric passes": first["finish_s"].sum(),
    }
    rest = "the rest (notebooks starting, loading, idle power, HTML, waiting)"
    parts[rest] = gpu_s - sum(parts.values())
    table = pd.DataFrame({"part": list(parts), "gpu_time_s": list(parts.values())})
    table["share"] = (table["gpu_time_s"] / gpu_s).round(3)
    table["gpu_time_s"] = table["gpu_time_s"].round(0).astype(int)
    total = pd.DataFrame({"part": ["whole run"], "gpu_time_s": [round(gpu_s)], "share": [1.0]})
    return pd.concat([table, total], ignore_index=True)


def costliest_phases(reports_dir: str | Path, profile: str, n: int = 5) -> pd.DataFrame:
    """The cells whose preparing or after-window passes took longest (seconds)."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    first = trials[trials["status"] == "ok"].groupby("cell_id").first()
    rows = []
    for phase, column in (("preparing", "prepare_s"), ("after the windows", "finish_s")):
        for _, cell in first.nlargest(n, column).iterrows():
            rows.append(
                {
                    "phase": phase,
                    "task": cell["task"],
                    "technique": cell["technique"],
                    "batch_size": int(cell["batch_size"]),
                    "time_s": round(float(cell[column]), 1),
                }
            )
    return pd.DataFrame(rows)


def agreement(reports_dir: str | Path, other_dir: str | Path, profile: str) -> pd.DataFrame:
    """Cells recorded in both runs (same ``cell_id``: same inputs): J per 1k samples in each,
    their ratio, and whether the means differ by less than the combined 95% half-widths."""
    measure = "j_per_1k_samples"
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    a = results.summarize(trials)
    b = results.summarize(results.read_results(cfg.reports_paths(other_dir)["results"], profile))
    both = a.merge(b[["cell_id", f"{measure}_mean", f"{measure}_ci95"]], on="cell_id")
    mean_a, mean_b = both[f"{measure}_mean_x"], both[f"{measure}_mean_y"]
    allowed = np.hypot(both[f"{measure}_ci95_x"], both[f"{measure}_ci95_y"])
    gpu = trials.groupby("cell_id")["worker_gpu"].first()
    return pd.DataFrame(
        {
            "task": both["task"],
            "technique": both["technique"],
            "batch_size": both["batch_size"],
            "worker_gpu": both["cell_id"].map(gpu),
            "ratio": (mean_a / mean_b).round(3),
            "agrees": (mean_a - mean_b).abs() <= allowed,
        }
    )


def time_markdown(reports_dir: str | Path, profile: str) -> str:
    """A whole run's GPU time (``gpu_time_markdown``), where it went (``time_split``) and the
    costliest cells (``costliest_phases``), printed from its records."""
    split = time_split(reports_dir, profile)
    if split.empty:
        return gpu_time_markdown(reports_dir, profile)
    return "\n\n".join(
        [
            gpu_time_markdown(reports_dir, profile),
            results.markdown_table(split),
            "The costliest cells to prepare (compiling included) and to finish (latency, "
            "kernel and metric passes after the windows), in seconds:",
            results.markdown_table(costliest_phases(reports_dir, profile)),
        ]
    )


def agreement_markdown(reports_dir: str | Path, other_dir: str | Path, profile: str) -> str:
    """How many cells of one run agree with the same cells of another (``agreement``)."""
    table = agreement(reports_dir, other_dir, profile)
    if table.empty:
        return ""
    off = table[~table["agrees"]]
    listed = "; ".join(
        f"{r.task} {r.technique} (batch {r.batch_size}) {r.ratio:.2f}×" for r in off.itertuples()
    )
    workers = table.dropna(subset=["worker_gpu"]).groupby("worker_gpu")["agrees"]
    per_gpu = ", ".join(f"GPU {gpu} {int(a.sum())} of {len(a)}" for gpu, a in workers)
    return (
        f"{int(table['agrees'].sum())} of {len(table)} cells agree within their combined 95% "
        f"intervals"
        + (f" (by the GPU that measured them: {per_gpu})" if per_gpu else "")
        + f"; energy per sample here over there ranges from {table['ratio'].min():.2f}× "
        f"to {table['ratio'].max():.2f}× (median {table['ratio'].median():.2f}×)."
        + (f" Outside: {listed}." if listed else "")
    )


def published_markdown(reports_dir: str | Path, profile: str) -> str:
    """The README's account of a published run, all printed from its records: the headline,
    the original study's claims judged, the findings and, where workers ran, the GPU time."""
    trials = results.read_results(cfg.reports_paths(reports_dir)["results"], profile)
    summary = results.summarize(trials)
    parts = [
        headline_markdown(summary),
        claims_markdown(summary),
        results.findings(summary),
        gpu_time_markdown(reports_dir, profile),
    ]
    return "\n\n".join(p for p in parts if p)
