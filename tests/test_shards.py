"""Sharding a profile over hosts: ``effbert run --shard I/N`` runs whole tasks, every cell of
the profile in exactly one shard, and the shards' records copied together analyse as one run."""

import shutil

import pytest

from effbert import plan, profiles, runner


def planned_ids(shard: str = "") -> set[str]:
    p = plan.Plan.from_profile("smoke", "reports", shard)
    return {plan.cell_id(c.config) for c in p.cells(p.params.techniques) + p.cells([], True)}


def test_shards_partition_the_profiles_cells_by_whole_tasks():
    first, second = planned_ids("1/2"), planned_ids("2/2")
    assert first and second and not first & second
    assert first | second == planned_ids()
    assert profiles.load("smoke", shard="1/2").tasks == ["sst2", "stsb"]
    assert profiles.load("smoke", shard="2/2").tasks == ["mrpc", "mnli_m"]


def test_combinations_keep_only_the_shards_tasks():
    values = {"tasks": ["sst2", "mrpc", "rte"], "combinations": [{"technique": "fp32"}]}
    values["combinations"].append({"technique": "fp16", "tasks": ["mrpc", "rte"]})
    first = profiles.shard_values(values, "1/2")
    assert first["tasks"] == ["sst2", "rte"]
    assert first["combinations"] == [{"technique": "fp32"}, {"technique": "fp16", "tasks": ["rte"]}]
    assert profiles.shard_values(values, "2/2")["combinations"][1]["tasks"] == ["mrpc"]


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1", "a/b", "1/0", "../1"])
def test_a_bad_shard_is_refused_with_the_form(shard):
    with pytest.raises(profiles.ProfileError, match="give I/N"):
        profiles.load("smoke", shard=shard)


def test_more_shards_than_tasks_say_so():
    with pytest.raises(profiles.ProfileError, match="has 4 tasks.*at most 4 shards"):
        profiles.load("smoke", shard="5/5")


@pytest.mark.notebooks
def test_two_shards_copied_together_hold_one_runs_cells_and_analyse(tmp_path):
    for shard in ("1/2", "2/2"):
        folder = tmp_path / shard.replace("/", "-of-")
        runs = runner.run_profile("smoke", folder, only=["00", "20", "25"], shard=shard)
        assert all(r.status == "ok" for r in runs if r.stem[:2] in ("00", "20", "25")), runs
    union = tmp_path / "union"
    for folder in (tmp_path / "1-of-2", tmp_path / "2-of-2"):
        shutil.copytree(
            folder / "results" / "cells", union / "results" / "cells", dirs_exist_ok=True
        )
    recorded = {p.stem for p in (union / "results" / "cells" / "smoke").glob("*.json")}
    assert recorded == planned_ids()
    runs = runner.run_profile("smoke", union, only=["90"])
    assert [r.status for r in runs if r.stem.startswith("90")] == ["ok"]


def test_tasks_given_on_the_command_line_cut_the_combinations_like_a_shard(tmp_path):
    """``--tasks cola`` on a profile with an SST-2-only combination runs the rest, as a shard
    would, instead of refusing the combination."""
    text = (profiles.cfg.profile_path("smoke")).read_text()
    profile = tmp_path / "narrow.yaml"
    profile.write_text(
        text.split("combinations:")[0]
        + "combinations:\n  - {technique: fp32, batch_size: 8}\n"
        + "  - {technique: fp16, batch_size: 8, tasks: [sst2]}\n"
    )
    assert len(profiles.load(profile).combinations) == 2
    narrowed = profiles.load(profile, tasks=["mrpc"])
    assert narrowed.tasks == ["mrpc"] and len(narrowed.combinations) == 1
    assert profiles.load(profile, tasks=["sst2"]).combinations[1]["tasks"] == ["sst2"]
    typo = tmp_path / "typo.yaml"  # a task none of the profile's: refused, not dropped
    typo.write_text(profile.read_text().replace("tasks: [sst2]", "tasks: [sts2]"))
    with pytest.raises(profiles.ProfileError, match=r"combinations\[1\].tasks is \['sts2'\]"):
        profiles.load(typo, tasks=["mrpc"])
