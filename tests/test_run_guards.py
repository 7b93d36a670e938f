"""The runner never leaves a traceback: one run per reports folder, published folders kept,
signals and dead kernels turned into one sentence with an index that says what failed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from effbert import cli, config, folders, runner, sweep
from tests.conftest import Study
from tests.test_runner import NOTEBOOK, notebooks  # noqa: F401 (a fixture)


def test_a_second_run_into_one_reports_folder_is_refused_by_name(tmp_path, notebooks):  # noqa: F811
    reports = tmp_path / "reports"
    with folders.locked(reports, {"profile": "first"}):
        with pytest.raises(folders.FolderRefused, match="in use by another run.*first.*pid"):
            runner.run_profile("smoke", reports, notebooks_dir=notebooks)
    assert [r.status for r in runner.run_profile("smoke", reports, notebooks_dir=notebooks)] == [
        "ok",
        "ok",
    ]


def test_a_published_reports_folder_is_written_only_with_force(capsys):
    code = cli.main(["run", "--profile", "smoke", "--reports-dir", "reports/study"])
    assert code == 2
    err = capsys.readouterr().err
    assert "holds a published report" in err and "--force" in err


def test_unknown_only_values_are_refused(tmp_path, capsys):
    assert cli.main(["run", "--only", "77", "--reports-dir", str(tmp_path)]) == 2
    assert "--only 77 names no notebook" in capsys.readouterr().err


def test_a_dead_kernel_fails_its_notebook_in_one_sentence(tmp_path, notebooks):  # noqa: F811
    (notebooks / "20-second-step.py").write_text(NOTEBOOK + "\nimport os\nos._exit(9)\n")
    runs = runner.run_profile("smoke", tmp_path / "reports", notebooks_dir=notebooks)
    assert [r.status for r in runs] == ["ok", "failed"]
    assert "kernel stopped" in runs[1].message
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "kernel stopped" in index


def test_a_damaged_record_still_gets_an_index_that_says_so(tmp_path, notebooks):  # noqa: F811
    cells = tmp_path / "reports" / "results" / "cells" / "smoke"
    cells.mkdir(parents=True)
    (cells / "0123456789abcdef.json").write_text('{"config": {"task": ')
    runs = runner.run_profile("smoke", tmp_path / "reports", notebooks_dir=notebooks)
    assert [r.status for r in runs] == ["ok", "ok"]
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "The records cannot be read" in index and "0123456789abcdef.json" in index


def test_sigterm_stops_the_run_like_ctrl_c(tmp_path, notebooks):  # noqa: F811
    (notebooks / "20-second-step.py").write_text(NOTEBOOK + "\nimport time\ntime.sleep(60)\n")
    script = (
        "import sys\nfrom pathlib import Path\nfrom effbert import cli, runner\n"
        "real = runner.run_profile\n"
        f"runner.run_profile = lambda *a, **k: real(*a, notebooks_dir=Path({str(notebooks)!r}), **k)\n"
        f"sys.exit(cli.main(['run', '--reports-dir', {str(tmp_path / 'reports')!r}]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, cwd=config.PROJ_ROOT
    )
    executed = tmp_path / "reports" / "executed" / "10-first-step.ipynb"
    deadline = time.monotonic() + 90
    while not executed.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(5)  # into the second notebook's sleep
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=90)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Resume with" in err
    assert "interrupted" in (tmp_path / "reports" / "index.html").read_text()


def test_the_kernel_imports_effbert_from_the_checkout_that_runs(tmp_path, notebooks):  # noqa: F811
    probe = (
        NOTEBOOK
        + "\nimport effbert, pathlib\npathlib.Path(reports_dir, 'from.txt').write_text(effbert.__file__)\n"
    )
    (notebooks / "20-second-step.py").write_text(probe)
    runner.run_profile("smoke", tmp_path / "reports", notebooks_dir=notebooks)
    used = (tmp_path / "reports" / "from.txt").read_text()
    assert used.startswith(str(config.PROJ_ROOT / "effbert"))


def test_a_run_record_counts_the_cells_measured_not_the_files_touched(tmp_path, notebooks):  # noqa: F811
    cells = tmp_path / "reports" / "results" / "cells" / "smoke"
    runner.run_profile("smoke", tmp_path / "reports", notebooks_dir=notebooks)
    from effbert import results
    from tests.test_results_store import record

    results.write_cell(
        cells.parent, {**record(), "config": {**record()["config"], "profile": "smoke"}}
    )
    future = time.time() + 3600  # a clock that jumped: every file looks new
    for path in cells.glob("*.json"):
        os.utime(path, (future, future))
    runner.run_profile("smoke", tmp_path / "reports", notebooks_dir=notebooks)
    runs_dir = tmp_path / "reports" / "results" / "runs"
    counted = [json.loads(p.read_text())["cells_measured"] for p in sorted(runs_dir.glob("*.json"))]
    assert counted == [0, 0]


def test_a_hung_step_fails_its_cell_and_ends_the_process(tmp_path, monkeypatch):
    from effbert import profiles

    values = dict(
        profile="t",
        device="cpu",
        energy="none",
        tasks=["sst2"],
        techniques=["fp32"],
        data_source="synthetic",
        max_samples=8,
        model="tiny-random",
        warmup_s=0.0,
        trials=2,
        min_window_s=0.01,
        idle_s=0,
        latency_batches=1,
        metrics_backend="sklearn",
        cell_timeout_s=0.5,
    )
    study = Study(profiles.validate(values), str(tmp_path))
    ended, seen = [], []

    def hang(cell, *args):
        time.sleep(1.5)
        seen.extend(p.read_text() for p in (tmp_path / "results" / "cells" / "t").glob("*.json"))
        raise RuntimeError("still stuck")

    monkeypatch.setattr(sweep, "measure_cell", hang)
    study.sweep.abort = ended.append
    study.run(["fp32"])
    assert ended == [3]
    assert seen and json.loads(seen[0])["status"] == "failed"
    assert "no answer from the device in 0 s" in json.loads(seen[0])["reason"]


MARKUP = "<img src=x onerror=alert(1)>"


def test_markup_in_every_record_field_reaches_the_analysis_html_as_text(tmp_path):
    from effbert import results
    from tests.test_results_store import record

    cells = tmp_path / "reports" / "results" / "cells"
    for technique in ("fp32", MARKUP):
        cell = record(technique=technique)
        cell["config"] = {**cell["config"], "profile": "smoke", "task": MARKUP}
        cell.update(metric=MARKUP, reason=MARKUP, environment={"device_name": MARKUP})
        cell["trials"] = [
            {**t, "j_per_1k_samples": t["j_per_1k_samples"] * (1 + (technique != "fp32"))}
            for t in cell["trials"]
        ]
        results.write_cell(cells, cell)
    runs = runner.run_profile("smoke", tmp_path / "reports", only=["90"])
    assert [r.status for r in runs if r.stem.startswith("90")] == ["ok"], runs
    page = (tmp_path / "reports" / "90-analyze-results.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert MARKUP not in page


def test_published_reports_in_subfolders_do_not_stop_a_run_into_their_parent():
    """reports/ holds published runs in subfolders (reports/study, ...) but nothing a run into
    reports/ writes: make smoke from a fresh clone runs there."""
    assert folders.published_files(config.PROJ_ROOT / "reports") == []
    study = folders.published_files(config.PROJ_ROOT / "reports" / "study")
    assert "reports/study/index.html" in study
    assert any(f.startswith("reports/study/executed/") for f in study)
    assert not any(f.startswith("reports/study/results/") for f in study)
