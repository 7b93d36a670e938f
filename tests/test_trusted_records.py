"""A record is trusted by its content: checked when read, superseded when its inputs change, and
results.csv rebuilt whenever it disagrees with the records."""

import json
import shutil

import pandas as pd
import pytest

from effbert import results, stats
from tests.test_results_store import record


def saved(tmp_path, **kwargs):
    cells = tmp_path / "results" / "cells"
    return results.write_cell(cells, record(**kwargs)), cells


def test_a_record_copied_over_another_cells_file_is_refused(tmp_path):
    fp32, cells = saved(tmp_path)
    int8, _ = saved(tmp_path, technique="int8")
    shutil.copy(fp32, int8)
    with pytest.raises(results.StoreError, match="hashes to .* not to its file name"):
        results.load_cells(cells)


@pytest.mark.parametrize(
    "edit, problem",
    [
        ({"metric_value": float("nan")}, "metric_value is nan"),
        ({"metric_value": "0.91"}, "metric_value is '0.91'"),
        ({"trials": []}, "marked ok but holds no trials"),
        ({"status": "done"}, "status 'done'"),
        ({"cell_id": "0123456789abcdef"}, "names the cell"),
    ],
)
def test_a_record_whose_content_fails_its_schema_is_refused_with_the_fix(tmp_path, edit, problem):
    path, cells = saved(tmp_path)
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, **edit}))
    with pytest.raises(results.StoreError, match=problem) as err:
        results.read_results(tmp_path / "results")
    assert "delete" in str(err.value) and path.name in str(err.value)


def test_a_trial_without_energy_from_a_meter_is_refused(tmp_path):
    path, _ = saved(tmp_path)
    content = json.loads(path.read_text())
    content["energy_source"] = "nvml"
    content["trials"][1]["energy_j"] = 0.0
    path.write_text(json.dumps(content))
    with pytest.raises(results.StoreError, match="trial 1's energy_j is 0.0"):
        results.read_cell(path)


def test_a_hand_edited_table_without_its_manifest_is_rebuilt_from_the_records(tmp_path):
    saved(tmp_path)
    results.write_tables(tmp_path / "results", tmp_path / "results" / "cells")
    table = tmp_path / "results" / results.RESULTS_CSV
    (tmp_path / "results" / results.MANIFEST_JSON).unlink()
    table.write_text(table.read_text().replace(",100.0,50.0,", ",1.0,50.0,"))
    assert set(pd.read_csv(table)["energy_j"]) == {1.0, 101.0}
    read = results.read_results(tmp_path / "results")
    assert set(read["energy_j"]) == {100.0, 101.0}
    assert set(pd.read_csv(table)["energy_j"]) == {100.0, 101.0}  # the rebuilt table is saved


def test_a_record_of_changed_inputs_supersedes_the_old_one(tmp_path):
    old = record(measured_at="2026-11-26T00:00:00")
    old["config"]["fingerprints"] = {"data": "436rows", "environment": {"device_name": "H"}}
    new = record(measured_at="2026-11-27T00:00:00")
    new["config"]["fingerprints"] = {"data": "872rows", "environment": {"device_name": "H"}}
    new["trials"] = [{**t, "j_per_1k_samples": 50.0} for t in new["trials"]]
    cells = tmp_path / "results" / "cells"
    results.write_cell(cells, old)
    results.write_cell(cells, new)
    trials = results.read_results(tmp_path / "results")
    assert trials.groupby("cell_id")["superseded"].first().sort_values().tolist() == [False, True]
    summary = stats.summarize(trials)
    assert len(summary) == 1 and summary["j_per_1k_samples_mean"].iloc[0] == 50.0


def test_another_device_does_not_supersede(tmp_path):
    cells = tmp_path / "results" / "cells"
    for day, device in (("26", "H100"), ("27", "H200")):
        cell = record(measured_at=f"2026-11-{day}T00:00:00")
        cell["config"]["fingerprints"] = {"data": "d", "environment": {"device_name": device}}
        results.write_cell(cells, cell)
    assert not results.read_results(tmp_path / "results")["superseded"].any()
