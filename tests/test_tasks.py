import pytest

from effbert.tasks import ALL_TASKS, TASKS, get_task


def test_registry_covers_all_of_glue():
    assert set(ALL_TASKS) == {
        "cola",
        "sst2",
        "mrpc",
        "qqp",
        "stsb",
        "mnli_m",
        "mnli_mm",
        "qnli",
        "rte",
        "wnli",
    }


@pytest.mark.parametrize(
    "name, metrics, labels",
    [
        ("cola", ("matthews_correlation",), 2),
        ("mrpc", ("f1", "accuracy"), 2),
        ("qqp", ("f1", "accuracy"), 2),
        ("stsb", ("pearson", "spearmanr"), 1),
        ("mnli_mm", ("accuracy",), 3),
    ],
)
def test_official_metrics_and_label_counts(name, metrics, labels):
    task = TASKS[name]
    assert task.metrics == metrics
    assert task.num_labels == labels


def test_mnli_splits_share_one_model_and_glue_label_order():
    m, mm = get_task("mnli_m"), get_task("mnli_mm")
    assert m.model_task == mm.model_task == "mnli"
    assert m.label_names == ("entailment", "neutral", "contradiction")
    assert (m.dev_file, mm.dev_file) == ("dev_matched.tsv", "dev_mismatched.tsv")


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose from cola, sst2"):
        get_task("sst-2")
