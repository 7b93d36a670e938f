"""On a CUDA GPU: every technique runs and the NVML meter reads energy (skipped elsewhere)."""

import pytest

from effbert import bench, models

pytestmark = pytest.mark.gpu


def test_every_technique_measures_energy_on_the_gpu(tmp_path):
    study = bench.Study(
        profile="gpu-test",
        reports_dir=str(tmp_path),
        device="cuda",
        energy="nvml",
        tasks=["sst2"],
        max_samples=64,
        warmup_s=0.5,
        trials=2,
        min_window_s=1.0,
        idle_s=1.0,
        metrics_backend="sklearn",
        metric_tolerance=1.0,
    )
    trials = study.run(list(models.TECHNIQUES))
    assert (trials["status"] == "ok").all(), trials[["technique", "reason"]]
    assert (trials["energy_source"] == "nvml").all() and (trials["energy_j"] > 0).all()
    assert trials["gpu_temp_c_before"].notna().all()
    study.check(trials)
