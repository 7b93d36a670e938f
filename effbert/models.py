"""Checkpoints, their labels in GLUE order, and the inference techniques applied to them."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from effbert.config import resolve_path
from effbert.data import SYNTHETIC_WORDS, Batch
from effbert.params import TINY_RANDOM
from effbert.tasks import GlueTask


class ModelError(ValueError):
    """A checkpoint that cannot serve a task: the message names the task, checkpoint and fix."""


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
}
ATTENTIONS: dict[str, dict] = {
    "eager": {},
    "sdpa": {"attention": "sdpa"},
    "flash": {"attention": "sdpa", "fused_attention_only": True},
    "varlen": {"attention": "sdpa", "packed": True},
    "flex": {"attention": "sdpa", "packed": True, "flex": True},
    # transformers' own flash-attention paths, where their packages are installed
    "fa2": {"attention": "flash_attention_2", "needs_cuda": True, "package": "flash_attn"},
    "fa3": {
        "attention": "flash_attention_3",
        "needs_cuda": True,
        "package": "flash_attn_interface",
    },
}
EXECUTIONS = ("eager", "compile", "compile_max", "graphs", "pipeline")
COMPILED_EXECUTIONS = ("compile", "compile_max", "graphs")
SHORTCUTS = ("none", "cls_last")


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
            replaying one CUDA graph per input shape, ``reduce-overhead``) or ``pipeline`` (the
            transformers ``text-classification`` pipeline, raw text in and labels out: what a
            user writes).
        shortcut: ``none``, or ``cls_last``: the last layer computed for the first token only,
            the one the classifier reads (exact; needs ``varlen`` attention).
    """

    name: str
    precision: str = "fp32"
    attention: str = "eager"
    execution: str = "eager"
    shortcut: str = "none"

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
    def tf32(self) -> bool:
        return self._axis("tf32", False)

    @property
    def needs_cuda(self) -> bool:
        return self._axis("needs_cuda", False) or self.execution in ("compile_max", "graphs")

    @property
    def axes(self) -> dict[str, str]:
        return {
            "precision": self.precision,
            "attention": self.attention,
            "execution": self.execution,
            "shortcut": self.shortcut,
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


def get_technique(name: str) -> Technique:
    """A preset (``fp16_flash``) or axes joined by ``+`` (``bf16+sdpa+compile``)."""
    if name in TECHNIQUES:
        return TECHNIQUES[name]
    axes: dict[str, str] = {}
    choices = (
        ("precision", PRECISIONS),
        ("attention", ATTENTIONS),
        ("execution", EXECUTIONS),
        ("shortcut", SHORTCUTS),
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
                f"execution ({', '.join(EXECUTIONS)}) and optionally cls_last with '+', e.g. "
                "fp16+flash+compile or bf16+varlen+compile+cls_last"
            )
        axes[axis] = token
    full = (
        axes.get("precision", "fp32"),
        axes.get("attention", "eager"),
        axes.get("execution", "eager"),
    )
    shortcut = axes.get("shortcut", "none")
    if shortcut == "cls_last" and not ATTENTIONS[full[1]].get("packed"):
        raise ValueError(
            f"technique {name!r}: cls_last runs on packed sequences; add varlen or flex attention"
        )
    if full[1] == "flex" and full[2] not in COMPILED_EXECUTIONS:
        raise ValueError(
            f"technique {name!r}: flex attention runs compiled; add compile, compile_max or graphs"
        )
    preset = next((p for p, a in PRESETS.items() if a == full), None)
    if preset and shortcut == "none":
        return TECHNIQUES[preset]
    return Technique(name, *full, shortcut)


def spelling_problem(name: str) -> str | None:
    """Why ``name`` would record one technique under a second name, or None: a composition
    equal to a preset, or axes out of their order (precision, attention, execution, shortcut)."""
    technique = get_technique(name)
    if technique.name != name:
        return f"{name!r} is the preset {technique.name!r}: write {technique.name!r}"
    if name in TECHNIQUES:
        return None
    tokens = name.split("+")
    if "eager" in tokens:
        plain = "+".join(t for t in tokens if t != "eager")
        return f"{name!r}: write {plain!r} (eager is the default attention and execution)"
    groups = (PRECISIONS, ATTENTIONS, EXECUTIONS, SHORTCUTS)
    rank = [next(i for i, g in enumerate(groups) if t in g) for t in tokens]
    if rank != sorted(rank):
        ordered = "+".join(t for _, t in sorted(zip(rank, tokens, strict=True)))
        return f"{name!r}: write {ordered!r} (axes in the order precision, attention, execution)"
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
    import importlib.util

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


@functools.cache
def tiny_tokenizer():
    """A word-level WordPiece tokenizer over effbert's synthetic vocabulary (no download)."""
    from transformers import DistilBertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SYNTHETIC_WORDS]
    return DistilBertTokenizerFast(vocab={word: i for i, word in enumerate(words)})


def tiny_random_model(num_labels: int, attention: str = "eager", seed: int = 0):
    """A two-layer DistilBERT with random weights, built from a config (no download)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=len(tiny_tokenizer()),
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=512,
        num_labels=num_labels,
        attn_implementation=attention,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DistilBertForSequenceClassification(config)


CHECKPOINT_FILES = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "vocab.txt")


def folder_digest(folder: Path) -> str:
    """A hash of a checkpoint folder's weights, config and vocabulary, read now (uncached).

    Raises:
        ModelError: the folder holds none of them.
    """
    digest = hashlib.sha256()
    files = sorted({f for pattern in CHECKPOINT_FILES for f in Path(folder).glob(pattern)})
    if not files:
        raise ModelError(f"checkpoint folder {str(folder)!r} holds no weights or config.json")
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


@functools.cache
def fingerprint(checkpoint: str, seed: int = 0) -> str:
    """What a checkpoint is, beyond its name: a hash of a local folder's weights, config and
    vocabulary; a Hub id's resolved revision; the seed of ``tiny-random``.

    Raises:
        ModelError: a Hub id whose revision cannot be resolved (no Hub access).
    """
    if checkpoint == TINY_RANDOM:
        return f"{TINY_RANDOM}:seed{seed}"
    folder = resolve_path(checkpoint)
    if folder.is_dir():
        return folder_digest(folder)
    try:
        from huggingface_hub import model_info

        return f"revision:{model_info(checkpoint).sha}"
    except Exception as err:
        raise ModelError(
            f"cannot resolve the Hub revision of {checkpoint!r} ({type(err).__name__}: {err}); "
            "a record must name the exact weights it measured. Check the id and Hub access, or "
            "give a local folder"
        ) from err


def locate(checkpoint: str) -> str:
    """A local folder (relative paths from the project root) if it exists, else a Hub id."""
    folder = resolve_path(checkpoint)
    return str(folder) if folder.is_dir() else checkpoint


def load_tokenizer(checkpoint: str):
    if checkpoint == TINY_RANDOM:
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(locate(checkpoint))


def load_classifier(checkpoint: str, task: GlueTask, attention: str = "eager", seed: int = 0):
    """A sequence classifier for ``task`` from a Hub id, a local folder or ``tiny-random``."""
    if checkpoint == TINY_RANDOM:
        return tiny_random_model(task.num_labels, attention, seed).eval()
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            locate(checkpoint), attn_implementation=attention
        )
    except OSError as err:
        raise ModelError(
            f"{task.name}: cannot load checkpoint {checkpoint!r} ({err}). Give a local folder "
            "in checkpoints, or fine-tune one with base_model and checkpoints_dir"
        ) from err
    if model.config.num_labels != task.num_labels:
        raise ModelError(
            f"{task.name}: checkpoint {checkpoint!r} has {model.config.num_labels} labels, the "
            f"task has {task.num_labels}: it was trained for another task"
        )
    return model.eval()


def _normalize(label: str) -> str:
    return label.strip().lower().replace(" ", "_").replace("-", "_")


def glue_order(task: GlueTask, id2label: dict[int, str], label_map: list[str] | None = None):
    """Model output index for each GLUE label, so that ``logits[:, order]`` is in GLUE order.

    Args:
        id2label: the checkpoint's ``config.id2label``.
        label_map: GLUE label names in the checkpoint's output order; overrides ``id2label``
            for checkpoints whose names are generic (``LABEL_0``) but whose order is not GLUE's.

    Returns:
        A list of output indices, or None when the outputs are already in GLUE order.
    """
    if task.is_regression:
        return None
    glue_names = [_normalize(n) for n in task.label_names]
    if label_map:
        names = [_normalize(n) for n in label_map]
        source = "label_map"
    else:
        names = [_normalize(id2label[i]) for i in sorted(id2label)]
        source = "the checkpoint's id2label"
        if set(names) != set(glue_names):
            return None  # generic names (LABEL_0, ...): outputs are taken in GLUE order
    if sorted(names) != sorted(glue_names):
        raise ModelError(
            f"{task.name}: {source} {names} must name each of {glue_names} exactly once"
        )
    order = [names.index(name) for name in glue_names]
    return None if order == list(range(len(order))) else order


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def static_rows(technique: Technique, batch_size: int, padding: str, scope: str) -> int | None:
    """Rows of the one batch shape a compiled model is built for, where every batch has one
    shape (padded to max_length, model scope); else None (compiled for any shape)."""
    compiled = technique.execution in COMPILED_EXECUTIONS
    one_shape = padding == "max_length" and scope == "model" and not technique.packed
    return batch_size if compiled and one_shape else None


# torchao's int8 matrix products need more than 16 rows ("size(0) needs to be greater than
# 16"); a smaller batch gets masked pad tokens, which leave its outputs unchanged.
INT8_MIN_ROWS = 17


def pad_to_rows(batch: Batch, min_rows: int) -> Batch:
    """``batch`` widened with masked pad tokens until it holds at least ``min_rows`` tokens."""
    n, length = batch.input_ids.shape
    if n * length >= min_rows:
        return batch
    extra = -(-min_rows // n) - length
    widen = torch.nn.functional.pad
    return Batch(
        widen(batch.input_ids, (0, extra)),
        widen(batch.attention_mask, (0, extra)),
        batch.row_index,
    )


def fill_rows(batch: Batch, rows: int) -> Batch:
    """``batch`` with copies of its last row appended up to ``rows`` rows, so that a model
    compiled for one shape takes the split's smaller last batch; ``row_index`` still names
    the real rows only, which come first."""
    missing = rows - batch.n_samples
    if missing <= 0:
        return batch
    repeat = [1] * (batch.n_samples - 1) + [missing + 1]
    counts = torch.tensor(repeat)
    return Batch(
        batch.input_ids.repeat_interleave(counts, dim=0),
        batch.attention_mask.repeat_interleave(counts, dim=0),
        batch.row_index,
    )


@dataclass
class Prepared:
    """A model ready to run under one technique."""

    model: torch.nn.Module
    technique: Technique
    device: torch.device
    output_order: list[int] | None = None
    static_rows: int | None = None  # compiled for this many rows: smaller batches are filled

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Inference mode, autocast and attention kernel choice for a forward pass."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.technique.tf32:
                stack.enter_context(_tf32())
            if self.technique.autocast_dtype is not None:
                stack.enter_context(
                    torch.autocast(self.device.type, dtype=self.technique.autocast_dtype)
                )
            if self.technique.fused_attention_only:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                stack.enter_context(
                    sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
                )
            yield

    def inputs(self, batch: Batch) -> dict:
        """A batch as this model takes it, on the device: padded tensors, or packed ones."""
        if self.technique.packed:
            from effbert.packed import packed_inputs

            return packed_inputs(batch, self.device)
        if self.static_rows is not None:
            batch = fill_rows(batch, self.static_rows)
        if self.technique.quantize in ("int8_dynamic", "int8_weight"):
            batch = pad_to_rows(batch, INT8_MIN_ROWS)
        return batch.to(self.device).inputs()

    def forward(self) -> Callable[..., torch.Tensor]:
        """The bare forward call used inside measured loops (no hooks, no syncs)."""
        model = self.model
        if self.technique.packed:
            return lambda inputs: model(**inputs)
        return lambda inputs: model(**inputs).logits

    def logits(self, inputs: dict) -> torch.Tensor:
        """Logits in GLUE label order, as float32 (outside measured loops)."""
        with self.context():
            out = self.forward()(inputs).float()
        return out if self.output_order is None else out[:, self.output_order]

    def predict(self, batches: list[Batch], n_rows: int) -> np.ndarray:
        """Logits in GLUE label order for every row, in the split's original order."""
        out = None
        for batch in batches:
            logits = self.logits(self.inputs(batch))[: len(batch.row_index)].cpu().numpy()
            if out is None:
                out = np.empty((n_rows, logits.shape[1]), dtype=np.float32)
            out[batch.row_index.numpy()] = logits
        return out


def prepare(
    checkpoint: str,
    task: GlueTask,
    technique: Technique,
    device: torch.device,
    label_map: list[str] | None = None,
    seed: int = 0,
    static_rows: int | None = None,
) -> Prepared:
    """Load the task's checkpoint and apply ``technique`` on ``device``.

    ``static_rows``: every batch has this many rows (smaller ones are filled, see
    ``fill_rows``) and one sequence length, so a compiled model is built for that one shape
    (``dynamic=False``), which compiles faster than for symbolic shapes.
    """
    model = load_classifier(checkpoint, task, technique.attn_implementation, seed)
    order = glue_order(task, model.config.id2label, label_map)
    return apply_technique(model, technique, device, order, static_rows)


def apply_technique(
    model: torch.nn.Module,
    technique: Technique,
    device: torch.device,
    output_order: list[int] | None = None,
    static_rows: int | None = None,
) -> Prepared:
    """A loaded classifier under ``technique`` on ``device`` (see ``prepare``)."""
    model = model.to(device=device, dtype=technique.weights_dtype)
    if technique.quantize == "int8_dynamic":
        model = quantize_int8(model)
    elif technique.quantize:
        model = quantize(model, technique.quantize)
    if technique.packed:
        from effbert.packed import PackedClassifier

        model = PackedClassifier(
            model, cls_last=technique.shortcut == "cls_last", flex=technique._axis("flex", False)
        )
    modes = {
        "compile": None,
        "compile_max": "max-autotune-no-cudagraphs",
        "graphs": "reduce-overhead",
    }
    if technique.execution not in modes or technique.packed:
        static_rows = None  # eager models take any shape; packed batches vary in tokens
    if technique.execution in modes:
        # Python floats (scales, eps) stay constants: traced as symbols they make dynamo
        # restart its analysis, which took a third of int8's compile time.
        torch._dynamo.config.specialize_float = True
        model = torch.compile(model, mode=modes[technique.execution], dynamic=static_rows is None)
    return Prepared(model, technique, device, output_order, static_rows)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights with dynamically quantized int8 activations in every Linear (torchao)."""
    return quantize(model, "int8_dynamic")


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
