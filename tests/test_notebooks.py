"""Executing the notebooks is itself a test: the whole study on the smoke profile."""

import pandas as pd
import pytest
import torch

from effbert import models, plots, runner

ON_GPU_ONLY = {"autocast_fp16", "fp16", "fp16_flash"}


@pytest.mark.notebooks
def test_smoke_profile_runs_every_notebook(tmp_path):
    runs = runner.run_profile("smoke", tmp_path)
    assert [r.status for r in runs] == ["ok"] * len(runs), [(r.stem, r.message) for r in runs]
    assert len(runs) == len(runner.notebook_paths())
    index = (tmp_path / "index.html").read_text()
    for run in runs:
        assert (tmp_path / "executed" / f"{run.stem}.ipynb").exists()
        assert (tmp_path / f"{run.stem}.html").stat().st_size > 1000
        assert f"{run.stem}.html" in index
    for name in plots.FIGURES:
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000

    results = pd.read_csv(tmp_path / "results" / "results.csv")
    assert set(results["profile"]) == {"smoke"}
    assert set(results["task"]) == {"sst2", "mrpc", "stsb", "mnli_m"}
    ok = results[results["status"] == "ok"]
    skipped = results[results["status"] == "skipped"]
    if torch.cuda.is_available():
        assert set(ok["technique"]) == set(models.TECHNIQUES) and skipped.empty
    else:
        assert set(ok["technique"]) == set(models.TECHNIQUES) - ON_GPU_ONLY
        assert set(skipped["technique"]) == ON_GPU_ONLY
    assert (ok["time_s"] > 0).all() and ok["metric_value"].notna().all()
    assert ok[["device", "torch", "transformers", "git_sha"]].notna().all().all()

    again = runner.run_profile("smoke", tmp_path, only=["20"])
    assert [r.status for r in again if r.stem.startswith("20")] == ["ok"]
    rerun = pd.read_csv(tmp_path / "results" / "results.csv")
    assert len(rerun) == len(results)
    assert not rerun.duplicated(["cell_id", "trial"]).any()
