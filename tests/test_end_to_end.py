"""The end-to-end scope: raw text in, labels out, tokenization inside the energy window."""

import time

import pytest

from effbert import data, e2e, models, packed, plan, profiles, techniques
from tests.conftest import Study


def e2e_study(tmp_path, **overrides):
    values = dict(
        profile="e2e",
        data_source="synthetic",
        model="tiny-random",
        tasks=["sst2"],
        techniques=["fp32"],
        batch_sizes=[8],
        max_samples=32,
        max_length=32,
        warmup_s=0.0,
        trials=2,
        min_window_s=0.2,
        idle_s=0,
        latency_batches=1,
        metrics_backend="sklearn",
        energy="none",
        scope="end_to_end",
    )
    return Study(profiles.validate({**values, **overrides}), str(tmp_path / "reports"))


TOKENIZE_S = 0.2  # long beside a tiny model's forward pass, even on a busy CPU


class SlowTokenizer:
    """The tiny tokenizer, ``TOKENIZE_S`` slower per call: stands for tokenization work."""

    backend_tokenizer = None  # no Rust shortcut: every part goes through __call__

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        time.sleep(TOKENIZE_S)
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_the_window_holds_the_tokenization(tmp_path, monkeypatch):
    real = models.load_tokenizer
    monkeypatch.setattr(models, "load_tokenizer", lambda c: SlowTokenizer(real(c)))
    e2e = e2e_study(tmp_path, tokenize_workers=1).run(["fp32"])
    forward_only = e2e_study(tmp_path, scope="model").run(["fp32"])
    per_pass = (e2e["time_s"] / e2e["passes"]).min()
    # 32 rows in 4 batches, each tokenized in the stream; the one worker runs up to two parts
    # ahead, so a window may start with parts tokenized before it
    assert per_pass >= 0.75 * 4 * TOKENIZE_S
    assert (forward_only["time_s"] / forward_only["passes"]).max() < per_pass / 2
    assert set(e2e["scope"]) == {"end_to_end"} and set(forward_only["scope"]) == {"model"}
    assert e2e["cell_id"].iloc[0] != forward_only["cell_id"].iloc[0]
    assert (e2e["cpu_time_s"] > 0).all() and (e2e["cpu_cores_busy"] > 0).all()


def test_the_transformers_pipeline_is_a_technique_with_the_same_metric(tmp_path):
    study = e2e_study(tmp_path, techniques=["fp32", "pipeline"])
    trials = study.run(["fp32", "pipeline"])
    ok = trials[trials["status"] == "ok"]
    assert set(ok["technique"]) == {"fp32", "pipeline"}
    metrics = ok.drop_duplicates("technique").set_index("technique")["metric_value"]
    assert metrics["pipeline"] == pytest.approx(metrics["fp32"])
    assert set(ok["execution"]) == {"eager", "pipeline"}
    study.check(trials)


def test_without_a_cpu_counter_the_record_says_why(tmp_path):
    trials = e2e_study(tmp_path).run(["fp32"])
    assert trials["cpu_energy_j"].isna().all()
    assert set(trials["cpu_energy_source"]) == {"none"}
    assert trials["cpu_energy_reason"].str.len().gt(0).all()


def test_tokenize_workers_overlap_the_tokenization(tmp_path, monkeypatch):
    real = models.load_tokenizer
    monkeypatch.setattr(models, "load_tokenizer", lambda c: SlowTokenizer(real(c)))
    one = e2e_study(tmp_path / "one", tokenize_workers=1).run(["fp32"])
    four = e2e_study(tmp_path / "four", tokenize_workers=4).run(["fp32"])
    per_pass = {n: (t["time_s"] / t["passes"]).median() for n, t in (("1", one), ("4", four))}
    assert per_pass["4"] < 0.75 * per_pass["1"], per_pass
    assert one["cell_id"].iloc[0] != four["cell_id"].iloc[0]
    assert four["metric_value"].iloc[0] == one["metric_value"].iloc[0]


def test_end_to_end_packed_gives_the_padded_labels(tmp_path):
    padded = e2e_study(tmp_path).run(["fp32"])
    study = e2e_study(
        tmp_path, combinations=[{"technique": "fp32+varlen+cls_last", "padding": "packed"}]
    )
    packed = study.run(combinations=True)
    assert set(packed["status"]) == {"ok"}
    assert packed["metric_value"].iloc[0] == pytest.approx(padded["metric_value"].iloc[0])


@pytest.mark.parametrize("padding", ["longest", "max_length", "packed"])
@pytest.mark.parametrize("pairs", [False, True])
def test_parts_tokenized_apart_join_into_the_batch_the_tokenizer_gives(padding, pairs):
    """The Rust fast path and the plain tokenizer call give the same batch, whole or in parts."""
    import numpy as np
    import pandas as pd
    import torch

    from effbert.tasks import get_task

    task = get_task("mrpc" if pairs else "sst2")
    rows = data.load_split(task, "synthetic", max_samples=12)
    tokenizer = models.tiny_tokenizer()
    technique = techniques.parse("fp32+varlen" if padding == "packed" else "fp32")
    cell = plan.Cell(task, technique, 12, padding, "tiny-random", {})
    texts = rows["text_a"].tolist()
    second = rows["text_b"].tolist() if pairs else None
    parts = [list(range(0, 5)), list(range(5, 12))]
    fast = e2e.TokenizedParts(tokenizer, texts, second, parts, cell, 16)
    slow = e2e.TokenizedParts(SlowTokenizer(tokenizer), texts, second, parts, cell, 16)
    slow.backend = None
    whole = data.make_batches(tokenizer, pd.DataFrame(rows), 12, "longest", 16)[0]
    if padding == "max_length":
        whole = data.make_batches(tokenizer, pd.DataFrame(rows), 12, "max_length", 16)[0]
    expected = {"input_ids": whole.input_ids, "attention_mask": whole.attention_mask}
    if padding == "packed":
        expected = packed.pack(whole.input_ids, whole.attention_mask)
    for source in (fast, slow):
        joined = e2e.join_parts([source[0], source[1]], tokenizer.pad_token_id)
        for key, value in expected.items():
            got = joined[key]
            if torch.is_tensor(value):
                assert np.array_equal(np.asarray(got), value.numpy()), (key, source)
            else:
                assert got == value, key


def test_the_end_to_end_metric_comes_from_the_end_to_end_path(tmp_path, monkeypatch):
    """A stream that feeds the model only pad tokens must show in the metric: it is scored from
    the end-to-end path's own outputs, not from the forward-only batches."""
    good = e2e_study(tmp_path / "good", max_samples=64, tasks=["stsb"]).run(["fp32"])
    assert set(good["metric_source"]) == {"end to end"} and good["metric_value"].notna().all()
    real = e2e.TokenizedParts.__getitem__

    def pads_only(self, i):
        part = real(self, i)
        return {**part, "input_ids": part["input_ids"] * 0}

    monkeypatch.setattr(e2e.TokenizedParts, "__getitem__", pads_only)
    broken = e2e_study(tmp_path / "broken", max_samples=64, tasks=["stsb"]).run(["fp32"])
    assert not broken["metric_value"].iloc[0] == good["metric_value"].iloc[0]  # NaN or other
