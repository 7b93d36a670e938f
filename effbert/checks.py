"""The notebooks' Checks: a pure function of the records, so published results re-check
without a GPU."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _main_setting_first(column: pd.Series) -> pd.Series:
    """Sort key: padding ``max_length`` first, then smaller batches (the original setting)."""
    if column.name == "padding":
        return column.ne("max_length")
    return column


def check(
    trials: pd.DataFrame,
    recorded: pd.DataFrame,
    min_window_s: float,
    metric_tolerance: float,
    baseline: str = "fp32",
) -> pd.DataFrame:
    """Assert that measured cells are sound and each metric is near the baseline's.

    A pure function of the records: a published ``results.csv`` is re-checked without a GPU.

    Args:
        trials: the trial rows to check.
        recorded: every recorded row of the profile, where the baseline's cells are found.

    Returns:
        Per ok cell: the task metric, the baseline's, and their difference.
    """
    keys = ["task", "batch_size", "padding", "max_length"]
    columns = [*keys, "technique", "metric", "metric_value", f"metric_value_{baseline}"]
    if trials.empty:
        return pd.DataFrame(columns=[*columns, "difference"])
    failed = trials[trials["status"] == "failed"]
    assert failed.empty, f"cells failed:\n{failed[['task', 'technique', 'reason']]}"
    skipped = trials[trials["status"] == "skipped"]
    assert (skipped["reason"].fillna("").astype(str).str.len() > 0).all(), (
        "a skipped cell gives no reason"
    )
    ok = trials[trials["status"] == "ok"]
    assert (ok["time_s"] >= min_window_s).all(), "a window shorter than min_window_s"
    assert (ok["n_samples"] > 0).all(), "a window processed no samples"
    assert ok["metric_value"].notna().all(), "a cell without its task metric"
    metered = ok[ok["energy_source"].fillna("none") != "none"]
    assert (metered["energy_j"] > 0).all(), "a window read no energy"
    current = ~recorded.get("superseded", pd.Series(False, index=recorded.index)).fillna(False)
    reference = recorded[
        (recorded["technique"] == baseline) & (recorded["status"] == "ok") & current.astype(bool)
    ]
    compared = ok.drop_duplicates("cell_id")[[*keys, "technique", "metric", "metric_value"]].merge(
        reference.drop_duplicates("cell_id")[[*keys, "metric_value"]],
        on=keys,
        how="left",
        suffixes=("", f"_{baseline}"),
    )
    compared["compared_with"] = np.where(
        compared[f"metric_value_{baseline}"].notna(),
        "same batch and padding",
        f"no {baseline} cell",
    )
    # cells of a setting the baseline was not measured at: its cell of the task's main setting
    per_task = (
        reference.drop_duplicates("cell_id")
        .sort_values(["padding", "batch_size"], key=_main_setting_first)
        .drop_duplicates("task")
        .set_index("task")
    )
    missing = compared[f"metric_value_{baseline}"].isna() & compared["task"].isin(per_task.index)
    fallback = per_task.loc[compared.loc[missing, "task"]]
    compared.loc[missing, f"metric_value_{baseline}"] = fallback["metric_value"].to_numpy()
    compared.loc[missing, "compared_with"] = [
        f"batch {r.batch_size}, {r.padding}" for r in fallback.itertuples()
    ]
    compared["difference"] = compared["metric_value"] - compared[f"metric_value_{baseline}"]
    far = compared[compared["difference"].abs() > metric_tolerance]
    assert far.empty, f"metric further than {metric_tolerance} from {baseline}:\n{far}"
    return compared
