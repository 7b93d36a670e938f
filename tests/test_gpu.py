"""On a CUDA GPU: every technique runs and the NVML meter reads energy (skipped elsewhere)."""

import pytest

from effbert import bench, models, params

pytestmark = pytest.mark.gpu


def test_every_technique_measures_energy_on_the_gpu(tmp_path):
    settings = dict(
        profile="gpu-test",
        data_source="synthetic",
        model="tiny-random",
        techniques=list(models.TECHNIQUES),
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
    study = bench.Study(params.validate(settings), str(tmp_path))
    trials = study.run(list(models.TECHNIQUES))
    assert (trials["status"] == "ok").all(), trials[["technique", "reason"]]
    assert (trials["energy_source"] == "nvml").all() and (trials["energy_j"] > 0).all()
    assert trials["gpu_temp_c_before"].notna().all()
    study.check(trials)


def test_finetune_trains_with_bf16_autocast_and_fused_adamw_on_the_gpu(tmp_path):
    import torch

    from effbert import data, finetune
    from effbert.tasks import get_task

    base = tmp_path / "base"
    models.tiny_random_model(num_labels=2).save_pretrained(base)
    models.tiny_tokenizer().save_pretrained(base)
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", split="train", max_samples=64)
    settings = finetune.FinetuneSettings(epochs=2, batch_size=16, max_length=32)
    device = torch.device("cuda")
    report = finetune.finetune(str(base), task, rows, tmp_path / "out", settings, device)
    assert report["steps"] == 8 and report["device_name"] == torch.cuda.get_device_name(device)
    dev = data.load_split(task, "synthetic", max_samples=32)
    assert 0.0 <= finetune.score(tmp_path / "out", task, dev, device, 32)["accuracy"] <= 1.0
