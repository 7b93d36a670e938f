"""Every attempt at the energy floor, from the committed records of each run: one task's cells
(SST-2 by default), cheapest first, each against the original configuration measured in the
same run, with the windows' time split by kind of kernel and idle (the cell's profiled pass).

    python scripts/floor_attempts.py [--task sst2] [--out reports/floor-attempts.md]
        [--paired floor-fp8 --reference bf16+varlen_mem+graphs+cls_last+epilogue:1024]

Runs are the folders ``reports/floor*`` with results; ratios compare within a run only (hosts
and days differ between runs). ``--paired RUN`` adds that run's cells against the original
configuration and a reference cell, paired by round, with 95% intervals, every task's cells
against that task's original, and draws its ``figures/floor.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effbert import figures, floor, results, stats, tables


def run_rows(reports_dir: Path, task: str) -> list[dict]:
    """``floor.attempt_rows`` of the run whose records are under ``reports_dir``."""
    results_dir = reports_dir / "results"
    trials = results.read_results(results_dir)
    summary = stats.summarize(trials)
    cells_dir = results_dir / "cells"
    kernels = {
        cell_id: results.cell_record(cells_dir, cell_id).get("kernels") or {}
        for cell_id in summary["cell_id"]
    }
    return floor.attempt_rows(reports_dir.name, summary, trials, kernels, task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--reports", default="reports", help="folder of the floor* runs")
    parser.add_argument("--out", help="also write the tables here, as Markdown")
    parser.add_argument("--paired", help="a run (folder name) to compare cell by cell")
    parser.add_argument("--reference", help="TECHNIQUE:BATCH, the paired run's reference cell")
    args = parser.parse_args()
    runs = sorted(p for p in Path(args.reports).glob("floor*") if (p / "results").is_dir())
    if not runs:
        raise SystemExit(f"no floor* run with results under {args.reports}")
    rows = [row for run in runs for row in run_rows(run, args.task)]
    table = floor.attempts_table(rows)
    text = tables.markdown_table(table)
    if args.paired:
        text += "\n\n" + paired_text(Path(args.reports) / args.paired, args.task, args.reference)
    print(text)
    if args.out:
        command = " ".join(["python", "scripts/floor_attempts.py", *sys.argv[1:]])
        header = (
            f"# Every attempt at the energy floor ({args.task})\n\n"
            f"Made by `{command}` from the records of {len(runs)} runs. Ratios compare within "
            "a run. The last five columns split the energy windows' time: each kind of kernel "
            "(from the cell's profiled pass) and the time with no kernel running; blank: not "
            "among the pass's 12 largest kernels, or not recorded.\n\n"
        )
        results.write_text_atomic(Path(args.out), header + text + "\n")


def paired_text(run: Path, task: str, reference: str | None) -> str:
    """``run``'s cells against its original configuration and ``reference``, as Markdown."""
    trials = results.read_results(run / "results")
    references = [("fp32", 16)]
    if reference:
        technique, _, batch = reference.rpartition(":")
        if not technique or not batch.isdigit():
            raise SystemExit(f"--reference {reference!r}: write TECHNIQUE:BATCH")
        references.append((technique, int(batch)))
    figure = figures.floor(stats.summarize(trials), task)
    (run / "figures").mkdir(exist_ok=True)
    figure.savefig(run / "figures" / "floor.png", dpi=120)
    parts = []
    for technique, batch in references:
        try:
            table = floor.paired_rows(trials, task, (technique, batch))
        except ValueError as err:
            raise SystemExit(f"--paired {run.name}: {err}") from None
        title = f"## {run.name}: each cell against {technique} at batch {batch}, paired by round"
        parts.append(title + "\n\n" + tables.markdown_table(table))
    every_task = floor.every_task_rows(trials)
    title = f"## {run.name}: every task, each cell against that task's original, paired by round"
    parts.append(title + "\n\n" + tables.markdown_table(every_task))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
