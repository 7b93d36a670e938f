"""Task data from the Hub, a local ``glue_data`` folder or a synthetic generator, and batches."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from effbert.config import project_relative, resolve_path
from effbert.params import PADDINGS, SOURCES
from effbert.tasks import GlueTask

HUB_DATASET = "nyu-mll/glue"

# A fixed vocabulary for synthetic rows: consonant-vowel syllable pairs ("bako", "tesu", ...).
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
SYNTHETIC_WORDS = [a + b for a in _SYLLABLES[:20] for b in _SYLLABLES[20:30]]


class DataError(ValueError):
    """Task data that cannot be read: the message names the task, the source and the fix."""


def load_rows(params, task: GlueTask, split: str = "dev", max_samples: int | None = None):
    """A task's rows from a profile's source (``max_samples`` defaults to the profile's)."""
    return load_split(
        task,
        params.data_source,
        split=split,
        glue_dir=resolve_path(params.glue_dir) if params.glue_dir else "",
        max_samples=params.max_samples if max_samples is None else max_samples,
        seed=params.seed,
    )


def load_split(
    task: GlueTask,
    source: str,
    *,
    split: str = "dev",
    glue_dir: str | Path = "",
    max_samples: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows of one split as a frame with columns ``text_a``, ``text_b`` and ``label``.

    Args:
        task: the GLUE task.
        source: ``hub`` (``nyu-mll/glue`` through ``datasets``), ``local`` (a ``glue_data``
            folder) or ``synthetic`` (deterministic rows in the task's shape).
        split: ``dev`` (the task's evaluation split) or ``train``.
        glue_dir: the ``glue_data`` folder, for ``local``.
        max_samples: keep the first N rows (0 keeps all; synthetic data defaults to 64).
        seed: seed of the synthetic generator.
    """
    if split not in ("dev", "train"):
        raise DataError(f"{task.name}: split must be 'dev' or 'train', got {split!r}")
    if source == "hub":
        frame = _load_hub(task, split)
    elif source == "local":
        frame = _load_local(task, split, glue_dir)
    elif source == "synthetic":
        frame = synthetic_rows(task, max_samples or 64, seed=seed + (split == "train"))
    else:
        raise DataError(f"unknown data_source {source!r}: choose one of {', '.join(SOURCES)}")
    if max_samples:
        frame = frame.iloc[:max_samples]
    return frame.reset_index(drop=True)


def _load_hub(task: GlueTask, split: str) -> pd.DataFrame:
    import datasets

    hub_split = task.hub_split if split == "dev" else "train"
    try:
        ds = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as err:
        raise DataError(
            f"{task.name}: could not load {HUB_DATASET}/{task.hub_config} split {hub_split} "
            f"from the Hugging Face Hub ({type(err).__name__}: {err}). Without Hub access, "
            "download GLUE once and set data_source: local with glue_dir: <glue_data folder>"
        ) from err
    frame = ds.to_pandas()
    text_b = task.text_columns[1] if len(task.text_columns) > 1 else None
    return _standard_frame(frame, task, "label", task.text_columns[0], text_b)


def _load_local(task: GlueTask, split: str, glue_dir: str | Path) -> pd.DataFrame:
    if not str(glue_dir):
        raise DataError(f"{task.name}: data_source local needs glue_dir (the glue_data folder)")
    path = Path(glue_dir) / task.folder / (task.dev_file if split == "dev" else task.train_file)
    shown = project_relative(path)  # error messages name paths portably
    if not path.is_file():
        raise DataError(
            f"{task.name}: no file {shown}. glue_dir must hold the glue_data layout "
            f"({task.folder}/{task.dev_file}); fix glue_dir, or drop {task.name} from tasks"
        )
    read = dict(sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    read["encoding"] = "utf-8-sig"  # MRPC starts with a byte order mark
    if task.header:
        frame = pd.read_csv(path, **read)
    else:
        frame = pd.read_csv(path, header=None, names=list(task.names_without_header), **read)
    label, text_a, text_b = task.local_columns
    missing = [c for c in (label, text_a, text_b) if c and c not in frame.columns]
    if missing:
        raise DataError(
            f"{task.name}: {shown} lacks the columns {missing} (it has {list(frame.columns)}); "
            "is it a GLUE file of this task, written by the GLUE download script?"
        )
    return _standard_frame(frame, task, label, text_a, text_b, where=shown)


def _standard_frame(
    frame: pd.DataFrame,
    task: GlueTask,
    label: str,
    text_a: str,
    text_b: str | None,
    where: str = HUB_DATASET,
) -> pd.DataFrame:
    out = pd.DataFrame({"text_a": frame[text_a].astype(str)})
    out["text_b"] = frame[text_b].astype(str) if text_b else None
    out["label"] = _labels(frame[label], task, where)
    return out


def _labels(values: pd.Series, task: GlueTask, where: str) -> pd.Series:
    if task.is_regression:
        return pd.to_numeric(values, errors="raise").astype(float)
    as_text = values.astype(str).str.strip()
    if as_text.str.fullmatch(r"-?\d+").all():
        labels = as_text.astype(int)
    else:
        index = {name: i for i, name in enumerate(task.label_names)}
        unknown = sorted(set(as_text) - set(index))
        if unknown:
            raise DataError(
                f"{task.name}: {where} has labels {unknown[:5]} outside {list(task.label_names)}"
            )
        labels = as_text.map(index)
    bad = sorted(set(labels) - set(range(task.num_labels)) - {-1})
    if bad:
        raise DataError(f"{task.name}: {where} has label ids {bad} for {task.num_labels} classes")
    return labels.astype(int)


def synthetic_rows(task: GlueTask, n: int, seed: int = 0) -> pd.DataFrame:
    """Deterministic rows in the shape of ``task``: same columns, label set and length spread."""
    rng = random.Random(f"{task.name}-{seed}")

    def sentence() -> str:
        return " ".join(rng.choice(SYNTHETIC_WORDS) for _ in range(rng.randint(3, 40)))

    pair = len(task.text_columns) > 1
    rows = []
    for i in range(n):
        label = round(rng.uniform(0, 5), 3) if task.is_regression else i % task.num_labels
        rows.append({"text_a": sentence(), "text_b": sentence() if pair else None, "label": label})
    return pd.DataFrame(rows)


@dataclass
class Batch:
    """One model input: token tensors plus the rows' positions in the split."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    row_index: torch.Tensor

    @property
    def n_samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_tokens(self) -> int:
        """Non-padding tokens."""
        return int(self.attention_mask.sum())

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.row_index)

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def make_batches(
    tokenizer, frame: pd.DataFrame, batch_size: int, padding: str, max_length: int
) -> list[Batch]:
    """Tokenize with truncation to ``max_length`` and cut the rows into batches.

    Args:
        padding: ``max_length`` pads every input to ``max_length`` (the original study);
            ``longest`` pads each batch to its longest input; ``bucketed`` sorts rows by
            length first so that each batch holds inputs of similar length.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}: choose one of {', '.join(PADDINGS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    text_b = None if frame["text_b"].isna().all() else frame["text_b"].tolist()
    encoded = tokenizer(
        frame["text_a"].tolist(), text_b, truncation=True, max_length=max_length, padding=False
    )["input_ids"]
    order = list(range(len(encoded)))
    if padding == "bucketed":
        order.sort(key=lambda i: len(encoded[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        features = [{"input_ids": encoded[i]} for i in rows]
        padded = tokenizer.pad(
            features,
            padding="max_length" if padding == "max_length" else "longest",
            max_length=max_length if padding == "max_length" else None,
            return_tensors="pt",
        )
        batches.append(Batch(padded["input_ids"], padded["attention_mask"], torch.tensor(rows)))
    return batches
