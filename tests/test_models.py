import numpy as np
import pytest
import torch

from effbert import data, metrics, models, packed, techniques
from effbert.tasks import get_task

MNLI = get_task("mnli_m")


def test_label_names_in_glue_order_need_no_reordering():
    id2label = {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert models.glue_order(MNLI, id2label) is None


def test_label_names_in_another_order_are_mapped_by_name():
    id2label = {0: "CONTRADICTION", 1: "Entailment", 2: "neutral"}
    assert models.glue_order(MNLI, id2label) == [1, 2, 0]


def test_generic_names_are_taken_in_glue_order_unless_a_label_map_says_otherwise():
    generic = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert models.glue_order(MNLI, generic) is None
    legacy = ["contradiction", "entailment", "neutral"]  # TextAttack's MNLI heads
    assert models.glue_order(MNLI, generic, legacy) == [1, 2, 0]


def test_a_label_map_must_name_each_glue_label_once():
    with pytest.raises(models.ModelError, match="exactly once"):
        models.glue_order(MNLI, {0: "a", 1: "b", 2: "c"}, ["entailment", "entailment", "neutral"])


def test_legacy_order_checkpoint_scores_the_same_as_a_glue_order_one():
    """The same classifier with its head rows permuted into TextAttack's order and a
    label_map scores exactly what the GLUE-order original scores."""
    rows = data.load_split(MNLI, "synthetic", max_samples=48)
    batches = data.make_batches(models.tiny_tokenizer(), rows, 16, "longest", 64)
    fp32 = techniques.parse("fp32")
    glue = models.prepare(models.TINY_RANDOM, MNLI, fp32, torch.device("cpu"))
    legacy_names = ["contradiction", "entailment", "neutral"]
    legacy = models.prepare(models.TINY_RANDOM, MNLI, fp32, torch.device("cpu"), legacy_names)
    permutation = [2, 0, 1]  # legacy output i is GLUE label permutation[i]
    head = legacy.model.classifier
    with torch.no_grad():
        head.weight.copy_(glue.model.classifier.weight[permutation])
        head.bias.copy_(glue.model.classifier.bias[permutation])

    labels = rows["label"].to_numpy()
    glue_logits = glue.predict(batches, len(rows))
    legacy_logits = legacy.predict(batches, len(rows))
    np.testing.assert_allclose(glue_logits, legacy_logits, rtol=1e-5, atol=1e-6)
    assert metrics.compute(MNLI, glue_logits, labels, "sklearn") == metrics.compute(
        MNLI, legacy_logits, labels, "sklearn"
    )
    unmapped = models.prepare(models.TINY_RANDOM, MNLI, fp32, torch.device("cpu"))
    unmapped.model.load_state_dict(legacy.model.state_dict())
    assert not np.allclose(unmapped.predict(batches, len(rows)), glue_logits)


def test_checkpoint_with_the_wrong_label_count_is_refused(tmp_path):
    models.tiny_random_model(num_labels=2).save_pretrained(tmp_path)
    with pytest.raises(models.ModelError, match="has 2 labels, the task has 3"):
        models.load_classifier(str(tmp_path), MNLI)


def test_missing_checkpoint_names_task_and_fix(tmp_path):
    with pytest.raises(models.ModelError, match="sst2.*checkpoints_dir"):
        models.load_classifier(str(tmp_path / "nothing-here"), get_task("sst2"))


def test_local_checkpoints_resolve_from_the_project_root():
    assert models.locate("effbert") == str(models.resolve_path("effbert"))
    assert models.locate("org/model-on-the-hub") == "org/model-on-the-hub"


@pytest.mark.parametrize("name", ["fp32", "int8", "autocast_bf16", "flash"])
def test_cpu_techniques_keep_predictions_close_to_fp32(name):
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", max_samples=16)
    batch = data.make_batches(models.tiny_tokenizer(), rows, 16, "max_length", 64)[0]
    cpu = torch.device("cpu")
    reference = models.prepare(models.TINY_RANDOM, task, techniques.parse("fp32"), cpu)
    prepared = models.prepare(models.TINY_RANDOM, task, techniques.parse(name), cpu)
    expected, got = reference.logits(batch.inputs()), prepared.logits(batch.inputs())
    assert got.dtype == torch.float32 and got.shape == (16, 2)
    assert torch.allclose(got, expected, atol=0.05)


def test_gpu_only_techniques_say_why_on_cpu():
    cpu = torch.device("cpu")
    for name in ["autocast_fp16", "fp16", "fp16_flash"]:
        reason = techniques.unsupported_reason(techniques.parse(name), cpu)
        assert "needs a CUDA GPU" in reason
    assert techniques.unsupported_reason(techniques.parse("fp32"), cpu) is None


def test_unknown_technique_lists_the_presets_and_the_axes():
    for name in ("fp9", "fp16+fp32", "flash+sdpa", "fp16+flash+compile+compile"):
        with pytest.raises(ValueError, match="fp16_flash.*int8_weight.*compile_max"):
            techniques.parse(name)


def test_axes_compose_and_a_composition_equal_to_a_preset_is_the_preset():
    assert techniques.parse("flash+fp16") is techniques.TECHNIQUES["fp16_flash"]
    assert techniques.parse("fp32") is techniques.TECHNIQUES["fp32"]
    t = techniques.parse("bf16+sdpa+compile")
    assert t.axes == {
        "precision": "bf16",
        "attention": "sdpa",
        "execution": "compile",
        "shortcut": "none",
        "fusion": "none",
    }
    assert t.weights_dtype == torch.bfloat16 and t.attn_implementation == "sdpa"
    assert not t.fused_attention_only and t.quantize is None
    assert techniques.parse("fp8+flash").quantize == "fp8"
    cpu = torch.device("cpu")
    assert "needs a CUDA GPU" in techniques.unsupported_reason(techniques.parse("fp8"), cpu)
    assert "needs a CUDA GPU" in techniques.unsupported_reason(techniques.parse("tf32"), cpu)
    assert techniques.unsupported_reason(techniques.parse("int8_weight+compile"), cpu) is None


@pytest.mark.parametrize("name", ["bf16+sdpa", "int8_weight", "autocast_bf16+flash+compile"])
def test_cpu_axes_run_and_keep_predictions_close_to_fp32(name):
    task, cpu = get_task("sst2"), torch.device("cpu")
    rows = data.synthetic_rows(task, 16)
    batches = data.make_batches(models.tiny_tokenizer(), rows, 8, "longest", 32)
    reference = models.prepare(models.TINY_RANDOM, task, techniques.parse("fp32"), cpu)
    prepared = models.prepare(models.TINY_RANDOM, task, techniques.parse(name), cpu)
    expected = reference.predict(batches, len(rows))
    got = prepared.predict(batches, len(rows))
    np.testing.assert_allclose(got, expected, atol=0.05)


def test_quantization_leaves_the_narrow_classifier_head_in_float():
    task, cpu = get_task("sst2"), torch.device("cpu")
    prepared = models.prepare(models.TINY_RANDOM, task, techniques.parse("int8_weight"), cpu)
    head = prepared.model.classifier.weight
    inner = prepared.model.distilbert.transformer.layer[0].ffn.lin1.weight
    assert type(head) is torch.nn.Parameter and type(inner) is not torch.nn.Parameter


@pytest.mark.parametrize(
    "technique",
    [
        "fp32+varlen",
        "fp32+varlen+cls_last",
        "bf16+varlen",
        "fp32+flex+compile+cls_last",
        "fp32+varlen_mem+cls_last",
        "fp32+varlen+cls_last+epilogue",
        "fp32+varlen+fused",
        "fp32+varlen_mem+cls_last+fused",
        "fp32+flex32+compile+cls_last",
    ],
)
def test_padding_free_logits_match_the_padded_model(technique):
    """Packed sequences (no pad token computed) and the last layer for the first token only
    give the padded model's logits, row for row."""
    task = get_task("mrpc")
    rows = data.load_split(task, "synthetic", max_samples=37)
    tokenizer = models.tiny_tokenizer()
    cpu = torch.device("cpu")
    padded = models.prepare(models.TINY_RANDOM, task, techniques.parse("fp32"), cpu)
    expected = padded.predict(data.make_batches(tokenizer, rows, 8, "longest", 64), len(rows))
    chosen = techniques.parse(technique)
    prepared = models.prepare(models.TINY_RANDOM, task, chosen, cpu)
    batches = data.make_batches(tokenizer, rows, 8, "packed", 64)
    inputs = prepared.inputs(batches[0])
    assert inputs["input_ids"].dim() == 1 and inputs["input_ids"].numel() == batches[0].n_tokens
    got = prepared.predict(batches, len(rows))
    tolerance = 1e-2 if "bf16" in technique else 1e-5
    np.testing.assert_allclose(got, expected, atol=tolerance)


def ffn_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "activation") and hasattr(m, "lin1")]


def test_tanh_gelu_is_the_padded_model_with_gelus_tanh_form():
    """``tanh_gelu`` changes the FFN's activation to GELU's tanh form and nothing else: its
    logits are the padded model's with that activation, and differ from the exact GELU's.
    (The first FFN weights are scaled up so that the two forms differ beyond rounding.)"""
    task = get_task("mrpc")
    rows = data.load_split(task, "synthetic", max_samples=37)
    tokenizer = models.tiny_tokenizer()
    cpu = torch.device("cpu")
    padded = models.prepare(models.TINY_RANDOM, task, techniques.parse("fp32"), cpu)
    chosen = models.prepare(
        models.TINY_RANDOM, task, techniques.parse("fp32+varlen+tanh_gelu"), cpu
    )
    with torch.no_grad():
        for ffn in ffn_layers(padded.model) + ffn_layers(chosen.model):
            ffn.lin1.weight.mul_(40.0)
    batches = data.make_batches(tokenizer, rows, 8, "longest", 64)
    exact = padded.predict(batches, len(rows))
    for ffn in ffn_layers(padded.model):
        ffn.activation = torch.nn.GELU(approximate="tanh")
    expected = padded.predict(batches, len(rows))
    got = chosen.predict(data.make_batches(tokenizer, rows, 8, "packed", 64), len(rows))
    assert abs(got - expected).max() < abs(got - exact).max() / 20


def test_packing_refuses_left_padded_inputs():

    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    with pytest.raises(ValueError, match="right-padded"):
        packed.pack(ids, torch.tensor([[0, 1, 1], [1, 1, 1]]))
    out = packed.pack(ids, torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert out["cu_seqlens"].tolist() == [0, 2, 5] and out["position_ids"].tolist() == [
        0,
        1,
        0,
        1,
        2,
    ]
    assert out["max_len"] == 3


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fp16+cls_last", "add varlen, varlen_mem or flex attention"),
        ("fp16+varlen+cls_last+cls_last", "unknown technique"),
        ("fp16+varlen+graphs+cls_last", None),
        ("bf16+flex", "flex attention runs compiled"),
    ],
)
def test_shortcut_axis(name, message):
    if message is None:
        technique = techniques.parse(name)
        assert technique.axes == {
            "precision": "fp16",
            "attention": "varlen",
            "execution": "graphs",
            "shortcut": "cls_last",
            "fusion": "none",
        }
    else:
        with pytest.raises(ValueError, match=message):
            techniques.parse(name)


def test_padding_and_attention_must_agree():
    varlen = techniques.parse("bf16+varlen")
    assert "padding: packed" in techniques.padding_problem(varlen, "bucketed")
    assert "add varlen" in techniques.padding_problem(techniques.parse("bf16"), "packed")
    assert techniques.padding_problem(varlen, "packed") is None
    reason = techniques.unsupported_reason(varlen, torch.device("cpu"))
    assert reason is None


def test_flash_attention_packages_are_named_when_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name)
    )
    technique = techniques.parse("fp16+fa2")
    assert technique.attn_implementation == "flash_attention_2"
    reason = techniques.unsupported_reason(technique, torch.device("cpu"))
    assert "needs the package 'flash_attn'" in reason


def test_int8_batches_below_torchaos_minimum_rows_get_masked_padding_not_a_crash():
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", max_samples=4)
    tokenizer = models.tiny_tokenizer()
    batches = data.make_batches(tokenizer, rows, 1, "longest", 8)
    assert batches[0].input_ids.numel() <= 16
    widened = models.pad_to_rows(batches[0], models.INT8_MIN_ROWS)
    assert widened.input_ids.numel() >= 17 and widened.n_tokens == batches[0].n_tokens
    cpu = torch.device("cpu")
    fp32 = models.prepare(models.TINY_RANDOM, task, techniques.parse("fp32"), cpu)
    np.testing.assert_allclose(
        fp32.logits(widened.inputs()).numpy(), fp32.logits(batches[0].inputs()).numpy(), atol=1e-5
    )
    int8 = models.prepare(models.TINY_RANDOM, task, techniques.parse("int8"), cpu)
    assert int8.inputs(batches[0])["input_ids"].numel() >= 17
    assert int8.predict(batches, len(rows)).shape == (4, 2)


def test_eager_names_the_attention_then_the_execution_and_is_never_needed():
    technique = techniques.parse("bf16+sdpa+eager")
    assert (technique.attention, technique.execution) == ("sdpa", "eager")
    assert "write 'bf16+sdpa'" in techniques.spelling_problem("bf16+sdpa+eager")


def test_fill_rows_appends_copies_of_the_last_row_and_keeps_the_real_rows_first():
    rows = data.load_split(get_task("sst2"), "synthetic", max_samples=6)
    batches = data.make_batches(models.tiny_tokenizer(), rows, 4, "max_length", 16)
    last = batches[-1]
    filled = models.fill_rows(last, 4)
    assert filled.input_ids.shape == (4, 16) and filled.row_index.tolist() == [4, 5]
    assert torch.equal(filled.input_ids[:2], last.input_ids)
    assert torch.equal(filled.input_ids[2], last.input_ids[1])
    assert models.fill_rows(batches[0], 4) is batches[0]


def test_a_model_compiled_for_one_shape_takes_the_smaller_last_batch_without_recompiling():
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", max_samples=6)
    batches = data.make_batches(models.tiny_tokenizer(), rows, 4, "max_length", 16)
    cpu = torch.device("cpu")
    eager = models.prepare(models.TINY_RANDOM, task, techniques.parse("fp32"), cpu)
    torch._dynamo.reset()
    compiled = models.prepare(
        models.TINY_RANDOM, task, techniques.parse("fp32+compile"), cpu, static_rows=4
    )
    assert compiled.static_rows == 4
    with torch._dynamo.config.patch(error_on_recompile=True):
        predicted = compiled.predict(batches, len(rows))
    np.testing.assert_allclose(predicted, eager.predict(batches, len(rows)), atol=1e-5)
    assert (
        models.prepare(
            models.TINY_RANDOM, task, techniques.parse("fp32"), cpu, static_rows=4
        ).static_rows
        is None
    )  # eager takes any shape as it is


def test_quantizing_leaves_the_compile_settings_of_later_cells_alone():
    """torchao's quantization would turn on coordinate-descent tuning process-wide."""
    import torch._inductor.config as inductor

    before = (inductor.coordinate_descent_tuning, inductor.force_fuse_int_mm_with_mul)
    models.prepare(
        models.TINY_RANDOM, get_task("sst2"), techniques.parse("int8"), torch.device("cpu")
    )
    assert (inductor.coordinate_descent_tuning, inductor.force_fuse_int_mm_with_mul) == before
    assert before == (False, False)
