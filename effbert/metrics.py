"""GLUE's official metrics, through ``evaluate`` where its GLUE metric loads, else sklearn/scipy."""

from __future__ import annotations

import logging
from functools import cache

import numpy as np

from effbert.tasks import GlueTask

logger = logging.getLogger(__name__)


def _glue_formulas(predictions: np.ndarray, references: np.ndarray, task: GlueTask):
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    if task.is_regression:  # evaluate's GLUE metric stores STS-B scores as float32
        predictions, references = predictions.astype(np.float32), references.astype(np.float32)
    formulas = {
        "accuracy": lambda: float((predictions == references).mean()),
        "f1": lambda: float(f1_score(y_true=references, y_pred=predictions)),
        "matthews_correlation": lambda: float(matthews_corrcoef(references, predictions)),
        "pearson": lambda: float(pearsonr(predictions, references)[0]),
        "spearmanr": lambda: float(spearmanr(predictions, references)[0]),
    }
    return {name: formulas[name]() for name in task.metrics}


@cache
def load_evaluate_metric(task_config: str, path: str = "glue"):
    """``evaluate``'s GLUE metric for one configuration, or None where it cannot be loaded."""
    try:
        import evaluate

        return evaluate.load(path, task_config)
    except Exception as err:  # offline, or evaluate missing: fall back to the formulas
        logger.info("evaluate's GLUE metric unavailable (%s); using sklearn/scipy", err)
        return None


def compute(task: GlueTask, logits: np.ndarray, labels: np.ndarray, backend: str = "auto"):
    """The task's official metrics from logits (in GLUE label order) and labels.

    Args:
        backend: ``evaluate``, ``sklearn`` or ``auto`` (evaluate where it loads).

    Returns:
        ``(metrics, backend_used)``: metric name -> value, and which backend computed them.
    """
    predictions = logits[:, 0] if task.is_regression else logits.argmax(axis=-1)
    if backend not in ("auto", "evaluate", "sklearn"):
        raise ValueError(f"unknown metrics backend {backend!r}: auto, evaluate or sklearn")
    if backend != "sklearn":
        # evaluate names MNLI's splits mnli_matched / mnli_mismatched; the formula is the same
        metric = load_evaluate_metric(task.hub_config)
        if metric is not None:
            scores = metric.compute(predictions=predictions, references=labels)
            return {name: float(scores[name]) for name in task.metrics}, "evaluate"
        if backend == "evaluate":
            raise RuntimeError(
                "evaluate's GLUE metric could not be loaded (it is fetched from the Hub once); "
                "use metrics_backend: auto or sklearn offline"
            )
    return _glue_formulas(predictions, labels, task), "sklearn"
