import json

import pytest
import torch

from effbert import data, finetune, models
from effbert.tasks import get_task


@pytest.fixture
def base_model(tmp_path):
    folder = tmp_path / "base"
    models.tiny_random_model(num_labels=2).save_pretrained(folder)
    models.tiny_tokenizer().save_pretrained(folder)
    return folder


def test_per_task_values_fall_back_to_default():
    task = get_task("mnli_mm")
    assert finetune.per_task({"mnli": 1, "default": 3}, task, 9) == 1
    assert finetune.per_task({"default": 3}, task, 9) == 3
    assert finetune.per_task({}, task, 9) == 9


@pytest.mark.parametrize("name", ["mnli_m", "stsb"])
def test_finetune_saves_a_glue_labelled_checkpoint_and_reuses_it(tmp_path, base_model, name):
    task = get_task(name)
    rows = data.load_split(task, "synthetic", split="train", max_samples=24)
    settings = finetune.FinetuneSettings(epochs=1, batch_size=8, max_length=32)
    out = tmp_path / "out"
    report = finetune.finetune(str(base_model), task, rows, out, settings, torch.device("cpu"))
    assert report["steps"] == 3 and not report["reused"]
    config = json.loads((out / "config.json").read_text())
    if task.is_regression:
        assert config["problem_type"] == "regression"
    else:
        assert list(config["id2label"].values()) == list(task.label_names)
    again = finetune.finetune(str(base_model), task, rows, out, settings, torch.device("cpu"))
    assert again["reused"]
    dev = data.load_split(task, "synthetic", max_samples=16)
    scores = finetune.score(out, task, dev, torch.device("cpu"), max_length=32)
    assert set(scores) == set(task.metrics)


def test_plan_without_base_model_trains_nothing_and_needs_a_folder_with_one(tmp_path):
    assert finetune.Plan(tasks=["sst2"]).run().empty
    with pytest.raises(ValueError, match="checkpoints_dir"):
        finetune.Plan(tasks=["sst2"], base_model="some/model")


def test_plan_fine_tunes_each_model_task_once(tmp_path, base_model):
    plan = finetune.Plan(
        tasks=["mnli_m", "mnli_mm"],
        base_model=str(base_model),
        checkpoints_dir=str(tmp_path / "ckpt"),
        max_samples=12,
        finetune_max_train_samples=16,
        finetune_epochs={"default": 1},
        finetune_batch_size={"default": 8},
        device="cpu",
    )
    reports = plan.run()
    assert reports["task"].tolist() == ["mnli_m", "mnli_mm"]
    assert reports["reused"].tolist() == [False, True]
    assert reports["dev_metric"].notna().all()
