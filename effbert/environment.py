"""What a record was measured on: device, driver, library versions, git SHA, GPU state."""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

from effbert.config import PROJ_ROOT

LIBRARIES = ("torch", "transformers", "zeus", "torchao", "datasets", "evaluate")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} asks for a CUDA GPU and torch sees none "
            f"(torch {torch.__version__}); use device: auto or cpu, or profile smoke"
        )
    return resolved


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@cache
def git_sha() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes); ``EFFBERT_GIT_SHA`` names
    it where the code runs from a copy without ``.git``."""
    if os.environ.get("EFFBERT_GIT_SHA"):
        return os.environ["EFFBERT_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJ_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    sha = out.stdout.strip() if out.returncode == 0 else "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=PROJ_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{sha}-dirty" if dirty and sha != "unknown" else sha


def _nvml_handle(device: torch.device):
    """NVML's handle of the GPU torch calls ``device``. NVML numbers GPUs physically and ignores
    ``CUDA_VISIBLE_DEVICES``, so the GPU is found by its UUID (by index where torch has none)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = getattr(torch.cuda.get_device_properties(device.index or 0), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            text = text if text.startswith("GPU-") else f"GPU-{text}"
            return pynvml, pynvml.nvmlDeviceGetHandleByUUID(text)
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception:  # no NVML: a CPU run, or a driver without it
        return None, None


def describe(device: torch.device) -> dict[str, object]:
    """Static facts about the run's device and software."""
    env: dict[str, object] = {
        "device": device.type,
        "python": platform.python_version(),
        "git_sha": git_sha(),
        **{name: _version(name) for name in LIBRARIES},
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        nvml, handle = _nvml_handle(device)
        if handle is not None:
            env["driver"] = nvml.nvmlSystemGetDriverVersion()
            env["power_limit_w"] = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    else:
        env["device_name"] = platform.processor() or platform.machine()
        env["cpu_threads"] = torch.get_num_threads()
    return env


def measured_with(device: torch.device) -> dict[str, str]:
    """The part of the environment that can change a cell's numbers: device and libraries."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "device_name": name,
        **{lib: _version(lib) for lib in ("torch", "transformers", "torchao")},
    }


def gpu_state(device: torch.device) -> dict[str, float]:
    """GPU temperature and SM clock now (empty off the GPU)."""
    if device.type != "cuda":
        return {}
    nvml, handle = _nvml_handle(device)
    if handle is None:
        return {}
    return {
        "gpu_temp_c": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        "sm_clock_mhz": float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
    }


@cache
def _log_file(path: Path):
    """One append handle per log, open for the process: loggers set up while capturing keep it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    atexit.register(handle.close)
    return handle


@contextlib.contextmanager
def captured(log_path: Path) -> Iterator[None]:
    """Send library warnings and log records, and whatever writes to stderr, to ``log_path``.

    The notebook shows results and progress (stdout); the log keeps everything else.
    """
    log = _log_file(Path(log_path).resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, category, filename, lineno, *_: log.write(
            warnings.formatwarning(message, category, filename, lineno)
        )
        handlers = [
            h
            for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]
            for h in getattr(logger, "handlers", [])
            if type(h) is logging.StreamHandler
        ]
        streams = [h.stream for h in handlers]
        for handler in handlers:
            handler.stream = log  # not setStream: it flushes the old stream, which may be closed
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stderr(log):
                yield
        finally:
            log.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            for handler, stream in zip(handlers, streams, strict=True):
                handler.stream = stream


def import_libraries(log_path: Path) -> None:
    """Import the libraries whose import-time warnings would flood a notebook, into the log."""
    import importlib

    with captured(log_path):
        for name in ("tqdm.auto", "transformers", "torchao.quantization", "zeus.monitor"):
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
