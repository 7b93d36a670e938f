"""The kernel check by exact family: a cell is labelled by the kernel that ran, and one whose
name promises a kernel that did not run fails the check with the family that did."""

import pytest
import torch

from effbert import kernels, techniques

FLASH = "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4>>"
MEM_EFFICIENT = "fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel"
CUDNN = "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64"
FLEX = "triton_tem_fused__to_copy_clone_flex_attention_transpose_unsqueeze_view_0"
GEMM = "nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopB_TNT"


@pytest.mark.parametrize(
    "names, family",
    [
        ([GEMM, FLASH], "flash"),
        ([GEMM, MEM_EFFICIENT], "memory-efficient"),
        ([CUDNN, GEMM], "cuDNN"),
        ([FLEX], "flex"),
        (["void (anonymous namespace)::softmax_warp_forward<c10::Half>", GEMM], "math"),
        ([GEMM], None),
    ],
)
def test_the_attention_family_is_read_from_kernel_names(names, family):
    assert kernels.attention_family(names) == family


def test_a_cell_labelled_flashattention_that_ran_memory_efficient_kernels_fails_the_check():
    for name in ("fp16_flash", "bf16+varlen+graphs+cls_last"):
        check = kernels.kernel_check([GEMM, MEM_EFFICIENT], techniques.parse(name))
        assert check["attention_kernel"] == "memory-efficient"
        assert check["found"] == {"flash attention": False}
        assert check["fallback"] == ("FlashAttention did not run (memory-efficient attention did)")
    ok = kernels.kernel_check([GEMM, FLASH], techniques.parse("bf16+varlen+graphs+cls_last"))
    assert ok["fallback"] is None and ok["found"] == {"flash attention": True}


def test_each_padding_free_kernel_is_checked_for_its_own_family():
    varlen_mem = techniques.parse("bf16+varlen_mem+graphs+cls_last+epilogue")
    assert kernels.kernel_check([MEM_EFFICIENT], varlen_mem)["fallback"] is None
    assert (
        "FlexAttention did not run"
        in kernels.kernel_check([FLASH], techniques.parse("bf16+flex32+compile+cls_last"))[
            "fallback"
        ]
    )
    sdpa = kernels.kernel_check([CUDNN], techniques.parse("bf16+sdpa"))
    assert sdpa == {"attention_kernel": "cuDNN", "expected": [], "found": {}, "fallback": None}


def test_quantized_kernels_are_still_checked():
    fp8 = kernels.kernel_check([GEMM, FLASH], techniques.parse("fp8+varlen+compile+cls_last"))
    assert fp8["fallback"] == "no fp8 kernel ran" and fp8["found"]["flash attention"]


def test_the_grammar_composes_the_new_axes_and_refuses_what_cannot_go_together():
    best = techniques.parse("bf16+varlen_mem+graphs+cls_last+epilogue")
    assert (best.attention_kernel, best.fusion, best.shortcut) == (
        "memory-efficient",
        "epilogue",
        "cls_last",
    )
    assert techniques.parse("bf16+flex32+compile").flex_block == 32
    with pytest.raises(ValueError, match="epilogue runs on packed sequences"):
        techniques.parse("bf16+epilogue")
    with pytest.raises(ValueError, match="quantized .tanh_gelu"):
        techniques.parse("fp8+varlen+epilogue")
    tanh = techniques.parse("fp8s+varlen_mem+graphs+cls_last+tanh_gelu")
    assert (tanh.quantize, tanh.fusion) == ("fp8_static", "tanh_gelu")
    with pytest.raises(ValueError, match="tanh_gelu runs on packed sequences"):
        techniques.parse("fp8s+tanh_gelu")
    assert "shortcut, fusion" in techniques.spelling_problem("bf16+varlen+epilogue+cls_last")


def test_graphs_tuned_compiles_with_cuda_graphs_and_the_coordinate_descent_tuner(monkeypatch):
    technique = techniques.parse("fp8s+varlen_mem+graphs_tuned+cls_last")
    assert technique.compiled and technique.needs_cuda
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    techniques.apply_execution(torch.nn.Linear(2, 2), technique)
    techniques.apply_execution(torch.nn.Linear(2, 2), techniques.parse("bf16+varlen+graphs"))
    assert calls == [
        {
            "options": {"triton.cudagraphs": True, "coordinate_descent_tuning": True},
            "dynamic": True,
        },
        {"mode": "reduce-overhead", "dynamic": True},
    ]
    with pytest.raises(ValueError, match="compile, compile_max, graphs, graphs_tuned"):
        techniques.parse("bf16+flex")
