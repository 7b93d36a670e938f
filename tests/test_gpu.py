"""On a CUDA GPU: every technique runs and the NVML meter reads energy (skipped elsewhere)."""

import pytest

from effbert import data, kernels, models, params, profiles, techniques, train
from tests.conftest import Study

pytestmark = pytest.mark.gpu


def test_every_technique_measures_energy_on_the_gpu(tmp_path):
    settings = dict(
        profile="gpu-test",
        data_source="synthetic",
        model="tiny-random",
        techniques=list(techniques.TECHNIQUES),
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
    study = Study(profiles.validate(settings), str(tmp_path))
    trials = study.run(list(techniques.TECHNIQUES))
    assert (trials["status"] == "ok").all(), trials[["technique", "reason"]]
    assert (trials["energy_source"] == "nvml").all() and (trials["energy_j"] > 0).all()
    assert trials["gpu_temp_c_before"].notna().all()
    study.check(trials)


def test_finetune_trains_with_bf16_autocast_and_fused_adamw_on_the_gpu(tmp_path):
    import torch

    from effbert.tasks import get_task

    base = tmp_path / "base"
    models.tiny_random_model(num_labels=2).save_pretrained(base)
    models.tiny_tokenizer().save_pretrained(base)
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", split="train", max_samples=64)
    settings = params.FinetuneSettings(epochs=2, batch_size=16, max_length=32)
    device = torch.device("cuda")
    report = train.finetune(str(base), task, rows, tmp_path / "out", settings, device)
    assert report["steps"] == 8 and report["device_name"] == torch.cuda.get_device_name(device)
    dev = data.load_split(task, "synthetic", max_samples=32)
    assert 0.0 <= train.score(tmp_path / "out", task, dev, device, 32)["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "technique",
    [
        "bf16+varlen",
        "bf16+varlen+cls_last",
        "bf16+varlen+compile+cls_last",
        "fp16+varlen+graphs+cls_last",
        "bf16+flex+compile+cls_last",
    ],
)
def test_padding_free_cells_run_varlen_flash_and_match_the_padded_model(technique):
    import numpy as np
    import torch

    from effbert.tasks import get_task

    task = get_task("mrpc")
    rows = data.load_split(task, "synthetic", max_samples=64)
    tokenizer = models.tiny_tokenizer()
    cuda = torch.device("cuda")
    reference = models.prepare(models.TINY_RANDOM, task, techniques.parse("bf16+sdpa"), cuda)
    expected = reference.predict(data.make_batches(tokenizer, rows, 16, "longest", 64), len(rows))
    chosen = techniques.parse(technique)
    prepared = models.prepare(models.TINY_RANDOM, task, chosen, cuda)
    batches = data.make_batches(tokenizer, rows, 16, "packed", 64)
    got = prepared.predict(batches, len(rows))
    np.testing.assert_allclose(got, expected, atol=3e-2)
    forward, inputs = prepared.forward(), [prepared.inputs(b) for b in batches]

    def run_pass():
        for batch in inputs:
            forward(batch)

    with prepared.context():
        record = kernels.kernel_record(run_pass, chosen, cuda)
    assert record["fallback"] is None, record["top"]


def test_end_to_end_stream_on_the_gpu_gives_the_forward_only_metric(tmp_path):
    settings = dict(
        profile="gpu-e2e",
        data_source="synthetic",
        model="tiny-random",
        techniques=["bf16"],
        combinations=[{"technique": "bf16+varlen+cls_last", "batch_size": 32, "padding": "packed"}],
        device="cuda",
        energy="nvml",
        tasks=["mrpc"],
        max_samples=96,
        warmup_s=0.2,
        trials=2,
        min_window_s=1.0,
        idle_s=0.5,
        tokenize_workers=3,
        metrics_backend="sklearn",
        metric_tolerance=1.0,
    )
    e2e = Study(profiles.validate({**settings, "scope": "end_to_end"}), str(tmp_path))
    model = Study(profiles.validate(settings), str(tmp_path))
    streamed, forward = e2e.run(combinations=True), model.run(combinations=True)
    assert set(streamed["status"]) == set(forward["status"]) == {"ok"}
    assert streamed["metric_value"].iloc[0] == forward["metric_value"].iloc[0]
    assert (streamed["cpu_cores_busy"] > 0).all() and (streamed["energy_j"] > 0).all()
