import errno
import hashlib
import json
import logging
import multiprocessing
import os
import re

import pandas as pd
import pytest

from effbert import results, schema, stats, tables


def record(technique="fp32", status="ok", n_trials=2, measured_at="2026-11-26T00:00:00"):
    config = {
        "profile": "p",
        "task": "sst2",
        "technique": technique,
        "batch_size": 16,
        "padding": "max_length",
        "max_length": 128,
    }
    trials = [
        {
            "trial": i,
            "n_samples": 1000,
            "n_tokens": 50000,
            "passes": 1,
            "time_s": 1.0,
            "energy_j": 100.0 + i,
            "dynamic_energy_j": 50.0,
            "samples_per_s": 1000.0,
            "tokens_per_s": 5e4,
            "j_per_1k_samples": 100.0 + i,
            "j_per_token": 0.002,
            "co2_mg": 1.0,
        }
        for i in range(n_trials)
    ]
    return {
        "config": config,
        "status": status,
        "reason": "" if status == "ok" else "why",
        "trials": trials if status == "ok" else [],
        "metric": "accuracy",
        "metric_value": 0.9,
        "energy_source": "nvml" if status == "ok" else None,
        "cv_flag": False,
        "environment": {"device_name": "GPU"},
        "measured_at": measured_at,
    }


@pytest.fixture
def store(tmp_path):
    """A results folder laid out as config.reports_paths does, with two cells and its tables."""
    results_dir = tmp_path / "results"
    cells = results_dir / "cells"
    results.write_cell(cells, record("fp32"))
    results.write_cell(cells, record("fp16"))
    results.write_tables(results_dir, cells)
    return results_dir


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "text",
    ['{"config": {"profile": "p"}, "status": "o', "not json", '{"status": "ok"}', '{"config": {}}'],
    ids=["truncated", "not-json", "no-config", "no-status"],
)
def test_a_damaged_cell_is_named_with_its_fix(tmp_path, text):
    path = results.write_cell(tmp_path, record())
    path.write_text(text)
    with pytest.raises(results.StoreError, match=f"{re.escape(str(path))}.*delete"):
        results.load_cells(tmp_path)
    with pytest.raises(results.StoreError, match=re.escape(str(path))):
        results.find_cell(tmp_path, record()["config"])


def test_leftover_temporary_files_are_ignored(tmp_path):
    path = results.write_cell(tmp_path, record())
    (path.parent / f".{path.name}.x1y2.tmp").write_text('{"config": ')
    assert [c["cell_id"] for c in results.load_cells(tmp_path)] == [path.stem]


def test_write_tables_writes_a_manifest(store):
    manifest = json.loads((store / results.MANIFEST_JSON).read_text())
    ids = sorted(p.stem for p in (store / "cells").glob("p/*.json"))
    assert manifest == {
        "rows": 4,
        "cells": 2,
        "sha256": sha256(store / results.RESULTS_CSV),
        "cell_ids": ids,
    }


def test_a_truncated_table_is_rebuilt_from_the_cells(store, caplog):
    path = store / results.RESULTS_CSV
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 40])
    with caplog.at_level(logging.WARNING, logger="effbert.results"):
        frame = results.read_results(store)
    assert len(frame) == 4
    assert str(path) in caplog.text and "sha256" in caplog.text
    assert path.read_bytes() == whole


def test_an_edited_table_is_rebuilt_from_the_cells(store, caplog):
    path = store / results.RESULTS_CSV
    path.write_text(path.read_text().replace("100.0", "1.0"))
    with caplog.at_level(logging.WARNING, logger="effbert.results"):
        frame = results.read_results(store)
    assert set(frame["energy_j"]) == {100.0, 101.0}
    assert str(path) in caplog.text


def test_a_stale_table_is_rebuilt_from_the_cells(store, caplog):
    results.write_cell(store / "cells", record("int8"))
    with caplog.at_level(logging.WARNING, logger="effbert.results"):
        frame = results.read_results(store)
    assert set(frame["technique"]) == {"fp32", "fp16", "int8"}
    assert "disagrees with the cell files" in caplog.text
    assert len(results.read_results(store)) == 6


def test_a_missing_table_is_rebuilt_from_the_cells(store):
    (store / results.RESULTS_CSV).unlink()
    assert len(results.read_results(store)) == 4


def test_a_damaged_table_without_cells_raises(tmp_path):
    results_dir, cells = tmp_path / "results", tmp_path / "elsewhere"
    results.write_cell(cells, record())
    results.write_tables(results_dir, cells)
    path = results_dir / results.RESULTS_CSV
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(
        results.StoreError, match=f"{re.escape(str(path))} does not match.*restore it"
    ):
        results.read_results(results_dir)
    (results_dir / results.MANIFEST_JSON).write_text("{")
    with pytest.raises(results.StoreError, match="manifest.*is damaged"):
        results.read_results(results_dir)


def test_a_table_without_manifest_is_checked_against_the_cells(store, caplog):
    (store / results.MANIFEST_JSON).unlink()
    with caplog.at_level(logging.WARNING, logger="effbert.results"):
        assert len(results.read_results(store)) == 4
    assert not caplog.text and not (store / results.MANIFEST_JSON).exists()
    path = store / results.RESULTS_CSV
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    assert len(results.read_results(store)) == 4


def test_a_table_without_manifest_or_cells_is_read_as_it_is(tmp_path):
    results_dir, cells = tmp_path / "results", tmp_path / "elsewhere"
    results.write_cell(cells, record())
    results.write_tables(results_dir, cells)
    (results_dir / results.MANIFEST_JSON).unlink()
    assert len(results.read_results(results_dir, "p")) == 2


def _write_tables_repeatedly(results_dir, technique):
    for i in range(15):
        results.write_cell(results_dir / "cells", record(technique, measured_at=f"t{i:02d}"))
        results.write_tables(results_dir, results_dir / "cells")


def test_two_processes_writing_tables_at_once_both_succeed(store):
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_tables_repeatedly, args=(store, technique))
        for technique in ("int8", "flash")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    manifest = json.loads((store / results.MANIFEST_JSON).read_text())
    assert manifest["sha256"] == sha256(store / results.RESULTS_CSV)
    assert manifest["cells"] == 4 and manifest["rows"] == 8
    assert not list(store.glob(".*.tmp"))
    assert len(results.read_results(store)) == 8


@pytest.mark.parametrize(
    ("call", "code"),
    [("os.fsync", errno.ENOSPC), ("os.replace", errno.ENOSPC), ("tempfile.mkstemp", errno.EACCES)],
    ids=["disk-full-writing", "disk-full-replacing", "read-only"],
)
def test_a_failed_write_keeps_the_old_tables_and_the_cells(store, monkeypatch, call, code):
    before = {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()}
    results.write_cell(store / "cells", record("int8"))

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(f"effbert.results.{call}", fail)
    path = store / results.RESULTS_CSV
    with pytest.raises(
        results.StoreError,
        match=f"cannot write {re.escape(str(path))}: {os.strerror(code)}.*finished cells are kept",
    ):
        results.write_tables(store, store / "cells")
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()} == before
    assert len(results.load_cells(store / "cells")) == 3


def test_a_table_rebuilt_on_a_full_disk_is_still_returned(store, monkeypatch, caplog):
    results.write_cell(store / "cells", record("int8"))
    monkeypatch.setattr(results.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "full")))
    with caplog.at_level(logging.WARNING, logger="effbert.results"):
        assert len(results.read_results(store)) == 6
    assert "without saving it" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_keeps_the_old_tables(store):
    results.write_cell(store / "cells", record("int8"))
    before = (store / results.RESULTS_CSV).read_bytes()
    store.chmod(0o555)
    try:
        with pytest.raises(results.StoreError, match="writable.*finished cells are kept"):
            results.write_tables(store, store / "cells")
    finally:
        store.chmod(0o755)
    assert (store / results.RESULTS_CSV).read_bytes() == before
    assert not list(store.glob(".*.tmp"))


@pytest.mark.parametrize("statuses", [[], ["failed"], ["skipped", "failed"]], ids=str)
def test_tables_of_no_measured_cell_are_empty_with_their_columns(tmp_path, statuses):
    cells = [{**record(f"t{i}", status), "cell_id": f"c{i}"} for i, status in enumerate(statuses)]
    trials = results.trial_rows(cells)
    assert len(trials) == len(statuses)
    assert {"status", "energy_source", "cell_id", "measured_at"} <= set(trials.columns)
    trials.to_csv(tmp_path / "t.csv", index=False)
    for frame in (trials, pd.DataFrame(), pd.read_csv(tmp_path / "t.csv")):
        summary = stats.summarize(frame)
        assert summary.empty and list(summary.columns) == schema.SUMMARY_COLUMNS
        table = stats.comparison(summary)
        assert table.empty and {"energy_vs_base", "technique"} <= set(table.columns)
        where = tables.provenance(frame)
        assert where.empty and {"profile", "first", "last", "trials"} <= set(where.columns)
        sheet = tables.provenance_sheet(frame)
        assert sheet.shape[1] == 0 and {"profile", "trials"} <= set(sheet.index)


def test_the_provenance_sheet_has_a_column_per_environment():
    trials = pd.DataFrame(
        {
            "profile": "p",
            "status": "ok",
            "device_name": ["A100", "A100", "H200"],
            "git_sha": "abc",
            "measured_at": ["2026-01-01", "2026-01-02", "2026-01-03"],
        }
    )
    sheet = tables.provenance_sheet(trials)
    assert list(sheet.columns) == ["environment 1", "environment 2"]
    assert list(sheet.loc["device_name"]) == ["A100", "H200"]
    assert (
        list(sheet.loc["trials"]) == [2, 1] and sheet.loc["last", "environment 1"] == "2026-01-02"
    )
