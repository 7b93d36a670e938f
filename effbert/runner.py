"""Execute the notebooks with a profile: ``python -m effbert run --profile smoke``.

The profile is checked first (``effbert.params``). Each ``notebooks/NN-verb-object.py`` is read
with jupytext and executed by papermill, which injects only the profile's name, the reports
folder and ``force``; the notebook's Setup loads the profile itself. The executed notebook is
saved to ``reports/executed/<stem>.ipynb`` and converted to ``reports/<stem>.html``;
``reports/index.html`` links them in order.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effbert import config as cfg
from effbert import params as prm

NOTEBOOK_GLOB = "[0-9][0-9]-*.py"
INJECTED = ("profile", "reports_dir", "force")  # what papermill sets in a parameters cell


@dataclass
class NotebookRun:
    stem: str
    status: str  # "ok", "failed" or "not run"; "(earlier run)" when --only left it out
    message: str = ""


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
    import ast

    import papermill as pm

    nb = read_notebook(path)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / f"{path.stem}.ipynb"
        copy.write_text(json.dumps(nb))
        inferred = pm.inspect_notebook(str(copy))
    return {name: ast.literal_eval(p["default"]) for name, p in inferred.items()}


def check_can_run(params: prm.Params) -> None:
    """Stop at once when the profile needs a GPU or the Hub and this machine lacks them."""
    missing = []
    if params.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            missing.append("a CUDA GPU (device: cuda; torch sees none)")
    if uses_hub(params) and not hub_reachable():
        missing.append("the Hugging Face Hub (huggingface.co is unreachable or HF_HUB_OFFLINE=1)")
    if missing:
        raise cfg.ProfileError(
            f"profile {params.profile!r} cannot run here: it needs {' and '.join(missing)}. "
            "On this machine run `make smoke` (profile smoke); with a GPU but no Hub, "
            "profile offline-gpu"
        )


def uses_hub(params: prm.Params) -> bool:
    """Hub data, or a checkpoint or base model that is no local folder (so a Hub id)."""
    if params.data_source == "hub":
        return True
    specs = [*params.checkpoints.values(), params.base_model, params.model]
    return any(spec and spec != prm.TINY_RANDOM and not prm.looks_like_path(spec) for spec in specs)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def validated_profile(
    profile_name: str, notebooks_dir: Path = cfg.NOTEBOOKS_DIR
) -> tuple[prm.Params, dict[Path, list[str]]]:
    """Load and check a profile, and that each notebook declares only what the runner injects.

    Returns:
        The profile's parameters, and each notebook (in order) with the parameters it declares.

    Raises:
        ProfileError: a bad key, type or value, or a GPU or Hub this machine lacks.
    """
    params = prm.load(profile_name)
    declared = {path: list(declared_parameters(path)) for path in notebook_paths(notebooks_dir)}
    for path, names in declared.items():
        extra = set(names) - set(INJECTED)
        if extra:
            raise cfg.ProfileError(
                f"{path.name} declares {sorted(extra)} in its parameters cell: settings belong "
                "in effbert/params.py, the parameters cell holds only " + ", ".join(INJECTED)
            )
    check_can_run(params)
    return params, declared


def run_profile(
    profile_name: str,
    reports_dir: str | Path = cfg.REPORTS_DIR,
    force: bool = False,
    only: list[str] | None = None,
    notebooks_dir: Path = cfg.NOTEBOOKS_DIR,
) -> list[NotebookRun]:
    """Validate the profile against every notebook, then execute the notebooks in order.

    A failing notebook does not stop the later ones (each reads what is on disk); the runs
    say which failed and where.

    Raises:
        ProfileError: an unknown key or wrong type, before any notebook runs.
    """
    params, declared = validated_profile(profile_name, notebooks_dir)
    paths = list(declared)
    out = cfg.reports_paths(reports_dir)
    selected = [p for p in paths if not only or any(p.stem.startswith(o) for o in only)]
    runs = [earlier_run(out["executed"], p.stem) for p in paths]
    given = {
        "profile": profile_argument(profile_name),
        "reports_dir": cfg.project_relative(out["root"]),
        "force": force,
    }
    for path, run in zip(paths, runs, strict=True):
        if path not in selected:
            continue
        injected = {k: v for k, v in given.items() if k in declared[path]}
        run.status, run.message = _execute(path, injected, out)
    write_index(out["root"], runs, params.profile)
    return runs


def profile_argument(profile_name: str) -> str:
    """What a notebook's ``profile`` parameter is given: the name, or the file's path."""
    path = cfg.profile_path(profile_name)
    return (
        path.stem
        if path.parent.resolve() == cfg.PARAMS_DIR.resolve()
        else cfg.project_relative(path.resolve())
    )


def earlier_run(executed_dir: Path, stem: str) -> NotebookRun:
    """The state an executed notebook was left in by an earlier run, read from its outputs."""
    import nbformat

    path = Path(executed_dir) / f"{stem}.ipynb"
    if not path.exists():
        return NotebookRun(stem, "not run")
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = f"cell {index}: {output['ename']}: {output['evalue']}"
                return NotebookRun(stem, "failed (earlier run)", message)
    return NotebookRun(stem, "ok (earlier run)")


def _execute(path: Path, parameters: dict[str, Any], out: dict[str, Path]) -> tuple[str, str]:
    import papermill as pm

    out["executed"].mkdir(parents=True, exist_ok=True)
    executed = out["executed"] / f"{path.stem}.ipynb"
    print(f"== {path.stem}", flush=True)
    status, message = "ok", ""
    try:
        pm.execute_notebook(
            read_notebook(path),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(path.parent),
            progress_bar=True,
            log_output=False,
        )
    except pm.PapermillExecutionError as err:
        status = "failed"
        message = f"cell {err.cell_index} (In [{err.exec_count}]): {err.ename}: {err.evalue}"
    try:
        to_html(executed, out["root"] / f"{path.stem}.html")
    except Exception as err:  # the executed notebook is kept; only its HTML view is missing
        message += f" (no HTML: {type(err).__name__}: {err})"
    return status, message


def to_html(executed: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target.write_text(body)


def write_index(root: Path, runs: list[NotebookRun], profile: str) -> Path:
    items = "\n".join(
        f'<li><a href="{html.escape(r.stem)}.html">{html.escape(r.stem)}</a> — {r.status}'
        + (f"<pre>{html.escape(r.message)}</pre>" if r.message else "")
        + "</li>"
        for r in runs
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>effbert · {profile}</title>"
        f"</head><body><h1>effbert report · profile {html.escape(profile)}</h1>"
        f"<ol>{items}</ol><p>Results: <a href='results/results.csv'>results.csv</a>, "
        f"<a href='results/summary.csv'>summary.csv</a>; figures in "
        f"<a href='figures/'>figures/</a>.</p></body></html>"
    )
    path = Path(root) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def summary_markdown(profile: str, reports_dir: str | Path, task: str | None = None) -> str:
    """Per task and technique: energy and speed relative to fp32, and the metric's change."""
    from effbert import results

    paths = cfg.reports_paths(reports_dir)
    table = results.comparison(results.summarize(results.read_results(paths["results"], profile)))
    if task:
        table = table[table["task"] == task]
    table["energy J/1k (±95%)"] = [
        f"{m:.1f} ± {c:.1f}"
        for m, c in zip(table["j_per_1k_samples_mean"], table["j_per_1k_samples_ci95"], strict=True)
    ]
    columns = {
        "task": "task",
        "technique": "technique",
        "energy J/1k (±95%)": "energy J/1k (±95%)",
        "energy_vs_base": "energy / fp32",
        "speedup_vs_base": "speed / fp32",
        "metric": "metric",
        "metric_value": "value",
        "metric_change": "change vs fp32",
        "cv_flag": "noisy",
    }
    return results.markdown_table(table[list(columns)].rename(columns=columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effbert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks with a profile")
    run.add_argument("--profile", default="smoke", help="name in params/ or a .yaml path")
    run.add_argument("--reports-dir", default=str(cfg.REPORTS_DIR))
    run.add_argument("--force", action="store_true", help="re-measure finished cells")
    run.add_argument("--only", nargs="*", help="notebook stems (or prefixes) to run")
    check = sub.add_parser("check", help="validate a profile without running anything")
    check.add_argument("--profile", default="smoke")
    sub.add_parser("params", help="list every parameter: type, default and help")
    table = sub.add_parser("summary", help="print a profile's results beside the baseline")
    table.add_argument("--profile", required=True)
    table.add_argument("--reports-dir", default=str(cfg.REPORTS_DIR))
    table.add_argument("--task", help="one task only")
    args = parser.parse_args(argv)

    try:
        if args.command == "params":
            print(prm.describe())
            return 0
        if args.command == "summary":
            print(summary_markdown(args.profile, args.reports_dir, args.task))
            return 0
        if args.command == "check":
            params, _ = validated_profile(args.profile)
            print(f"profile {params.profile!r} is valid and can run here")
            return 0
        runs = run_profile(args.profile, args.reports_dir, args.force, args.only)
    except cfg.ProfileError as err:
        print(f"effbert: {err}", file=sys.stderr)
        return 2
    failed = [r for r in runs if r.status == "failed"]
    for r in failed:
        print(
            f"effbert: notebook {r.stem} failed at {r.message}; see "
            f"{Path(args.reports_dir) / 'executed' / (r.stem + '.ipynb')}",
            file=sys.stderr,
        )
    return 1 if failed else 0
