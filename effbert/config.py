"""Paths: the only place paths come from (parameters live in ``effbert.params``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJ_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
PARAMS_DIR = PROJ_ROOT / "params"
REPORTS_DIR = PROJ_ROOT / "reports"
MODELS_DIR = PROJ_ROOT / "models"

ENV_REF = re.compile(r"\$\{(\w+)\}")
WORKER_ENV = "EFFBERT_WORKER"  # set in a worker process: its index among the run's workers


class ProfileError(ValueError):
    """A profile that cannot run: unknown keys, wrong types, missing environment variables."""


def reports_paths(reports_dir: str | Path = REPORTS_DIR) -> dict[str, Path]:
    """Folders of one reports tree, keyed by what they hold."""
    root = resolve_path(reports_dir)
    return {
        "root": root,
        "results": root / "results",
        "cells": root / "results" / "cells",
        "figures": root / "figures",
        "executed": root / "executed",
        "logs": root / "logs",
    }


def resolve_path(path: str | Path) -> Path:
    """An absolute path; relative ones are taken from the project root."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else PROJ_ROOT / path


def project_relative(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (portable records)."""
    resolved = resolve_path(path)
    try:
        return str(resolved.relative_to(PROJ_ROOT))
    except ValueError:
        return str(resolved)


def profile_path(name_or_path: str | Path) -> Path:
    """Find a profile by name (``smoke``) or by file path."""
    candidate = Path(os.path.expanduser(str(name_or_path)))
    if candidate.suffix in {".yaml", ".yml"}:
        for path in (candidate, resolve_path(candidate)):  # as given, else from the project
            if path.is_file():
                return path
    by_name = PARAMS_DIR / f"{name_or_path}.yaml"
    if by_name.exists():
        return by_name
    known = ", ".join(sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")))
    raise ProfileError(
        f"no profile {str(name_or_path)!r}: choose one of {known} or give a .yaml path"
    )
