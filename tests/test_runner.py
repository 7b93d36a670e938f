import pytest

from effbert import config, runner

NOTEBOOK = """# %% [markdown]
# # A test notebook

# %% tags=["parameters"]
profile: str = "smoke"  # name
reports_dir: str = "reports"  # where
value: int = 1  # a number

# %%
assert value != 13, "unlucky value"
"""


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "10-first-step.py").write_text(NOTEBOOK)
    (folder / "20-second-step.py").write_text(NOTEBOOK)
    return folder


def profile(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_every_notebook_declares_its_parameters():
    declared = runner.all_parameters(runner.notebook_paths())
    stems = [p.stem for p in declared]
    assert stems[0] == "00-check-environment" and stems[-1] == "90-analyze-results"
    for path, params in declared.items():
        assert {"profile", "reports_dir"} <= set(params), path.stem
    union = {k for params in declared.values() for k in params}
    for name in ["smoke", "seed"]:
        assert set(config.load_profile(name)) <= union


def test_offline_gpu_profile_keys_are_declared(monkeypatch):
    monkeypatch.setenv("EFFBERT_GLUE_DIR", "/glue")
    monkeypatch.setenv("EFFBERT_BASE_MODEL", "/base")
    declared = runner.all_parameters(runner.notebook_paths())
    union = {k: v for params in declared.values() for k, v in params.items()}
    config.validate_profile(config.load_profile("offline-gpu"), union)


def test_unknown_key_fails_before_any_notebook_runs(tmp_path, notebooks):
    reports = tmp_path / "reports"
    with pytest.raises(config.ProfileError, match="unknown key 'valeu'.*did you mean 'value'"):
        runner.run_profile(profile(tmp_path, "valeu: 3\n"), reports, notebooks_dir=notebooks)
    assert not reports.exists()


def test_cli_reports_a_bad_profile_with_exit_code_2(tmp_path, capsys):
    assert runner.main(["check", "--profile", profile(tmp_path, "batch_size: 8\n")]) == 2
    assert "unknown key 'batch_size'" in capsys.readouterr().err


def test_gpu_profile_stops_at_once_on_a_cpu_machine(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runner, "hub_reachable", lambda: False)
    with pytest.raises(config.ProfileError) as err:
        runner.validated_profile("seed")
    message = str(err.value)
    assert "a CUDA GPU" in message and "Hugging Face Hub" in message and "make smoke" in message


def test_failing_notebook_keeps_its_executed_copy_and_names_the_cell(tmp_path, notebooks):
    reports = tmp_path / "reports"
    runs = runner.run_profile(profile(tmp_path, "value: 13\n"), reports, notebooks_dir=notebooks)
    assert [r.status for r in runs] == ["failed", "failed"]
    assert "cell" in runs[0].message and "unlucky value" in runs[0].message
    assert (reports / "executed" / "10-first-step.ipynb").exists()
    assert "unlucky value" in (reports / "executed" / "10-first-step.ipynb").read_text()
    index = (reports / "index.html").read_text()
    assert "10-first-step.html" in index and "failed" in index


def test_only_runs_the_selected_notebooks(tmp_path, notebooks):
    reports = tmp_path / "reports"
    runs = runner.run_profile(
        profile(tmp_path, "value: 2\n"), reports, only=["20"], notebooks_dir=notebooks
    )
    assert [(r.stem, r.status) for r in runs] == [
        ("10-first-step", "not run"),
        ("20-second-step", "ok"),
    ]
    assert (reports / "20-second-step.html").exists()


def test_measurement_notebooks_declare_identical_parameters():
    """Papermill needs the parameters cell in each notebook; this keeps the copies in step."""
    declared = runner.all_parameters(runner.notebook_paths())
    measuring = [params for path, params in declared.items() if "-measure-" in path.stem]
    assert len(measuring) == 5
    assert all(params == measuring[0] for params in measuring)
    environment = next(p for path, p in declared.items() if path.stem == "00-check-environment")
    assert environment == measuring[0]


def test_hub_ids_anywhere_in_a_profile_need_the_hub(tmp_path):
    assert not runner._uses_hub({"data_source": "synthetic", "model": "tiny-random"})
    assert not runner._uses_hub({"data_source": "local", "checkpoints": {"sst2": str(tmp_path)}})
    assert runner._uses_hub({"data_source": "local", "model": "distilbert-base-uncased"})
    assert runner._uses_hub({"data_source": "local", "checkpoints": {"cola": "textattack/x"}})
    assert runner._uses_hub({"data_source": "hub"})
