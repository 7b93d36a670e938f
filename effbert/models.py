"""Checkpoints, their labels in GLUE order, and the inference techniques applied to them."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from effbert.config import resolve_path
from effbert.data import SYNTHETIC_WORDS, Batch
from effbert.params import TINY_RANDOM
from effbert.tasks import GlueTask


class ModelError(ValueError):
    """A checkpoint that cannot serve a task: the message names the task, checkpoint and fix."""


@dataclass(frozen=True)
class Technique:
    """How the model is run.

    Attributes:
        name: key used in profiles and records.
        title: label in figures and tables.
        weights_dtype: dtype the weights are cast to.
        autocast_dtype: dtype of ``torch.autocast``, or None.
        attention: transformers' ``attn_implementation``.
        fused_attention_only: restrict SDPA to its fused kernels (flash, memory-efficient).
        int8: quantize Linear layers to int8 (dynamic activations, torchao).
        needs_cuda: runs only on a CUDA device.
    """

    name: str
    title: str
    weights_dtype: torch.dtype = torch.float32
    autocast_dtype: torch.dtype | None = None
    attention: str = "eager"
    fused_attention_only: bool = False
    int8: bool = False
    needs_cuda: bool = False


TECHNIQUES: dict[str, Technique] = {
    t.name: t
    for t in [
        Technique("fp32", "fp32 baseline"),
        Technique("int8", "int8 dynamic quantization", int8=True),
        Technique("autocast_fp16", "autocast fp16", autocast_dtype=torch.float16, needs_cuda=True),
        Technique("autocast_bf16", "autocast bf16", autocast_dtype=torch.bfloat16),
        Technique("fp16", "fp16 weights", weights_dtype=torch.float16, needs_cuda=True),
        Technique("flash", "fused attention (SDPA)", attention="sdpa", fused_attention_only=True),
        Technique(
            "fp16_flash",
            "fp16 + fused attention",
            weights_dtype=torch.float16,
            attention="sdpa",
            fused_attention_only=True,
            needs_cuda=True,
        ),
    ]
}


def get_technique(name: str) -> Technique:
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise ValueError(
            f"unknown technique {name!r}: choose from {', '.join(TECHNIQUES)}"
        ) from None


def unsupported_reason(technique: Technique, device: torch.device) -> str | None:
    """Why ``technique`` cannot run on ``device``, or None when it can."""
    if technique.needs_cuda and device.type != "cuda":
        return f"{technique.name} needs a CUDA GPU; this run is on {device.type}"
    if technique.int8 and device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"{technique.name} needs a GPU of compute capability 8.0 or newer"
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
        digest = hashlib.sha256()
        files = sorted({f for pattern in CHECKPOINT_FILES for f in folder.glob(pattern)})
        if not files:
            raise ModelError(f"checkpoint folder {checkpoint!r} holds no weights or config.json")
        for path in files:
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return f"sha256:{digest.hexdigest()[:16]}"
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


@dataclass
class Prepared:
    """A model ready to run under one technique."""

    model: torch.nn.Module
    technique: Technique
    device: torch.device
    output_order: list[int] | None = None

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Inference mode, autocast and attention kernel choice for a forward pass."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
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

    def forward(self) -> Callable[..., torch.Tensor]:
        """The bare forward call used inside measured loops (no hooks, no syncs)."""
        model = self.model
        return lambda inputs: model(**inputs).logits

    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits in GLUE label order, as float32 (outside measured loops)."""
        with self.context():
            out = self.model(**inputs).logits.float()
        return out if self.output_order is None else out[:, self.output_order]

    def predict(self, batches: list[Batch], n_rows: int) -> np.ndarray:
        """Logits in GLUE label order for every row, in the split's original order."""
        out = None
        for batch in batches:
            logits = self.logits(batch.to(self.device).inputs()).cpu().numpy()
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
) -> Prepared:
    """Load the task's checkpoint and apply ``technique`` on ``device``."""
    model = load_classifier(checkpoint, task, technique.attention, seed)
    order = glue_order(task, model.config.id2label, label_map)
    model = model.to(device=device, dtype=technique.weights_dtype)
    if technique.int8:
        model = quantize_int8(model)
    return Prepared(model, technique, device, order)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights with dynamically quantized int8 activations in every Linear (torchao)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model
