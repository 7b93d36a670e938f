"""Paths and run profiles: the only place paths come from."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

PROJ_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
PARAMS_DIR = PROJ_ROOT / "params"
REPORTS_DIR = PROJ_ROOT / "reports"
MODELS_DIR = PROJ_ROOT / "models"

_ENV_REF = re.compile(r"\$\{(\w+)\}")


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
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} and candidate.exists():
        return candidate
    by_name = PARAMS_DIR / f"{name_or_path}.yaml"
    if by_name.exists():
        return by_name
    known = ", ".join(sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")))
    raise ProfileError(
        f"no profile {str(name_or_path)!r}: choose one of {known} or give a .yaml path"
    )


def _expand_env(value: Any, key: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ProfileError(
                    f"profile key {key!r} needs the environment variable {name}: "
                    f"set it, e.g. `export {name}=...`, or edit the profile"
                )
            return os.environ[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, list):
        return [_expand_env(v, key) for v in value]
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{key}.{k}") for k, v in value.items()}
    return value


def load_profile(name_or_path: str | Path) -> dict[str, Any]:
    """Read a flat YAML profile, expanding ``${VAR}`` references from the environment.

    The profile's ``profile`` key defaults to the file's stem.
    """
    path = profile_path(name_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a flat mapping of parameter: value")
    profile = {key: _expand_env(value, key) for key, value in raw.items()}
    profile.setdefault("profile", path.stem)
    return profile


def validate_profile(profile: dict[str, Any], declared: dict[str, Any]) -> None:
    """Check every profile key against the parameters the notebooks declare.

    Args:
        profile: the loaded profile.
        declared: parameter name -> default value, the union over the notebooks.

    Raises:
        ProfileError: naming every unknown key (with close matches) and every type mismatch.
    """
    import difflib

    problems = []
    for key, value in profile.items():
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
            continue
        default = declared[key]
        if not _same_kind(value, default):
            expected, got = type(default).__name__, type(value).__name__
            problems.append(f"key {key!r} should be {expected}, got {got} {value!r}")
    if problems:
        valid = ", ".join(sorted(declared))
        raise ProfileError("; ".join(problems) + f". Valid keys: {valid}")


def _same_kind(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))
