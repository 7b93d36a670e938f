"""Every committed cell record keeps its id: rebuilt from its stored fields by today's code, its
config hashes to the same id. A refactor that changes a record's identity fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effbert import plan, techniques
from effbert.params import Params
from effbert.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted(ROOT.glob("reports/**/results/cells/*/*.json"))


def _rebuild(config: dict) -> dict:
    measure = config["measure"]
    params = Params(
        profile=config["profile"],
        max_length=config["max_length"],
        data_source=config["data_source"],
        max_samples=config["max_samples"],
        energy=config["energy"],
        seed=config["seed"],
        warmup_s=measure["warmup_s"],
        trials=measure["trials"],
        min_window_s=measure["min_window_s"],
        preroll_s=measure.get("preroll_s", 0.0),
        scope=config.get("scope", "model"),
        tokenize_workers=config.get("tokenize_workers", 1),
        order=config.get("order", "sequential"),
    )
    return plan.cell_config(
        params,
        get_task(config["task"]),
        config["technique"],
        config["batch_size"],
        config["padding"],
        config["checkpoint"],
        config["label_map"],
        config["device"],
        config["fingerprints"],
    )


def _legacy(config: dict) -> bool:
    """Recorded before fingerprints, or a compiled cell from before the ``inductor`` key."""
    if "fingerprints" not in config:
        return True
    compiled = techniques.parse(config["technique"]).execution in techniques.COMPILED_EXECUTIONS
    return compiled and "inductor" not in config


def test_committed_records_rebuild_to_their_ids():
    rebuilt, legacy = 0, 0
    for path in RECORDS:
        config = json.loads(path.read_text())["config"]
        if _legacy(config):
            legacy += 1
            continue
        assert plan.cell_id(_rebuild(config)) == path.stem, path.relative_to(ROOT)
        rebuilt += 1
    if not RECORDS:
        pytest.skip("no committed records")
    assert rebuilt >= 167, f"only {rebuilt} records rebuilt ({legacy} legacy)"
