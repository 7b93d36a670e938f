"""Static-scale FP8 linear layers (the ``fp8s`` precision): each encoder Linear's weight in
float8 e4m3 with one scale, its input cast with a scale calibrated once on train rows, so no
forward pass computes an activation's largest value; one ``torch._scaled_mm`` per layer with
the bias in its epilogue, bf16 out. Compiled, the cast fuses into the kernel before it (layer
norm, GELU). Measured first as a probe: ``reports/probe-fp8``.
"""

from __future__ import annotations

import torch

from effbert import data
from effbert.data import Batch

E4M3_MAX = 448.0  # the largest finite float8 e4m3 value
CALIBRATION_ROWS = 64  # train rows whose activations set the input scales


class StaticFP8Linear(torch.nn.Module):
    """A Linear as float8 e4m3 weights (one scale) whose input is cast with a fixed scale
    (``input_amax`` / 448, clamped there): ``y = x W^T + b`` through ``torch._scaled_mm``."""

    def __init__(self, linear: torch.nn.Linear, input_amax: float) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        weight_scale = weight.abs().max().clamp(min=1e-12) / E4M3_MAX
        # (out, in) row-major, transposed: the (in, out) column-major operand _scaled_mm takes
        self.register_buffer("weight_t", (weight / weight_scale).to(torch.float8_e4m3fn).t())
        self.register_buffer("weight_scale", weight_scale.reshape(()))
        input_scale = torch.tensor(max(input_amax, 1e-6) / E4M3_MAX, device=weight.device)
        self.register_buffer("input_scale", input_scale)
        self.register_buffer("input_inverse", 1.0 / input_scale)
        self.register_buffer("bias", linear.bias.detach().to(linear.weight.dtype))
        self.out_dtype = linear.weight.dtype
        self.fast_accum = weight.is_cuda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        cast = (rows * self.input_inverse).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(
            cast,
            self.weight_t,
            scale_a=self.input_scale,
            scale_b=self.weight_scale,
            bias=self.bias,
            out_dtype=self.out_dtype,
            use_fast_accum=self.fast_accum,
        )
        return out.reshape(*x.shape[:-1], -1)


def encoder_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The encoder's Linear layers by name (the head stays in float, as for torchao's)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("distilbert.")
    }


def calibration_batches(params, task, tokenizer) -> list[Batch]:
    """The task's first ``CALIBRATION_ROWS`` train rows, one per batch (no pad token sets a
    scale); never dev rows, which the metric is computed on."""
    rows = data.load_rows(params, task, "train", max_samples=CALIBRATION_ROWS)
    return data.make_batches(tokenizer, rows, 1, "longest", params.max_length)


def calibration_for(technique, params, task, tokenizer) -> list[Batch] | None:
    """``calibration_batches`` where ``technique`` is static FP8, else None (nothing read)."""
    if technique.quantize != "fp8_static":
        return None
    return calibration_batches(params, task, tokenizer)


def input_amax(model: torch.nn.Module, batches: list[Batch], device) -> dict[str, float]:
    """Each encoder Linear's largest input magnitude over ``batches`` (the model as loaded,
    before quantizing)."""
    amax: dict[str, float] = {}

    def hook_for(name: str):
        def record(module, args):
            amax[name] = max(amax.get(name, 0.0), float(args[0].detach().abs().max()))

        return record

    hooks = [m.register_forward_pre_hook(hook_for(n)) for n, m in encoder_linears(model).items()]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**batch.to(device).inputs())
    finally:
        for hook in hooks:
            hook.remove()
    return amax


def to_static_fp8(model: torch.nn.Module, batches: list[Batch], device) -> torch.nn.Module:
    """Every encoder Linear replaced by a ``StaticFP8Linear`` with scales from ``batches``."""
    amax = input_amax(model, batches, device)
    for name, linear in encoder_linears(model).items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, StaticFP8Linear(linear, amax[name]))
    return model
