import pytest

from effbert import config


def test_profile_by_name_defaults_profile_key_to_stem():
    profile = config.load_profile("smoke")
    assert profile["profile"] == "smoke"
    assert profile["data_source"] == "synthetic"


def test_unknown_profile_lists_known_ones():
    with pytest.raises(config.ProfileError, match="smoke"):
        config.load_profile("no-such-profile")


def test_env_references_expand_and_missing_ones_name_the_variable(tmp_path, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text("glue_dir: ${EFFBERT_TEST_DIR}/glue\n")
    monkeypatch.setenv("EFFBERT_TEST_DIR", "/data")
    assert config.load_profile(path)["glue_dir"] == "/data/glue"
    monkeypatch.delenv("EFFBERT_TEST_DIR")
    with pytest.raises(config.ProfileError, match="EFFBERT_TEST_DIR"):
        config.load_profile(path)


def test_validate_names_unknown_keys_with_a_suggestion_and_the_valid_keys():
    declared = {"batch_sizes": [16], "tasks": ["sst2"]}
    with pytest.raises(config.ProfileError) as err:
        config.validate_profile({"batch_size": [8]}, declared)
    message = str(err.value)
    assert "unknown key 'batch_size'" in message
    assert "did you mean 'batch_sizes'" in message
    assert "Valid keys: batch_sizes, tasks" in message


def test_validate_checks_types_but_accepts_ints_for_floats():
    declared = {"trials": 5, "min_window_s": 2.0, "force": False}
    config.validate_profile({"trials": 3, "min_window_s": 1}, declared)
    with pytest.raises(config.ProfileError, match="'trials' should be int"):
        config.validate_profile({"trials": "five"}, declared)
    with pytest.raises(config.ProfileError, match="'force' should be bool"):
        config.validate_profile({"force": 1}, declared)


def test_relative_paths_resolve_from_the_project_root(tmp_path):
    assert config.resolve_path("models/x") == config.PROJ_ROOT / "models" / "x"
    assert config.resolve_path(tmp_path) == tmp_path
    assert config.reports_paths(tmp_path)["figures"] == tmp_path / "figures"
