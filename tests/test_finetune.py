import json

import pandas as pd
import pytest
import torch

from effbert import data, finetune, models, params, profiles, techniques, train
from effbert.tasks import get_task


@pytest.fixture
def base_model(tmp_path):
    folder = tmp_path / "base"
    models.tiny_random_model(num_labels=2).save_pretrained(folder)
    models.tiny_tokenizer().save_pretrained(folder)
    return folder


def plan(tmp_path, **values):
    values = {"data_source": "synthetic", **values}
    return finetune.FinetunePlan(profiles.validate(values), str(tmp_path / "reports"))


def test_plan_settings_take_each_task_its_own_seed_and_rate(tmp_path):
    p = plan(
        tmp_path, tasks=["sst2", "rte"], seed=7, finetune={"rte": {"seed": 2}, "sst2": {"lr": 2e-5}}
    )
    sst2, rte = p.settings(get_task("sst2")), p.settings(get_task("rte"))
    assert (sst2.seed, sst2.lr) == (7, 2e-5)
    assert (rte.seed, rte.lr) == (2, 3e-5)


def test_parameter_groups_decay_the_rate_layer_by_layer_below_the_head(base_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base_model)
    settings = params.FinetuneSettings(lr=1e-4, layer_lr_decay=0.5, head_lr=1e-3)
    groups = train._parameter_groups(model, settings)
    n_layers = model.config.n_layers
    assert [g["lr"] for g in groups] == pytest.approx(
        [1e-4 * 0.5**d for d in range(n_layers, -1, -1)] + [1e-3]
    )
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_reinit_draws_only_the_top_layers_afresh(tmp_path, base_model):
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", split="train", max_samples=8)
    settings = params.FinetuneSettings(epochs=1, batch_size=8, lr=0.0, reinit_layers=1)
    out = tmp_path / "out"
    train.finetune(str(base_model), task, rows, out, settings, torch.device("cpu"))
    before = models.load_classifier(str(base_model), task).distilbert.transformer.layer
    after = models.load_classifier(str(out), task).distilbert.transformer.layer
    assert torch.equal(before[0].ffn.lin1.weight, after[0].ffn.lin1.weight)
    assert not torch.equal(before[-1].ffn.lin1.weight, after[-1].ffn.lin1.weight)
    assert torch.equal(
        after[-1].output_layer_norm.weight, torch.ones_like(before[-1].output_layer_norm.weight)
    )


def test_after_epoch_sees_every_full_epoch_in_training_mode_afterwards(tmp_path, base_model):
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", split="train", max_samples=16)
    dev = data.load_split(task, "synthetic", max_samples=8)
    tokenizer = models.load_tokenizer(str(base_model))
    seen = []

    def after_epoch(model, epoch):
        scores = train.score_model(model, tokenizer, task, dev, torch.device("cpu"), 32)
        seen.append((epoch, model.training, set(scores)))

    settings = params.FinetuneSettings(epochs=2.5, batch_size=8, max_length=32)
    train.finetune(
        str(base_model), task, rows, tmp_path / "out", settings, torch.device("cpu"), after_epoch
    )
    assert seen == [(1, False, {"accuracy"}), (2, False, {"accuracy"})]


@pytest.mark.parametrize("name", ["mnli_m", "stsb"])
def test_finetune_saves_a_glue_labelled_checkpoint_and_reuses_it(tmp_path, base_model, name):
    task = get_task(name)
    rows = data.load_split(task, "synthetic", split="train", max_samples=24)
    settings = params.FinetuneSettings(epochs=1, batch_size=8, max_length=32)
    out = tmp_path / "out"
    report = train.finetune(str(base_model), task, rows, out, settings, torch.device("cpu"))
    assert report["steps"] == 3 and not report["reused"]
    config = json.loads((out / "config.json").read_text())
    if task.is_regression:
        assert config["problem_type"] == "regression"
    else:
        assert list(config["id2label"].values()) == list(task.label_names)
    again = train.finetune(str(base_model), task, rows, out, settings, torch.device("cpu"))
    assert again["reused"]
    dev = data.load_split(task, "synthetic", max_samples=16)
    scores = train.score(out, task, dev, torch.device("cpu"), max_length=32)
    assert set(scores) == set(task.metrics)


def test_plan_without_base_model_trains_nothing(tmp_path):
    p = plan(tmp_path, tasks=["sst2"])
    reports = p.run()
    assert reports.empty and list(reports.columns)[:3] == ["task", "metric", "dev_metric"]
    p.check(reports)


def test_plan_fine_tunes_each_model_task_once(tmp_path, base_model):
    p = plan(
        tmp_path,
        tasks=["mnli_m", "mnli_mm"],
        base_model=str(base_model),
        checkpoints_dir=str(tmp_path / "ckpt"),
        max_samples=12,
        finetune_max_train_samples=16,
        finetune={"default": {"epochs": 1, "batch_size": 8}},
        device="cpu",
    )
    reports = p.run()
    p.check(reports)
    assert reports["task"].tolist() == ["mnli_m", "mnli_mm"]
    assert reports["reused"].tolist() == [False, True]
    assert reports["dev_metric"].notna().all()


def test_with_two_workers_each_checkpoint_is_trained_once_by_one_of_them(
    tmp_path, base_model, monkeypatch
):
    p = plan(
        tmp_path,
        tasks=["sst2", "rte", "mnli_m", "mnli_mm"],
        base_model=str(base_model),
        checkpoints_dir=str(tmp_path / "ckpt"),
        max_samples=12,
        finetune_max_train_samples=16,
        finetune={"default": {"epochs": 1, "batch_size": 8}},
        device="cpu",
        energy="none",
        workers=2,
        techniques=["fp32"],
        combinations=[{"technique": "fp32+compile", "batch_size": 8, "tasks": ["sst2", "rte"]}],
    )
    reports = p.run()
    p.check(reports)
    assert reports["reused"].all(), "the workers trained every checkpoint before scoring"
    assert reports["dev_metric"].notna().all()
    (run,) = (tmp_path / "reports" / "results" / "runs").glob("*.json")
    record = json.loads(run.read_text())
    assert record["kind"] == "finetune" and len(record["workers"]) == 3
    trained = sorted(t for w in record["workers"] for t in w["tasks"])
    # mnli_mm shares mnli_m's checkpoint; meanwhile a third worker compiled the combination
    assert trained == ["compile fp32+compile (sst2)", "mnli_m", "rte", "sst2"]
    assert all(w["exit"] == 0 for w in record["workers"])
    log = (tmp_path / "reports" / "logs").glob("*-finetune-worker2.log")
    assert "compiled fp32+compile (sst2) in" in next(log).read_text()
    for task in ("sst2", "rte", "mnli_m"):  # scored by the worker that trained it
        kept = tmp_path / "ckpt" / get_task(task).model_task / f"effbert_dev_scores-{task}.json"
        scores = json.loads(kept.read_text())["scores"]
        assert reports.set_index("task").loc[task, "dev_metrics"] == scores
    monkeypatch.setattr(train, "score", lambda *a, **k: pytest.fail("scored again"))
    again = p.run()
    assert again["reused"].all() and len(list(run.parent.glob("*.json"))) == 1
    assert again["dev_metric"].tolist() == reports["dev_metric"].tolist()


def test_the_scores_table_has_a_column_per_dev_metric():
    reports = pd.DataFrame(
        [
            {
                "task": "mrpc",
                "metric": "f1",
                "dev_metric": 0.85229,
                "train_time_s": 34.07,
                "dev_metrics": {"f1": 0.852292020, "accuracy": 0.7990196},
                "reused": False,
            },
            {
                "task": "sst2",
                "metric": "accuracy",
                "dev_metric": 0.9002,
                "dev_metrics": {"accuracy": 0.900229357},
                "train_time_s": 53.58,
                "reused": True,
            },
        ]
    )
    table = finetune.scores_table(reports)
    assert list(table["dev_f1"].fillna(-1)) == [0.8523, -1]
    assert list(table["dev_accuracy"]) == [0.799, 0.9002]
    assert list(table["train_time_s"]) == [34.1, 53.6]
    assert "dev_metrics" not in table


def test_compile_warmups_name_each_distinct_compiled_model_once(tmp_path):
    p = plan(
        tmp_path,
        tasks=["sst2", "mrpc", "stsb"],
        techniques=["fp32", "fp32+compile"],
        combinations=[
            {"technique": "bf16+varlen+graphs+cls_last", "batch_size": 64, "padding": "packed"},
            {"technique": "fp32+compile", "tasks": ["mrpc"]},
            {"technique": "fp16", "batch_size": 64},
        ],
    )
    warmups = [(w["task"], w["technique"], w["batch_size"]) for w in p.compile_warmups()]
    # sst2 and mrpc have two labels, one model; stsb's one-output head is another
    assert warmups == [
        ("sst2", "fp32+compile", 16),
        ("stsb", "fp32+compile", 16),
        ("sst2", "bf16+varlen+graphs+cls_last", 64),
        ("stsb", "bf16+varlen+graphs+cls_last", 64),
    ]


def test_a_warmed_compile_is_read_from_the_cache_by_a_fine_tuned_model(
    tmp_path, base_model, monkeypatch
):
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    p = plan(
        tmp_path,
        tasks=["sst2"],
        base_model=str(base_model),
        checkpoints_dir=str(tmp_path / "ckpt"),
        max_samples=8,
        device="cpu",
    )
    point = {"task": "sst2", "technique": "fp32+compile", "batch_size": 4, "padding": "max_length"}
    torch._dynamo.reset()
    counters.clear()
    p.warm_compile([point], compile_threads=1)
    assert counters["inductor"]["fxgraph_cache_miss"] >= 1
    other = tmp_path / "finetuned"  # other weights, same architecture
    models.tiny_random_model(num_labels=2, seed=5).save_pretrained(other)
    models.tiny_tokenizer().save_pretrained(other)
    torch._dynamo.reset()
    counters.clear()
    task = get_task("sst2")
    technique = techniques.parse("fp32+compile")
    prepared = models.prepare(str(other), task, technique, torch.device("cpu"), static_rows=4)
    rows = data.load_split(task, "synthetic", max_samples=8)
    batch = data.make_batches(models.load_tokenizer(str(other)), rows, 4, "max_length", 128)[0]
    prepared.logits(prepared.inputs(batch))
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1
    assert counters["inductor"]["fxgraph_cache_miss"] == 0


def test_dev_scores_are_kept_with_the_checkpoint_until_weights_or_rows_change(
    tmp_path, base_model, monkeypatch
):
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", split="train", max_samples=16)
    settings = params.FinetuneSettings(epochs=1, batch_size=8, max_length=32)
    out = tmp_path / "out"
    train.finetune(str(base_model), task, rows, out, settings, torch.device("cpu"))
    dev = data.load_split(task, "synthetic", max_samples=16)
    cpu = torch.device("cpu")
    first = train.dev_scores(out, task, dev, cpu, 32)
    assert first == train.score(out, task, dev, cpu, 32)
    scored = []
    real_score = train.score
    monkeypatch.setattr(train, "score", lambda *a, **k: scored.append(a[0]) or real_score(*a, **k))
    assert train.dev_scores(out, task, dev, cpu, 32) == first and scored == []
    train.dev_scores(out, task, dev.iloc[:8], cpu, 32)  # other rows
    assert len(scored) == 1
    model = models.load_classifier(str(out), task)
    with torch.no_grad():
        model.classifier.bias.add_(5.0)
    model.save_pretrained(out)  # other weights, same folder and report
    train.dev_scores(out, task, dev.iloc[:8], cpu, 32)
    assert len(scored) == 2
    (out / train.SCORES_FILE.format(task="sst2")).write_text("{damaged")
    assert train.dev_scores(out, task, dev.iloc[:8], cpu, 32) == real_score(
        out, task, dev.iloc[:8], cpu, 32
    )
    assert len(scored) == 3
