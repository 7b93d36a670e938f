"""Profiles: keys, types and values checked against effbert.params before anything runs."""

import pytest

from effbert import config, params, plan, profiles, results, stats, windows
from effbert.tasks import get_task

OFFLINE_GPU_CELLS = config.PROJ_ROOT / "reports" / "offline-gpu" / "results" / "cells"


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_profile_by_name_defaults_profile_key_to_stem():
    smoke = profiles.load("smoke")
    assert smoke.profile == "smoke" and smoke.data_source == "synthetic"


def test_every_shipped_profile_is_valid(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFBERT_GLUE_DIR", str(tmp_path))
    monkeypatch.setenv("EFFBERT_BASE_MODEL", str(tmp_path))
    for path in sorted(config.PARAMS_DIR.glob("*.yaml")):
        assert profiles.load(path.stem).profile == path.stem


def test_unknown_profile_lists_known_ones():
    with pytest.raises(config.ProfileError, match="smoke"):
        profiles.load("no-such-profile")


def test_env_references_expand_and_missing_ones_name_the_variable(tmp_path, monkeypatch):
    path = write(tmp_path, "checkpoints_dir: ${EFFBERT_TEST_DIR}/ckpt\nbase_model: x/y\n")
    monkeypatch.setenv("EFFBERT_TEST_DIR", str(tmp_path))
    assert profiles.load(path).checkpoints_dir == f"{tmp_path}/ckpt"
    monkeypatch.delenv("EFFBERT_TEST_DIR")
    with pytest.raises(config.ProfileError, match="EFFBERT_TEST_DIR"):
        profiles.load(path)
    assert profiles.load(path, inputs=False).checkpoints_dir == "${EFFBERT_TEST_DIR}/ckpt"


def test_unknown_keys_get_a_suggestion_and_the_valid_keys(tmp_path):
    with pytest.raises(config.ProfileError) as err:
        profiles.load(write(tmp_path, "batch_size: [8]\n"))
    message = str(err.value)
    assert "unknown key 'batch_size' (did you mean 'batch_sizes'?)" in message
    assert "Valid keys: profile, device, tasks" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("trials: five\n", "trials should be int, got str 'five'"),
        ("trials: 1\n", "trials is 1: it must be at least 2"),
        ("batch_sizes: [16, 0]\n", "batch_sizes is 0: it must be at least 1"),
        ("batch_sizes: 16\n", "batch_sizes should be a list"),
        ("tasks: [sst5]\n", "unknown task 'sst5' (did you mean 'sst2'?)"),
        ("tasks: []\n", "tasks is empty"),
        ("techniques: [fp32, fp9]\n", "unknown technique 'fp9'"),
        ("techniques: [fp16+fp32]\n", "unknown technique 'fp16+fp32'"),
        ("combinations: [{technique: fp16, batch_size: 0}]\n", "batch_size is 0"),
        ("combinations: [{technique: fp16, pad: x}]\n", "give technique, and optionally"),
        ("techniques: []\n", "techniques is empty"),
        ("padding: stuffed\n", "padding is 'stuffed': choose one of max_length, longest, bucketed"),
        ("max_samples: -5\n", "max_samples is -5: it must be at least 0"),
        ("energy: gpu\n", "energy is 'gpu': choose one of auto, nvml, rapl, none"),
        (
            "data_source: local\nglue_dir: /no/such/glue\n",
            "glue_dir '/no/such/glue' does not exist",
        ),
        ("data_source: local\n", "set glue_dir"),
        ("checkpoints_dir: /no/such/dir\n", "checkpoints_dir '/no/such/dir' does not exist"),
        (
            "base_model: /no/such/model\ncheckpoints_dir: x\n",
            "base_model '/no/such/model' is a folder that does not exist",
        ),
        ("base_model: org/model\n", "also set checkpoints_dir"),
        ("checkpoints: {sst5: x}\n", "checkpoints names the unknown task 'sst5'"),
        ("finetune: {rte: {lr: 1e-5, epoch: 3}}\n", "unknown FinetuneSettings field 'epoch'"),
        ("finetune: {rte: {batch_size: big}}\n", "finetune.rte.batch_size should be int"),
        ("force: true\n", "unknown key 'force'"),
        ("min_window_s: 1\nwarmup_s: 0\n", None),
        ("profile: ../../../escape\n", "may hold only letters, digits"),
        ("profile: 'x</title><script>alert(1)</script>'\n", "may hold only letters, digits"),
        ("- a\n- b\n", "a flat mapping"),
        ("trials: [\n", "not valid YAML"),
        ("trials: !!python/object:os.system 1\n", "not valid YAML"),
    ],
)
def test_wrong_values_are_refused_naming_the_key_and_value(tmp_path, text, expected):
    path = write(tmp_path, text)
    if expected is None:
        profiles.load(path)
        return
    with pytest.raises(config.ProfileError) as err:
        profiles.load(path)
    assert expected in str(err.value)


def test_a_yaml_alias_bomb_is_refused_before_expansion(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    with pytest.raises(config.ProfileError, match="aliases"):
        profiles.load(write(tmp_path, "\n".join(lines) + "\n"))


def test_finetune_settings_per_task_over_default_over_the_field_defaults(tmp_path):
    p = profiles.load(
        write(
            tmp_path,
            "seed: 7\nfinetune: {default: {epochs: 2}, rte: {seed: 2, lr: 5.0e-5}, mnli: {batch_size: 8}}\n",
        )
    )
    sst2, rte, mnli = (p.finetune_settings(get_task(t)) for t in ("sst2", "rte", "mnli_mm"))
    assert (sst2.epochs, sst2.seed, sst2.lr) == (2.0, 7, params.FinetuneSettings.lr)
    assert (rte.epochs, rte.seed, rte.lr) == (2.0, 2, 5e-5)
    assert isinstance(sst2.epochs, float) and mnli.batch_size == 8


def test_params_lists_every_parameter_with_type_default_and_help():
    text = params.describe()
    for name, f in params.PARAMS.items():
        assert name in text and f.metadata["help"] in text
    assert "10-finetune:" in text and "finetune.<task> fields: epochs=3.0" in text


def test_defaults_live_only_in_params():
    """Measure settings and notebooks take every value from Params (no defaults of their own)."""
    import dataclasses

    measure = {
        f.name
        for f in dataclasses.fields(windows.MeasureSettings)
        if f.default is dataclasses.MISSING
    }
    assert measure == {"warmup_s", "trials", "min_window_s"}


@pytest.mark.skipif(not OFFLINE_GPU_CELLS.exists(), reason="no published offline-gpu records")
def test_published_cells_without_fingerprints_are_legacy_shown_and_never_reused():
    """The offline-gpu run predates fingerprints: its 70 cells are read and marked legacy, and
    the same settings today make new cell ids, so none of them is reused."""
    offline = profiles.load("offline-gpu", inputs=False, preroll_s=0.0)  # as then: no pre-roll
    cells = results.load_cells(OFFLINE_GPU_CELLS)
    assert len(cells) == 70
    rows = results.trial_rows(cells)
    assert rows["legacy"].all()
    assert stats.summarize(rows)["legacy"].all()
    fingerprints = {"data": "d", "checkpoint": "c", "environment": {}}
    for cell in cells:
        stored = cell["config"]
        config = plan.cell_config(
            offline,
            get_task(stored["task"]),
            stored["technique"],
            stored["batch_size"],
            stored["padding"],
            stored["checkpoint"],
            stored["label_map"],
            stored["device"],
            fingerprints,
        )
        legacy_keys = {k: v for k, v in stored.items() if k != "checkpoint_version"}
        assert {k: v for k, v in config.items() if k != "fingerprints"} == legacy_keys
        assert results.cell_id(config) != cell["cell_id"]


def test_relative_paths_resolve_from_the_project_root(tmp_path):
    assert config.resolve_path("models/x") == config.PROJ_ROOT / "models" / "x"
    assert config.resolve_path(tmp_path) == tmp_path
    assert config.reports_paths(tmp_path)["figures"] == tmp_path / "figures"


def test_packed_padding_needs_padding_free_attention():
    with pytest.raises(profiles.ProfileError, match=r"combinations\[0\]: .*set padding: packed"):
        profiles.load("smoke", combinations=[{"technique": "bf16+varlen", "padding": "bucketed"}])
    with pytest.raises(profiles.ProfileError, match="techniques: padding: packed needs"):
        profiles.load("smoke", padding="packed")


@pytest.mark.parametrize(
    ("techniques", "message"),
    [
        (["fp16+flash"], "is the preset 'fp16_flash'"),
        (["compile+bf16"], "write 'bf16+compile'"),
        (["fp16_flash", "fp16_flash"], "lists 'fp16_flash' twice"),
    ],
)
def test_one_technique_has_one_name(techniques, message):
    import re

    with pytest.raises(profiles.ProfileError, match=re.escape(message)):
        profiles.load("smoke", techniques=techniques)


def test_scope_rules_that_would_mislabel_a_measurement_are_refused():
    with pytest.raises(profiles.ProfileError, match="the pipeline takes raw text"):
        profiles.load("smoke", combinations=[{"technique": "pipeline"}])
    with pytest.raises(profiles.ProfileError, match="use order: sequential"):
        profiles.load("smoke", scope="end_to_end", order="interleaved")


def test_a_cell_compiled_for_one_batch_shape_has_its_own_id():
    study = profiles.load("smoke", inputs=False)
    task, fingerprints = get_task("sst2"), {"data": "d", "checkpoint": "c", "environment": {}}

    def config(technique: str, padding: str) -> dict:
        return plan.cell_config(
            study, task, technique, 16, padding, None, None, "cpu", fingerprints
        )

    assert config("fp32+compile", "max_length")["compiled_shapes"] == "static"
    assert config("int8+graphs", "max_length")["compiled_shapes"] == "static"
    assert "compiled_shapes" not in config("fp32", "max_length")
    assert "compiled_shapes" not in config("fp32+compile", "bucketed")
    assert "compiled_shapes" not in config("bf16+varlen+compile", "packed")
    # compiled cells are tuned by their mode alone, unlike records from before that rule
    assert config("bf16+varlen+graphs", "packed")["inductor"] == "mode"
    assert config("int8+compile", "max_length")["inductor"] == "mode"
    assert "inductor" not in config("int8", "max_length")
