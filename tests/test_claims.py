"""The earlier study's claims judged from hand-built summaries."""

import math

import pandas as pd
import pytest

from effbert import claims, schema, tables


def cell(task, technique, energy, ci95=1.0, metric=0.9, **setting):
    """One summary row; the original setting unless ``setting`` says otherwise."""
    row = {
        "profile": "p",
        "task": task,
        "technique": technique,
        "batch_size": 16,
        "padding": "max_length",
        "max_length": 128,
        "scope": "model",
        "cell_id": f"{task}-{technique}",
        "trials": 3,
        "metric": "accuracy",
        "metric_value": metric,
        "j_per_1k_samples_mean": energy,
        "j_per_1k_samples_ci95": ci95,
    }
    return {**row, **setting}


def summary(*rows):
    return pd.DataFrame(list(rows)).reindex(columns=schema.SUMMARY_COLUMNS)


def rows_of(table, claim_number):
    """The rows of one claim, indexed by task."""
    return table[table["claim"].str.split(" ").str[0] == claim_number].set_index("task")


def test_claim_1_verdicts_follow_the_ratio_interval():
    table = claims.claims(
        summary(
            cell("sst2", "fp32", 100, 5),
            cell("sst2", "int8", 300, 10),
            cell("mrpc", "fp32", 100, 5),
            cell("mrpc", "int8", 50, 2),
            cell("rte", "fp32", 100, 10),
            cell("rte", "int8", 105, 10),
        )
    )
    assert list(table.columns) == claims.CLAIM_COLUMNS
    one = rows_of(table, "1")
    assert list(one.index) == ["sst2", "mrpc", "rte", "all tasks"]
    sst2 = one.loc["sst2"]
    assert sst2["compared"] == "int8 / fp32" and sst2["setting"] == "batch 16, max_length 128"
    assert sst2["energy_ratio"] == pytest.approx(3.0)
    half = 3.0 * math.hypot(10 / 300, 5 / 100)
    assert sst2["ratio_ci95_low"] == pytest.approx(3.0 - half)
    assert sst2["ratio_ci95_high"] == pytest.approx(3.0 + half)
    assert sst2["cells"] == "sst2-int8 / sst2-fp32"
    assert sst2["verdict"] == "holds"
    assert one.loc["mrpc", "verdict"] == "does not hold"
    rte = one.loc["rte"]
    assert rte["ratio_ci95_low"] < 1 < rte["ratio_ci95_high"]
    assert rte["verdict"] == "not resolved"
    overall = one.loc["all tasks"]
    assert overall["verdict"] == "holds on 1 of 3 tasks, does not hold on 1, not resolved on 1"
    assert overall["energy_ratio"] == pytest.approx((3.0 * 0.5 * 1.05) ** (1 / 3))
    assert math.isnan(overall["ratio_ci95_low"]) and math.isnan(overall["ratio_ci95_high"])


def test_a_single_trial_leaves_a_claim_not_resolved():
    table = claims.claims(
        summary(cell("sst2", "fp32", 100, math.nan, trials=1), cell("sst2", "int8", 300, 10))
    )
    sst2 = rows_of(table, "1").loc["sst2"]
    assert sst2["energy_ratio"] == pytest.approx(3.0)
    assert sst2["verdict"] == "not resolved"


def test_flash_holds_until_the_metric_drops_beyond_the_tolerance():
    cheaper = [cell("sst2", "fp32", 100, 2, metric=0.90), cell("mrpc", "fp32", 100, 2, metric=0.85)]
    kept = claims.claims(
        summary(
            *cheaper,
            cell("sst2", "flash", 80, 2, metric=0.90),
            cell("mrpc", "flash", 80, 2, metric=0.846),
        )
    )
    two = rows_of(kept, "2")
    assert two.loc["sst2", "compared"] == "flash / fp32"
    assert two.loc["mrpc", "metric_change"] == pytest.approx(-0.004)
    assert list(two["verdict"]) == ["holds", "holds", "holds"]

    dropped = claims.claims(
        summary(
            *cheaper,
            cell("sst2", "flash", 80, 2, metric=0.90),
            cell("mrpc", "flash", 80, 2, metric=0.83),
        )
    )
    two = rows_of(dropped, "2")
    assert two.loc["mrpc", "ratio_ci95_high"] < 1
    assert two.loc["mrpc", "metric_change"] == pytest.approx(-0.02)
    assert two.loc["mrpc", "verdict"] == "does not hold"
    assert two.loc["all tasks", "verdict"] == "holds on 1 of 2 tasks, does not hold on 1"
    assert two.loc["all tasks", "metric_change"] == pytest.approx(-0.02)
    lenient = rows_of(
        claims.claims(
            summary(*cheaper, cell("mrpc", "flash", 80, 2, metric=0.83)), metric_tolerance=0.05
        ),
        "2",
    )
    assert lenient.loc["mrpc", "verdict"] == "holds"


def test_claim_4_names_the_runner_up_and_leaves_overlaps_unresolved():
    presets = {"fp32": 100, "int8": 250, "autocast_fp16": 60, "autocast_bf16": 55, "flash": 95}
    table = claims.claims(
        summary(
            *(cell("sst2", t, e) for t, e in presets.items()),
            cell("sst2", "fp16", 40, 1),
            cell("sst2", "fp16_flash", 30, 1),
            *(cell("mrpc", t, e) for t, e in presets.items()),
            cell("mrpc", "fp16", 40, 3),
            cell("mrpc", "fp16_flash", 39, 3),
            cell("rte", "fp32", 100),
            cell("rte", "autocast_bf16", 20, 1),
            cell("rte", "fp16_flash", 30, 1),
        )
    )
    four = rows_of(table, "4")
    assert four.loc["sst2", "compared"] == "fp16_flash / fp16"
    assert four.loc["sst2", "energy_ratio"] == pytest.approx(0.75)
    assert four.loc["sst2", "verdict"] == "holds"
    assert four.loc["mrpc", "compared"] == "fp16_flash / fp16"
    assert four.loc["mrpc", "verdict"] == "not resolved"
    assert four.loc["rte", "compared"] == "fp16_flash / autocast_bf16"
    assert four.loc["rte", "cells"] == "rte-fp16_flash / rte-autocast_bf16"
    assert four.loc["rte", "verdict"] == "does not hold"
    overall = four.loc["all tasks"]
    assert overall["compared"] == "fp16_flash / autocast_bf16, fp16_flash / fp16"
    assert overall["verdict"] == "holds on 1 of 3 tasks, does not hold on 1, not resolved on 1"


def test_missing_cells_are_not_measured_and_other_settings_are_ignored():
    table = claims.claims(
        summary(
            cell("sst2", "fp32", 100, 5),
            cell("sst2", "int8", 300, 10),
            cell("sst2", "compile+int8", 120, 5),
            cell("sst2", "fp32+compile", 60, 5),
            cell("mrpc", "fp32", 100, 5),
            cell("mrpc", "int8", 300, 10, batch_size=64),
            cell("mrpc", "int8+compile", 300, 10),
            cell("rte", "fp32", 100, 5),
            cell("rte", "int8", 300, 10, scope="end_to_end"),
        )
    )
    one = rows_of(table, "1")
    assert one.loc["sst2", "verdict"] == "holds"
    assert one.loc[["mrpc", "rte"], "verdict"].tolist() == ["not measured"] * 2
    assert one.loc["mrpc", "cells"] == "- / mrpc-fp32"
    assert math.isnan(one.loc["mrpc", "energy_ratio"])
    # measured on one task: its verdict is the claim's
    assert one.loc["all tasks", "verdict"] == "holds"
    assert one.loc["all tasks", "energy_ratio"] == pytest.approx(3.0)
    compiled = rows_of(table, "1b")
    assert list(compiled.index) == ["sst2", "mrpc", "all tasks"]  # rte has neither cell
    assert compiled.loc["sst2", "cells"] == "sst2-compile+int8 / sst2-fp32+compile"
    assert compiled.loc["sst2", "verdict"] == "holds"
    assert compiled.loc["mrpc", "verdict"] == "not measured"
    assert rows_of(table, "3").loc["all tasks", "verdict"] == "not measured"
    assert rows_of(table, "3").loc["all tasks", "compared"] == "fp16 / autocast_fp16"


def test_claims_markdown_shows_every_claims_verdict():
    records = summary(
        cell("sst2", "fp32", 100, 5),
        cell("sst2", "int8", 300, 10),
        cell("mrpc", "fp32", 100, 5),
        cell("mrpc", "int8", 105, 10),
        cell("sst2", "flash", 80, 2),
        cell("sst2", "fp16", 40, 1),
        cell("sst2", "autocast_fp16", 60, 2),
        cell("sst2", "fp16_flash", 30, 1),
    )
    text = tables.claims_markdown(records)
    assert text == tables.claims_markdown(records)
    overall = claims.claims(records).query("task == 'all tasks'")
    assert len(overall) == len(claims.CLAIMS)
    lines = text.splitlines()
    for claim, verdict in zip(overall["claim"], overall["verdict"], strict=True):
        [line] = [line for line in lines if line.startswith(f"| {claim} |")]
        assert f"**{verdict}**" in line
    [one] = [line for line in lines if line.startswith("| 1 ")]
    assert "**holds on 1 of 2 tasks, not resolved on 1**" in one
    assert "sst2 3.00 [2.82, 3.18] holds · mrpc 1.05 [" in one
    assert "batch 16, max_length 128" in text


def test_an_empty_summary_has_nothing_to_judge():
    table = claims.claims(summary())
    assert table.empty and list(table.columns) == claims.CLAIM_COLUMNS
    assert tables.claims_markdown(summary()) == "No measured cell: nothing to judge."


def test_a_small_metric_change_never_reads_as_zero():
    assert tables.signed_change(0.0) == "0"
    assert tables.signed_change(-1.97e-5) == "-2.0e-05"
    assert tables.signed_change(0.0072) == "+0.0072"
    assert tables.signed_change(float("nan")) == ""
