"""Static-scale FP8 (the ``fp8s`` precision) on a CPU: its linear layer against the float one,
the technique on the tiny model with scales from train rows, the errors and the kernel check."""

import pytest
import torch

from effbert import data, fp8, kernels, models, techniques
from effbert.tasks import get_task


def test_a_static_fp8_linear_is_the_linear_within_fp8_error():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(5, 7, 64, dtype=torch.bfloat16)
    quantized = fp8.StaticFP8Linear(linear, float(x.abs().max()))
    assert quantized.weight_t.dtype == torch.float8_e4m3fn
    out, reference = quantized(x).float(), linear(x).float()
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert (out - reference).norm() / reference.norm() < 0.1


def tiny_batches(task, split_rows: int, batch_size: int, padding: str, seed: int = 0):
    rows = data.synthetic_rows(task, split_rows, seed=seed)
    return data.make_batches(models.tiny_tokenizer(), rows, batch_size, padding, 64)


@pytest.mark.parametrize("name", ["fp8s", "fp8s+varlen_mem+cls_last", "fp8s+varlen_mem+tanh_gelu"])
def test_fp8s_quantizes_the_encoder_with_scales_from_train_rows(name):
    task = get_task("sst2")
    calibration = tiny_batches(task, 8, 1, "longest", seed=1)
    technique = techniques.parse(name)
    padding = "packed" if technique.packed else "longest"
    dev = tiny_batches(task, 12, 4, padding)
    bf16 = models.apply_technique(
        models.tiny_random_model(2, "sdpa"), techniques.parse(name.replace("fp8s", "bf16")), "cpu"
    )
    quantized = models.apply_technique(
        models.tiny_random_model(2, "sdpa"), technique, "cpu", calibration=calibration
    )
    classifier = quantized.model.classifier_model if technique.packed else quantized.model
    assert fp8.encoder_linears(classifier) == {}  # every encoder Linear is a StaticFP8Linear
    head = classifier.classifier
    assert isinstance(head, torch.nn.Linear)
    expected, got = bf16.predict(dev, 12), quantized.predict(dev, 12)
    assert torch.isfinite(torch.from_numpy(got)).all()
    assert abs(got - expected).max() < 0.1 * max(1.0, abs(expected).max())


def test_fp8s_without_calibration_rows_says_what_is_missing():
    with pytest.raises(ValueError, match="calibration batches of train rows"):
        techniques.apply_precision(models.tiny_random_model(2), techniques.parse("fp8s"), "cpu")


def test_calibration_reads_train_rows_never_dev(monkeypatch):
    splits = []

    def load_rows(params, task, split="dev", max_samples=None):
        splits.append((split, max_samples))
        return data.synthetic_rows(task, 3)

    monkeypatch.setattr(data, "load_rows", load_rows)
    params = type("Params", (), {"max_length": 32})()
    batches = fp8.calibration_batches(params, get_task("sst2"), models.tiny_tokenizer())
    assert splits == [("train", fp8.CALIBRATION_ROWS)]
    assert [b.n_samples for b in batches] == [1, 1, 1]
    assert all(bool(b.attention_mask.all()) for b in batches)  # no pad token sets a scale


def test_the_kernel_check_wants_fp8_products_for_fp8s():
    technique = techniques.parse("fp8s+varlen_mem+graphs+cls_last")
    attention = "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention"
    ran = kernels.kernel_check(
        ["nvjet_sm90_qqtst_128x152_128x6_1x2_h_bz_coopA_algo2_bias_TNT", attention], technique
    )
    assert ran["fallback"] is None and ran["found"] == {
        "memory-efficient attention": True,
        "fp8": True,
    }
    bf16_product = "nvjet_sm90_tst_192x176_64x4_1x2_h_bz_coopB_bias_TNT"
    fell_back = kernels.kernel_check([bf16_product, attention], technique)
    assert fell_back["fallback"] == "no fp8 kernel ran"


def test_the_kernel_check_wants_tanh_gelu_fused_into_a_triton_kernel():
    technique = techniques.parse("fp8s+varlen_mem+graphs+cls_last+tanh_gelu")
    attention = "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention"
    product = "nvjet_sm90_qqtst_192x176_128x4_1x2_h_bz_coopB_bias_TNT"
    fused = "triton_poi_fused__scaled_mm__to_copy_add_clamp_gelu_mul_3"
    ran = kernels.kernel_check([product, attention, fused], technique)
    assert ran["fallback"] is None and ran["found"]["fused GELU"]
    alone = kernels.kernel_check(
        [product, attention, "void at::native::GeluCUDAKernelImpl"], technique
    )
    assert alone["fallback"] == "no fused GELU kernel ran"
    eager = techniques.parse("fp8s+varlen_mem+cls_last+tanh_gelu")  # no compile, nothing to fuse
    assert "fused GELU" not in kernels.kernel_check([product, attention], eager)["found"]


def test_the_ffn_epilogue_probe_block_is_the_float_ffn_within_fp8_error():
    """scripts/probe_ffn_epilogue.py times this block on a GPU; on a CPU, check that it
    computes the FFN it stands for (static FP8 products around tanh GELU)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "probe_ffn_epilogue.py"
    spec = importlib.util.spec_from_file_location("probe_ffn_epilogue", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    x = torch.randn(16, probe.DIM, dtype=torch.bfloat16)
    block = probe.FP8FFN(x)
    torch.manual_seed(0)  # the same float weights FP8FFN drew
    lin1 = torch.nn.Linear(probe.DIM, probe.HIDDEN).to(torch.bfloat16)
    lin2 = torch.nn.Linear(probe.HIDDEN, probe.DIM).to(torch.bfloat16)
    with torch.inference_mode():
        got = block(x).float()
        expected = lin2(torch.nn.functional.gelu(lin1(x), approximate="tanh")).float()
    assert set(probe.VARIANTS) == {"cublas", "triton", "either"}
    assert (got - expected).norm() / expected.norm() < 0.1
