"""A hostile user: changed inputs, interrupted runs, full disks. Nothing finished is lost and
no result goes silently stale."""

import errno

import pytest

from effbert import cli, models, profiles, report, results, runner
from tests.conftest import Study, smoke_with


def sst2_dir(root, labels):
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel"]
    lines += [f"bako tesu {i} dafe\t{label}" for i, label in enumerate(labels)]
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")
    return root


def local_study(tmp_path, glue, checkpoint="tiny-random"):
    values = dict(
        profile="h",
        data_source="local",
        glue_dir=str(glue),
        tasks=["sst2"],
        techniques=["fp32"],
        model=checkpoint,
        batch_sizes=[8],
        max_length=16,
        warmup_s=0.0,
        trials=2,
        min_window_s=0.01,
        idle_s=0,
        latency_batches=1,
        metrics_backend="sklearn",
        energy="none",
    )
    return Study(profiles.validate(values), str(tmp_path / "reports"))


def test_changed_data_is_a_new_cell_never_the_old_one(tmp_path):
    glue = sst2_dir(tmp_path / "glue", [0, 1] * 8)
    first = local_study(tmp_path, glue).run(["fp32"])
    sst2_dir(glue, [1, 1] * 8)  # the same folder, other labels
    second = local_study(tmp_path, glue).run(["fp32"])
    assert first["cell_id"].iloc[0] != second["cell_id"].iloc[0]
    assert first["data_fingerprint"].iloc[0] != second["data_fingerprint"].iloc[0]
    assert second["metric_value"].iloc[0] != first["metric_value"].iloc[0]
    cells = list((tmp_path / "reports" / "results" / "cells" / "h").glob("*.json"))
    assert len(cells) == 2  # the earlier record is kept, not overwritten


def test_changed_checkpoint_weights_are_a_new_cell(tmp_path):

    glue = sst2_dir(tmp_path / "glue", [0, 1] * 8)
    folder = tmp_path / "ckpt"
    models.tiny_random_model(2, seed=1).save_pretrained(folder)
    models.tiny_tokenizer().save_pretrained(folder)
    first = local_study(tmp_path, glue, str(folder)).run(["fp32"])
    models.fingerprint.cache_clear()
    models.tiny_random_model(2, seed=2).save_pretrained(folder)
    second = local_study(tmp_path, glue, str(folder)).run(["fp32"])
    assert first["checkpoint_fingerprint"].iloc[0] != second["checkpoint_fingerprint"].iloc[0]
    assert first["cell_id"].iloc[0] != second["cell_id"].iloc[0]


def test_damaged_data_falls_under_on_missing_task(tmp_path):
    glue = sst2_dir(tmp_path / "glue", [0, 1, -1, 1])
    with pytest.raises(Exception, match="line 4"):
        local_study(tmp_path, glue).run(["fp32"])
    values = {**vars(local_study(tmp_path, glue).params), "on_missing_task": "skip"}
    trials = Study(profiles.validate(values), str(tmp_path / "reports")).run(["fp32"])
    assert (trials["status"] == "skipped").all() and trials["reason"].str.contains("SST-2").all()


def smoke_copy(tmp_path, extra=""):
    path = tmp_path / "hostile.yaml"
    return smoke_with(path, extra)


def test_ctrl_c_stops_cleanly_writes_the_index_and_says_how_to_resume(
    tmp_path, monkeypatch, capsys
):
    calls = []

    def execute(path, parameters, out):
        calls.append(path.stem)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return "ok", ""

    monkeypatch.setattr(runner, "_execute", execute)
    reports = tmp_path / "reports"
    code = cli.main(["run", "--profile", smoke_copy(tmp_path), "--reports-dir", str(reports)])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Resume with `python -m effbert run --profile" in err
    index = (reports / "index.html").read_text()
    assert "interrupted" in index and "not run" in index


def test_a_full_disk_fails_the_notebook_with_the_path_and_keeps_going(tmp_path, monkeypatch):
    real_write = results.write_text_atomic

    def full_disk(path, text):
        if path.suffix == ".html" and path.name != "index.html":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, text)

    monkeypatch.setattr(results, "write_text_atomic", full_disk)
    reports = tmp_path / "reports"
    runs = runner.run_profile(smoke_copy(tmp_path, "tasks: [sst2]\n"), reports, only=["00", "90"])
    by_stem = {r.stem: r for r in runs}
    assert by_stem["00-check-environment"].status == "failed"
    assert "No space left on device" in by_stem["00-check-environment"].message
    assert "00-check-environment.html" in by_stem["00-check-environment"].message
    assert (reports / "executed" / "00-check-environment.ipynb").exists()
    assert (reports / "index.html").exists()
    assert not list(reports.glob(".*.tmp"))


def test_a_reports_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(runner, "validated_profile", refuse)
    code = cli.main(["run", "--profile", "smoke", "--reports-dir", str(tmp_path / "ro")])
    assert code == 1
    err = capsys.readouterr().err
    assert "could not write" in err and "Permission denied" in err and "ro" in err


def test_index_escapes_what_it_shows(tmp_path):
    runs = [runner.NotebookRun("20-<script>alert(1)</script>", "failed", "<b>boom</b>")]
    page = report.write_index(tmp_path, runs, "smoke").read_text()
    assert "<script>alert" not in page and "&lt;b&gt;boom" in page


def test_summary_of_a_missing_folder_or_profile_is_a_message(tmp_path, capsys):
    assert cli.main(["summary", "--profile", "smoke", "--reports-dir", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["summary", "--profile", "smoke", "--reports-dir", str(tmp_path)]) == 2
    assert "no measured cell of profile 'smoke'" in capsys.readouterr().err


def test_a_truncated_cell_file_is_named(tmp_path):
    glue = sst2_dir(tmp_path / "glue", [0, 1] * 8)
    study = local_study(tmp_path, glue)
    study.run(["fp32"])
    [cell] = (tmp_path / "reports" / "results" / "cells" / "h").glob("*.json")
    cell.write_text(cell.read_text()[:100])
    with pytest.raises(results.StoreError, match=cell.name):
        local_study(tmp_path, glue).run(["fp32"])
