import numpy as np
import pandas as pd
import pytest

from effbert import results, schema, stats, tables


def record(task="sst2", technique="fp32", energy=(100.0, 110.0), status="ok"):
    config = {
        "profile": "p",
        "task": task,
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
            "energy_j": e,
            "dynamic_energy_j": e - 50,
            "samples_per_s": 1000.0,
            "tokens_per_s": 5e4,
            "j_per_1k_samples": e,
            "j_per_token": e / 5e4,
            "co2_mg": 1.0,
        }
        for i, e in enumerate(energy)
    ]
    return {
        "config": config,
        "status": status,
        "reason": "" if status == "ok" else "why",
        "trials": trials if status == "ok" else [],
        "metric": "accuracy",
        "metric_value": 0.9,
        "energy_source": "nvml",
        "cv_flag": False,
        "environment": {"device_name": "GPU"},
        "measured_at": "2026-11-26T00:00:00",
    }


def test_cell_ids_ignore_key_order():
    assert results.cell_id({"a": 1, "b": 2}) == results.cell_id({"b": 2, "a": 1})


def test_writing_a_cell_twice_keeps_one_file(tmp_path):
    results.write_cell(tmp_path, record())
    results.write_cell(tmp_path, record())
    assert len(list(tmp_path.glob("p/*.json"))) == 1
    assert results.find_cell(tmp_path, record()["config"])["status"] == "ok"


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "cell.json"
    results.write_json_atomic(path, {"v": 1})

    def crash_midway(payload, handle, **kwargs):
        handle.write('{"v": 2, "trials": [')
        raise OSError("disk full")

    monkeypatch.setattr(results.json, "dump", crash_midway)
    with pytest.raises(results.StoreError, match="disk full"):
        results.write_json_atomic(path, {"v": 2})
    assert path.read_text() == '{\n "v": 1\n}'
    assert not list(tmp_path.glob(".*.tmp"))


def test_tables_have_one_row_per_trial_and_one_summary_row_per_cell(tmp_path):
    cells = tmp_path / "cells"
    results.write_cell(cells, record())
    results.write_cell(cells, record("mrpc", "fp16", status="skipped"))
    trials = results.write_tables(tmp_path, cells)
    assert len(trials) == 3
    assert list(trials.columns[:8]) == schema.IDENTITY_COLUMNS
    summary = pd.read_csv(tmp_path / results.SUMMARY_CSV)
    [row] = summary.to_dict("records")
    assert row["energy_j_mean"] == 105.0 and row["trials"] == 2
    assert row["energy_j_ci95"] == pytest.approx(12.706 * 7.0711 / 2**0.5, rel=1e-3)


def test_read_results_explains_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the measurement notebooks"):
        results.read_results(tmp_path)
    cells = tmp_path / "cells"
    results.write_cell(cells, record())
    results.write_tables(tmp_path, cells)
    with pytest.raises(ValueError, match="no rows of profile 'other'"):
        results.read_results(tmp_path, "other")


def test_comparison_gives_ratios_to_the_baseline(tmp_path):
    cells = tmp_path / "cells"
    results.write_cell(cells, record())
    results.write_cell(cells, record(technique="fp16", energy=(25.0, 27.5)))
    summary = stats.summarize(results.write_tables(tmp_path, cells))
    table = stats.comparison(summary).set_index("technique")
    assert table.loc["fp16", "energy_vs_base"] == pytest.approx(0.25)
    assert table.loc["fp32", "metric_change"] == 0


def test_with_intervals_joins_each_mean_with_its_half_width_in_one_column():
    summary = pd.DataFrame(
        {
            "technique": ["fp32", "fp16"],
            "j_per_1k_samples_mean": [211.3432, 4.0271],
            "j_per_1k_samples_ci95": [7.6391, float("nan")],
            "samples_per_s_mean": [88553.2, 2661.0],
            "samples_per_s_ci95": [690.4, 36.14],
            "prepare_s": [0.12345, 22.1],
        }
    )
    shown = tables.with_intervals(summary)
    assert list(shown.columns) == ["technique", "j_per_1k_samples", "samples_per_s", "prepare_s"]
    assert shown["j_per_1k_samples"].tolist() == ["211 ± 7.64", "4.03"]
    assert shown["samples_per_s"].tolist() == ["88,553 ± 690", "2,661 ± 36.1"]
    assert shown["prepare_s"].tolist() == ["0.123", "22.1"]


def test_findings_compare_only_where_the_baseline_ran(tmp_path):
    """Cells at a setting the baseline never ran (several packed cells, fp32 only at batch 16)
    are not the compared setting: the headline and findings use the baseline's setting."""
    cells = tmp_path / "cells"
    results.write_cell(cells, record())
    results.write_cell(cells, record(technique="fp16", energy=(25.0, 27.5)))
    for technique in ("bf16+varlen", "bf16+varlen+graphs", "bf16+varlen+graphs+cls_last"):
        packed = record(technique=technique, energy=(5.0, 5.5))
        packed["config"].update(batch_size=512, padding="packed")
        results.write_cell(cells, packed)
    summary = stats.summarize(results.write_tables(tmp_path, cells))
    head = tables.headline(summary)
    assert list(head.columns) == ["fp32", "fp16"]
    assert head.loc["sst2", "fp16"].startswith("0.25×")
    assert "At batch size 16, padding max_length" in tables.findings(summary)
    only_packed = summary[summary["padding"] == "packed"]
    assert "nothing to compare" in tables.findings(only_packed)
    assert tables.headline(only_packed).empty


def test_findings_name_each_cell_where_a_technique_ran_at_two_paddings(tmp_path):
    """fp16 at batch 16 both padded to 128 and bucketed: each finding names the cell id of the
    setting it reports, not a fragment of a table."""
    cells = tmp_path / "cells"
    results.write_cell(cells, record())
    results.write_cell(cells, record(technique="fp16", energy=(25.0, 27.5)))
    bucketed = record(technique="fp16", energy=(20.0, 22.0))
    bucketed["config"].update(padding="bucketed")
    results.write_cell(cells, bucketed)
    summary = stats.summarize(results.write_tables(tmp_path, cells))
    shown = summary[(summary["technique"] == "fp16") & (summary["padding"] == "max_length")]
    text = tables.findings(summary)
    assert f"Cells: {shown['cell_id'].iloc[0][:8]}." in text
    assert "task" not in text.split("Cells:")[1]


def test_run_agreement_tells_a_shift_from_agreement(tmp_path):
    """Two runs of the same configurations: 16-bit cells 6% cheaper here, fp32 cells within
    0.5%; per precision and over all, a t interval over the cells' log ratios."""
    from scipy import stats as scipy_stats

    def run(folder, shift_16bit, wobble):
        cells = folder / "cells"
        for i, task in enumerate(("sst2", "mrpc", "cola", "rte")):
            w = 1 + wobble * (-1) ** i
            fp32 = record(task, "fp32", energy=(100 * w, 100 * w))
            e16 = 20 * shift_16bit * (1 + 0.01 * i)
            fp16 = record(task, "fp16", energy=(e16, e16))
            for cell, precision in ((fp32, "fp32"), (fp16, "fp16")):
                cell["axes"] = {"precision": precision}  # as a measured record holds it
                results.write_cell(cells, cell)
        return results.write_tables(folder, cells)

    here, there = run(tmp_path / "a", 0.94, 0.005), run(tmp_path / "b", 1.0, 0.0)
    table = stats.run_agreement(here, there).set_index("cells")
    assert table.loc["16-bit", "verdict"] == "differ"
    assert table.loc["16-bit", "ratio"] == pytest.approx(0.94, rel=1e-6)
    assert table.loc["fp32", "verdict"] == "agree within ±3%"
    logs = np.log([0.94] * 4 + [1.005, 0.995, 1.005, 0.995])
    low, high = scipy_stats.t.interval(0.95, 7, loc=logs.mean(), scale=scipy_stats.sem(logs))
    assert table.loc["all", ["low", "high"]].tolist() == pytest.approx(np.exp([low, high]))
    assert table.loc["all", "shared"] == 8


def test_a_technique_notebooks_records_give_the_energy_ratio_with_its_interval(tmp_path):
    from effbert import lesson

    cells = tmp_path / "cells"
    results.write_cell(cells, record())
    results.write_cell(cells, record(technique="fp16", energy=(25.0, 27.5)))
    table = stats.comparison(stats.summarize(results.write_tables(tmp_path, cells)))
    family = lesson.Family.__new__(lesson.Family)
    family._records = lambda: table
    shown = family.records().set_index("technique")
    ratio, half_width = table.set_index("technique").loc[
        "fp16", ["energy_vs_base", "energy_vs_base_ci95"]
    ]
    assert shown.loc["fp16", "energy / baseline"] == f"{ratio:.3g} ± {half_width:.3g}"
    assert shown.loc["fp32", "energy / baseline"].startswith("1 ")
    columns = list(lesson.RECORD_COLUMNS.values())
    assert list(shown.columns) == [c for c in columns if c != "technique"]
