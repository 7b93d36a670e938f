"""Data and model files a hostile user (or a bad disk) gives: each refused with the file, the
line and the fix, as a DataError or ModelError that ``on_missing_task`` and the runner handle."""

import builtins
import errno
import json

import numpy as np
import pytest
import torch

from effbert import cli, data, measure, models, plan, profiles, runner, techniques, train
from effbert.params import FinetuneSettings
from effbert.tasks import get_task
from tests.test_data_strict import NLI_HEADER, load_error, write

SST2 = "sentence\tlabel\n"


def sst2_lines(n: int) -> str:
    return SST2 + "".join(f"row {i}\t{i % 2}\n" for i in range(n))


def test_max_samples_reads_only_the_rows_it_needs(tmp_path, monkeypatch):
    write(
        tmp_path,
        "SST-2/dev.tsv",
        sst2_lines(3) + "damaged\x00line\t1\n" + sst2_lines(3)[len(SST2) :],
    )
    rows = data.load_split(get_task("sst2"), "local", glue_dir=tmp_path, max_samples=3)
    assert len(rows) == 3
    assert "SST-2/dev.tsv line 5 holds a NUL byte" in load_error("sst2", tmp_path)


def test_a_last_line_cut_short_is_refused(tmp_path):
    write(tmp_path, "SST-2/dev.tsv", sst2_lines(4).removesuffix("\n")[:-3])
    assert "SST-2/dev.tsv line 5 is cut short (the file ends mid-line)" in load_error(
        "sst2", tmp_path
    )


def test_a_repeated_id_names_its_line(tmp_path):
    body = "".join(f"{i}\tA {i}.\tB {i}.\tentailment\n" for i in (0, 1, 2, 1))
    write(tmp_path, "RTE/dev.tsv", NLI_HEADER + body)
    message = load_error("rte", tmp_path)
    assert "RTE/dev.tsv line 5 repeats the id 1 of an earlier line (index)" in message


def test_one_misspelt_label_is_named_by_its_own_line(tmp_path):
    lines = sst2_lines(6).split("\n")
    lines[4] = "row 3\tpositve"
    write(tmp_path, "SST-2/dev.tsv", "\n".join(lines))
    message = load_error("sst2", tmp_path)
    assert (
        "SST-2/dev.tsv line 5 has the unknown label 'positve'" in message and "more" not in message
    )


def test_an_unreadable_file_is_a_data_error_that_skip_handles(tmp_path, monkeypatch):
    write(tmp_path, "SST-2/dev.tsv", sst2_lines(4))
    real_open = builtins.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("dev.tsv"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    assert "cannot read" in load_error("sst2", tmp_path) and "Permission denied" in load_error(
        "sst2", tmp_path
    )
    values = dict(
        profile="h",
        device="cpu",
        energy="none",
        tasks=["sst2"],
        data_source="local",
        glue_dir=str(tmp_path),
        model="tiny-random",
        on_missing_task="skip",
    )
    inputs = plan.Plan(profiles.validate(values), tmp_path / "reports").inputs()
    assert "Permission denied" in inputs["problem"].iloc[0]


def test_a_missing_relative_model_folder_is_named_as_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFBERT_BASE_MODEL", "../no-such-base")
    path = tmp_path / "p.yaml"
    text = "data_source: synthetic\ncheckpoints_dir: models/x\nbase_model: ${EFFBERT_BASE_MODEL}\n"
    path.write_text(text)
    with pytest.raises(profiles.ProfileError, match="'../no-such-base' is a folder that does not"):
        profiles.load(str(path))
    monkeypatch.setenv("EFFBERT_BASE_MODEL", "base/no-such")  # a Hub id, or a missing folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(profiles.ProfileError) as err:
        runner.check_can_run(profiles.load(str(path)))
    assert "base_model 'base/no-such' (no folder" in str(err.value)
    assert not profiles.looks_like_path("distilbert-base-uncased")
    assert not profiles.looks_like_path("textattack/distilbert-base-uncased-CoLA")


def test_a_corrupt_weight_file_is_named(tmp_path):
    folder = tmp_path / "ckpt"
    models.tiny_random_model(2).save_pretrained(folder)
    models.tiny_tokenizer().save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(models.ModelError, match="damaged.*model.safetensors"):
        models.load_classifier(str(folder), get_task("sst2"))


def test_non_finite_outputs_fail_the_cell_with_the_reason():
    cell = plan.Cell(get_task("sst2"), techniques.parse("fp16"), 16, "max_length", None, {})
    logits = np.array([[0.1, np.nan], [np.inf, 0.2], [0.3, 0.4]])
    with pytest.raises(measure.NonFiniteOutputs, match="2 of 6 outputs of fp16 on sst2 are NaN"):
        measure.check_finite(logits, cell)
    assert measure.check_finite(np.ones((2, 2)), cell) is not None


@pytest.mark.parametrize("change", ["base weights", "train labels"])
def test_a_checkpoint_is_trained_again_when_its_base_or_train_rows_change(tmp_path, change):
    base = tmp_path / "base"
    models.tiny_random_model(2, seed=1).save_pretrained(base)
    models.tiny_tokenizer().save_pretrained(base)
    task = get_task("sst2")
    rows = data.load_split(task, "synthetic", split="train", max_samples=16)
    settings = FinetuneSettings(epochs=1, batch_size=8)
    cpu = torch.device("cpu")
    out = tmp_path / "ckpt"
    assert not train.finetune(str(base), task, rows, out, settings, cpu)["reused"]
    assert train.finetune(str(base), task, rows, out, settings, cpu)["reused"]
    if change == "base weights":
        models.tiny_random_model(2, seed=2).save_pretrained(base)
    else:
        rows = rows.assign(label=1 - rows["label"])
    assert not train.finetune(str(base), task, rows, out, settings, cpu)["reused"]


def test_summary_into_a_closed_pipe_is_no_disk_error(capsys, monkeypatch):
    def closed(*args, **kwargs):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(cli.report, "summary_table", closed)
    assert cli.main(["summary", "--profile", "study", "--reports-dir", "reports/study"]) == 0
    assert "disk" not in capsys.readouterr().err


def test_the_cli_help_is_plain_text_with_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = capsys.readouterr().out
    assert "``" not in shown and "(default: smoke)" in shown and "(default: " in shown
    assert json  # the module is used by the fixtures above
