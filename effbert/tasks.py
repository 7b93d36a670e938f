"""The GLUE tasks: text columns, labels in GLUE order, files and official metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueTask:
    """One evaluation task of GLUE.

    Attributes:
        name: effbert's key for the task (``sst2``, ``mnli_m``).
        model_task: the task a checkpoint is trained for (``mnli`` for both MNLI splits).
        hub_config: the ``nyu-mll/glue`` configuration.
        hub_split: the evaluation split on the Hub.
        folder: the task's folder in the ``glue_data`` layout.
        dev_file: the evaluation file inside ``folder``.
        header: whether the local TSV files start with a header row.
        local_columns: ``(label column, first text column, second text column or None)``
            in the local TSV; for header-less files, the column names to give.
        text_columns: the text columns on the Hub.
        label_names: label names in GLUE order; empty for regression.
        metrics: official metrics, the first is the primary one.
        names_without_header: the column names of header-less local files.
        id_columns: the local file's columns that name a row (none: rows have no id).
    """

    name: str
    model_task: str
    hub_config: str
    hub_split: str
    folder: str
    dev_file: str
    header: bool
    local_columns: tuple[str, str, str | None]
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    names_without_header: tuple[str, ...] = ()
    id_columns: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def train_file(self) -> str:
        return "train.tsv"


_NLI = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in [
        GlueTask(
            "cola",
            "cola",
            "cola",
            "validation",
            "CoLA",
            "dev.tsv",
            False,
            ("label", "sentence", None),
            ("sentence",),
            ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            names_without_header=("source", "label", "label_orig", "sentence"),
        ),
        GlueTask(
            "sst2",
            "sst2",
            "sst2",
            "validation",
            "SST-2",
            "dev.tsv",
            True,
            ("label", "sentence", None),
            ("sentence",),
            ("negative", "positive"),
            ("accuracy",),
        ),
        GlueTask(
            "mrpc",
            "mrpc",
            "mrpc",
            "validation",
            "MRPC",
            "dev.tsv",
            True,
            ("Quality", "#1 String", "#2 String"),
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            ("f1", "accuracy"),
            id_columns=("#1 ID", "#2 ID"),
        ),
        GlueTask(
            "qqp",
            "qqp",
            "qqp",
            "validation",
            "QQP",
            "dev.tsv",
            True,
            ("is_duplicate", "question1", "question2"),
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            ("f1", "accuracy"),
            id_columns=("id",),
        ),
        GlueTask(
            "stsb",
            "stsb",
            "stsb",
            "validation",
            "STS-B",
            "dev.tsv",
            True,
            ("score", "sentence1", "sentence2"),
            ("sentence1", "sentence2"),
            (),
            ("pearson", "spearmanr"),
            id_columns=("index",),
        ),
        GlueTask(
            "mnli_m",
            "mnli",
            "mnli",
            "validation_matched",
            "MNLI",
            "dev_matched.tsv",
            True,
            ("gold_label", "sentence1", "sentence2"),
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            id_columns=("index",),
        ),
        GlueTask(
            "mnli_mm",
            "mnli",
            "mnli",
            "validation_mismatched",
            "MNLI",
            "dev_mismatched.tsv",
            True,
            ("gold_label", "sentence1", "sentence2"),
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            id_columns=("index",),
        ),
        GlueTask(
            "qnli",
            "qnli",
            "qnli",
            "validation",
            "QNLI",
            "dev.tsv",
            True,
            ("label", "question", "sentence"),
            ("question", "sentence"),
            _NLI,
            ("accuracy",),
            id_columns=("index",),
        ),
        GlueTask(
            "rte",
            "rte",
            "rte",
            "validation",
            "RTE",
            "dev.tsv",
            True,
            ("label", "sentence1", "sentence2"),
            ("sentence1", "sentence2"),
            _NLI,
            ("accuracy",),
            id_columns=("index",),
        ),
        GlueTask(
            "wnli",
            "wnli",
            "wnli",
            "validation",
            "WNLI",
            "dev.tsv",
            True,
            ("label", "sentence1", "sentence2"),
            ("sentence1", "sentence2"),
            ("not_entailment", "entailment"),
            ("accuracy",),
            id_columns=("index",),
        ),
    ]
}

ALL_TASKS = list(TASKS)


def get_task(name: str) -> GlueTask:
    """Look a task up by effbert's key, with a clear error for unknown names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown GLUE task {name!r}: choose from {', '.join(TASKS)}") from None
