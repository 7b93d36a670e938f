"""The technique vocabulary, parsed once, and one short function per axis that applies it.

A technique is a point on four axes: precision (weights dtype, autocast, quantization),
attention (the kernel), execution (eager, compiled, CUDA graphs, the transformers pipeline) and
a shortcut (``cls_last``). A profile names a preset (``fp16_flash``) or joins axes with ``+``
(``bf16+varlen+graphs+cls_last``); :func:`parse` turns the name into a :class:`Technique` once.
The ``apply_*`` functions are the whole of what a technique does to a loaded model.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from effbert import fp8
from effbert.packed import PackedClassifier

# Each technique is a point on three axes; a profile names presets or composes axes with "+".
PRECISIONS: dict[str, dict] = {
    "fp32": {},
    "tf32": {"tf32": True, "needs_cuda": True},
    "autocast_fp16": {"autocast_dtype": torch.float16, "needs_cuda": True},
    "autocast_bf16": {"autocast_dtype": torch.bfloat16},
    "fp16": {"weights_dtype": torch.float16, "needs_cuda": True},
    "bf16": {"weights_dtype": torch.bfloat16},
    "int8": {"quantize": "int8_dynamic"},
    "int8_weight": {"quantize": "int8_weight"},
    "fp8": {
        "weights_dtype": torch.bfloat16,
        "quantize": "fp8",
        "needs_cuda": True,
        "min_capability": (8, 9),
    },
    # static scales calibrated once on train rows (effbert.fp8); runs on a CPU too
    "fp8s": {"weights_dtype": torch.bfloat16, "quantize": "fp8_static", "min_capability": (8, 9)},
}


ATTENTIONS: dict[str, dict] = {
    "eager": {},
    "sdpa": {"attention": "sdpa"},
    "flash": {"attention": "sdpa", "fused_attention_only": True},
    # padding-free: packed tokens, attention per sequence through a variable-length kernel
    "varlen": {"attention": "sdpa", "packed": True, "kernel": "flash"},
    "varlen_mem": {"attention": "sdpa", "packed": True, "kernel": "memory-efficient"},
    # FlexAttention over all packed tokens with a document block mask: built in the forward
    # (flex), or once per batch outside it with tiles of 32 or 64 tokens (flex32, flex64)
    "flex": {"attention": "sdpa", "packed": True, "flex": True, "kernel": "flex"},
    "flex32": {"attention": "sdpa", "packed": True, "flex": True, "kernel": "flex", "block": 32},
    "flex64": {"attention": "sdpa", "packed": True, "flex": True, "kernel": "flex", "block": 64},
    # transformers' own flash-attention paths, where their packages are installed
    "fa2": {"attention": "flash_attention_2", "needs_cuda": True, "package": "flash_attn"},
    "fa3": {
        "attention": "flash_attention_3",
        "needs_cuda": True,
        "package": "flash_attn_interface",
    },
}
EXECUTIONS = ("eager", "compile", "compile_max", "graphs", "graphs_tuned", "pipeline")


COMPILED_EXECUTIONS = ("compile", "compile_max", "graphs", "graphs_tuned")


CUDA_EXECUTIONS = ("compile_max", "graphs", "graphs_tuned")


SHORTCUTS = ("none", "cls_last")
FUSIONS = ("none", "epilogue", "fused", "tanh_gelu")


@dataclass(frozen=True)
class Technique:
    """How the model is run: a precision, an attention kernel and an execution mode.

    Attributes:
        name: key used in profiles and records (a preset, or axes joined by ``+``).
        precision: a key of ``PRECISIONS`` (weights dtype, autocast, TF32, quantization).
        attention: a key of ``ATTENTIONS``: eager, SDPA as PyTorch chooses, or SDPA
            restricted to its fused kernels (flash, memory-efficient).
        execution: ``eager``, ``compile`` (``torch.compile``: for one shape where every
            batch has one, see ``prepare``'s ``static_rows``, else for any shape),
            ``compile_max`` (``max-autotune-no-cudagraphs``), ``graphs`` (``torch.compile``
            replaying one CUDA graph per input shape, ``reduce-overhead``), ``graphs_tuned``
            (the same, with the launch settings of each fused Triton kernel searched by
            inductor's coordinate-descent tuner, this compile only) or ``pipeline`` (the
            transformers ``text-classification`` pipeline, raw text in and labels out: what a
            user writes).
        shortcut: ``none``, or ``cls_last``: the last layer computed for the first token only,
            the one the classifier reads (exact; needs padding-free attention).
        fusion: ``none``; ``epilogue``: the FFN's bias and GELU applied in its first matrix
            product's epilogue (cuBLASLt; GELU's tanh form on a GPU), not as kernels of their
            own; ``fused``: that, and each layer's query, key and value projections as one
            matrix product (both need float weights); ``tanh_gelu``: GELU's tanh form as an
            element-wise op a compile fuses onward (``fp8s``: into the next FP8 cast). All three
            need padding-free attention.
    """

    name: str
    precision: str = "fp32"
    attention: str = "eager"
    execution: str = "eager"
    shortcut: str = "none"
    fusion: str = "none"

    def _axis(self, key: str, default=None):
        return {**PRECISIONS[self.precision], **ATTENTIONS[self.attention]}.get(key, default)

    @property
    def title(self) -> str:
        return self.name.replace("+", " + ").replace("_", " ")

    @property
    def weights_dtype(self) -> torch.dtype:
        return self._axis("weights_dtype", torch.float32)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self._axis("autocast_dtype")

    @property
    def attn_implementation(self) -> str:
        return self._axis("attention", "eager")

    @property
    def fused_attention_only(self) -> bool:
        return self._axis("fused_attention_only", False)

    @property
    def quantize(self) -> str | None:
        return self._axis("quantize")

    @property
    def packed(self) -> bool:
        """Padding-free: sequences packed end to end, attention by variable-length kernels."""
        return self._axis("packed", False)

    @property
    def flex(self) -> bool:
        """Packed attention through FlexAttention with a document block mask."""
        return self._axis("flex", False)

    @property
    def flex_block(self) -> int | None:
        """Tile size of a FlexAttention whose block masks are built once per batch, outside
        the forward (None: built inside it, default tiles)."""
        return self._axis("block")

    @property
    def attention_kernel(self) -> str | None:
        """The kernel family a padding-free attention must run (``kernels.KERNEL_FAMILIES``),
        None for padded attention (SDPA picks, the record says what it picked)."""
        return self._axis("kernel")

    @property
    def compiled(self) -> bool:
        return self.execution in COMPILED_EXECUTIONS

    @property
    def tf32(self) -> bool:
        return self._axis("tf32", False)

    @property
    def needs_cuda(self) -> bool:
        return self._axis("needs_cuda", False) or self.execution in CUDA_EXECUTIONS

    @property
    def axes(self) -> dict[str, str]:
        return {
            "precision": self.precision,
            "attention": self.attention,
            "execution": self.execution,
            "shortcut": self.shortcut,
            "fusion": self.fusion,
        }


PRESETS: dict[str, tuple[str, str, str]] = {
    "fp32": ("fp32", "eager", "eager"),
    "int8": ("int8", "eager", "eager"),
    "autocast_fp16": ("autocast_fp16", "eager", "eager"),
    "autocast_bf16": ("autocast_bf16", "eager", "eager"),
    "fp16": ("fp16", "eager", "eager"),
    "flash": ("fp32", "flash", "eager"),
    "fp16_flash": ("fp16", "flash", "eager"),
}


TECHNIQUES: dict[str, Technique] = {name: Technique(name, *axes) for name, axes in PRESETS.items()}


@functools.cache
def parse(name: str) -> Technique:
    """A preset (``fp16_flash``) or axes joined by ``+`` (``bf16+sdpa+compile``).

    Raises:
        ValueError: an unknown token, or axes that cannot go together; the message says how
            to write it.
    """
    if name in TECHNIQUES:
        return TECHNIQUES[name]
    axes: dict[str, str] = {}
    choices = (
        ("precision", PRECISIONS),
        ("attention", ATTENTIONS),
        ("execution", EXECUTIONS),
        ("shortcut", SHORTCUTS),
        ("fusion", FUSIONS),
    )
    for token in name.split("+"):
        axis = next(
            (a for a, values in choices if token in values and token != "none" and a not in axes),
            None,
        )  # "eager" names the attention first, the execution when the attention is given
        if axis is None:
            raise ValueError(
                f"unknown technique {name!r}: choose a preset ({', '.join(TECHNIQUES)}) or join "
                f"one precision ({', '.join(PRECISIONS)}), attention ({', '.join(ATTENTIONS)}), "
                f"execution ({', '.join(EXECUTIONS)}) and optionally cls_last and a fusion "
                f"({', '.join(FUSIONS[1:])}) with '+', e.g. fp16+flash+compile or "
                "bf16+varlen_mem+graphs+cls_last+epilogue"
            )
        axes[axis] = token
    full = (
        axes.get("precision", "fp32"),
        axes.get("attention", "eager"),
        axes.get("execution", "eager"),
    )
    shortcut, fusion = axes.get("shortcut", "none"), axes.get("fusion", "none")
    for token in (shortcut, fusion):
        if token != "none" and not ATTENTIONS[full[1]].get("packed"):
            raise ValueError(
                f"technique {name!r}: {token} runs on packed sequences; add varlen, varlen_mem "
                "or flex attention"
            )
    if fusion in ("epilogue", "fused") and PRECISIONS[full[0]].get("quantize"):
        raise ValueError(
            f"technique {name!r}: the epilogue fuses GELU into a float matrix product; "
            f"{full[0]}'s are quantized (tanh_gelu fuses GELU's tanh form into the next cast)"
        )
    if ATTENTIONS[full[1]].get("flex") and full[2] not in COMPILED_EXECUTIONS:
        raise ValueError(
            f"technique {name!r}: flex attention runs compiled; add "
            f"{', '.join(COMPILED_EXECUTIONS)}"
        )
    preset = next((p for p, a in PRESETS.items() if a == full), None)
    if preset and shortcut == "none" and fusion == "none":
        return TECHNIQUES[preset]
    return Technique(name, *full, shortcut, fusion)


def spelling_problem(name: str) -> str | None:
    """Why ``name`` would record one technique under a second name, or None: a composition
    equal to a preset, or axes out of their order (precision, attention, execution, shortcut)."""
    technique = parse(name)
    if technique.name != name:
        return f"{name!r} is the preset {technique.name!r}: write {technique.name!r}"
    if name in TECHNIQUES:
        return None
    tokens = name.split("+")
    if "eager" in tokens:
        plain = "+".join(t for t in tokens if t != "eager")
        return f"{name!r}: write {plain!r} (eager is the default attention and execution)"
    groups = (PRECISIONS, ATTENTIONS, EXECUTIONS, SHORTCUTS, FUSIONS)
    rank = [next(i for i, g in enumerate(groups) if t in g) for t in tokens]
    if rank != sorted(rank):
        ordered = "+".join(t for _, t in sorted(zip(rank, tokens, strict=True)))
        return (
            f"{name!r}: write {ordered!r} (axes in the order precision, attention, execution, "
            "shortcut, fusion)"
        )
    return None


def padding_problem(technique: Technique, padding: str) -> str | None:
    """Why ``technique`` cannot take batches padded by ``padding``, or None."""
    if technique.packed and padding != "packed":
        return f"{technique.name} runs padding-free: set padding: packed"
    if padding == "packed" and not technique.packed:
        return (
            f"padding: packed needs a padding-free attention: add varlen or flex to "
            f"{technique.name}"
        )
    if padding == "packed" and technique.execution == "pipeline":
        return "the pipeline pads its own batches: padding: packed does not apply"
    return None


def unsupported_reason(technique: Technique, device: torch.device) -> str | None:
    """Why ``technique`` cannot run on ``device``, or None when it can."""
    package = technique._axis("package")
    if package and importlib.util.find_spec(package) is None:
        return f"{technique.name} needs the package {package!r}, which is not installed"
    if technique.needs_cuda and device.type != "cuda":
        return f"{technique.name} needs a CUDA GPU; this run is on {device.type}"
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        needed = technique._axis("min_capability") or ((8, 0) if technique.quantize else None)
        if needed and capability < needed:
            return (
                f"{technique.name} needs a GPU of compute capability {needed[0]}.{needed[1]} "
                f"or newer, this one is {capability[0]}.{capability[1]}"
            )
    if technique.quantize == "fp8" and device.type != "cuda":
        return f"{technique.name} needs a CUDA GPU"
    sixteen_bit = (torch.float16, torch.bfloat16)
    if (
        technique.packed
        and device.type == "cuda"
        and technique.weights_dtype not in sixteen_bit
        and technique.autocast_dtype not in sixteen_bit
    ):
        return f"{technique.name}: packed attention needs fp16 or bf16 (weights or autocast)"
    if technique.attention in ("fa2", "fa3") and technique.weights_dtype not in sixteen_bit:
        return f"{technique.name}: transformers' flash attention needs fp16 or bf16 weights"
    return None


def static_rows(technique: Technique, batch_size: int, padding: str, scope: str) -> int | None:
    """Rows of the one batch shape a compiled model is built for, where every batch has one
    shape (padded to max_length, model scope); else None (compiled for any shape)."""
    one_shape = padding == "max_length" and scope == "model" and not technique.packed
    return batch_size if technique.compiled and one_shape else None


# -- applying a technique: one function per axis -------------------------------------------


def apply_precision(
    model: torch.nn.Module, technique: Technique, device, calibration=None
) -> torch.nn.Module:
    """Precision: the weights cast to the technique's dtype on ``device``, then the encoder's
    Linear layers quantized where it says so (torchao; static FP8 with scales from the
    ``calibration`` batches). Autocast and TF32 act at run time (``inference_context``)."""
    model = model.to(device=device, dtype=technique.weights_dtype)
    if technique.quantize == "fp8_static":
        if not calibration:
            raise ValueError(
                f"{technique.name}: static FP8 needs calibration batches of train rows "
                "(fp8.calibration_batches); this task has none"
            )
        return fp8.to_static_fp8(model, calibration, device)
    if technique.quantize:
        model = quantize(model, technique.quantize)
    return model


def apply_attention(model: torch.nn.Module, technique: Technique) -> torch.nn.Module:
    """Attention: the padded kernels are chosen when the model loads (``attn_implementation``)
    and, for ``flash``, restricted at run time (``inference_context``); padding-free attention
    runs the model's modules over packed tokens (``PackedClassifier``), with ``cls_last``."""
    if not technique.packed:
        return model
    return PackedClassifier(
        model,
        cls_last=technique.shortcut == "cls_last",
        kernel=technique.attention_kernel,
        flex_block=technique.flex_block,
        epilogue=technique.fusion in ("epilogue", "fused"),
        qkv=technique.fusion == "fused",
        tanh_gelu=technique.fusion == "tanh_gelu",
    )


COMPILE_MODES = {
    "compile": None,
    "compile_max": "max-autotune-no-cudagraphs",
    "graphs": "reduce-overhead",
}
# inductor settings of an execution that no mode names (torch.compile takes a mode or these)
COMPILE_OPTIONS = {
    "graphs_tuned": {"triton.cudagraphs": True, "coordinate_descent_tuning": True},
}


def apply_execution(
    model: torch.nn.Module, technique: Technique, static_rows: int | None = None
) -> torch.nn.Module:
    """Execution: ``torch.compile`` in the technique's mode, for one batch shape where
    ``static_rows`` is given (``dynamic=False``), else for any shape; eager stays as it is."""
    if not technique.compiled:
        return model
    # Python floats (scales, eps) stay constants: traced as symbols they make dynamo
    # restart its analysis, which took a third of int8's compile time.
    torch._dynamo.config.specialize_float = True
    dynamic = static_rows is None or technique.packed
    if technique.execution in COMPILE_OPTIONS:
        options = COMPILE_OPTIONS[technique.execution]
        return torch.compile(model, options=options, dynamic=dynamic)
    return torch.compile(model, mode=COMPILE_MODES[technique.execution], dynamic=dynamic)


@contextlib.contextmanager
def inference_context(technique: Technique, device) -> Iterator[None]:
    """What a technique sets around each forward pass: inference mode, TF32, autocast and the
    SDPA kernels allowed (``flash``: the fused ones only)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if technique.tf32:
            stack.enter_context(_tf32())
        if technique.autocast_dtype is not None:
            stack.enter_context(torch.autocast(device.type, dtype=technique.autocast_dtype))
        if technique.fused_attention_only:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(
                sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
            )
        yield


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def quantize(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    """Quantize every Linear with torchao: ``int8_dynamic`` (int8 weights and activations),
    ``int8_weight`` (int8 weights only) or ``fp8`` (float8 weights and dynamic row-wise
    activations, Hopper or Ada)."""
    from torchao import quantization as q

    # set_inductor_config=False: by default torchao turns on inductor's coordinate-descent
    # tuning for the whole process, so every later compile (other cells, other techniques)
    # would depend on whether a quantized cell came before it. The mode alone tunes here.
    configs = {
        "int8_dynamic": lambda: q.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False),
        "int8_weight": lambda: q.Int8WeightOnlyConfig(set_inductor_config=False),
        "fp8": lambda: q.Float8DynamicActivationFloat8WeightConfig(
            granularity=q.PerRow(), set_inductor_config=False
        ),
    }
    q.quantize_(model, configs[kind](), filter_fn=_quantizable)
    return model


def _quantizable(module: torch.nn.Module, name: str) -> bool:
    """The encoder's Linear layers. The head stays in float: it sees one row per sample (torchao's
    compiled int8 kernels need more than 16 rows) and its 2-3 outputs are narrower than the int8
    and float8 kernels' minimum width."""
    return isinstance(module, torch.nn.Linear) and name.startswith("distilbert.")
