"""Energy meters: the GPU's NVML energy counter and CPU RAPL through Zeus, or none.

Every meter measures windows the same way: ``begin()`` waits for queued device work and reads
the counters, ``end()`` waits again and reads them once more. Nothing runs between the two
but the caller's code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)

# NVML's total-energy counter updates about every 100 ms; shorter windows read 0 J or jitter.
COUNTER_PERIOD_S = 0.1


class EnergyError(RuntimeError):
    """A window whose energy reading cannot be trusted."""


@dataclass(frozen=True)
class Reading:
    """One measurement window: the device's energy, and for end-to-end windows the host's CPU
    package and DRAM energy (NaN where RAPL is not readable) and this process's CPU time."""

    time_s: float
    energy_j: float
    cpu_energy_j: float = float("nan")
    cpu_time_s: float = float("nan")


class Meter(Protocol):
    source: str  # "nvml", "rapl" or "none"
    reason: str  # why this source (and not a better one) measures

    def begin(self) -> None: ...

    def end(self) -> Reading: ...


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NullMeter:
    """Measures time only; ``energy_j`` is NaN and ``source`` is ``none``."""

    source = "none"

    def __init__(self, device: torch.device, reason: str) -> None:
        self.device = device
        self.reason = reason
        self._start = None

    def begin(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def end(self) -> Reading:
        synchronize(self.device)
        return Reading(time.perf_counter() - self._start, float("nan"))


class ZeusMeter:
    """Zeus ``ZeusMonitor`` windows over one GPU (NVML) or the CPU packages and DRAM (RAPL).

    ``approx_instant_energy`` stays off: a window too short for the counter raises instead
    of being guessed from instant power.
    """

    _WINDOW = "effbert"

    def __init__(self, monitor, device: torch.device, source: str, reason: str) -> None:
        self.monitor = monitor
        self.device = device
        self.source = source
        self.reason = reason

    def begin(self) -> None:
        synchronize(self.device)
        self.monitor.begin_window(self._WINDOW, sync_execution=False, restart=True)

    def end(self) -> Reading:
        synchronize(self.device)
        m = self.monitor.end_window(self._WINDOW, sync_execution=False)
        if self.source == "nvml":
            energy_j = sum(m.gpu_energy.values())
        else:
            energy_j = sum((m.cpu_energy or {}).values()) + sum((m.dram_energy or {}).values())
        if energy_j <= 0.0:
            raise EnergyError(
                f"{self.source} read {energy_j} J over {m.time:.3f} s: the window is shorter "
                f"than the energy counter's update period (~{COUNTER_PERIOD_S} s)"
            )
        return Reading(m.time, energy_j)


class HostMeter:
    """End-to-end windows: the device's meter, the host CPU's RAPL counters where readable, and
    the CPU time of this process and its children (tokenizer workers included), read at the
    same window ends."""

    def __init__(self, device_meter: Meter, cpu_meter: Meter) -> None:
        self.device_meter, self.cpu_meter = device_meter, cpu_meter
        self.device = device_meter.device
        self.source, self.reason = device_meter.source, device_meter.reason
        self.cpu_source, self.cpu_reason = cpu_meter.source, cpu_meter.reason
        self._cpu_start_s = 0.0

    def begin(self) -> None:
        self.device_meter.begin()
        if self.cpu_meter is not self.device_meter:
            self.cpu_meter.begin()
        self._cpu_start_s = process_tree_cpu_s()

    def end(self) -> Reading:
        reading = self.device_meter.end()
        cpu = reading if self.cpu_meter is self.device_meter else self.cpu_meter.end()
        return Reading(
            reading.time_s,
            reading.energy_j,
            cpu.energy_j,
            process_tree_cpu_s() - self._cpu_start_s,
        )


def process_tree_cpu_s() -> float:
    """CPU seconds of this process and its live children (tokenizer workers included)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass  # a child that ended between the listing and the reading
    return total


def make_host_meter(device: torch.device, energy: str = "auto") -> HostMeter:
    """A ``HostMeter`` for ``device``: on a GPU, NVML plus RAPL where readable (a null CPU meter
    that says why not, otherwise); on a CPU the one RAPL meter serves both."""
    device_meter = make_meter(device, energy)
    if device.type != "cuda":
        return HostMeter(device_meter, device_meter)
    if energy == "none":
        return HostMeter(device_meter, NullMeter(torch.device("cpu"), "energy: none"))
    return HostMeter(device_meter, make_meter(torch.device("cpu"), "auto"))


def make_meter(device: torch.device, energy: str = "auto") -> Meter:
    """The best meter for ``device``, falling back to a null meter with the reason.

    Args:
        energy: ``auto`` (NVML on a GPU, RAPL on a CPU, else none), ``nvml``, ``rapl`` or
            ``none``. Asking for a source that cannot be read raises.
    """
    if energy not in ("auto", "nvml", "rapl", "none"):
        raise ValueError(f"unknown energy source {energy!r}: choose auto, nvml, rapl or none")
    if energy == "none":
        return NullMeter(device, "energy measurement switched off (energy: none)")
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError as err:
        return _fallback(device, energy, f"zeus is not installed ({err})")
    if device.type == "cuda" and energy in ("auto", "nvml"):
        index = device.index if device.index is not None else torch.cuda.current_device()
        monitor = ZeusMonitor(gpu_indices=[index], cpu_indices=[], approx_instant_energy=False)
        if len(monitor.gpus) > index:
            return ZeusMeter(monitor, device, "nvml", f"NVML energy counter of GPU {index}")
        return _fallback(device, energy, "Zeus found no NVML GPU")
    if energy in ("auto", "rapl"):
        monitor = ZeusMonitor(gpu_indices=[], approx_instant_energy=False)
        if monitor.cpu_indices:
            return ZeusMeter(monitor, device, "rapl", "RAPL package and DRAM counters")
        return _fallback(device, energy, "no readable RAPL counters (/sys/class/powercap)")
    return _fallback(device, energy, f"nvml needs a CUDA device, this run is on {device.type}")


def _fallback(device: torch.device, energy: str, reason: str) -> Meter:
    if energy != "auto":
        raise EnergyError(f"energy source {energy!r} unavailable: {reason}")
    logger.warning("no energy meter: %s; recording energy_source='none'", reason)
    return NullMeter(device, reason)


def idle_power_w(meter: Meter, idle_s: float) -> float:
    """Mean power of the device at rest over ``idle_s`` seconds (NaN without a meter)."""
    if meter.source == "none" or idle_s <= 0:
        return float("nan")
    meter.begin()
    time.sleep(idle_s)
    reading = meter.end()
    return reading.energy_j / reading.time_s
