import math

import pandas as pd
import pytest
import torch

from effbert import (
    checks,
    energy,
    kernels,
    measure,
    profiles,
    results,
    stats,
    sweep,
    windows,
)
from tests.conftest import FakeMonitor, Study

CPU = torch.device("cpu")


def fake_meter(clock, **kwargs):
    return energy.ZeusMeter(FakeMonitor(clock, **kwargs), CPU, "nvml", "fake")


def measure_windows(run_pass, meter, settings, clock):
    """What a cell's windows run (``measure.CellRun``): the check, warmup, then the trials."""
    settings.check(meter)
    windows.warm_up(run_pass, settings, clock)
    return [
        windows.measure_window(run_pass, meter, settings, clock) for _ in range(settings.trials)
    ]


def test_windows_repeat_whole_passes_until_min_window(clock):
    passes = []

    def run_pass():
        clock.advance(0.3)
        passes.append(1)

    settings = windows.MeasureSettings(warmup_s=1.0, trials=3, min_window_s=2.0)
    measured = measure_windows(run_pass, fake_meter(clock, power_w=100.0), settings, clock)
    assert len(measured) == 3
    for w in measured:
        assert w.passes == 7  # 7 x 0.3 s is the first whole-pass count >= 2 s
        assert w.time_s == pytest.approx(2.1)
        assert w.energy_j == pytest.approx(210.0)
    assert len(passes) == 4 + 3 * 7  # 4 warmup passes (>= 1 s), then the trials


def test_a_slow_cell_with_one_batch_shape_windows_whole_batches_not_whole_passes(clock):
    from types import SimpleNamespace

    def batch(n_samples, n_tokens):
        ids = torch.zeros(n_samples, 128)
        return SimpleNamespace(input_ids=ids, n_samples=n_samples, n_tokens=n_tokens)

    batches = [batch(16, 100 + i) for i in range(10)] + [batch(5, 40)]  # a pass takes 5.5 s
    ran = []

    def forward(inputs):
        clock.advance(0.5)
        ran.append(inputs)

    cycle = windows.BatchCycle.of(forward, list(range(11)), batches, 16, "max_length")
    assert windows.BatchCycle.of(forward, list(range(11)), batches, 16, "bucketed") is None
    settings = windows.MeasureSettings(warmup_s=1.0, trials=3, min_window_s=1.0)
    meter = fake_meter(clock, power_w=100.0)
    windows.warm_up(cycle, settings, clock)
    measured = [windows.measure_window(None, meter, settings, clock, cycle) for _ in range(3)]
    assert [w.passes for w in measured] == [2, 2, 2]  # 2 batches of 0.5 s, not a 5.5-s pass
    assert [w.n_samples for w in measured] == [32, 32, 32]
    assert [w.n_tokens for w in measured] == [102 + 103, 104 + 105, 106 + 107]
    assert 10 not in ran, "the smaller last batch is left out of the cycle"
    [trial, *_] = windows.trial_records(
        measured, 165, 1085, idle_power_w=0.0, carbon_intensity_g_per_kwh=0
    )
    assert trial["n_samples"] == 32 and trial["passes"] == pytest.approx(32 / 165, abs=1e-4)
    assert trial["j_per_1k_samples"] == pytest.approx(1000 * 100.0 / 32)


def test_zero_energy_window_is_measured_again_twice_as_long(clock):
    meter = fake_meter(clock, zero_windows=1)
    settings = windows.MeasureSettings(warmup_s=0, trials=2, min_window_s=1.0)
    measured = measure_windows(lambda: clock.advance(0.25), meter, settings, clock)
    assert [w.time_s for w in measured] == [pytest.approx(2.0), pytest.approx(1.0)]


def test_persistent_zero_energy_fails_loudly(clock):
    meter = fake_meter(clock, zero_windows=10)
    settings = windows.MeasureSettings(warmup_s=0, trials=2, min_window_s=1.0, max_retries=2)
    with pytest.raises(energy.EnergyError):
        measure_windows(lambda: clock.advance(0.25), meter, settings, clock)


def test_windows_too_short_for_the_counter_are_refused(clock):
    settings = windows.MeasureSettings(warmup_s=0, trials=2, min_window_s=0.2)
    with pytest.raises(ValueError, match="at least 1 s"):
        measure_windows(lambda: None, fake_meter(clock), settings, clock)
    with pytest.raises(ValueError, match="at least 2"):
        windows.MeasureSettings(warmup_s=0, trials=1, min_window_s=1).check(fake_meter(clock))


def test_trial_figures_are_totals_over_counts_with_idle_subtracted():
    measured = [windows.Window(passes=4, time_s=2.0, energy_j=600.0)]
    [trial] = windows.trial_records(
        measured,
        samples_per_pass=100,
        tokens_per_pass=5000,
        idle_power_w=60.0,
        carbon_intensity_g_per_kwh=400.0,
    )
    assert trial["n_samples"] == 400 and trial["n_tokens"] == 20000
    assert trial["samples_per_s"] == 200.0 and trial["tokens_per_s"] == 10000.0
    assert trial["j_per_1k_samples"] == 1500.0 and trial["j_per_token"] == 0.03
    assert trial["dynamic_energy_j"] == 600.0 - 60.0 * 2.0
    assert trial["co2_mg"] == pytest.approx(600 / 3.6e6 * 400 * 1000)


def test_ci95_uses_student_t():
    values = [10.0, 12.0, 11.0, 13.0, 9.0]
    # t(0.975, 4) = 2.7764; std = 1.5811; n = 5
    assert stats.ci95_half_width(values) == pytest.approx(2.7764 * 1.5811 / math.sqrt(5), rel=1e-3)
    assert math.isnan(stats.ci95_half_width([1.0]))


def test_variation_flags_energy_when_measured_else_throughput():
    steady = [{"energy_j": 1.0, "j_per_1k_samples": v, "samples_per_s": 1.0} for v in (10, 10.1)]
    noisy = [
        {"energy_j": float("nan"), "j_per_1k_samples": 1, "samples_per_s": v} for v in (100, 150)
    ]
    assert windows.variation(steady) < 0.01
    assert windows.variation(noisy) > 0.2


def small_study(tmp_path, force=False, **overrides):
    settings = dict(
        profile="t",
        data_source="synthetic",
        model="tiny-random",
        tasks=["sst2", "stsb"],
        techniques=["fp32", "int8"],
        batch_sizes=[8],
        max_samples=16,
        max_length=32,
        warmup_s=0.0,
        trials=2,
        min_window_s=0.01,
        idle_s=0,
        latency_batches=2,
        metrics_backend="sklearn",
        energy="none",
        metric_tolerance=2.0,
    )
    return Study(profiles.validate({**settings, **overrides}), str(tmp_path), force)


def test_study_records_every_cell_with_metric_and_environment(tmp_path):
    study = small_study(tmp_path)
    trials = study.run(["fp32", "int8", "fp16"])
    ok = trials[trials["status"] == "ok"]
    assert len(ok) == 2 * 2 * 2  # tasks x techniques (fp16 is not in the profile) x trials
    assert set(ok["metric"]) == {"accuracy", "pearson"}
    assert (ok["energy_source"] == "none").all() and (ok["device_name"] != "").all()
    assert ok["latency_p50_ms"].notna().all()
    on_disk = results.read_results(tmp_path / "results", "t")
    assert len(on_disk) == len(trials)
    study.check(trials)


def test_cpu_run_skips_gpu_techniques_with_the_reason(tmp_path):
    trials = small_study(tmp_path, techniques=["fp16"], device="cpu").run(["fp16"])
    assert (trials["status"] == "skipped").all()
    assert trials["reason"].str.contains("needs a CUDA GPU").all()


def test_resume_after_a_crash_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch):
    study = small_study(tmp_path)
    real_measure = measure.measure_cell
    calls = []

    def crash_on_third(*args):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt("power cut")
        return real_measure(*args)

    monkeypatch.setattr(sweep, "measure_cell", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        study.run(["fp32", "int8"])
    cells_dir = tmp_path / "results" / "cells" / "t"
    saved = sorted(p.name for p in cells_dir.glob("*.json"))
    assert len(saved) == 2 and not list(cells_dir.glob(".*.tmp"))

    calls.clear()
    monkeypatch.setattr(sweep, "measure_cell", real_measure)
    resumed = small_study(tmp_path).run(["fp32", "int8"])
    assert len(list(cells_dir.glob("*.json"))) == 4
    assert set(saved) <= {p.name for p in cells_dir.glob("*.json")}
    table = results.read_results(tmp_path / "results", "t")
    assert len(table) == 4 * 2 and not table.duplicated(["cell_id", "trial"]).any()
    assert len(resumed) == 8

    measured = []
    monkeypatch.setattr(
        sweep, "measure_cell", lambda *args: measured.append(args[0]) or real_measure(*args)
    )
    small_study(tmp_path, force=True, tasks=["sst2"], techniques=["fp32"]).run(["fp32"])
    assert len(measured) == 1  # --force measures the cell again, in place
    assert len(list(cells_dir.glob("*.json"))) == 4


def test_a_changed_configuration_is_a_new_cell(tmp_path):
    small_study(tmp_path, techniques=["fp32"], tasks=["sst2"]).run(["fp32"])
    small_study(tmp_path, techniques=["fp32"], tasks=["sst2"], max_length=24).run(["fp32"])
    assert len(list((tmp_path / "results" / "cells" / "t").glob("*.json"))) == 2


def test_a_technique_that_breaks_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from effbert import techniques

    def broken(model, kind):
        raise RuntimeError("no int8 kernel for this device")

    monkeypatch.setattr(techniques, "quantize", broken)
    study = small_study(tmp_path)
    trials = study.run(["int8", "fp32"])
    failed = trials[trials["status"] == "failed"]
    assert set(failed["task"]) == {"sst2", "stsb"}
    assert failed["reason"].str.contains("no int8 kernel").all()
    assert (trials[trials["technique"] == "fp32"]["status"] == "ok").all()
    with pytest.raises(AssertionError, match="cells failed"):
        study.check(trials)


def test_missing_task_data_errors_or_skips_as_the_profile_says(tmp_path):
    (tmp_path / "glue").mkdir()
    local = dict(data_source="local", glue_dir=str(tmp_path / "glue"))
    with pytest.raises(Exception, match="no file"):
        small_study(tmp_path, **local).run(["fp32"])
    trials = small_study(tmp_path, on_missing_task="skip", **local).run(["fp32"])
    assert (trials["status"] == "skipped").all()


def test_check_rejects_metrics_far_from_the_baseline(tmp_path):
    trials = small_study(tmp_path, tasks=["sst2"]).run(["fp32", "int8"])
    shifted = trials.copy()
    shifted.loc[shifted["technique"] == "int8", "metric_value"] += 0.5
    compared = checks.check(shifted, shifted, min_window_s=0.01, metric_tolerance=0.6)
    assert compared.set_index("technique").loc["int8", "difference"] == pytest.approx(0.5)
    with pytest.raises(AssertionError, match="metric further than 0.1"):
        checks.check(shifted, shifted, min_window_s=0.01, metric_tolerance=0.1)


def test_check_compares_cells_without_a_baseline_at_their_setting_with_the_main_one(tmp_path):
    trials = small_study(tmp_path, tasks=["sst2"]).run(["fp32", "int8"])
    wider = trials[trials["technique"] == "int8"].copy()
    wider["batch_size"], wider["padding"], wider["cell_id"] = 64, "bucketed", "wider"
    wider["metric_value"] += 0.5
    rows = pd.concat([trials, wider])
    with pytest.raises(AssertionError, match="metric further than 0.1"):
        checks.check(rows, rows, min_window_s=0.01, metric_tolerance=0.1)
    compared = checks.check(rows, rows, min_window_s=0.01, metric_tolerance=0.6)
    row = compared[compared["batch_size"] == 64].iloc[0]
    assert row["difference"] == pytest.approx(0.5)
    assert row["compared_with"] == f"batch {trials['batch_size'].iloc[0]}, max_length"
    assert set(compared[compared["batch_size"] != 64]["compared_with"]) == {
        "same batch and padding"
    }


def test_a_profile_that_selects_none_of_a_notebooks_techniques_measures_nothing(tmp_path, capsys):
    study = small_study(tmp_path, techniques=["fp32"])
    trials = study.run(["int8"])
    assert trials.empty and "selects no cell" in capsys.readouterr().out
    assert study.check(trials).empty
    assert study.summary(trials).empty and study.skipped(trials).empty


def test_a_checkpoint_that_finetuning_will_train_counts_as_planned(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    study = small_study(
        tmp_path,
        model="",
        base_model=str(base),
        checkpoints_dir=str(tmp_path / "ft"),
        tasks=["sst2"],
    )
    inputs = study.inputs()
    assert inputs.loc[0, "problem"] == ""
    assert inputs.loc[0, "checkpoint"].startswith("planned: ")
    study.check_inputs(inputs)


def test_interleaved_rounds_spread_each_cells_trials_over_the_task(tmp_path):
    study = small_study(tmp_path, order="interleaved", trials=3, techniques=["fp32", "int8"])
    trials = study.run(["fp32", "int8"])
    ok = trials[trials["status"] == "ok"]
    assert len(ok) == 2 * 2 * 3  # tasks x techniques x trials
    for _task, rows in ok.groupby("task"):
        assert sorted(rows["order"]) == list(range(6))  # one order over the task's windows
        assert set(rows.groupby("technique")["order"].min()) == {0, 1}  # round 1 holds both
    sequential = small_study(tmp_path, trials=3, techniques=["fp32", "int8"]).run(["fp32"])
    interleaved_fp32 = ok[ok["technique"] == "fp32"].drop_duplicates("task")
    assert list(interleaved_fp32["metric_value"]) == list(
        sequential.drop_duplicates("task")["metric_value"]
    )
    assert set(sequential["cell_id"]).isdisjoint(ok["cell_id"])  # the order is recorded
    again = small_study(tmp_path, order="interleaved", trials=3, techniques=["fp32", "int8"])
    assert len(again.run(["fp32", "int8"])) == len(trials)  # finished cells are read back
    study.check(trials)


def test_idle_gap_share_counts_time_without_any_kernel():
    # kernels over [0, 4] and [6, 10] with an overlap inside the first: 2 of 10 units idle
    assert kernels.idle_gap_share([(0, 3), (1, 4), (6, 10)]) == pytest.approx(0.2)
    assert kernels.idle_gap_share([]) is None
    assert kernels.busy_time([(0, 3), (1, 4), (6, 10)]) == 8
    assert kernels.busy_time([]) == 0


def test_window_split_scales_kernel_kinds_by_the_busy_share_of_the_windows():
    record = {
        "top": [
            {"name": "nvjet_sm90_tst_128x256", "share": 0.6},
            {"name": "pytorch_flash::flash_fwd_kernel", "share": 0.4},
        ],
        "busy_ms": 4.0,
    }
    frame = pd.DataFrame({"time_s": [1.0, 1.0], "passes": [200, 200]})  # 5 ms a pass
    split = kernels.window_split(record, frame)
    assert split == {"matrix products": 0.48, "attention": 0.32, "no kernel running": 0.2}
    assert kernels.window_split({"top": record["top"]}, frame) == {}


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nvjet_sm90_qqtst_192x176_128x4_1x2_h_bz_coopB_bias_TNT", "matrix products"),
        ("triton_poi_fused__scaled_mm__to_copy_clamp_gelu_mul_3", "element-wise and other"),
        ("triton_per_fused__scaled_mm__to_copy_add_clamp_mul_native_layer_norm_4", "layer norm"),
        ("triton_tem_fused_clone_flex_attention_transpose_unsqueeze_view_0", "attention"),
        ("triton_tem_fused_mm_gelu_0", "matrix products"),
        ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention", "attention"),
    ],
)
def test_a_fused_triton_kernel_is_counted_as_what_it_computes_not_what_it_feeds(name, kind):
    """Inductor names a kernel after the ops it fused: a GELU that casts a product's FP8 input
    is element-wise work, not a matrix product."""
    assert kernels.kernel_kind(name) == kind


def test_the_notebook_summary_leaves_out_what_was_not_measured(tmp_path):
    study = small_study(tmp_path, tasks=["sst2"])
    shown = study.summary(study.run(["fp32"]))
    assert len(shown) == 1 and {"task", "technique", "metric_value"} <= set(shown.columns)
    assert not shown.isna().all().any(), "a column with nothing in it"
    assert "cpu_j_per_1k_samples_mean" not in shown  # model scope: no CPU energy


@pytest.mark.parametrize(
    ("padding", "profiled"), [("longest", kernels.KERNEL_BATCHES), ("max_length", 4)]
)
def test_a_kernel_record_profiles_batches_spread_over_the_pass(
    tmp_path, monkeypatch, padding, profiled
):
    """16 batches at most; 4 where every batch has one shape and so runs the same kernels."""
    p = profiles.load(
        "smoke",
        energy="none",
        tasks=["sst2"],
        max_samples=200,
        batch_sizes=[4],
        trials=2,
        padding=padding,
    )
    study = Study(p, str(tmp_path))
    (cell,) = study.plan(["fp32"])
    run = measure.CellRun(
        cell, study.rows(cell.task), p, study.meter, study.label_map_for(cell.task)
    )
    ran, shares = [], {}
    run.forward = ran.append

    def fake_record(run_part, technique, device, share=1.0):
        run_part()
        shares["share"] = share
        return {}

    monkeypatch.setattr(measure, "kernel_record", fake_record)
    run.kernel_record()
    assert len(run.inputs) == 50 and len(ran) == profiled
    positions = [next(i for i, x in enumerate(run.inputs) if x is b) for b in ran]
    assert positions == [i * 50 // profiled for i in range(profiled)]
    assert shares["share"] == pytest.approx(profiled * 4 / 200)
