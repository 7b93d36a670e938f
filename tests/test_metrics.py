import numpy as np
import pytest

from effbert import metrics
from effbert.tasks import get_task


def logits_for(predictions, n_labels=2):
    return np.eye(n_labels)[predictions]


def test_accuracy_and_f1_match_hand_computed_values():
    # predictions 1 1 0 0 1, labels 1 0 0 1 1: TP 2, FP 1, FN 1 -> F1 2/3; 3 of 5 right
    scores, backend = metrics.compute(
        get_task("mrpc"), logits_for([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]), "sklearn"
    )
    assert backend == "sklearn"
    assert scores == pytest.approx({"f1": 2 / 3, "accuracy": 0.6})


def test_matthews_correlation_matches_its_formula():
    # TP 2, TN 1, FP 1, FN 1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    scores, _ = metrics.compute(
        get_task("cola"), logits_for([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]), "sklearn"
    )
    assert scores["matthews_correlation"] == pytest.approx(1 / 6)


def test_stsb_correlations_use_the_regression_output():
    predictions = np.array([[0.5], [1.5], [2.0], [4.5]])
    scores, _ = metrics.compute(
        get_task("stsb"), predictions, np.array([1.0, 2.0, 3.0, 4.0]), "sklearn"
    )
    assert scores["spearmanr"] == pytest.approx(1.0)
    assert scores["pearson"] == pytest.approx(
        np.corrcoef([0.5, 1.5, 2.0, 4.5], [1, 2, 3, 4])[0, 1], rel=1e-6
    )


def test_auto_falls_back_to_sklearn_when_evaluate_cannot_load(monkeypatch):
    monkeypatch.setattr(metrics, "load_evaluate_metric", lambda config: None)
    scores, backend = metrics.compute(get_task("sst2"), logits_for([1, 0]), np.array([1, 1]))
    assert backend == "sklearn" and scores == {"accuracy": 0.5}
    with pytest.raises(RuntimeError, match="metrics_backend: auto or sklearn"):
        metrics.compute(get_task("sst2"), logits_for([1, 0]), np.array([1, 1]), "evaluate")


@pytest.mark.network
@pytest.mark.parametrize("name", ["cola", "mrpc", "stsb", "mnli_m"])
def test_evaluate_glue_metric_and_the_formulas_agree(name):
    """Needs evaluate's GLUE metric, which evaluate fetches from the Hub on first use."""
    task = get_task(name)
    if metrics.load_evaluate_metric(task.hub_config) is None:
        pytest.skip("evaluate's GLUE metric cannot be loaded here (no Hub, no cache)")
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 50) if task.is_regression else rng.integers(0, task.num_labels, 50)
    logits = rng.normal(size=(50, task.num_labels))
    assert (
        metrics.compute(task, logits, labels, "evaluate")[0]
        == metrics.compute(task, logits, labels, "sklearn")[0]
    )
