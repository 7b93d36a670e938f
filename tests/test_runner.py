import pytest

from effbert import cli, config, pages, profiles, results, runner

NOTEBOOK = """# %% [markdown]
# # A test notebook

# %% tags=["parameters"]
profile: str = "smoke"  # name
reports_dir: str = "reports"  # where

# %%
from effbert import profiles

trials = profiles.load(profile).trials
assert trials != 13, "unlucky value"
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
    path.write_text("data_source: synthetic\n" + text)
    return str(path)


def test_notebooks_declare_only_what_the_runner_injects():
    _, declared = runner.validated_profile("smoke")
    stems = [p.stem for p in declared]
    assert stems[0] == "00-check-environment" and stems[-1] == "90-analyze-results"
    for path, names in declared.items():
        assert {"profile", "reports_dir"} <= set(names) <= set(runner.INJECTED), path.stem


def test_a_notebook_with_its_own_settings_is_refused(tmp_path, notebooks):
    text = NOTEBOOK.replace('reports_dir: str = "reports"  # where', "batch: int = 3  # own")
    (notebooks / "30-third-step.py").write_text(text)
    with pytest.raises(config.ProfileError, match="30-third-step.py declares \\['batch'\\]"):
        runner.run_profile("smoke", tmp_path / "reports", notebooks_dir=notebooks)


def test_unknown_key_fails_before_any_notebook_runs(tmp_path, notebooks):
    reports = tmp_path / "reports"
    with pytest.raises(config.ProfileError, match="unknown key 'trails'.*did you mean 'trials'"):
        runner.run_profile(profile(tmp_path, "trails: 3\n"), reports, notebooks_dir=notebooks)
    assert not reports.exists()


def test_cli_reports_a_bad_profile_with_exit_code_2(tmp_path, capsys):
    assert cli.main(["check", "--profile", profile(tmp_path, "batch_size: 8\n")]) == 2
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
    runs = runner.run_profile(profile(tmp_path, "trials: 13\n"), reports, notebooks_dir=notebooks)
    assert [r.status for r in runs] == ["failed", "failed"]
    assert "cell" in runs[0].message and "unlucky value" in runs[0].message
    assert (reports / "executed" / "10-first-step.ipynb").exists()
    assert "unlucky value" in (reports / "executed" / "10-first-step.ipynb").read_text()
    index = (reports / "index.html").read_text()
    assert "10-first-step.html" in index and "failed" in index


def test_only_runs_the_selected_notebooks(tmp_path, notebooks):
    reports = tmp_path / "reports"
    runs = runner.run_profile(
        profile(tmp_path, "trials: 2\n"), reports, only=["20"], notebooks_dir=notebooks
    )
    assert [(r.stem, r.status) for r in runs] == [
        ("10-first-step", "not run"),
        ("20-second-step", "ok"),
    ]
    assert (reports / "20-second-step.html").exists()


def test_hub_ids_anywhere_in_a_profile_need_the_hub(tmp_path):
    def uses_hub(**values):
        return runner.uses_hub(profiles.validate({"data_source": "synthetic", **values}))

    assert not uses_hub(model="tiny-random")
    assert not uses_hub(checkpoints={"sst2": str(tmp_path)})
    assert uses_hub(model="distilbert-base-uncased")
    assert uses_hub(checkpoints={"cola": "textattack/x"})
    assert runner.uses_hub(profiles.validate({"data_source": "hub"}))


def test_a_profile_given_by_path_reaches_the_notebooks_as_a_path_they_can_open(tmp_path):
    assert runner.profile_argument("smoke") == "smoke"
    outside = profile(tmp_path, "trials: 3\n")
    assert runner.profile_argument(outside) == str(tmp_path / "p.yaml")
    inside = config.PARAMS_DIR / "smoke.yaml"
    assert runner.profile_argument(str(inside)) == "smoke"


def test_the_analysis_notebook_alone_runs_a_gpu_profile_on_any_machine(tmp_path, monkeypatch):
    """`--only 90` reads records only: no GPU, Hub or input folders are asked for."""
    from effbert import config, runner

    monkeypatch.delenv("EFFBERT_GLUE_DIR", raising=False)
    monkeypatch.delenv("EFFBERT_BASE_MODEL", raising=False)
    assert runner.analysis_only(["90"]) and not runner.analysis_only(["20", "90"])
    assert not runner.analysis_only(None)
    params, _ = runner.validated_profile("offline-gpu", config.NOTEBOOKS_DIR, machine=False)
    assert params.device == "cuda"


def test_pages_are_written_readable_by_a_web_server(tmp_path):
    page = tmp_path / "report.html"
    results.write_text_atomic(page, "<html></html>")
    assert page.read_text() == "<html></html>"
    assert page.stat().st_mode & 0o777 == 0o644


def test_executed_notebooks_name_no_folder_of_the_machine(tmp_path, monkeypatch):
    """papermill records the absolute path it wrote; the runner keeps it project-relative."""
    import nbformat

    monkeypatch.setattr(config, "PROJ_ROOT", tmp_path)
    executed = tmp_path / "reports" / "mine" / "executed" / "00-check.ipynb"
    executed.parent.mkdir(parents=True)
    notebook = nbformat.v4.new_notebook()
    given = {"cells": []}  # papermill keeps a notebook given as an object, not a path
    notebook.metadata["papermill"] = {"input_path": given, "output_path": str(executed)}
    nbformat.write(notebook, executed)
    pages.portable_metadata(executed)
    record = nbformat.read(executed, as_version=4).metadata["papermill"]
    assert record["output_path"] == "reports/mine/executed/00-check.ipynb"
    assert record["input_path"] == given


def test_a_page_loads_nothing_from_the_network_and_keeps_its_figure_and_look(tmp_path):
    import base64

    import nbformat

    executed = tmp_path / "executed.ipynb"
    notebook = nbformat.v4.new_notebook()
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    figure = nbformat.v4.new_output("display_data", data={"image/png": png})
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title\nCosts $5 and $6."),
        nbformat.v4.new_code_cell("plot()", outputs=[figure]),
    ]
    nbformat.write(notebook, executed)
    page = tmp_path / "page.html"
    pages.to_html(executed, page)
    html = page.read_text()
    assert "<script src=" not in html and "import(" not in html and "cdnjs" not in html
    assert f"data:image/png;base64,{png}" in html
    assert "jp-Notebook" in html and "Costs $5 and $6." in html
    assert "<title>Title</title>" in html
