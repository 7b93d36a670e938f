"""Settings a profile may not hold: non-finite numbers, values past their bounds, a key given
twice, wrong types inside combinations. Each is refused with the key, the value and the bound."""

import pytest

from effbert import profiles


def problem(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text("energy: none\ndata_source: synthetic\nmodel: tiny-random\n" + text)
    with pytest.raises(profiles.ProfileError) as err:
        profiles.load(str(path))
    return str(err.value)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("metric_tolerance: .nan", "metric_tolerance is nan: give a finite number"),
        ("min_window_s: .nan", "min_window_s is nan: give a finite number"),
        ("carbon_intensity_g_per_kwh: .inf", "carbon_intensity_g_per_kwh is inf"),
        ("trials: 1000000000", "trials is 1000000000: it must be at most 1000"),
        ("warmup_s: 1.0e+9", "warmup_s is 1000000000.0: it must be at most 3600"),
        ("warmup_s: 1e9", "YAML reads 1e9 as text: write 1.0e+9"),
        ("batch_sizes: [16, 100000]", "batch_sizes is 100000: it must be at most 65536"),
        ("metric_tolerance: 5", "metric_tolerance is 5: it must be at most 2"),
    ],
)
def test_numbers_are_finite_and_bounded(tmp_path, line, expected):
    assert expected in problem(tmp_path, line + "\n")


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    message = problem(tmp_path, "trials: 5\ntrials: 2\n")
    assert "bad.yaml:5: the key 'trials' is given twice" in message
    nested = problem(tmp_path, "finetune:\n  sst2: {epochs: 1}\n  sst2: {epochs: 2}\n")
    assert "the key 'sst2' is given twice" in nested


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"16"', "combinations[0].batch_size should be int, got str '16'"),
        ("1.5", "combinations[0].batch_size should be int, got float 1.5"),
        ("true", "combinations[0].batch_size should be int, got bool True"),
        ("0", "combinations[0].batch_size is 0: it must be at least 1"),
        ("70000", "combinations[0].batch_size is 70000: it must be at most 65536"),
    ],
)
def test_combinations_are_typed_and_bounded(tmp_path, value, expected):
    text = f"combinations:\n  - {{technique: fp32, batch_size: {value}}}\n"
    assert expected in problem(tmp_path, text)


def test_a_combination_whose_technique_is_no_name_is_a_type_error(tmp_path):
    text = "combinations:\n  - {technique: [fp32], padding: 3}\n"
    message = problem(tmp_path, text)
    assert "combinations[0].technique should be str" in message
    assert "combinations[0].padding should be str" in message
