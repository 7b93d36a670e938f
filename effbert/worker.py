"""``python -m effbert.worker SPEC``: one worker process of a run, started by ``effbert.pool``.

The spec (JSON) gives the stage, the profile's parameters for this worker's tasks, the reports
folder, and what to do: the cells to measure, or the tasks to fine-tune, or the models to
compile ahead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from effbert.finetune import FinetunePlan
from effbert.plan import Plan
from effbert.profiles import validate
from effbert.sweep import Sweep


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    params = validate(spec["params"], inputs=False)
    try:
        if spec["stage"] == "finetune":
            FinetunePlan(params, spec["reports_dir"]).train()
        elif spec["stage"] == "compile":
            FinetunePlan(params, spec["reports_dir"]).warm_compile(
                spec["points"], spec.get("compile_threads")
            )
        else:
            plan = Plan(params, spec["reports_dir"])
            Sweep(plan, spec["force"]).measure(plan.select(spec["cells"]))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
