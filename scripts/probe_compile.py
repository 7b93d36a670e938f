"""Where a compiled cell's preparation and an eager int8 cell's after-window passes spend their
time, on a GPU (the probe behind the README's "GPU time" notes; its output on one H200 is in
``reports/probe-h200/``).

    python scripts/probe_compile.py warm DIR   # compile each point once (like Plan.warm_compile)
    python scripts/probe_compile.py cell DIR   # then, in another process, like notebook 70
    python scripts/probe_compile.py int8 DIR   # eager int8: latency, kernel record, metric pass

DIR: a DistilBERT checkpoint with its tokenizer (the probe used random weights, one folder for
``warm`` and one for ``cell``, and effbert's word-level tokenizer); ``EFFBERT_GLUE_DIR``: GLUE
files; each result is appended as one JSON line to ``$OUT/probe.jsonl`` as soon as it is known.
"""

import json
import os
import sys
import time

started = time.perf_counter()
import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from transformers import AutoTokenizer, DistilBertForSequenceClassification  # noqa: E402

from effbert import data, kernels, measure, models, techniques  # noqa: E402
from effbert.tasks import get_task  # noqa: E402

IMPORT_S = time.perf_counter() - started
POINTS = [
    ("sst2", "fp32+compile", 16, "max_length"),
    ("sst2", "int8+compile", 16, "max_length"),
    ("sst2", "fp8+varlen+compile+cls_last", 512, "packed"),
    ("sst2", "bf16+varlen+graphs+cls_last", 512, "packed"),
    ("stsb", "bf16+varlen+graphs+cls_last", 512, "packed"),
    ("cola", "bf16+varlen+graphs+cls_last", 512, "packed"),
]


def emit(record: dict) -> None:
    with open(os.path.join(os.environ["OUT"], "probe.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def rows_of(task: str):
    return data.load_split(get_task(task), "local", glue_dir=os.environ["EFFBERT_GLUE_DIR"])


def load(model_dir: str, task: str, technique):
    return DistilBertForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=get_task(task).num_labels,
        attn_implementation=technique.attn_implementation,
        ignore_mismatched_sizes=True,
    ).eval()


def compile_times() -> dict | str:
    try:
        names, values = torch._dynamo.utils.compile_times(repr="csv")
        return dict(zip(names, values, strict=True))
    except Exception as err:  # the probe reports, it does not stop
        return repr(err)


def compiled(stage: str, model_dir: str, tokenizer, device) -> None:
    """Each point: apply the technique, then timed passes over the dev batches (one in
    ``warm``, three in ``cell``), with dynamo's and inductor's counters."""
    for task, name, batch_size, padding in POINTS:
        counters.clear()
        technique = techniques.parse(name)
        batches = data.make_batches(tokenizer, rows_of(task), batch_size, padding, 128)
        start = time.perf_counter()
        shape_rows = techniques.static_rows(technique, batch_size, padding, "model")
        prepared = models.apply_technique(
            load(model_dir, task, technique), technique, device, None, shape_rows
        )
        inputs = [prepared.inputs(b) for b in batches]
        forward = prepared.forward()
        times = {"apply_s": time.perf_counter() - start}
        with prepared.context():
            for k in range(3 if stage == "cell" else 1):
                start = time.perf_counter()
                for x in inputs:
                    forward(x)
                torch.cuda.synchronize()
                times[f"pass{k + 1}_s"] = time.perf_counter() - start
        emit(
            {
                "stage": stage,
                "task": task,
                "technique": name,
                "batches": len(inputs),
                **{k: round(v, 2) for k, v in times.items()},
                "inductor": {
                    k: v for k, v in counters["inductor"].items() if "cache" in k or "graph" in k
                },
                "aot": dict(counters["aot_autograd"]),
                "stats": dict(counters["stats"]),
                "graph_breaks": sum(counters["graph_break"].values()),
                "recompiles": (
                    sum(counters["recompiles"].values()) if "recompiles" in counters else None
                ),
                "compile_times": compile_times(),
            }
        )


def eager_int8(model_dir: str, tokenizer, device) -> None:
    """Eager int8's after-window passes, one by one: latency, kernel records of 16 and of 4
    batches, and the metric pass."""
    technique = techniques.parse("int8")
    for task in ("sst2", "cola"):
        prepared = models.apply_technique(load(model_dir, task, technique), technique, device)
        rows = rows_of(task)
        batches = data.make_batches(tokenizer, rows, 16, "max_length", 128)
        inputs = [prepared.inputs(b) for b in batches]
        forward = prepared.forward()
        record = {"stage": "int8", "task": task, "batches": len(inputs)}
        with prepared.context():
            start = time.perf_counter()
            for x in inputs:
                forward(x)
            torch.cuda.synchronize()
            record["pass_s"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            record["latency"] = measure.latency_ms(forward, inputs, device, 50)
            record["latency_s"] = round(time.perf_counter() - start, 2)
            for k in (16, 4):
                picked = measure.spread(len(inputs), k)

                def part(picked=picked, forward=forward, inputs=inputs) -> None:
                    for i in picked:
                        forward(inputs[i])

                start = time.perf_counter()
                profiled = kernels.kernel_record(part, technique, device, k / len(inputs))
                record[f"kernels{k}_s"] = round(time.perf_counter() - start, 2)
                record[f"busy_ms{k}"] = profiled.get("busy_ms")
                record[f"top{k}"] = [x["name"][:40] for x in profiled["top"][:3]]
        start = time.perf_counter()
        prepared.predict(batches, len(rows))
        record["predict_s"] = round(time.perf_counter() - start, 2)
        emit(record)


def main(stage: str, model_dir: str) -> None:
    emit({"stage": stage, "import_s": round(IMPORT_S, 1)})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device = torch.device("cuda")
    if stage in ("warm", "cell"):
        compiled(stage, model_dir, tokenizer, device)
    elif stage == "int8":
        eager_int8(model_dir, tokenizer, device)
    emit({"stage": stage, "done": True})


if __name__ == "__main__":
    main(*sys.argv[1:3])
