"""Probe for the energy floor: static-scale FP8 matrix products against today's best (bf16,
packed, memory-efficient varlen attention, cls_last, GELU epilogue, CUDA graphs), on one CUDA
GPU, in alternating windows of one run. Weights are random with DistilBERT's shapes (energy
does not depend on their values); inputs are a dataset's token ids, one packed batch.

FP8 here is effbert's ``fp8s`` (``effbert.fp8``): every encoder Linear's weight in float8 e4m3
with one scale, its input cast with a scale calibrated once on the first 64 rows,
``torch._scaled_mm`` with the bias in its epilogue and bf16 out. (The run in
reports/probe-fp8 used this probe at 9c6356c, with its own copy of that layer calibrated on the
whole packed batch.)

    python scripts/probe_fp8.py --ids ids.json [--batch 872] [--trials 3] [--window-s 2]

``ids.json``: {"ids": [[token ids of one sequence], ...]}. Prints J per 1000 samples (total,
above idle), samples/s and power per variant, the ratio to the bf16 variant, the largest logit
difference, and each variant's top kernels from a profiler trace.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from effbert import fp8
from effbert.data import Batch
from effbert.packed import PackedClassifier, pack


def build(variant: str, base_state, config, calibration):
    """The bf16 best configuration, or with every encoder Linear in static FP8
    (``effbert.fp8``, fast accumulation only for ``fp8_fast``), compiled with CUDA graphs."""
    from transformers import DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(config)
    model.load_state_dict(base_state)
    model = model.to("cuda", torch.bfloat16).eval()
    quantized = variant.startswith("fp8")
    if quantized:
        fp8.to_static_fp8(model, calibration, "cuda")
        for module in model.modules():
            if isinstance(module, fp8.StaticFP8Linear):
                module.fast_accum = variant.endswith("fast")
    packed = PackedClassifier(
        model, cls_last=True, kernel="memory-efficient", epilogue=not quantized
    )
    return torch.compile(packed, mode="reduce-overhead", dynamic=False)


def energy_mj(handle) -> float:
    import pynvml

    return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))


def window(run, handle, n_samples: int, seconds: float, preroll_s: float) -> dict:
    """A pre-roll that also sets the iteration count, then one window of that many forwards
    with one synchronisation at its end."""
    torch.cuda.synchronize()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < preroll_s:
        run()
        torch.cuda.synchronize()
        done += 1
    iterations = max(1, math.ceil(seconds * done / (time.perf_counter() - start)))
    e0, t0 = energy_mj(handle), time.perf_counter()
    for _ in range(iterations):
        run()
    torch.cuda.synchronize()
    time_s, energy_j = time.perf_counter() - t0, (energy_mj(handle) - e0) / 1000
    samples = iterations * n_samples
    return {
        "j_per_1k": 1000 * energy_j / samples,
        "samples_per_s": samples / time_s,
        "power_w": energy_j / time_s,
    }


def top_kernels(run, n: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            run()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events) or 1
    events.sort(key=lambda e: -e.self_device_time_total)
    return "; ".join(f"{e.key[:60]} {e.self_device_time_total / total:.1%}" for e in events[:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", required=True, help="JSON with 'ids': token ids per sequence")
    parser.add_argument("--batch", type=int, default=872, help="sequences in the packed batch")
    parser.add_argument("--trials", type=int, default=3, help="windows per variant")
    parser.add_argument("--window-s", type=float, default=2.0, help="seconds per window")
    parser.add_argument("--preroll-s", type=float, default=0.5, help="pre-roll per window")
    args = parser.parse_args()
    import pynvml
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    print(
        torch.cuda.get_device_name(0),
        "driver",
        pynvml.nvmlSystemGetDriverVersion(),
        "torch",
        torch.__version__,
        flush=True,
    )
    given = json.load(open(args.ids))["ids"]
    calibration = [  # the first rows, one per batch, as effbert.fp8 calibrates on train rows
        Batch(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long), torch.tensor([i]))
        for i, s in enumerate(given[: fp8.CALIBRATION_ROWS])
    ]
    ids = sorted(given, key=len)[: args.batch]
    width = max(map(len, ids))
    input_ids = torch.tensor([s + [0] * (width - len(s)) for s in ids])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
    inputs = {k: v.cuda() if torch.is_tensor(v) else v for k, v in pack(input_ids, mask).items()}
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=28996, num_labels=2)
    base_state = DistilBertForSequenceClassification(config).state_dict()

    time.sleep(1.0)
    e0, t0 = energy_mj(handle), time.perf_counter()
    time.sleep(3.0)
    idle_w = (energy_mj(handle) - e0) / 1000 / (time.perf_counter() - t0)
    print(f"idle {idle_w:.1f} W; {len(ids)} sequences, {int(mask.sum())} tokens", flush=True)

    variants = ["bf16", "fp8", "fp8_fast"]
    runs, logits = {}, {}
    for variant in variants:
        model = build(variant, base_state, config, calibration)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(3):
                out = model(**inputs)
            torch.cuda.synchronize()
            logits[variant] = out.float().clone()

        def run(model=model):
            with torch.inference_mode():
                model(**inputs)

        runs[variant] = run
        print(f"{variant}: compiled and captured in {time.perf_counter() - t0:.1f} s", flush=True)

    rows = {v: [] for v in variants}
    for trial in range(args.trials):
        order = variants[trial % 3 :] + variants[: trial % 3]
        for variant in order:
            rows[variant].append(
                window(runs[variant], handle, len(ids), args.window_s, args.preroll_s)
            )
    base = [r["j_per_1k"] for r in rows["bf16"]]
    for variant in variants:
        j = [r["j_per_1k"] for r in rows[variant]]
        mean = sum(j) / len(j)
        dynamic = mean - idle_w * 1000 / (sum(r["samples_per_s"] for r in rows[variant]) / len(j))
        ratio = math.exp(sum(math.log(a / b) for a, b in zip(j, base, strict=True)) / len(j))
        diff = float((logits[variant] - logits["bf16"]).abs().max())
        agree = float((logits[variant].argmax(1) == logits["bf16"].argmax(1)).float().mean())
        print(
            f"{variant}: {mean:.3f} J/1k (trials {', '.join(f'{x:.3f}' for x in j)}), above "
            f"idle {dynamic:.3f}, {sum(r['samples_per_s'] for r in rows[variant]) / len(j):,.0f}"
            f" samples/s, {sum(r['power_w'] for r in rows[variant]) / len(j):.0f} W; / bf16 "
            f"{ratio:.3f} (paired by round); largest logit difference {diff:.4f}, argmax "
            f"agreement {agree:.4f}",
            flush=True,
        )
    for variant in variants:
        print(f"{variant} top kernels: {top_kernels(runs[variant])}", flush=True)


if __name__ == "__main__":
    main()
