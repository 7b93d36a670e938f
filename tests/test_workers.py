"""Cells spread over worker processes: one per GPU (here: CPU processes, energy off)."""

import json

import pytest

from effbert import config, pool, profiles, results, runner, runs
from tests.conftest import Study


def settings(**overrides):
    values = dict(
        device="cpu",
        energy="none",
        techniques=["fp32", "bf16"],
        tasks=["sst2", "mrpc", "stsb"],
        trials=2,
        max_samples=24,
    )
    return profiles.load("smoke", **{**values, **overrides})


def test_workers_measure_whole_tasks_each_and_the_cells_keep_their_identity(tmp_path):
    spread = Study(settings(workers=2), str(tmp_path / "two")).run(["fp32", "bf16"])
    alone = Study(settings(workers=1), str(tmp_path / "one")).run(["fp32", "bf16"])
    assert set(spread["status"]) == {"ok"} and len(spread) == len(alone)
    assert set(spread["cell_id"]) == set(alone["cell_id"])
    cells = results.load_cells(tmp_path / "two" / "results" / "cells")
    by_task = {}
    for cell in cells:
        by_task.setdefault(cell["config"]["task"], set()).add(cell["worker"]["index"])
    assert all(len(indices) == 1 for indices in by_task.values()), by_task
    assert {i for s in by_task.values() for i in s} == {"0", "1"}
    (run,) = (tmp_path / "two" / "results" / "runs").glob("smoke-*.json")
    record = json.loads(run.read_text())
    assert sorted(t for w in record["workers"] for t in w["tasks"]) == ["mrpc", "sst2", "stsb"]
    assert all(w["exit"] == 0 and w["wall_s"] > 0 for w in record["workers"])
    assert {
        c["worker"]["index"] for c in results.load_cells(tmp_path / "one" / "results" / "cells")
    } == {None}


def test_tasks_go_where_the_last_worker_finishes_soonest():
    class Cell:
        def __init__(self, name, execution="eager"):
            self.task = type("Task", (), {"name": name})()
            self.technique = type("Technique", (), {"execution": execution, "name": execution})()

    rows = {"a": 100, "b": 100, "c": 50_000, "d": 100}
    # a: three cells; b: two, one compiled; c: two with many rows; d: one
    cells = [Cell("a")] * 3 + [Cell("b"), Cell("b", "graphs"), Cell("c"), Cell("c"), Cell("d")]
    costs = {t: sum(pool.cell_cost_s(c, rows[t]) for c in cells if c.task.name == t) for t in rows}
    assert costs["b"] > costs["c"] > costs["a"] > costs["d"]
    # which worker takes a group does not matter; a group runs its costliest task first
    assert sorted(pool.assign(cells, 2, lambda task: rows[task.name])) == [
        ["b", "d"],
        ["c", "a"],
    ]
    assert sorted(pool.assign(cells, 4, lambda task: rows[task.name])) == [
        ["a"],
        ["b"],
        ["c"],
        ["d"],
    ]


def test_a_worker_that_compiled_a_technique_takes_its_next_task_that_compiles_it():
    class Cell:
        def __init__(self, name, technique):
            compiled = technique.endswith("compile")
            self.task = type("Task", (), {"name": name})()
            execution = "compile" if compiled else "eager"
            self.technique = type("Technique", (), {"execution": execution, "name": technique})()

    # sst2 and mrpc compile the same three techniques; four small tasks compile nothing
    compiled = ["fp32+compile", "int8+compile", "fp8+compile"]
    cells = [Cell(t, c) for t in ("sst2", "mrpc") for c in compiled]
    cells += [Cell(t, "fp32") for t in ("cola", "rte", "stsb", "wnli") for _ in range(4)]
    groups = pool.assign(cells, 2, lambda task: 100)
    assert ["sst2", "mrpc"] in [[t for t in g if t in ("sst2", "mrpc")] for g in groups], groups
    greedy = pool.assign(cells, 2, lambda task: 100, max_tries=0)  # too many to try all
    assert sorted(t for g in greedy for t in g) == sorted(t for g in groups for t in g)
    cold = sum(pool.cell_cost_s(c, 100) for c in cells if c.task.name == "mrpc")
    warm = sum(pool.cell_cost_s(c, 100, True) for c in cells if c.task.name == "mrpc")
    assert warm < cold / 3


def test_tasks_to_fine_tune_are_balanced_by_their_steps():
    steps = {"sst2": 2105, "cola": 2138, "stsb": 1797, "rte": 1557, "mrpc": 1147, "wnli": 80}
    groups = pool.balance(steps, 2)
    loads = [sum(steps[t] for t in g) for g in groups]
    assert sorted(t for g in groups for t in g) == sorted(steps)
    assert max(loads) - min(loads) <= max(steps.values())


def test_more_workers_than_gpus_is_refused_with_the_count():
    with pytest.raises(pool.WorkerError, match="workers: 3 asks for one GPU each, but 0"):
        pool.worker_slots(settings(device="cuda", workers=3))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"workers": 2, "energy": "auto"}, "share one CPU package"),
        ({"workers": 2, "device": "cuda:1", "energy": "none"}, "pinned by number"),
    ],
)
def test_worker_settings_that_would_mix_measurements_are_refused(overrides, message):
    with pytest.raises(profiles.ProfileError, match=message):
        settings(**overrides)


def test_a_combination_may_name_its_tasks_and_workers_keep_that(tmp_path):
    combos = [
        {"technique": "fp32", "batch_size": 8, "padding": "bucketed", "tasks": ["mrpc"]},
        {"technique": "bf16", "batch_size": 8, "padding": "bucketed"},
    ]
    study = Study(settings(workers=2, combinations=combos), str(tmp_path))
    planned = {(c.task.name, c.technique.name) for c in study.plan([], combinations=True)}
    assert planned == {("mrpc", "fp32"), ("sst2", "bf16"), ("mrpc", "bf16"), ("stsb", "bf16")}
    trials = study.run(combinations=True)
    measured = {tuple(r) for r in trials[["task", "technique"]].drop_duplicates().to_numpy()}
    assert measured == planned and set(trials["status"]) == {"ok"}
    with pytest.raises(profiles.ProfileError, match=r"combinations\[0\].tasks is \['qqp'\]"):
        settings(combinations=[{"technique": "fp32", "tasks": ["qqp"]}])


def test_a_second_run_over_recorded_cells_starts_no_worker(tmp_path, monkeypatch):
    first = Study(settings(workers=2), str(tmp_path)).run(["fp32"])
    started = []
    monkeypatch.setattr(pool.subprocess, "Popen", lambda *a, **k: started.append(a))
    again = Study(settings(workers=2), str(tmp_path)).run(["fp32"])
    assert not started
    assert sorted(again["cell_id"]) == sorted(first["cell_id"])


def test_check_refuses_more_workers_than_gpus_before_anything_runs(tmp_path):
    from effbert import config

    profile = tmp_path / "many.yaml"
    profile.write_text(
        "device: auto\nworkers: 3\nenergy: none\nmodel: tiny-random\ndata_source: synthetic\n"
    )
    with pytest.raises(config.ProfileError, match="workers: 3 asks for one GPU each"):
        runner.validated_profile(str(profile))


def test_end_to_end_measures_in_one_process():
    with pytest.raises(profiles.ProfileError, match="share the host's CPUs"):
        settings(workers=2, scope="end_to_end")
    assert pool.worker_slots(settings(workers=0, scope="end_to_end")) == []


def test_a_terminated_run_stops_its_workers(tmp_path):
    """``kill`` or ``timeout`` on the run: its workers, in sessions of their own, stop too."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = (
        "from effbert import profiles\nfrom tests.conftest import Study\n"
        "p = profiles.load('smoke', device='cpu', energy='none', workers=2, trials=50,\n"
        "    min_window_s=1.0, tasks=['sst2', 'mrpc'], techniques=['fp32'], max_samples=24)\n"
        f"Study(p, {str(tmp_path)!r}).run(['fp32'])\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    found = []
    while len(found) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.5)
        found = [
            p
            for p in psutil.Process(parent.pid).children(recursive=True)
            if "effbert.worker" in " ".join(p.cmdline())
        ]
    assert len(found) == 2, "the run did not start its two workers"
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) != 0
    _, alive = psutil.wait_procs(found, timeout=10)
    assert not alive, f"workers outlived the run: {alive}"


def test_gpu_time_is_the_sum_of_the_workers_wall_times_of_every_run(tmp_path):

    runs_dir = tmp_path / "results" / "runs"
    runs_dir.mkdir(parents=True)
    for name, wall_s, workers_s in (("a", 100.0, [90.0, 100.0]), ("b", 50.0, [50.0, 20.0])):
        record = {
            "profile": "study",
            "wall_s": wall_s,
            "workers": [
                {"cuda_visible_devices": str(i), "tasks": [f"t{i}"], "wall_s": w}
                for i, w in enumerate(workers_s)
            ],
        }
        (runs_dir / f"study-{name}.json").write_text(json.dumps(record))
    (runs_dir / "other-c.json").write_text(json.dumps({"wall_s": 1e6, "workers": []}))
    worker = {"cuda_visible_devices": "5", "tasks": ["t5"], "wall_s": 1.0}
    other = {"profile": "study-x", "wall_s": 1e6, "workers": [worker]}
    (runs_dir / "study-x-d.json").write_text(json.dumps(other))  # another profile's run
    text = runs.gpu_time_markdown(tmp_path, "study")
    assert "150 s of wall time" in text and "in 2 runs" in text and "on 2 GPUs" in text
    assert "add up to 260 s (4.3 GPU-minutes)" in text
    assert runs.gpu_time_markdown(tmp_path, "none") == ""
    (runs_dir / "study-e.json").write_text('{"wall_s": 3')
    with pytest.raises(ValueError, match=r"study-e.json is damaged .* restore it"):
        runs.gpu_time_markdown(tmp_path, "study")


def test_fine_tunes_share_one_gpu_as_several_workers_where_asked(monkeypatch):
    monkeypatch.setattr(pool, "visible_gpus", lambda: ["3"])
    one_gpu = settings(device="auto", energy="none")
    assert pool.finetune_slots(one_gpu) == []  # one fine-tune per GPU: this process trains
    three = settings(device="auto", energy="none", finetunes_per_gpu=3)
    assert pool.finetune_slots(three) == ["3", "3", "3"]
    monkeypatch.setattr(pool, "visible_gpus", lambda: ["1", "2"])
    monkeypatch.setattr(pool, "worker_slots", lambda p: ["1", "2"])
    two = settings(device="cuda", energy="none", finetunes_per_gpu=2)
    assert pool.finetune_slots(two) == ["1", "1", "2", "2"]
    monkeypatch.setenv(config.WORKER_ENV, "0")
    assert pool.finetune_slots(three) == []  # a worker never starts workers
    with pytest.raises(profiles.ProfileError, match="finetunes_per_gpu"):
        settings(finetunes_per_gpu=0)


def test_fine_tunes_are_balanced_over_gpus_first_then_over_each_gpus_workers():
    steps = {"sst2": 2105, "cola": 2138, "stsb": 1797, "rte": 1557, "mrpc": 1147, "wnli": 80}
    slots = ["1", "1", "1", "2", "2", "2"]
    groups = pool.balance_slots(steps, slots)
    per_gpu = [sum(steps[t] for i in idx for t in groups[i]) for idx in ([0, 1, 2], [3, 4, 5])]
    assert sorted(t for g in groups for t in g) == sorted(steps)
    assert abs(per_gpu[0] - per_gpu[1]) <= max(steps.values())
    assert pool.balance_slots(steps, ["", ""]) == pool.balance(steps, 2)


def test_fine_tuning_before_a_run_is_not_counted_in_its_time():
    """A fine-tuning record that finished before the whole run began (another command) stays
    out of the run's time split; one inside it, or one without times, counts."""
    from effbert import runs

    whole = [{"finished_at": "2026-12-04T16:48:00+00:00", "wall_s": 1300.0}]
    before = {"finished_at": "2026-12-04T16:25:41+00:00"}
    inside = {"finished_at": "2026-12-04T16:27:00+00:00"}
    assert not runs._during(before, whole)
    assert runs._during(inside, whole)
    assert runs._during({"finished_at": None}, whole)
