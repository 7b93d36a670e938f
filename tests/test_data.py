import pandas as pd
import pytest
import torch

from effbert import data, models
from effbert.tasks import ALL_TASKS, get_task

# Rows in the glue_data layout of each task, written as the GLUE download script writes them.
GLUE_FILES = {
    "CoLA/dev.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n"
    "gj04\t0\t*\tThey drank the pub.\n",
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming journey .\t1\nunflinchingly bleak\t0\n",
    "MRPC/dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    '1\t1\t2\tHe said "yes".\tHe agreed.\n0\t3\t4\tA cat.\tA dog.\n',
    "QQP/dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    "1\t1\t2\tHow do I cook?\tHow to cook?\t1\n2\t3\t4\tWhy?\tWhere?\t0\n",
    "STS-B/dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man plays.\tA man is playing.\t5.000\n"
    '1\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA "dog\tA cat.\t0.500\n',
    "MNLI/dev_matched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
    "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    "0\t1\t1e\tgov\t(x)\t(y)\t(X)\t(Y)\tThe cat sat.\tA cat sat.\tentailment\tentailment\n"
    "1\t2\t2n\tgov\t(x)\t(y)\t(X)\t(Y)\tIt rains.\tIt is cold.\tneutral\tneutral\n"
    "2\t3\t3c\tgov\t(x)\t(y)\t(X)\t(Y)\tIt is day.\tIt is night.\tcontradiction\tcontradiction\n",
    "MNLI/dev_mismatched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
    "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    "0\t1\t1c\tfiction\t(x)\t(y)\t(X)\t(Y)\tHe left.\tHe stayed.\tcontradiction\tcontradiction\n",
    "QNLI/dev.tsv": 'index\tquestion\tsentence\tlabel\n0\tWho?\tHe "did it.\tentailment\n'
    "1\tWhen?\tNever.\tnot_entailment\n",
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tnot_entailment\n1\tC.\tC.\tentailment\n",
    "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t1\n1\tC.\tD.\t0\n",
}
EXPECTED_LABELS = {
    "cola": [1, 0],
    "sst2": [1, 0],
    "mrpc": [1, 0],
    "qqp": [1, 0],
    "stsb": [5.0, 0.5],
    "mnli_m": [0, 1, 2],
    "mnli_mm": [2],
    "qnli": [0, 1],
    "rte": [1, 0],
    "wnli": [1, 0],
}


@pytest.fixture
def glue_dir(tmp_path):
    for name, text in GLUE_FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", ALL_TASKS)
def test_local_glue_layout_reads_every_task(glue_dir, name):
    task = get_task(name)
    frame = data.load_split(task, "local", glue_dir=glue_dir)
    assert list(frame.columns) == ["text_a", "text_b", "label"]
    assert frame["label"].tolist() == EXPECTED_LABELS[name]
    assert frame["text_b"].isna().all() == (len(task.text_columns) == 1)


def test_stray_quotes_stay_inside_their_field(glue_dir):
    qnli = data.load_split(get_task("qnli"), "local", glue_dir=glue_dir)
    assert qnli.loc[0, "text_b"] == 'He "did it.'
    mrpc = data.load_split(get_task("mrpc"), "local", glue_dir=glue_dir)
    assert mrpc.loc[0, "text_a"] == 'He said "yes".'


@pytest.mark.parametrize("name", ALL_TASKS)
def test_synthetic_rows_are_deterministic_and_in_the_task_shape(name):
    task = get_task(name)
    a = data.load_split(task, "synthetic", max_samples=12)
    b = data.load_split(task, "synthetic", max_samples=12)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 12
    if task.is_regression:
        assert a["label"].between(0, 5).all()
    else:
        assert set(a["label"]) == set(range(task.num_labels))


def test_missing_file_names_task_path_and_fix(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load_split(get_task("mnli_m"), "local", glue_dir=tmp_path)
    message = str(err.value)
    assert "mnli_m" in message and "MNLI/dev_matched.tsv" in message and "glue_dir" in message


def test_missing_file_inside_the_project_is_named_relative_to_it():
    from effbert.config import PROJ_ROOT, resolve_path

    with pytest.raises(data.DataError) as err:
        data.load_split(get_task("sst2"), "local", glue_dir=resolve_path("no-such-glue"))
    assert "no file no-such-glue/SST-2/dev.tsv" in str(err.value)
    assert str(PROJ_ROOT) not in str(err.value)


def test_wrong_columns_are_named(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\t0\n")
    with pytest.raises(data.DataError, match=r"lacks the columns \['sentence1', 'sentence2'\]"):
        data.load_split(get_task("rte"), "local", glue_dir=tmp_path)


def test_unknown_label_names_are_reported(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n"
    )
    with pytest.raises(data.DataError, match="maybe"):
        data.load_split(get_task("rte"), "local", glue_dir=tmp_path)


def test_local_source_without_folder_and_unknown_source_explain_the_fix():
    with pytest.raises(data.DataError, match="needs glue_dir"):
        data.load_split(get_task("sst2"), "local")
    with pytest.raises(data.DataError, match="hub, local, synthetic"):
        data.load_split(get_task("sst2"), "s3")


def test_unreachable_hub_points_to_the_local_folder_option(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("huggingface.co unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(data.DataError) as err:
        data.load_split(get_task("qqp"), "hub")
    assert "nyu-mll/glue/qqp" in str(err.value) and "data_source: local" in str(err.value)


def test_hub_rows_map_to_the_standard_columns(monkeypatch):
    import datasets

    rows = {"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0], "idx": [0, 1]}
    seen = {}

    def fake_load(path, name, split):
        seen.update(path=path, name=name, split=split)
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    frame = data.load_split(get_task("mnli_mm"), "hub")
    assert seen == {"path": "nyu-mll/glue", "name": "mnli", "split": "validation_mismatched"}
    assert frame["text_a"].tolist() == ["p1", "p2"] and frame["label"].tolist() == [2, 0]


@pytest.fixture
def rows():
    return data.load_split(get_task("mrpc"), "synthetic", max_samples=20)


def test_max_length_padding_pads_every_batch_to_max_length(rows):
    batches = data.make_batches(models.tiny_tokenizer(), rows, 8, "max_length", 64)
    assert [b.n_samples for b in batches] == [8, 8, 4]
    assert all(b.input_ids.shape[1] == 64 for b in batches)
    assert all(b.n_tokens == int(b.attention_mask.sum()) < b.input_ids.numel() for b in batches)


def test_longest_padding_pads_to_each_batch(rows):
    batches = data.make_batches(models.tiny_tokenizer(), rows, 8, "longest", 64)
    for b in batches:
        assert b.input_ids.shape[1] == int(b.attention_mask.sum(dim=1).max())


def test_bucketed_batches_group_similar_lengths_and_keep_row_positions(rows):
    tok = models.tiny_tokenizer()
    bucketed = data.make_batches(tok, rows, 8, "bucketed", 64)
    plain = data.make_batches(tok, rows, 8, "longest", 64)
    assert sum(b.input_ids.numel() for b in bucketed) <= sum(b.input_ids.numel() for b in plain)
    positions = torch.cat([b.row_index for b in bucketed])
    assert sorted(positions.tolist()) == list(range(len(rows)))
    lengths = torch.cat([b.attention_mask.sum(1) for b in bucketed]).tolist()
    assert lengths == sorted(lengths)


def test_bad_padding_and_batch_size_are_rejected(rows):
    with pytest.raises(ValueError, match="bucketed"):
        data.make_batches(models.tiny_tokenizer(), rows, 8, "dynamic", 64)
    with pytest.raises(ValueError, match="at least 1"):
        data.make_batches(models.tiny_tokenizer(), rows, 0, "longest", 64)
