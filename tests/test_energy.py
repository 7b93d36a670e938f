import math

import pytest
import torch

from effbert import energy
from tests.conftest import FakeMonitor

CPU = torch.device("cpu")


def test_gpu_window_sums_the_nvml_counter(clock):
    meter = energy.ZeusMeter(FakeMonitor(clock, power_w=250.0), CPU, "nvml", "fake")
    meter.begin()
    clock.advance(2.0)
    reading = meter.end()
    assert reading == energy.Reading(time_s=2.0, energy_j=500.0)


def test_rapl_window_adds_package_and_dram(clock):
    meter = energy.ZeusMeter(FakeMonitor(clock, 40.0, source="cpu"), CPU, "rapl", "fake")
    meter.begin()
    clock.advance(1.5)
    assert meter.end().energy_j == pytest.approx(60.0)


def test_zero_energy_window_raises_instead_of_guessing(clock):
    meter = energy.ZeusMeter(FakeMonitor(clock, zero_windows=1), CPU, "nvml", "fake")
    meter.begin()
    clock.advance(0.05)
    with pytest.raises(energy.EnergyError, match="shorter than the energy counter"):
        meter.end()


def test_null_meter_times_and_reports_nan_energy():
    meter = energy.NullMeter(CPU, "no counters")
    meter.begin()
    reading = meter.end()
    assert reading.time_s >= 0 and math.isnan(reading.energy_j)
    assert meter.source == "none" and meter.reason == "no counters"


def test_factory_falls_back_to_null_with_the_reason_on_this_cpu(monkeypatch):
    import zeus.monitor

    class NoCounters:
        def __init__(self, **kwargs):
            self.gpus, self.cpu_indices = [], []

    monkeypatch.setattr(zeus.monitor, "ZeusMonitor", NoCounters)
    meter = energy.make_meter(CPU, "auto")
    assert meter.source == "none" and "RAPL" in meter.reason
    with pytest.raises(energy.EnergyError, match="'rapl' unavailable"):
        energy.make_meter(CPU, "rapl")
    with pytest.raises(energy.EnergyError, match="needs a CUDA device"):
        energy.make_meter(CPU, "nvml")
    assert energy.make_meter(CPU, "none").source == "none"
    with pytest.raises(ValueError, match="unknown energy source"):
        energy.make_meter(CPU, "wattmeter")


def test_factory_uses_rapl_when_readable(monkeypatch, clock):
    import zeus.monitor

    monkeypatch.setattr(
        zeus.monitor, "ZeusMonitor", lambda **kwargs: FakeMonitor(clock, source="cpu")
    )
    assert energy.make_meter(CPU).source == "rapl"


def test_idle_power_is_energy_over_time(monkeypatch, clock):
    meter = energy.ZeusMeter(FakeMonitor(clock, power_w=80.0), CPU, "nvml", "fake")
    monkeypatch.setattr(energy.time, "sleep", clock.advance)
    assert energy.idle_power_w(meter, 3.0) == pytest.approx(80.0)
    assert math.isnan(energy.idle_power_w(energy.NullMeter(CPU, "x"), 3.0))
