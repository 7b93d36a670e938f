"""Executing the notebooks is itself a test: the whole study on the smoke profile."""

import json

import nbformat
import pandas as pd
import papermill as pm
import pytest
import torch

from effbert import config, runner, runs, techniques
from tests.conftest import smoke_with

ON_GPU_ONLY = {"autocast_fp16", "fp16", "fp16_flash"}
DRAWS = ("study.figure(", "plots.")


def outputs(path, output_type=None):
    nb = nbformat.read(path, as_version=4)
    return [
        o for c in nb.cells for o in c.get("outputs", []) if output_type in (None, o["output_type"])
    ]


@pytest.mark.notebooks
def test_smoke_profile_runs_every_notebook(tmp_path):
    notebook_runs = runner.run_profile("smoke", tmp_path)
    assert [r.status for r in notebook_runs] == ["ok"] * len(notebook_runs), [
        (r.stem, r.message) for r in notebook_runs
    ]
    assert len(notebook_runs) == len(runner.notebook_paths())
    index = (tmp_path / "index.html").read_text()
    for run in notebook_runs:
        executed = tmp_path / "executed" / f"{run.stem}.ipynb"
        assert (tmp_path / f"{run.stem}.html").stat().st_size > 1000
        assert f"{run.stem}.html" in index
        text = executed.read_text()
        assert "IProgress" not in text and "TqdmWarning" not in text, run.stem
        source = "".join(c.source for c in nbformat.read(executed, as_version=4).cells)
        if any(call in source for call in DRAWS):
            images = [o for o in outputs(executed) if "image/png" in o.get("data", {})]
            assert images, f"{run.stem} draws but holds no image/png output"
    # smoke measures no energy: only the figures of metrics and throughput have something to
    # draw, and no file says that there is nothing
    drawn = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert drawn == ["glue.png", "throughput.png"]
    assert all((tmp_path / "figures" / name).stat().st_size > 1000 for name in drawn)
    for run in notebook_runs:
        if "-teach-" in run.stem:  # a technique notebook: its figure and its kernel table
            shown = outputs(tmp_path / "executed" / f"{run.stem}.ipynb")
            assert any("image/png" in o.get("data", {}) for o in shown), run.stem
            assert any("top kernels" in o.get("data", {}).get("text/html", "") for o in shown)
            page = (tmp_path / f"{run.stem}.html").read_text()
            assert "apply_" in page or "PackedClassifier" in page, run.stem  # the code, shown

    results = pd.read_csv(tmp_path / "results" / "results.csv")
    assert set(results["profile"]) == {"smoke"}
    frontier = results[results["technique"] == "bf16+sdpa"]
    assert set(frontier["padding"]) == {"bucketed"} and set(frontier["batch_size"]) == {32}
    grid = results[results["technique"] != "bf16+sdpa"]
    assert set(results["task"]) == {"sst2", "mrpc", "stsb", "mnli_m"}
    ok = grid[grid["status"] == "ok"]
    skipped = grid[grid["status"] == "skipped"]
    if torch.cuda.is_available():
        assert set(ok["technique"]) == set(techniques.TECHNIQUES) and skipped.empty
    else:
        assert set(ok["technique"]) == set(techniques.TECHNIQUES) - ON_GPU_ONLY
        assert set(skipped["technique"]) == ON_GPU_ONLY
    assert (ok["time_s"] > 0).all() and ok["metric_value"].notna().all()
    assert ok[["device", "torch", "transformers", "git_sha"]].notna().all().all()

    again = runner.run_profile("smoke", tmp_path, only=["20"])
    assert [r.status for r in again if r.stem.startswith("20")] == ["ok"]
    rerun = pd.read_csv(tmp_path / "results" / "results.csv")
    assert len(rerun) == len(results)
    assert not rerun.duplicated(["cell_id", "trial"]).any()

    records = runs.run_records(tmp_path, "smoke")
    whole = [r for r in records if r["kind"] == "reproduce"]
    cells = results.drop_duplicates("cell_id")
    assert [r["cells_measured"] for r in whole] == [cells["status"].isin(["ok", "failed"]).sum(), 0]
    assert list(whole[0]["notebooks"]) == [r.stem for r in notebook_runs]
    assert list(whole[1]["notebooks"]) == [r.stem for r in again if r.stem.startswith("20")]
    measured = [r for r in records if r["kind"] == "measure"]
    assert measured and all(r["in_process"] for r in measured)
    assert "`effbert run` measured" in runs.gpu_time_markdown(tmp_path, "smoke")


@pytest.mark.notebooks
def test_a_profile_that_narrows_techniques_runs_every_notebook(tmp_path):
    extra = "techniques: [fp32, fp16_flash]\ntasks: [sst2]\ncombinations: []\n"
    profile = smoke_with(tmp_path / "narrow.yaml", extra)
    runs = runner.run_profile(profile, tmp_path / "reports")
    assert [r.status for r in runs] == ["ok"] * len(runs), [(r.stem, r.message) for r in runs]
    results = pd.read_csv(tmp_path / "reports" / "results" / "results.csv")
    assert set(results["technique"]) == {"fp32", "fp16_flash"}
    frontier = tmp_path / "reports" / "executed" / "25-measure-frontier.ipynb"
    printed = "".join(o.get("text", "") for o in outputs(frontier, "stream"))
    assert "profile 'narrow' selects no cell here" in printed


@pytest.mark.notebooks
def test_setup_run_again_after_measure_in_one_kernel(tmp_path):
    """As in JupyterLab: run the notebook, then Setup and everything after it again."""
    nb = runner.read_notebook(config.NOTEBOOKS_DIR / "20-measure-techniques.py")
    first_setup = next(i for i, c in enumerate(nb.cells) if "Plan.from_profile" in c.source)
    nb.cells += [nbformat.from_dict(json.loads(json.dumps(c))) for c in nb.cells[first_setup:]]
    for number, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{number}"  # the copies need ids of their own
    out = tmp_path / "twice.ipynb"
    pm.execute_notebook(
        nb,
        str(out),
        parameters={"profile": "smoke", "reports_dir": str(tmp_path / "reports")},
        kernel_name="python3",
        cwd=str(config.NOTEBOOKS_DIR),
        progress_bar=False,
    )
    assert not outputs(out, "error")


def test_notebooks_survive_a_save_unchanged():
    """What JupyterLab writes back on save (jupytext's percent format) is the file as tracked:
    opening and saving a notebook changes nothing the user did not change."""
    import jupytext

    for path in runner.notebook_paths():
        text = path.read_text()
        assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text, (
            path.name
        )
