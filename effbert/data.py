"""Task data from the Hub, a local ``glue_data`` folder or a synthetic generator, and batches."""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from effbert.config import project_relative, resolve_path
from effbert.tasks import GlueTask

HUB_DATASET = "nyu-mll/glue"
SOURCES = ("hub", "local", "synthetic")
PADDINGS = ("max_length", "longest", "bucketed", "packed")

# A fixed vocabulary for synthetic rows: consonant-vowel syllable pairs ("bako", "tesu", ...).
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
SYNTHETIC_WORDS = [a + b for a in _SYLLABLES[:20] for b in _SYLLABLES[20:30]]


class DataError(ValueError):
    """Task data that cannot be read: the message names the task, the source and the fix."""


def fingerprint(rows: pd.DataFrame) -> str:
    """A content hash of the rows measured (texts and labels, in order)."""
    text = rows[["text_a", "text_b", "label"]].to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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

    Raises:
        DataError: a bad argument, or rows that are cut, unlabelled or out of range; the
            message names the task, the file and line, and the fix.
    """
    if split not in ("dev", "train"):
        raise DataError(f"{task.name}: split must be 'dev' or 'train', got {split!r}")
    if max_samples < 0:
        raise DataError(
            f"{task.name}: max_samples must be 0 (all rows) or a positive row count, "
            f"got {max_samples}; set max_samples: 0 to keep every row"
        )
    if source == "hub":
        frame = _load_hub(task, split)
    elif source == "local":
        frame = _load_local(task, split, glue_dir, max_samples)
    elif source == "synthetic":
        # a train split belongs to the model task (MNLI's two dev splits share one)
        name = task.model_task if split == "train" else task.name
        frame = synthetic_rows(task, max_samples or 64, seed=seed + (split == "train"), name=name)
    else:
        raise DataError(f"unknown data_source {source!r}: choose one of {', '.join(SOURCES)}")
    if max_samples:
        frame = frame.iloc[:max_samples]
    return frame.reset_index(drop=True)


def _load_hub(task: GlueTask, split: str) -> pd.DataFrame:
    import datasets

    hub_split = task.hub_split if split == "dev" else "train"
    where = f"{HUB_DATASET}/{task.hub_config} split {hub_split}"
    try:
        ds = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as err:
        raise DataError(
            f"{task.name}: could not load {where} from the Hugging Face Hub "
            f"({type(err).__name__}: {err}). Without Hub access, "
            "download GLUE once and set data_source: local with glue_dir: <glue_data folder>"
        ) from err
    frame = ds.to_pandas()
    text_b = task.text_columns[1] if len(task.text_columns) > 1 else None
    return _standard_frame(frame, task, "label", task.text_columns[0], text_b, where, "row")


def _load_local(
    task: GlueTask, split: str, glue_dir: str | Path, max_samples: int = 0
) -> pd.DataFrame:
    if not str(glue_dir):
        raise DataError(f"{task.name}: data_source local needs glue_dir (the glue_data folder)")
    path = Path(glue_dir) / task.folder / (task.dev_file if split == "dev" else task.train_file)
    shown = project_relative(path)  # error messages name paths portably
    if not path.is_file():
        raise DataError(
            f"{task.name}: no file {shown}. glue_dir must hold the glue_data layout "
            f"({task.folder}/{task.dev_file}); fix glue_dir, or drop {task.name} from tasks"
        )
    limit = max_samples + task.header if max_samples else None
    fields = _tsv_fields(task, shown, _text_lines(task, path, shown, limit))
    header = fields[0] if task.header else list(task.names_without_header)
    first_line = 2 if task.header else 1
    rows = fields[first_line - 1 :]
    label, text_a, text_b = task.local_columns
    missing = [c for c in (label, text_a, text_b) if c and c not in header]
    if missing:
        raise DataError(
            f"{task.name}: {shown} lacks the columns {missing} (it has {header}); "
            "is it a GLUE file of this task, written by the GLUE download script?"
        )
    if not rows:
        raise DataError(
            f"{task.name}: {shown} has a header but no rows; "
            "download the file again with the GLUE download script"
        )
    counts = pd.Series([len(r) for r in rows], index=range(first_line, first_line + len(rows)))
    _reject(
        counts != len(header),
        counts,
        task,
        f"{shown} line",
        f"has {{value}} tab-separated fields instead of {len(header)}",
        "the line is cut short or holds a stray tab: repair it or download the file again",
    )
    frame = pd.DataFrame(rows, columns=header, index=range(first_line, first_line + len(rows)))
    ids = [c for c in task.id_columns if c in header]
    if ids:
        _reject(
            frame.duplicated(ids),
            frame[ids].agg("/".join, axis=1),
            task,
            f"{shown} line",
            f"repeats the id {{value}} of an earlier line ({', '.join(ids)})",
            "a row is counted twice: delete the repeated line or download the file again",
        )
    for column in (text_a, text_b):
        if column:
            _reject(
                frame[column].str.strip() == "",
                frame[column],
                task,
                f"{shown} line",
                f"has no text in column {column!r}",
                "fill the text in or delete the line",
            )
    return _standard_frame(frame, task, label, text_a, text_b, shown, "line")


# The official GLUE files whose last line has no line break (every other file ends in one,
# so a file that does not was cut short): CoLA's dev.tsv, by its sha256.
UNTERMINATED_GLUE_FILES = {"8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd"}


def _text_lines(task: GlueTask, path: Path, shown: str, limit: int | None = None) -> list[str]:
    """The file's lines without the byte order mark and line breaks, read line by line: the
    first ``limit`` only where given, else the whole file, whose last line must end in a line
    break (or the file be a known official one).

    Raises:
        DataError: the file cannot be read, or a line is not UTF-8, holds a NUL byte or is
            cut short; the message names the line.
    """
    lines, digest, raw, offset = [], hashlib.sha256(), b"", 0
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                digest.update(raw)
                body = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
                start = offset + len(raw) - len(body)
                lines.append(_decoded(task, shown, number, body, start))
                offset += len(raw)
                if limit is not None and len(lines) >= limit:
                    return lines
    except OSError as err:
        raise DataError(
            f"{task.name}: cannot read {shown} ({err.strerror or err}); make it readable, or "
            f"drop {task.name} from tasks"
        ) from None
    if not "".join(lines).strip():
        raise DataError(
            f"{task.name}: {shown} is empty; download the file again with the GLUE download script"
        )
    if not raw.endswith(b"\n") and digest.hexdigest() not in UNTERMINATED_GLUE_FILES:
        raise DataError(
            f"{task.name}: {shown} line {len(lines)} is cut short (the file ends mid-line); "
            "download the file again"
        )
    return lines


def _decoded(task: GlueTask, shown: str, number: int, raw: bytes, start: int) -> str:
    """Line ``number`` as text; ``start``: its first byte's offset in the file."""
    if b"\0" in raw:
        raise DataError(
            f"{task.name}: {shown} line {number} holds a NUL byte: the file is damaged or not "
            "text; download it again"
        )
    try:
        return raw.decode("utf-8").removesuffix("\n")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{task.name}: {shown} line {number} (byte {start + err.start}) is not UTF-8 "
            f"({err.reason}); save the file as UTF-8 or download it again"
        ) from None


def _tsv_fields(task: GlueTask, shown: str, lines: list[str]) -> list[list[str]]:
    """Tab-separated fields of each line, with quoting off (GLUE texts hold lone quotes)."""
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        return list(reader)
    except csv.Error as err:
        raise DataError(
            f"{task.name}: {shown} line {reader.line_num} cannot be read ({err}); "
            "repair the line or download the file again"
        ) from None


def _standard_frame(
    frame: pd.DataFrame,
    task: GlueTask,
    label: str,
    text_a: str,
    text_b: str | None,
    where: str = HUB_DATASET,
    unit: str = "row",
) -> pd.DataFrame:
    out = pd.DataFrame({"text_a": frame[text_a].astype(str)})
    out["text_b"] = frame[text_b].astype(str) if text_b else None
    out["label"] = _labels(frame[label], task, f"{where} {unit}")
    return out


def _labels(values: pd.Series, task: GlueTask, where: str) -> pd.Series:
    as_text = values.astype(str).str.strip()
    kind = "score" if task.is_regression else "label"
    _reject(
        values.isna() | (as_text == ""),
        values,
        task,
        where,
        f"has no {kind}",
        f"fill the {kind} in or delete the row",
    )
    if task.is_regression:
        scores = pd.to_numeric(as_text, errors="coerce").astype(float)
        _reject(
            ~scores.between(0, 5),
            values,
            task,
            where,
            "has the score {value!r}",
            "similarity scores must be numbers in [0, 5]: fix the score or delete the row",
        )
        return scores
    names = list(task.label_names)
    labels = as_text.map({name: i for i, name in enumerate(names)})
    numbered = as_text.str.fullmatch(r"-?\d+")
    labels[numbered] = as_text[numbered].astype(int)
    _reject(
        labels.isna(),
        values,
        task,
        where,
        "has the unknown label {value!r}",
        f"labels must be one of {names} or their class ids: fix the label",
    )
    labels = labels.astype(int)
    _reject(
        ~labels.between(0, task.num_labels - 1),
        values,
        task,
        where,
        f"has the class id {{value}} outside 0..{task.num_labels - 1} ({names})",
        "fix the label (-1 marks an unlabelled test row: use a dev or train file)",
    )
    return labels.astype(int)


def _reject(
    bad: pd.Series, values: pd.Series, task: GlueTask, where: str, problem: str, fix: str
) -> None:
    """Raise a DataError for the first flagged row, counting the others.

    Args:
        bad: True for each offending row; its index holds line or row numbers.
        values: the checked values, shown through ``{value}`` in ``problem``.
        where: the source and the kind of position, such as ``SST-2/dev.tsv line``.
        problem: what is wrong with the row.
        fix: how to repair it.
    """
    if not bad.any():
        return
    positions = bad.index[bad.to_numpy()]
    more = f" (and {len(positions) - 1} more)" if len(positions) > 1 else ""
    detail = problem.format(value=values[positions[0]])
    raise DataError(f"{task.name}: {where} {positions[0]}{more} {detail}; {fix}")


def synthetic_rows(task: GlueTask, n: int, seed: int = 0, name: str = "") -> pd.DataFrame:
    """Deterministic rows in the shape of ``task``: same columns, label set and length spread
    (``name`` seeds them, the task's name by default)."""
    rng = random.Random(f"{name or task.name}-{seed}")

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
            length first so that each batch holds inputs of similar length; ``packed`` sorts
            the same way and pads to the longest, and the padding-free model
            (``effbert.packed``) strips every pad token before the device sees it.
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
    if padding in ("bucketed", "packed"):
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
