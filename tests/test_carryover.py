"""Carry-over diagnostics: windows lagged within their own sweep, the sweep's recorded
previous power preferred, and the slope recovered from windows built with a known one."""

import numpy as np
import pandas as pd
import pytest

from effbert import carryover, report


def windows(cells, start, powers, slope=0.0, recorded=False):
    """Interleaved windows of one sweep: cells in turn, each window's power its cell's level
    plus ``slope`` times the previous window's power deviation from 500 W."""
    rows, previous = [], None
    for order in range(len(powers)):
        cell = cells[order % len(cells)]
        power = powers[order] + (slope * (previous - 500.0) if previous is not None else 0.0)
        rows.append(
            {
                "profile": "p",
                "task": "sst2",
                "technique": cell,
                "cell_id": f"{start}-{cell}",
                "status": "ok",
                "order": order,
                "energy_j": power * 2.0,
                "time_s": 2.0,
                "measured_at": start,
                "previous_power_w": previous if recorded else np.nan,
            }
        )
        previous = power
    return rows


def test_a_second_sweep_of_a_task_is_not_lagged_on_the_first():
    first = windows(["a", "b"], "2026-12-04T10:00:00+00:00", [400.0, 600.0] * 5)
    second = windows(["c", "d"], "2026-12-04T10:20:00+00:00", [300.0, 700.0] * 5)
    lagged = carryover.lagged_power(pd.DataFrame(first + second))
    assert len(lagged) == 18  # each sweep's first window has no window before it
    assert not (lagged["order"] == 0).any()
    c_after_d = lagged[lagged["technique"] == "c"]
    assert (c_after_d["previous_power_w"] == 700.0).all()


def test_the_recorded_previous_power_is_used_where_the_sweep_wrote_it():
    rows = windows(["a", "b"], "2026-12-04T10:00:00+00:00", [400.0, 600.0] * 3, recorded=True)
    rows[3]["previous_power_w"] = 123.0
    lagged = carryover.lagged_power(pd.DataFrame(rows)).set_index("order")
    assert lagged.loc[3, "previous_power_w"] == 123.0
    assert lagged.loc[4, "previous_power_w"] == 600.0


@pytest.mark.parametrize("slope", [0.0, 0.05])
def test_the_lag_slope_is_recovered(slope):
    """Cells in a random order (each follows every other): a window's power moves with the
    power of the window before it by ``slope`` W per W, and the regression finds it."""
    rng = np.random.default_rng(1)
    level = {"a": 300.0, "b": 500.0, "c": 700.0}
    rows, previous = [], None
    for order, cell in enumerate(rng.choice(list(level), 300)):
        power = level[cell] + rng.normal(0, 1.0)
        power += slope * (previous - 500.0) if previous is not None else 0.0
        rows += windows([cell], "2026-12-04T10:00:00+00:00", [power])
        rows[-1].update(order=order, cell_id=cell)
        previous = power
    table = carryover.carry_over_table(pd.DataFrame(rows)).set_index("task")
    assert table.loc["all", "slope"] == pytest.approx(slope, abs=0.01)
    assert table.loc["all", "windows"] == 299


def test_carry_over_is_shown_beside_the_compared_run(tmp_path, monkeypatch):
    here = pd.DataFrame(windows(["a", "b"], "2026-12-04T10:00:00+00:00", [400.0, 600.0] * 5))
    before = pd.DataFrame(
        windows(["a", "b"], "2026-11-28T10:00:00+00:00", [400.0, 600.0] * 5, slope=0.1)
    )
    monkeypatch.setattr(report, "_other_run", lambda where: (before, where))
    text = report.carry_over_markdown(here, "reports/before")
    assert "| task | slope in this run | slope in reports/before |" in text
    assert "9 windows" in text
    alone = report.carry_over_markdown(here)
    assert "slope in this run" in alone and "reports/before" not in alone
