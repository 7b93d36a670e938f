"""Claims judged as a reviewer would: paired log-ratios by round with t intervals, the family
Holm-adjusted, pooled over tasks with the task effect shown, equivalence as a verdict."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from effbert import claims, stats, tables


def test_the_paired_log_ratio_interval_is_scipys_paired_t_on_logs():
    rng = np.random.default_rng(0)
    b = rng.uniform(90, 110, 7)
    a = b * rng.normal(0.9, 0.03, 7)
    r = stats.paired_log_ratio(a, b)
    test = scipy_stats.ttest_rel(np.log(a), np.log(b))
    ci = test.confidence_interval(0.95)
    assert r.ratio == pytest.approx(math.exp(np.mean(np.log(a / b))))
    assert (r.low, r.high) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))
    assert r.p_value == pytest.approx(test.pvalue)
    ci90 = test.confidence_interval(0.90)
    assert (r.low90, r.high90) == pytest.approx((math.exp(ci90.low), math.exp(ci90.high)))


def test_holm_matches_its_definition_on_scipy_p_values():
    rng = np.random.default_rng(1)
    p = np.array(
        [scipy_stats.ttest_1samp(rng.normal(mu, 1, 8), 0).pvalue for mu in (0, 0.5, 1, 2, 0.2)]
    )
    adjusted = stats.holm(p)
    order = np.argsort(p)
    expected = np.maximum.accumulate([min(1, (len(p) - k) * p[i]) for k, i in enumerate(order)])
    assert adjusted[order] == pytest.approx(expected)
    assert np.isnan(stats.holm([np.nan, 0.01])[0]) and stats.holm([np.nan, 0.01])[1] == 0.01


def test_verdicts_hold_refute_equivalent_or_not_resolved():
    down = stats.paired_log_ratio([90, 91, 89, 90, 90.5], [100, 100, 100, 100, 100])
    assert stats.verdict(down, 0.001, "below") == "holds"
    assert stats.verdict(down, 0.001, "above") == "does not hold"
    same = stats.paired_log_ratio([100.2, 99.9, 100.1, 100.0, 99.8], [100, 100, 100, 100, 100])
    assert stats.verdict(same, 0.9, "below") == "equivalent within ±3%"
    wide = stats.paired_log_ratio([80, 120, 95], [100, 100, 100])
    assert stats.verdict(wide, 0.9, "below") == "not resolved"


def test_pooling_reports_the_task_effect():
    same = [
        np.log(np.full(5, 0.95)) + np.random.default_rng(i).normal(0, 0.01, 5) for i in range(3)
    ]
    pooled, p_task = stats.pooled_log_ratio(same)
    assert pooled.n == 15 and pooled.ratio == pytest.approx(0.95, rel=0.01) and p_task > 0.05
    differ = [
        np.log(np.full(5, x)) + np.random.default_rng(7).normal(0, 0.01, 5) for x in (0.8, 1.2)
    ]
    assert stats.pooled_log_ratio(differ)[1] < 0.001


def trials(per_cell: dict, tasks=("sst2", "mrpc"), metric=None) -> pd.DataFrame:
    """Trial rows of cells at the original setting: technique -> per-trial J/1k."""
    rows = []
    for task in tasks:
        for technique, energies in per_cell.items():
            for i, e in enumerate(energies):
                rows.append(
                    {
                        "profile": "p",
                        "task": task,
                        "technique": technique,
                        "batch_size": 16,
                        "padding": "max_length",
                        "max_length": 128,
                        "trial": i,
                        "status": "ok",
                        "cell_id": f"{task}-{technique}",
                        "j_per_1k_samples": e,
                        "dynamic_j_per_1k_samples": e / 2,
                        "n_samples": 800,
                        "passes": 2,
                        "metric": "accuracy",
                        "attention_kernel": "memory-efficient",
                        "metric_value": (metric or {}).get(technique, 0.9),
                    }
                )
    return pd.DataFrame(rows)


def test_claims_are_judged_per_task_and_pooled_with_one_family():
    frame = trials({"fp32": [100, 101, 99, 100, 102], "flash": [95, 96, 94, 95, 97]})
    table = claims.claims(frame)
    claim2 = table[table["claim"].str.startswith("2 ")]
    assert list(claim2["task"]) == ["sst2", "mrpc", "pooled"]
    assert claim2["n"].tolist() == [5, 5, 10]
    assert claim2["ratio"].iloc[-1] == pytest.approx(0.95, rel=0.01)
    assert (claim2["verdict"] == "holds").all()
    assert claim2["above_idle"].iloc[-1] == pytest.approx(0.95, rel=0.01)
    assert len(table) == 3  # the family: only claim 2 has its cells


def test_a_metric_drop_of_more_than_one_example_breaks_a_kept_claim():
    energies = {"fp32": [100, 101, 99, 100, 102], "flash": [95, 96, 94, 95, 97]}
    one = trials(energies, metric={"flash": 0.9 - 1 / 400})  # one example of 400
    assert (claims.claims(one)["verdict"] == "holds").all()
    two = trials(energies, metric={"flash": 0.9 - 3 / 400})  # 0.0075 > 0.005
    assert (claims.claims(two)["verdict"] == "does not hold (metric)").all()
    assert claims.claims(two)["examples_changed"].iloc[0] == -3


def test_the_markdown_names_the_family_and_escapes_nothing_it_should_not():
    frame = trials({"fp32": [100, 101, 99, 100, 102], "flash": [100, 101, 99, 100, 102]})
    text = tables.claims_markdown(frame)
    assert "The family is all 3 tests" in text and "**equivalent within ±3%** (pooled)" in text
    assert tables.claims_markdown(frame.iloc[0:0]) == "No measured cell: nothing to judge."


def test_claims_on_packed_batches_are_judged_per_task_not_pooled():
    """Packed batches run each task's own lengths (the workload depends on the task): claim
    2c has a verdict per task and no pooled row; the README's line lists each task's."""
    energies = {
        "bf16+varlen+graphs+cls_last": [4.5, 4.6, 4.4, 4.5, 4.6],
        "bf16+varlen_mem+graphs+cls_last": [4.0, 4.1, 3.9, 4.0, 4.1],
    }
    frame = trials(energies).assign(batch_size=512, padding="packed")
    table = claims.claims(frame)
    assert list(table["task"]) == ["sst2", "mrpc"]
    assert (table["verdict"] == "does not hold").all()
