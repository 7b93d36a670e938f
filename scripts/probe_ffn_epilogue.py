"""Probe for the energy floor: would GELU and the FP8 cast in the first FFN product's epilogue
pay? One DistilBERT FFN block in static FP8 (``effbert.fp8``: ``x W1 -> tanh GELU -> cast ->
W2``) at the packed SST-2 dev batch's shape, random weights, on one CUDA GPU, compiled three
ways:

- ``cublas``: what effbert's best cell runs: cuBLAS FP8 products, GELU + cast as one Triton
  kernel between them;
- ``triton``: inductor's Triton product templates only (``max_autotune_gemm_backends``),
  whose epilogue takes in GELU and the cast;
- ``either``: inductor chooses per product between cuBLAS and its templates, benchmarking the
  epilogue fusion (``benchmark_epilogue_fusion``).

    python scripts/probe_ffn_epilogue.py [--tokens 23062] [--iterations 200]

Prints per variant: compile seconds, milliseconds per block (CUDA events over ``iterations``
calls, after a warmup), the ratio to ``cublas``, the largest output difference from it, and
the kernels a profiler saw. Time only: a block's energy is not measured here (the card runs
near its power limit in the real cell, so time is the first-order proxy; bench_floor measures
energy once a variant wins).
"""

from __future__ import annotations

import argparse
import time

import torch

from effbert import fp8

DIM, HIDDEN = 768, 3072  # DistilBERT's model and FFN widths
VARIANTS = {
    "cublas": {},
    "triton": {"max_autotune": True, "max_autotune_gemm_backends": "TRITON"},
    "either": {
        "max_autotune": True,
        "max_autotune_gemm_backends": "ATEN,TRITON",
        "benchmark_epilogue_fusion": True,
    },
}


class FP8FFN(torch.nn.Module):
    """One FFN block as effbert's ``fp8s+...+tanh_gelu`` cell runs it (without the residual
    add and layer norm after it)."""

    def __init__(self, x: torch.Tensor, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        lin1 = torch.nn.Linear(DIM, HIDDEN).to(x.device, x.dtype)
        lin2 = torch.nn.Linear(HIDDEN, DIM).to(x.device, x.dtype)
        with torch.no_grad():
            inner = torch.nn.functional.gelu(lin1(x), approximate="tanh")
        self.lin1 = fp8.StaticFP8Linear(lin1, float(x.abs().max()))
        self.lin2 = fp8.StaticFP8Linear(lin2, float(inner.abs().max()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.nn.functional.gelu(self.lin1(x), approximate="tanh"))


def time_ms(block, x: torch.Tensor, iterations: int) -> float:
    """Milliseconds per call: CUDA events around ``iterations`` calls, after 20 unmeasured."""
    for _ in range(20):
        block(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        block(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iterations


def kernels(block, x: torch.Tensor) -> list[tuple[str, float]]:
    """The CUDA kernels of three calls and their shares of the GPU time, largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(3):
            block(x)
        torch.cuda.synchronize()
    times = {e.key: e.device_time_total for e in trace.key_averages() if e.device_time_total}
    total = sum(times.values()) or 1.0
    return sorted(((k, t / total) for k, t in times.items()), key=lambda kt: -kt[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=23062, help="SST-2 dev, packed: 23,062")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("probe_ffn_epilogue: needs a CUDA GPU with FP8 (compute capability 8.9+)")
    print(torch.cuda.get_device_name(), torch.__version__, f"tokens {args.tokens}")
    x = torch.randn(args.tokens, DIM, device="cuda", dtype=torch.bfloat16)
    eager = FP8FFN(x).eval()
    reference, base_ms = None, None
    for name in args.variants:
        torch._dynamo.reset()
        started = time.perf_counter()
        block = torch.compile(eager, options=VARIANTS[name], dynamic=False)
        with torch.inference_mode():
            out = block(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - started
            ms = time_ms(block, x, args.iterations)
            ran = kernels(block, x)
        reference = out if reference is None else reference
        base_ms = ms if base_ms is None else base_ms
        diff = float((out.float() - reference.float()).abs().max())
        print(
            f"{name}: {ms:.4f} ms per block ({ms / base_ms:.3f}x {args.variants[0]}), "
            f"compile {compile_s:.0f} s, largest output difference {diff:.4f}"
        )
        for kernel, share in ran[:6]:
            print(f"   {share:6.1%}  {kernel[:110]}")


if __name__ == "__main__":
    main()
