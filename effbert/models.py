"""Checkpoints: loading them (Hub id, local folder or ``tiny-random``), their labels in GLUE
order, their fingerprints, and a model prepared under a technique (``Prepared``)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from effbert import techniques
from effbert.config import resolve_path
from effbert.data import SYNTHETIC_WORDS, Batch
from effbert.packed import document_masks, packed_inputs
from effbert.tasks import GlueTask
from effbert.techniques import Technique

TINY_RANDOM = "tiny-random"


class ModelError(ValueError):
    """A checkpoint that cannot serve a task: the message names the task, checkpoint and fix."""


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


def weight_files(checkpoint: str) -> list[Path]:
    """The weight files of a local checkpoint folder (none for a Hub id)."""
    folder = resolve_path(checkpoint)
    return (
        [f for p in ("*.safetensors", "*.bin") for f in folder.glob(p)] if folder.is_dir() else []
    )


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
    except Exception as err:  # safetensors, JSON or config errors of damaged files
        files = sorted(p.name for p in weight_files(checkpoint))
        raise ModelError(
            f"{task.name}: the checkpoint {checkpoint!r} is damaged: its weights "
            f"({', '.join(files) or 'none found'}) or config.json cannot be read "
            f"({type(err).__name__}: {err}). Copy or fine-tune it again"
        ) from err
    if model.config.num_labels != task.num_labels:
        raise ModelError(
            f"{task.name}: checkpoint {checkpoint!r} has {model.config.num_labels} labels, the "
            f"task has {task.num_labels}: it was trained for another task"
        )
    return model.eval()


def _label_config(task: GlueTask) -> dict:
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.label_names)),
        "label2id": {name: i for i, name in enumerate(task.label_names)},
    }


def load_base_classifier(base_model: str, task: GlueTask, attention: str | None = None):
    """The base model with a new head sized and labelled for ``task`` (``attention``: the
    attention implementation, transformers' default where None)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        locate(base_model),
        ignore_mismatched_sizes=True,
        attn_implementation=attention,
        **_label_config(task),
    )


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

    def context(self) -> contextlib.AbstractContextManager:
        """Inference mode, autocast and attention kernel choice for a forward pass."""
        return techniques.inference_context(self.technique, self.device)

    def inputs(self, batch: Batch) -> dict:
        """A batch as this model takes it, on the device: padded tensors, or packed ones."""
        if self.technique.packed:
            inputs = packed_inputs(batch, self.device)
            # once per batch, outside the measured forward; on a CPU (no tiles to size, and
            # inductor's CPU kernels mis-index masks made outside the graph) inside it
            if self.technique.flex_block and self.device.type == "cuda":
                cls_last = self.technique.shortcut == "cls_last"
                n_tokens = inputs["input_ids"].shape[0]
                inputs["block_masks"] = document_masks(
                    inputs["cu_seqlens"], n_tokens, cls_last, self.technique.flex_block
                )
            return inputs
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
    calibration: list[Batch] | None = None,
) -> Prepared:
    """Load the task's checkpoint and apply ``technique`` on ``device``.

    ``static_rows``: every batch has this many rows (smaller ones are filled, see
    ``fill_rows``) and one sequence length, so a compiled model is built for that one shape
    (``dynamic=False``), which compiles faster than for symbolic shapes. ``calibration``:
    batches of train rows for static FP8's scales (``fp8.calibration_batches``).
    """
    model = load_classifier(checkpoint, task, technique.attn_implementation, seed)
    order = glue_order(task, model.config.id2label, label_map)
    return apply_technique(model, technique, device, order, static_rows, calibration)


def apply_technique(
    model: torch.nn.Module,
    technique: Technique,
    device: torch.device,
    output_order: list[int] | None = None,
    static_rows: int | None = None,
    calibration: list[Batch] | None = None,
) -> Prepared:
    """A loaded classifier under ``technique`` on ``device``: its precision (static FP8
    scales from ``calibration``), attention and execution applied in that order
    (``effbert.techniques``)."""
    if not technique.compiled or technique.packed:
        static_rows = None  # eager models take any shape; packed batches vary in tokens
    model = techniques.apply_precision(model, technique, device, calibration)
    model = techniques.apply_attention(model, technique)
    model = techniques.apply_execution(model, technique, static_rows)
    return Prepared(model, technique, device, output_order, static_rows)
