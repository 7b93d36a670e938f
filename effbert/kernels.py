"""The kernels a cell ran: a profiled part of a pass (outside the energy windows), the check
that the technique's own kernels ran, and the split of GPU time by kind of kernel."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from torch.profiler import ProfilerActivity, profile

from effbert.energy import synchronize
from effbert.techniques import Technique, parse


def busy_time(spans: list[tuple[float, float]]) -> float:
    """The time in which at least one of ``spans`` (start, end) was running."""
    busy, start, end = 0.0, None, None
    for s, e in sorted(spans):
        if start is None or s > end:
            busy += 0.0 if start is None else end - start
            start, end = s, e
        else:
            end = max(end, e)
    return busy + (0.0 if start is None else end - start)


def idle_gap_share(spans: list[tuple[float, float]]) -> float | None:
    """The share of a lone pass's GPU span (first kernel start to last kernel end) in which no
    kernel ran. The pass starts from an empty queue under the profiler, so this overstates the
    gaps of the windows, whose passes queue up behind each other; ``busy_ms`` beside the
    windows' time per pass gives theirs (``report.window_split``)."""
    if not spans:
        return None
    span = max(e for _, e in spans) - min(s for s, _ in spans)
    return round(1 - busy_time(spans) / max(span, 1e-9), 4)


# Substrings of CUDA kernel names that show which path ran.
KERNEL_SIGNS = {
    "int8": ("int8", "i8", "imma", "s8", "_int_mm", "igemm"),
    "fp8": ("e4m3", "e5m2", "fp8", "f8", "_scaled_mm", "qqtst"),
}
# Attention kernel families, by exact parts of their kernels' names, in the order tried: the
# family that ran is the first whose sign is in a kernel's name ("math": a softmax kernel of
# its own, the attention unfused).
KERNEL_FAMILIES = {
    "cuDNN": ("cudnn_generated",),
    "flash": ("flash_fwd",),
    "memory-efficient": ("fmha_cutlass", "memeffattention"),
    "flex": ("flex_attention",),
    "math": ("softmax",),
}
FAMILY_NAMES = {
    "cuDNN": "cuDNN attention",
    "flash": "FlashAttention",
    "memory-efficient": "memory-efficient attention",
    "flex": "FlexAttention",
    "math": "unfused attention",
}


def attention_family(names) -> str | None:
    """The attention kernel family among kernel ``names`` (None where none is seen)."""
    lowered = [n.lower() for n in names]
    for family, signs in KERNEL_FAMILIES.items():
        if any(sign in name for name in lowered for sign in signs):
            return family
    return None


def expected_family(technique: Technique) -> str | None:
    """The family a technique's name promises: its padding-free kernel, or FlashAttention for
    the ``flash`` attention (None: SDPA or eager, whatever runs is recorded)."""
    if technique.packed:
        return technique.attention_kernel
    return "flash" if technique.fused_attention_only else None


def ran_labels(summary: pd.DataFrame) -> dict[str, str]:
    """Per technique whose cells ran another attention kernel than its name promises, a label
    that says what ran (``flash (ran memory-efficient)``); other names are not in it."""
    labels = {}
    if "attention_kernel" not in summary or "technique" not in summary:
        return labels
    for name, ran in summary.groupby("technique")["attention_kernel"]:
        try:
            promised = expected_family(parse(str(name)))
        except ValueError:
            continue
        other = sorted({str(k) for k in ran.dropna()} - {promised})
        if promised and other:
            labels[str(name)] = f"{name} (ran {' / '.join(other)})"
    return labels


KERNEL_BATCHES = 16  # batches a cell's kernel record profiles at most


KERNEL_BATCHES_ONE_SHAPE = 4  # the same, where every batch has one shape (max_length)


def kernel_record(
    run_pass: Callable[[], None], technique: Technique, device, share: float = 1.0
) -> dict:
    """The CUDA kernels of one pass (torch.profiler, outside the energy windows): the top ones
    by GPU time, and whether the technique's own kernels ran (else a recorded fallback).
    ``share``: the part of a pass that ``run_pass`` runs; ``busy_ms`` is scaled to a pass."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_pass()
        synchronize(device)
    times: dict[str, float] = {}
    spans = []
    for event in prof.events():
        if event.device_type.name == "CUDA":
            times[event.name] = times.get(event.name, 0.0) + event.device_time_total
            spans.append((event.time_range.start, event.time_range.end))
    total = sum(times.values()) or 1.0
    top = sorted(times.items(), key=lambda kv: -kv[1])
    return {
        "top": [{"name": n[:120], "share": round(t / total, 4)} for n, t in top[:12]],
        "idle_gap_share": idle_gap_share(spans),
        "busy_ms": round(busy_time(spans) / 1e3 / share, 4),  # profiler times are in µs
        "profiled_share": round(share, 4),
        **kernel_check(list(times), technique),
    }


def kernel_check(names: list[str], technique: Technique) -> dict:
    """Whether the kernels a technique promises ran: its attention family exactly (a cell
    named for FlashAttention that ran the memory-efficient kernel fails), int8 and FP8 matrix
    products, GELU fused into a Triton kernel; the family that ran, and the fallback in words
    where one did not."""
    ran, promised = attention_family(names), expected_family(technique)
    found, missing = {}, []
    if promised:
        found[f"{promised} attention"] = ran == promised
        if ran != promised:
            shown = FAMILY_NAMES.get(ran, "no attention kernel")
            missing.append(f"{FAMILY_NAMES[promised]} did not run ({shown} did)")
    for kind, wanted in (
        ("int8", technique.quantize == "int8_dynamic"),
        ("fp8", technique.quantize in ("fp8", "fp8_static")),
        ("fused GELU", technique.fusion == "tanh_gelu" and technique.needs_cuda),
    ):
        if wanted:
            found[kind] = _ran(kind, names)
            if not found[kind]:
                missing.append(f"no {kind} kernel ran")
    return {
        "attention_kernel": ran,
        "expected": list(found),
        "found": found,
        "fallback": "; ".join(missing) or None,
    }


def _ran(kind: str, names: list[str]) -> bool:
    lowered = [name.lower() for name in names]
    if kind == "fused GELU":  # inductor names a fused kernel for the aten op: gelu, either form
        return any(name.startswith(FUSED_TRITON) and "gelu" in name for name in lowered)
    return any(sign in name for name in lowered for sign in KERNEL_SIGNS[kind])


# Kernel name substrings, in the order they are tried, for the split of a cell's GPU time.
KERNEL_KINDS = (
    ("activation quantization", ("amax", "quantize")),
    ("attention", ("flash", "fmha", "attention", "cudnn")),
    ("matrix products", ("gemm", "sm90_", "cutlass", "_mm", "xmma", "nvjet", "matmul")),
    ("layer norm", ("layer_norm", "layernorm", "norm")),
    ("copies", ("memcpy", "memset", "copy")),
)


# Inductor names a fused Triton kernel after every op it took in (``triton_poi_fused__scaled_mm_
# _to_copy_clamp_gelu_mul``: GELU and the cast to a product's FP8 input); only its templates
# (``triton_tem_``) compute a product or attention, and its ``_to_copy`` is a cast.
FUSED_TRITON = ("triton_poi_", "triton_per_", "triton_red_")
NOT_IN_FUSED_TRITON = ("matrix products", "attention", "copies")


def kernel_kind(name: str) -> str:
    """What a kernel computes, from its name (``KERNEL_KINDS``), else element-wise and other."""
    name = name.lower()
    fused = name.startswith(FUSED_TRITON)
    return next(
        (
            kind
            for kind, signs in KERNEL_KINDS
            if not (fused and kind in NOT_IN_FUSED_TRITON) and any(s in name for s in signs)
        ),
        "element-wise and other",
    )


def kernel_split(kernels: dict) -> dict[str, float]:
    """Shares of a cell's GPU time by kind, from its recorded top kernels (the rest: other)."""
    split: dict[str, float] = {}
    if not kernels.get("top"):
        return split  # no kernel record (a CPU cell, or kernel_check off)
    for kernel in kernels.get("top", []):
        kind = kernel_kind(kernel["name"])
        split[kind] = split.get(kind, 0) + kernel["share"]
    listed = sum(split.values())
    if listed < 0.999:
        split["not in the top 12"] = 1 - listed
    return {k: round(v, 3) for k, v in sorted(split.items(), key=lambda kv: -kv[1])}


def window_split(kernels: dict, windows: pd.DataFrame) -> dict[str, float]:
    """Shares of the energy windows' wall time: each kind of kernel (``kernel_split`` scaled by
    the share in which a kernel ran) and the time with no kernel running. The busy time of one
    pass comes from the profiled pass (``busy_ms``), the time per pass from the windows; empty
    where the record has no busy time (kernel check off, or recorded before it was kept)."""
    busy_ms = kernels.get("busy_ms")
    if not busy_ms or windows.empty:
        return {}
    pass_ms = (windows["time_s"] / windows["passes"]).mean() * 1e3
    busy = min(busy_ms / pass_ms, 1.0)
    split = {kind: round(float(share * busy), 3) for kind, share in kernel_split(kernels).items()}
    return {**split, "no kernel running": round(float(1 - busy), 3)}


def kernel_check_text(cell) -> str:
    """A summary row's kernel check in words: the fallback, ok, or not checked."""
    if isinstance(cell["fallback"], str):
        return cell["fallback"]
    return "ok" if cell.get("kernels_checked") is True else "not checked"
