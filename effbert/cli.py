"""The command line: ``python -m effbert run|check|params|summary`` (``effbert`` once installed).

Every expected failure ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from effbert import config as cfg
from effbert import data, folders, models, params, pool, report, results, runner


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m effbert",
        description="Execute effbert's notebooks with a profile, check a profile, list the "
        "parameters, or print a profile's results.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    defaults = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    run = sub.add_parser("run", help="execute the notebooks with a profile", **defaults)
    run.add_argument("--profile", default="smoke", help="name in params/ or a .yaml path")
    run.add_argument("--reports-dir", default=str(cfg.REPORTS_DIR), help="where reports go")
    run.add_argument("--force", action="store_true", help="re-measure finished cells")
    run.add_argument("--only", nargs="*", help="notebook stems (or prefixes) to run")
    run.add_argument(
        "--shard",
        default="",
        help="I/N: run this host's share of the profile's tasks (whole tasks; N hosts each "
        "run one shard into their own reports folder, then --only 90 on the union)",
    )
    check = sub.add_parser("check", help="validate a profile without running it", **defaults)
    check.add_argument("--profile", default="smoke", help="name in params/ or a .yaml path")
    sub.add_parser("params", help="list every parameter: type, default and help")
    table = sub.add_parser(
        "summary", help="print a profile's results beside the baseline", **defaults
    )
    table.add_argument("--profile", required=True, help="name in params/ or a .yaml path")
    table.add_argument("--reports-dir", default=str(cfg.REPORTS_DIR), help="its reports folder")
    table.add_argument("--task", help="one task only")
    table.add_argument("--format", choices=report.FORMATS, default="markdown")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    try:
        if args.command == "params":
            print(params.describe())
            return 0
        if args.command == "summary":
            print(report.summary_table(args.profile, args.reports_dir, args.task, args.format))
            return 0
        if args.command == "check":
            checked, _ = runner.validated_profile(args.profile)
            print(f"profile {checked.profile!r} is valid and can run here")
            return 0
        runs = runner.run_profile(
            args.profile, args.reports_dir, args.force, args.only, shard=args.shard
        )
    except BrokenPipeError:  # `summary | head`: the reader stopped, nothing went wrong
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        return 0
    except (cfg.ProfileError, FileNotFoundError, folders.FolderRefused) as err:
        print(f"effbert: {err}", file=sys.stderr)
        return 2
    except (results.StoreError, pool.WorkerError, data.DataError, models.ModelError) as err:
        print(f"effbert: {err}", file=sys.stderr)
        return 1
    except runner.RunInterrupted as err:
        print(f"effbert: {err}", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"effbert: {runner._write_failure(err, Path('nothing'))}", file=sys.stderr)
        return 1
    failed = [r for r in runs if r.status == "failed"]
    for r in failed:
        print(
            f"effbert: notebook {r.stem} failed at {r.message}; see "
            f"{Path(args.reports_dir) / 'executed' / (r.stem + '.ipynb')}",
            file=sys.stderr,
        )
    return 1 if failed else 0
