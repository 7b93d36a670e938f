"""Execute the notebooks with a profile (``python -m effbert run --profile smoke``).

The profile is checked first (``effbert.profiles``). Each ``notebooks/NN-verb-object.py`` is
read with jupytext and executed by papermill, which injects only what the parameters cells
declare (the profile's name, the reports folder, ``force``, the shard); the notebook's Setup
loads the profile itself. The executed notebook is saved to ``reports/executed/<stem>.ipynb``
and converted to ``reports/<stem>.html``; ``reports/index.html`` links them in order.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effbert import config as cfg
from effbert import folders, pages, pool, profiles, report, results, runs
from effbert.models import TINY_RANDOM
from effbert.params import Params

NOTEBOOK_GLOB = "[0-9][0-9]-*.py"


INJECTED = ("profile", "reports_dir", "force", "shard")  # what papermill sets in a parameters cell


@dataclass
class NotebookRun:
    stem: str
    status: str  # "ok", "failed" or "not run"; "(earlier run)" when --only left it out
    message: str = ""
    about: str = ""  # the notebook's subtitle: what it shows


def notebook_paths(notebooks_dir: Path = cfg.NOTEBOOKS_DIR) -> list[Path]:
    return sorted(Path(notebooks_dir).glob(NOTEBOOK_GLOB))


def read_notebook(path: Path):
    import jupytext

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def declared_parameters(path: Path) -> dict[str, Any]:
    """Parameter name -> default value, from the notebook's cell tagged ``parameters``."""
    import papermill as pm

    nb = read_notebook(path)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / f"{path.stem}.ipynb"
        copy.write_text(json.dumps(nb))
        inferred = pm.inspect_notebook(str(copy))
    return {name: ast.literal_eval(p["default"]) for name, p in inferred.items()}


def check_can_run(params: Params) -> None:
    """Stop at once when the profile needs a GPU or the Hub and this machine lacks them."""
    missing = []
    if params.device.startswith("cuda"):
        if not torch.cuda.is_available():
            missing.append("a CUDA GPU (device: cuda; torch sees none)")
    if uses_hub(params) and not hub_reachable():
        missing.append(
            "the Hugging Face Hub (unreachable, or HF_HUB_OFFLINE=1) for "
            + ", ".join(hub_uses(params))
        )
    if missing:
        raise cfg.ProfileError(
            f"profile {params.profile!r} cannot run here: it needs {' and '.join(missing)}. "
            "On this machine run `make smoke` (profile smoke); with a GPU but no Hub, "
            "profile offline-gpu"
        )


def hub_uses(params: Params) -> list[str]:
    """What the profile would take from the Hub: its data, or each checkpoint or base model
    that is no local folder (so a Hub id; a relative path whose folder is missing reads as
    one, so its missing folder is named too)."""
    uses = ["data_source: hub"] if params.data_source == "hub" else []
    specs = {f"checkpoints.{k}": v for k, v in params.checkpoints.items()}
    specs.update(base_model=params.base_model, model=params.model)
    for key, spec in specs.items():
        if spec and spec != TINY_RANDOM and not profiles.looks_like_path(spec):
            uses.append(f"{key} {spec!r} (no folder {cfg.resolve_path(spec)} here either)")
    return uses


def uses_hub(params: Params) -> bool:
    """Hub data, or a checkpoint or base model that is no local folder (so a Hub id)."""
    return bool(hub_uses(params))


def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


ANALYSIS_PREFIX = "9"  # notebooks that read records only: they run on any machine


def analysis_only(only: list[str] | None) -> bool:
    """Whether ``--only`` selects analysis notebooks alone (no GPU, Hub or inputs needed)."""
    return bool(only) and all(o.startswith(ANALYSIS_PREFIX) for o in only)


def validated_profile(
    profile_name: str,
    notebooks_dir: Path = cfg.NOTEBOOKS_DIR,
    machine: bool = True,
    shard: str = "",
) -> tuple[Params, dict[Path, list[str]]]:
    """Load and check a profile, and that each notebook declares only what the runner injects.

    Args:
        machine: also check the profile's inputs and that this machine has the GPU and Hub it
            needs (off when only analysis notebooks run).

    Returns:
        The profile's parameters, and each notebook (in order) with the parameters it declares.

    Raises:
        ProfileError: a bad key, type or value, or a GPU or Hub this machine lacks.
    """
    params = profiles.load(profile_name, inputs=machine, shard=shard)
    declared = {path: list(declared_parameters(path)) for path in notebook_paths(notebooks_dir)}
    for path, names in declared.items():
        extra = set(names) - set(INJECTED)
        if extra:
            raise cfg.ProfileError(
                f"{path.name} declares {sorted(extra)} in its parameters cell: settings belong "
                "in effbert/params.py, the parameters cell holds only " + ", ".join(INJECTED)
            )
    if machine:
        check_can_run(params)
        try:
            pool.worker_slots(params)
        except pool.WorkerError as err:
            raise cfg.ProfileError(str(err)) from err
    return params, declared


class RunInterrupted(Exception):
    """Ctrl-C during a run: what finished is kept; the message says how to resume."""


def run_profile(
    profile_name: str,
    reports_dir: str | Path = cfg.REPORTS_DIR,
    force: bool = False,
    only: list[str] | None = None,
    notebooks_dir: Path = cfg.NOTEBOOKS_DIR,
    shard: str = "",
) -> list[NotebookRun]:
    """Validate the profile, then execute the notebooks in order and write ``index.html``.

    A failing notebook does not stop the later ones (each reads what is on disk); the runs
    say which failed and where. One run at a time writes a reports folder (its lock), and a
    published one only with ``force``. The index is written however the run ends.

    Raises:
        ProfileError: a bad profile or ``only``, before any notebook runs.
        FolderRefused: the reports folder is in use by another run, or published.
        RunInterrupted: Ctrl-C or SIGTERM; the index is written and every finished cell kept.
    """
    machine = not analysis_only(only)
    params, declared = validated_profile(profile_name, notebooks_dir, machine, shard)
    paths = list(declared)
    selected = _selected(paths, only)
    out = cfg.reports_paths(reports_dir)
    folders.refuse_published(out["root"], force)
    holder = {"profile": params.profile, "shard": shard, "only": only or "all"}
    with folders.locked(out["root"], holder), pool.terminate_as_interrupt():
        return _run_locked(params, profile_name, paths, selected, declared, out, force, shard)


def _selected(paths: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks ``only`` names by stem or prefix (all without it).

    Raises:
        ProfileError: a value that names no notebook.
    """
    unknown = [o for o in only or [] if not any(p.stem.startswith(o) for p in paths)]
    if unknown:
        raise cfg.ProfileError(
            f"--only {' '.join(unknown)} names no notebook: choose from "
            + ", ".join(p.stem for p in paths)
        )
    return [p for p in paths if not only or any(p.stem.startswith(o) for o in only)]


def _run_locked(params, profile_name, paths, selected, declared, out, force, shard):
    notebook_runs = [earlier_run(out["executed"], p.stem) for p in paths]
    for path, run in zip(paths, notebook_runs, strict=True):
        run.about = subtitle(path)
    given = {
        "profile": profile_argument(profile_name),
        "reports_dir": cfg.project_relative(out["root"]),
        "force": force,
        "shard": shard,
    }
    started, before = time.perf_counter(), _measured_cells(out, params.profile)
    walls: dict[str, float] = {}
    interrupted = False
    try:
        for number, (path, run) in enumerate(zip(paths, notebook_runs, strict=True), start=1):
            if path not in selected:
                continue
            injected = {k: v for k, v in given.items() if k in declared[path]}
            start = time.perf_counter()
            try:
                run.status, run.message = _execute(path, injected, out)
            except KeyboardInterrupt:
                run.status, run.message = "interrupted", "stopped by Ctrl-C or SIGTERM"
                interrupted = True
            walls[path.stem] = elapsed_s = time.perf_counter() - start
            print(f"[{number}/{len(paths)}] {path.stem}: {run.status} ({elapsed_s:.0f} s)")
            if interrupted:
                break
    finally:
        if any(p.stem[:1] != ANALYSIS_PREFIX for p in selected):  # analysis alone: no GPU time
            measured = len(_measured_cells(out, params.profile) - before)
            _record_run(params, out, notebook_runs, walls, time.perf_counter() - started, measured)
        report.write_index(out["root"], notebook_runs, params.profile, params.baseline_technique)
    if interrupted:
        raise RunInterrupted(_resume_hint(params, out, profile_name))
    baseline = params.baseline_technique
    print(report.closing_summary(out["root"], notebook_runs, params.profile, baseline))
    return notebook_runs


def _measured_cells(out: dict[str, Path], profile: str) -> set[tuple[str, str]]:
    """(file, measured_at) of the profile's measured or failed cells: a run measured those
    whose pair is new at its end (read from the records, whatever the clock did)."""
    cells = set()
    for path in sorted((out["cells"] / profile).glob("*.json")):
        try:
            record = results.read_cell(path)
        except results.StoreError:
            continue  # a damaged record: the results tables report it
        if record.get("status") in ("ok", "failed"):
            cells.add((path.name, str(record.get("measured_at"))))
    return cells


def _record_run(
    params, out, notebook_runs, walls: dict[str, float], wall_s: float, measured: int
) -> None:
    """The run's record (``runs.write_run``, kind ``reproduce``): the GPUs it had, each
    notebook's wall time and how many cells it measured, for the GPU time a study takes."""
    gpus = pool.visible_gpus() if params.device in ("auto", "cuda") else []
    if gpus:
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = "cpu"
    notebooks = [
        {"stem": r.stem, "status": r.status, "wall_s": round(walls[r.stem], 1)}
        for r in notebook_runs
        if r.stem in walls
    ]
    extra = {"gpus": len(gpus), "device_name": device_name, "cells_measured": measured}
    runs.write_run(
        out["results"], params.profile, "reproduce", wall_s, [], notebooks=notebooks, **extra
    )


def _resume_hint(params: Params, out: dict[str, Path], profile_name: str) -> str:
    finished = len(list((out["cells"] / params.profile).glob("*.json")))
    return (
        f"interrupted: {finished} finished cells of profile {params.profile!r} are kept in "
        f"{cfg.project_relative(out['cells'] / params.profile)}. Resume with "
        f"`python -m effbert run --profile {profile_name} --reports-dir "
        f"{cfg.project_relative(out['root'])}`: finished cells are read back, not measured again"
    )


def subtitle(path: Path) -> str:
    """A notebook's one-line ``>`` subtitle (what it shows), "" where it has none."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# > "):
            return line[4:].strip()
    return ""


def profile_argument(profile_name: str) -> str:
    """What a notebook's ``profile`` parameter is given: the name, or the file's path."""
    path = cfg.profile_path(profile_name)
    if path.parent.resolve() == cfg.PARAMS_DIR.resolve():
        return path.stem
    return cfg.project_relative(path.resolve())


def earlier_run(executed_dir: Path, stem: str) -> NotebookRun:
    """The state an executed notebook was left in by an earlier run, read from its outputs."""
    import nbformat

    path = Path(executed_dir) / f"{stem}.ipynb"
    if not path.exists():
        return NotebookRun(stem, "not run")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # a damaged executed notebook: say so, run on
        return NotebookRun(stem, "failed (earlier run)", f"unreadable {path.name}: {err}")
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = f"cell {index}: {output['ename']}: {output['evalue']}"
                return NotebookRun(stem, "failed (earlier run)", message)
    return NotebookRun(stem, "ok (earlier run)")


def _kernel_manager(log_path: Path):
    """A kernel manager whose kernels write their own stderr (banners, crashes) to a log."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kwargs):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            kwargs.setdefault("stderr", open(log_path, "a"))  # noqa: SIM115 (the kernel's)
            # the kernel imports effbert from this checkout, not another one the
            # environment was installed from
            path = os.pathsep.join(filter(None, [str(cfg.PROJ_ROOT), os.environ.get("PYTHONPATH")]))
            kwargs["env"] = {**os.environ, **kwargs.get("env", {}), "PYTHONPATH": path}
            return await super()._async_start_kernel(**kwargs)

    return LoggedKernelManager


def _execute(path: Path, parameters: dict[str, Any], out: dict[str, Path]) -> tuple[str, str]:
    import papermill as pm

    executed = out["executed"] / f"{path.stem}.ipynb"
    status, message = "ok", ""
    try:
        out["executed"].mkdir(parents=True, exist_ok=True)
        pm.execute_notebook(
            read_notebook(path),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(path.parent),
            # notebook cells done, on one line that clears itself; the run line follows
            progress_bar={"desc": f"  {path.stem}", "leave": False, "file": sys.stderr},
            log_output=False,
            kernel_manager_class=_kernel_manager(out["logs"] / "kernels.log"),
        )
    except pm.PapermillExecutionError as err:
        status = "failed"
        said = f"{err.ename}: {err.evalue}" if err.evalue else _stderr_of(executed, err.cell_index)
        message = f"cell {err.cell_index} (In [{err.exec_count}]): {said}"
    except OSError as err:
        return "failed", _write_failure(err, executed)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # the kernel died (out of memory, killed) or timed out
        status = "failed"
        message = (
            f"the notebook's kernel stopped ({type(err).__name__}: {err}); its log: "
            f"{cfg.project_relative(out['logs'] / 'kernels.log')}"
        )
    if not executed.exists():
        return status, message
    try:
        pages.portable_metadata(executed)
        pages.to_html(executed, out["root"] / f"{path.stem}.html")
    except OSError as err:
        return "failed", (message + "; " if message else "") + _write_failure(err, executed)
    return status, message


def _stderr_of(executed: Path, cell_index: int) -> str:
    """What a failed cell wrote to stderr: a user's error, shown in one line (effbert's
    notebook error display), where papermill has no message."""
    import nbformat

    try:
        cell = nbformat.read(executed, as_version=4).cells[cell_index]
    except (OSError, IndexError, ValueError):
        return "an error (see the executed notebook)"
    said = [o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr"]
    return " ".join(t.strip() for t in said) or "an error (see the executed notebook)"


def _write_failure(err: OSError, kept: Path) -> str:
    where = cfg.project_relative(err.filename) if err.filename else "the reports folder"
    return (
        f"could not write {where}: {err.strerror or err}. Free disk space or make the reports "
        f"folder writable, then run again; finished cells are kept ({kept.name} if it was saved)"
    )
