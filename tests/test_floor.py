"""The energy floor's tables, read from a committed run (reports/floor-fp8): every cell beside
the original measured in the same run, paired ratios by round, the kernel split and the peak
each cell's products are held against."""

import math
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from effbert import floor, results, stats

RUN = Path(__file__).resolve().parents[1] / "reports" / "floor-fp8"
BF16 = ("bf16+varlen_mem+graphs+cls_last+epilogue", 1024)


@pytest.fixture(scope="module")
def trials():
    return results.read_results(RUN / "results")


def test_paired_rows_are_log_ratios_by_round_against_the_reference(trials):
    table = floor.paired_rows(trials, "sst2", BF16)
    sst2 = trials[(trials["task"] == "sst2") & (trials["status"] == "ok")]

    def per_trial(technique, batch):
        cell = sst2[(sst2["technique"] == technique) & (sst2["batch_size"] == batch)]
        return cell.sort_values("trial")["j_per_1k_samples"].to_numpy()

    fp8 = per_trial("fp8s+varlen_mem+graphs+cls_last", 2048)
    expected = math.exp(np.mean(np.log(fp8 / per_trial(*BF16))))
    row = table[(table["technique"].str.startswith("fp8s")) & (table["batch"] == 2048)].iloc[0]
    assert row["this / reference"].startswith(f"{expected:.3g} [")
    assert row["rounds"] == len(fp8)
    reference = table[table["technique"] == BF16[0]].iloc[0]
    assert reference["this / reference"] == "1 [1, 1]"
    assert list(table["J/1k"]) == sorted(table["J/1k"])


def test_a_missing_reference_cell_is_named(trials):
    with pytest.raises(ValueError, match="no sst2 cell fp16 at batch 8"):
        floor.paired_rows(trials, "sst2", ("fp16", 8))


def test_attempts_hold_each_cell_against_the_original_of_its_own_run(trials):
    summary = stats.summarize(trials)
    kernels = {
        cell_id: results.cell_record(RUN / "results" / "cells", cell_id).get("kernels") or {}
        for cell_id in summary["cell_id"]
    }
    table = floor.attempts_table(floor.attempt_rows("floor-fp8", summary, trials, kernels, "sst2"))
    assert table["run"].eq("floor-fp8").all() and len(table) == 5
    assert table.iloc[-1]["technique"] == "fp32" and table.iloc[-1]["original / this"] == "1.0×"
    best = table.iloc[0]
    assert best["technique"].startswith("fp8s") and best["metric change"].startswith("+")
    # GELU and the FP8 casts are Triton kernels named after the products they feed: counted as
    # element-wise and layer norm work, so the products keep under half of the GPU time
    assert int(best["matrix products"].rstrip("%")) < 50
    assert int(best["element-wise and other"].rstrip("%")) > 10
    assert best["no kernel running"].endswith("%")  # the windows' idle share is recorded


def test_fp8_cells_are_held_against_the_fp8_peak():
    assert floor.peak_share("fp8s+varlen_mem+graphs+cls_last", "NVIDIA H200", 989e12) == (
        "50.0% of FP8"
    )
    assert floor.peak_share("bf16+varlen_mem", "NVIDIA H100 80GB HBM3", 989e12) == (
        "100.0% of 16-bit"
    )
    assert floor.peak_share("fp32", "a GPU with no data sheet", 1e12) == "nan% of 16-bit"


def test_the_attempts_script_writes_its_tables_and_the_paired_runs_figure(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    shutil.copytree(RUN, reports / "floor-fp8", ignore=shutil.ignore_patterns("figures"))
    out = tmp_path / "attempts.md"
    script = Path(__file__).resolve().parents[1] / "scripts" / "floor_attempts.py"
    argv = ["floor_attempts.py", "--reports", str(reports), "--out", str(out)]
    argv += ["--paired", "floor-fp8", "--reference", f"{BF16[0]}:{BF16[1]}"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    text = out.read_text()
    assert text.startswith("# Every attempt at the energy floor (sst2)")
    assert "each cell against fp32 at batch 16, paired by round" in text
    assert (reports / "floor-fp8" / "figures" / "floor.png").stat().st_size > 10_000
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "bf16-at-1024"])
    with pytest.raises(SystemExit, match="write TECHNIQUE:BATCH"):
        runpy.run_path(str(script), run_name="__main__")


def test_every_task_holds_its_cells_against_its_own_original(trials):
    table = floor.every_task_rows(trials)
    assert set(table["task"]) == {"sst2", "cola", "mrpc", "rte", "stsb", "wnli"}
    assert not (table["technique"] == "fp32").any()
    cola = table[table["task"] == "cola"].iloc[0]
    on_cola = trials[(trials["task"] == "cola") & (trials["status"] == "ok")]
    metric = on_cola.groupby("technique")["metric_value"].first()
    assert cola["metric"] == "matthews_correlation"
    assert cola["change"] == f"{metric[cola['technique']] - metric['fp32']:+.4f}"
    paired = floor.paired_rows(trials, "cola", ("fp32", 16))
    assert cola["original / this"] == paired.iloc[0]["reference / this"]
