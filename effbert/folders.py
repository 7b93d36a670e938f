"""Reports folders a run may write: one run at a time per folder (a lock that names its
holder), published folders written only when asked, and what ``make clean`` may remove.

Standard library only: ``make clean`` runs it with any Python, before anything is installed
(``PYTHONPATH=. python3 -m effbert.folders clean``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from effbert.config import PROJ_ROOT, resolve_path

LOCK_FILE = ".effbert-run.lock"
GENERATED = ("executed", "*.html", "logs", LOCK_FILE)  # what a run writes beside its records


class FolderRefused(Exception):
    """A reports folder this run may not use: the message says why and what to do instead."""


@contextlib.contextmanager
def locked(root: Path, holder: dict) -> Iterator[None]:
    """Hold ``root``'s run lock for the block; another run holding it is refused by name."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise FolderRefused(
                f"{root} is in use by another run ({handle.read().strip() or 'unknown'}): let "
                "it finish, or give this run another --reports-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(
            json.dumps(
                {**holder, "pid": os.getpid(), "host": socket.gethostname(), "started": stamp}
            )
        )
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def published_files(root: Path) -> list[str]:
    """The files of a run's output in ``root`` that git tracks: a published report.

    Raises:
        FolderRefused: git cannot tell (a checkout whose git fails).
    """
    inside = PROJ_ROOT.resolve() in Path(root).resolve().parents
    if not (PROJ_ROOT / ".git").exists() or not inside or not Path(root).exists():
        return []  # git tracks nothing outside the checkout, nor in a folder not there
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", f":(literal){root}"],
            cwd=PROJ_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FolderRefused(f"cannot tell whether {root} holds published reports ({err})") from None
    if out.returncode != 0:
        raise FolderRefused(
            f"cannot tell whether {root} holds published reports (git: {out.stderr.strip()})"
        )
    inside_root = Path(root).resolve().relative_to(PROJ_ROOT.resolve())
    tracked = [Path(f) for f in out.stdout.split("\0") if f]
    # what a run writes: its pages at the top of root and its executed notebooks (a published
    # report in a folder below root, such as reports/study under reports, is not touched)
    return [
        str(f)
        for f in tracked
        if (f.parent == inside_root and f.suffix == ".html")
        or inside_root / "executed" in f.parents
    ]


def refuse_published(root: Path, force: bool) -> None:
    """A run writes its notebooks, HTML and index over a published report only with --force."""
    tracked = published_files(root)
    if tracked and not force:
        raise FolderRefused(
            f"{root} holds a published report ({len(tracked)} committed files, e.g. "
            f"{tracked[0]}); a run would overwrite it. Give another --reports-dir, or --force "
            "to regenerate it on purpose"
        )


def clean_targets(reports: str) -> list[Path]:
    """What ``make clean REPORTS=...`` removes: a local run's generated files in ``reports``
    (never its records) and the project's caches.

    Raises:
        FolderRefused: ``reports`` is empty, absolute, outside the project, reached through a
            symbolic link, or holds a published report.
    """
    given = reports.strip()
    if not given or Path(given).is_absolute() or ".." in Path(given).parts:
        raise FolderRefused(
            f"REPORTS={reports!r}: give a reports folder inside the project, by a relative "
            "path without '..' (e.g. REPORTS=reports)"
        )
    root = resolve_path(given)
    walked = PROJ_ROOT
    for part in Path(given).parts:
        walked = walked / part
        if walked.is_symlink():
            raise FolderRefused(f"REPORTS={reports!r}: {walked} is a symbolic link; not cleaning")
    if root.resolve() == PROJ_ROOT.resolve() or PROJ_ROOT.resolve() not in root.resolve().parents:
        raise FolderRefused(f"REPORTS={reports!r} is not a folder inside the project")
    if published_files(root):
        raise FolderRefused(f"{root} holds committed published reports; not deleting them")
    targets = [p for pattern in GENERATED for p in root.glob(pattern)]
    targets += [PROJ_ROOT / ".pytest_cache", PROJ_ROOT / ".ruff_cache"]
    targets += sorted((PROJ_ROOT / "notebooks").glob("*.ipynb"))
    for folder in ("effbert", "tests", "scripts", "notebooks"):
        targets += sorted((PROJ_ROOT / folder).rglob("__pycache__"))
    return [t for t in targets if t.exists() or t.is_symlink()]


def clean(reports: str) -> int:
    try:
        targets = clean_targets(reports)
    except FolderRefused as err:
        print(f"make clean: {err}", file=sys.stderr)
        return 2
    for target in targets:
        print(f"removing {target.relative_to(PROJ_ROOT)}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["clean"]:
        sys.exit("usage: python -m effbert.folders clean (REPORTS from the environment)")
    sys.exit(clean(os.environ.get("REPORTS", "reports")))
