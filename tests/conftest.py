import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class FakeMonitor:
    """Stands in for zeus' ZeusMonitor: energy grows at ``power_w`` with a fake clock."""

    def __init__(self, clock, power_w=100.0, source="gpu", zero_windows=0):
        self.clock = clock
        self.power_w = power_w
        self.source = source
        self.zero_windows = zero_windows
        self.gpus = [object()]
        self.cpu_indices = [0] if source == "cpu" else []
        self.open = {}

    def begin_window(self, key, sync_execution=True, restart=False):
        self.open[key] = self.clock()

    def end_window(self, key, sync_execution=True, cancel=False):
        from zeus.monitor.energy import Measurement

        elapsed = self.clock() - self.open.pop(key)
        joules = 0.0 if self.zero_windows > 0 else self.power_w * elapsed
        self.zero_windows -= 1
        if self.source == "gpu":
            return Measurement(time=elapsed, gpu_energy={0: joules})
        return Measurement(
            time=elapsed,
            gpu_energy={},
            cpu_energy={0: joules * 0.75},
            dram_energy={0: joules * 0.25},
        )


class FakeClock:
    """A clock that advances only when work runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


class Study:
    """The measurement notebooks' calls in one object, for tests: a plan and its sweep."""

    def __init__(self, params, reports_dir, force=False):
        from effbert import plan, sweep

        self.plan_ = plan.Plan(params, reports_dir)
        self.sweep = sweep.Sweep(self.plan_, force)
        self.params, self.paths = params, self.plan_.paths

    def plan(self, techniques=(), combinations=False):
        return self.plan_.cells(list(techniques), combinations)

    def run(self, techniques=(), combinations=False):
        return self.sweep.run(self.plan(techniques, combinations))

    def __getattr__(self, name):  # rows, inputs, check, recorded, ... of the plan
        if name in ("meter", "environment", "idle_power_w"):
            return getattr(self.sweep, name)
        return getattr(self.plan_, name)

    def summary(self, trials):
        from effbert import tables

        return tables.cell_summary(trials)

    def skipped(self, trials):
        from effbert import tables

        return tables.skipped(trials)

    def figure(self, techniques):
        from effbert import plots, stats

        summary = stats.summarize(self.plan_.recorded())
        return plots.compare(summary, techniques, self.params.baseline_technique)


def smoke_with(path, extra: str = ""):
    """The smoke profile written to ``path`` with the keys of YAML text ``extra`` replaced."""
    import yaml

    from effbert import config

    values = yaml.safe_load((config.PARAMS_DIR / "smoke.yaml").read_text())
    values.update(yaml.safe_load(extra) or {})
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)
