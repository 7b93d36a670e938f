import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from effbert import data
from effbert.config import PROJ_ROOT
from effbert.tasks import get_task

REAL_GLUE = PROJ_ROOT.parent / "shared" / "data" / "glue"  # beside the checkout, where present
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
)
NLI_HEADER = "index\tsentence1\tsentence2\tlabel\n"

# Row counts and label counts (id: rows) of the verified files, from SOURCES.md.
REAL_FILES = [
    ("cola", "dev", 1043, {1: 721, 0: 322}),
    ("cola", "train", 8551, {1: 6023, 0: 2528}),
    ("sst2", "dev", 872, {1: 444, 0: 428}),
    ("sst2", "train", 67349, {1: 37569, 0: 29780}),
    ("mrpc", "dev", 408, {1: 279, 0: 129}),
    ("mrpc", "train", 3668, None),
    ("qnli", "dev", 5463, {0: 2702, 1: 2761}),
    ("rte", "dev", 277, {0: 146, 1: 131}),
    ("rte", "train", 2490, {0: 1249, 1: 1241}),
    ("stsb", "dev", 1500, None),
    ("stsb", "train", 5749, None),
    ("wnli", "dev", 71, {0: 40, 1: 31}),
    ("wnli", "train", 635, None),
]


def stsb_line(index: int, score: str) -> str:
    return f"{index}\tmain-captions\tMSRvid\t2012test\t{index:04d}\tnone\tnone\tA man.\tA dog.\t{score}\n"


def write(glue_dir: Path, name: str, content: str | bytes) -> Path:
    path = glue_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def load_error(task: str, glue_dir: Path, split: str = "dev", **kwargs) -> str:
    with pytest.raises(data.DataError) as err:
        data.load_split(get_task(task), "local", split=split, glue_dir=glue_dir, **kwargs)
    return str(err.value)


@pytest.mark.skipif(not REAL_GLUE.is_dir(), reason="no real GLUE files on this machine")
@pytest.mark.parametrize(("task", "split", "n_rows", "label_counts"), REAL_FILES)
def test_real_glue_files_load_with_their_official_row_counts(task, split, n_rows, label_counts):
    frame = data.load_split(get_task(task), "local", split=split, glue_dir=REAL_GLUE)
    assert len(frame) == n_rows
    assert frame["text_a"].str.strip().ne("").all()
    if task == "stsb":
        assert frame["label"].between(0, 5).all()
    if label_counts:
        assert frame["label"].value_counts().to_dict() == label_counts


@pytest.mark.parametrize("split", ["dev", "train"])
def test_unlabelled_class_id_is_rejected_in_dev_and_train(tmp_path, split):
    write(tmp_path, f"CoLA/{split}.tsv", "gj04\t1\t\tGood.\ngj04\t-1\t\tUnlabelled.\n")
    message = load_error("cola", tmp_path, split)
    assert message.startswith("cola: ")
    assert f"CoLA/{split}.tsv line 2 has the class id -1 outside 0..1" in message
    assert "fix the label" in message and "dev or train file" in message


def test_class_id_beyond_the_classes_is_rejected(tmp_path):
    write(tmp_path, "WNLI/dev.tsv", NLI_HEADER + "0\tA.\tB.\t1\n1\tC.\tD.\t2\n2\tE.\tF.\t7\n")
    message = load_error("wnli", tmp_path)
    assert "wnli: " in message and "WNLI/dev.tsv line 3 (and 1 more)" in message
    assert "class id 2 outside 0..1" in message and "fix the label" in message


def test_unknown_label_name_names_the_line_and_the_known_names(tmp_path):
    write(tmp_path, "RTE/dev.tsv", NLI_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    message = load_error("rte", tmp_path)
    assert "rte: " in message and "RTE/dev.tsv line 3 has the unknown label 'maybe'" in message
    assert "['entailment', 'not_entailment']" in message and "fix the label" in message


def test_missing_label_names_the_line(tmp_path):
    write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\ngood .\t1\nbad .\t \n")
    message = load_error("sst2", tmp_path)
    assert "sst2: " in message and "SST-2/dev.tsv line 3 has no label" in message
    assert "fill the label in" in message


@pytest.mark.parametrize(
    ("score", "shown"),
    [("", "has no score"), ("abc", "score 'abc'"), ("nan", "score 'nan'"), ("5.5", "'5.5'")],
)
def test_stsb_scores_must_be_numbers_from_0_to_5(tmp_path, score, shown):
    write(tmp_path, "STS-B/dev.tsv", STSB_HEADER + stsb_line(0, "5.000") + stsb_line(1, score))
    message = load_error("stsb", tmp_path)
    assert "stsb: " in message and "STS-B/dev.tsv line 3" in message and shown in message
    assert "fill the score in" in message or "numbers in [0, 5]" in message


def test_negative_stsb_score_is_rejected(tmp_path):
    write(tmp_path, "STS-B/train.tsv", STSB_HEADER + stsb_line(0, "-0.1") + stsb_line(1, "2"))
    message = load_error("stsb", tmp_path, "train")
    assert "STS-B/train.tsv line 2 has the score '-0.1'" in message and "[0, 5]" in message


def test_line_cut_in_the_middle_is_rejected(tmp_path):
    write(tmp_path, "MRPC/dev.tsv", MRPC_HEADER + "1\t1\t2\tA cat.\tA cat!\n0\t3\t4\tHe sa\n")
    message = load_error("mrpc", tmp_path)
    assert "mrpc: " in message
    assert "MRPC/dev.tsv line 3 has 4 tab-separated fields instead of 5" in message
    assert "cut short" in message and "download the file again" in message


def test_extra_field_is_rejected(tmp_path):
    write(tmp_path, "MRPC/dev.tsv", MRPC_HEADER + "1\t1\t2\tA cat.\tA\tcat!\n0\t3\t4\tB.\tC.\n")
    message = load_error("mrpc", tmp_path)
    assert "MRPC/dev.tsv line 2 has 6 tab-separated fields instead of 5" in message
    assert "stray tab" in message


def test_headerless_cola_counts_lines_from_one(tmp_path):
    write(tmp_path, "CoLA/dev.tsv", "gj04\t1\t\tGood.\ngj04\t0\tBad.\n")
    message = load_error("cola", tmp_path)
    assert "CoLA/dev.tsv line 2 has 3 tab-separated fields instead of 4" in message


def test_blank_line_is_rejected(tmp_path):
    write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\ngood .\t1\n\nbad .\t0\n")
    assert "SST-2/dev.tsv line 3 has 0 tab-separated fields" in load_error("sst2", tmp_path)


def test_missing_text_names_the_column_and_line(tmp_path):
    write(tmp_path, "MRPC/dev.tsv", MRPC_HEADER + "1\t1\t2\tA cat.\tA cat!\n0\t3\t4\tB.\t\n")
    message = load_error("mrpc", tmp_path)
    assert "mrpc: " in message
    assert "MRPC/dev.tsv line 3 has no text in column '#2 String'" in message
    assert "fill the text in" in message


@pytest.mark.parametrize("content", ["", "\n", "\ufeff"])
def test_empty_file_is_rejected(tmp_path, content):
    write(tmp_path, "SST-2/dev.tsv", content)
    message = load_error("sst2", tmp_path)
    assert "sst2: " in message and "SST-2/dev.tsv is empty" in message
    assert "download the file again" in message


def test_header_without_rows_is_rejected(tmp_path):
    write(tmp_path, "RTE/train.tsv", NLI_HEADER)
    message = load_error("rte", tmp_path, "train")
    assert "rte: " in message and "RTE/train.tsv has a header but no rows" in message
    assert "download the file again" in message


def test_non_utf8_bytes_name_line_and_byte_offset(tmp_path):
    head = MRPC_HEADER.encode("utf-8") + b"1\t1\t2\tA cat.\tA cat!\n"
    write(tmp_path, "MRPC/dev.tsv", head + b"0\t3\t4\tCaf\xe9.\tB.\n")
    message = load_error("mrpc", tmp_path)
    offset_bytes = len(head) + len(b"0\t3\t4\tCaf")
    assert f"MRPC/dev.tsv line 3 (byte {offset_bytes}) is not UTF-8" in message
    assert "save the file as UTF-8" in message


def test_unreadable_line_is_a_data_error(tmp_path):
    write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\ngood .\t1\nba\rd .\t0\n")
    message = load_error("sst2", tmp_path)
    assert "sst2: " in message and "SST-2/dev.tsv line 3 cannot be read" in message
    assert "repair the line" in message


def test_windows_line_breaks_still_load(tmp_path):
    write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\r\ngood .\t1\r\nbad .\t0\r\n")
    frame = data.load_split(get_task("sst2"), "local", glue_dir=tmp_path)
    assert frame["text_a"].tolist() == ["good .", "bad ."] and frame["label"].tolist() == [1, 0]


@pytest.mark.parametrize("source", ["local", "synthetic"])
def test_negative_max_samples_is_rejected(tmp_path, source):
    write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\ngood .\t1\nbad .\t0\n")
    with pytest.raises(data.DataError) as err:
        data.load_split(get_task("sst2"), source, glue_dir=tmp_path, max_samples=-1)
    assert "sst2: max_samples must be 0" in str(err.value) and "got -1" in str(err.value)
    assert "max_samples: 0" in str(err.value)


@pytest.fixture
def fake_hub(monkeypatch):
    """A ``datasets`` module whose ``load_dataset`` returns the rows put in ``fake_hub``."""
    rows = {}

    def load_dataset(path, name, split):
        return types.SimpleNamespace(to_pandas=lambda: pd.DataFrame(rows))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return rows


def test_hub_unlabelled_rows_are_rejected(fake_hub):
    fake_hub.update(sentence1=["a", "b", "c"], sentence2=["d", "e", "f"], label=[1, -1, -1])
    with pytest.raises(data.DataError) as err:
        data.load_split(get_task("mrpc"), "hub")
    message = str(err.value)
    assert "mrpc: nyu-mll/glue/mrpc split validation row 1 (and 1 more)" in message
    assert "class id -1 outside 0..1" in message and "fix the label" in message


def test_hub_class_id_beyond_the_classes_is_rejected(fake_hub):
    fake_hub.update(premise=["a"], hypothesis=["b"], label=[3])
    with pytest.raises(data.DataError, match=r"split train row 0 has the class id 3 outside 0..2"):
        data.load_split(get_task("mnli_m"), "hub", split="train")


@pytest.mark.parametrize(("score", "shown"), [(float("nan"), "has no score"), (5.2, "5.2")])
def test_hub_stsb_scores_are_checked(fake_hub, score, shown):
    fake_hub.update(sentence1=["a", "b"], sentence2=["c", "d"], label=[1.5, score])
    with pytest.raises(data.DataError) as err:
        data.load_split(get_task("stsb"), "hub")
    message = str(err.value)
    assert "stsb: nyu-mll/glue/stsb split validation row 1" in message and shown in message


def test_hub_rows_in_range_still_load(fake_hub):
    fake_hub.update(sentence1=["a", "b"], sentence2=["c", "d"], label=[0.0, 5.0])
    frame = data.load_split(get_task("stsb"), "hub")
    assert frame["label"].tolist() == [0.0, 5.0] and frame["text_b"].tolist() == ["c", "d"]
