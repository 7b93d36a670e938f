"""The README's measured numbers are printed from committed records, not typed by hand."""

import pandas as pd
import pytest

from effbert import config, floor, kernels, report, results, runs, stats

README = (config.PROJ_ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    ("render", "reports_dir"),
    [
        (floor.floor_markdown, "reports/floor-packed"),
        (floor.floor_markdown, "reports/floor-packed-h100"),
        (floor.end_to_end_markdown, "reports/e2e"),
    ],
)
def test_readme_tables_are_printed_from_the_committed_records(render, reports_dir):
    table = render(config.PROJ_ROOT / reports_dir)
    assert table.count("\n") >= 3
    assert table in README


def test_the_floor_explanation_quotes_the_best_cells_recorded_kernels_and_power():
    paths = config.reports_paths(config.PROJ_ROOT / "reports" / "floor-packed")
    trials = results.read_results(paths["results"])
    summary = stats.summarize(trials)
    best = summary.loc[summary["j_per_1k_samples_mean"].idxmin()]
    record = results.cell_record(paths["cells"], best["cell_id"])
    split = kernels.kernel_split(record["kernels"])
    quoted = (
        f"matrix products {split['matrix products']:.0%}",
        f"the varlen flash-attention kernel {split['attention']:.0%}",
        f"element-wise work {split['element-wise and other']:.0%}",
        f"layer norm {split['layer norm']:.0%}",
    )
    text = " ".join(README.split())
    for phrase in quoted:
        assert phrase in text, phrase
    windows = pd.DataFrame(record["trials"])
    power_w = (windows["energy_j"] / windows["time_s"]).mean()
    assert f"the card draws {power_w:.0f} W" in text
    assert f"{best['technique']}" == "bf16+varlen+graphs+cls_last"


def test_the_published_studys_headline_claims_findings_and_gpu_time_come_from_its_records():
    text = report.published_markdown(config.PROJ_ROOT / "reports" / "study", "study")
    assert "| claim |" in text and "original / best" in text and "GPU-minutes" in text
    assert text in README


def test_the_studys_summary_quotes_its_records():
    paths = config.reports_paths(config.PROJ_ROOT / "reports" / "study")
    trials = results.read_results(paths["results"], "study")
    summary = stats.summarize(trials)
    ratios, unchanged, moved = [], [], []
    for _, cells in summary.groupby("task"):
        base = stats.original_cell(cells)
        best = cells.loc[cells["j_per_1k_samples_mean"].idxmin()]
        ratios.append(stats.energy_ratio(base, best)[0])
        change = best["metric_value"] - base["metric_value"]
        if change == 0:
            unchanged.append(best["task"])
        elif best["metric"] == "accuracy":
            window = trials[trials["cell_id"] == best["cell_id"]].iloc[0]
            rows = round(window["n_samples"] / window["passes"])
            moved.append(f"accuracy moves by {round(change * rows)} of its {rows} examples")
        else:
            moved.append(f"{best['metric']} by {change:.5f}")
    text = " ".join(README.split())
    assert f"uses {min(ratios):.0f}–{max(ratios):.0f}× less energy per sample" in text
    words = ["no", "one", "two", "three", "four", "five", "six"]
    assert f"with the same task metric on {words[len(unchanged)]} tasks" in text
    for phrase in moved:
        assert phrase in text, phrase
    packed = trials[trials["padding"] == "packed"]
    per_sample = (
        packed.groupby("task")["n_tokens"].first() / packed.groupby("task")["n_samples"].first()
    )
    shortest, longest = per_sample.idxmin(), per_sample.idxmax()
    names = {"cola": "CoLA", "rte": "RTE", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B"}
    assert f"{names[shortest]}'s sentences are the shortest, {names[longest]}'s the longest" in text


def _best_end_to_end(reports_dir: str):
    paths = config.reports_paths(config.PROJ_ROOT / "reports" / reports_dir)
    table = floor.end_to_end_table(stats.summarize(results.read_results(paths["results"])))
    e2e = table[table["scope"] == "end_to_end"]
    return e2e.loc[e2e["GPU J/1k"].str.split(" ").str[0].astype(float).idxmin()]


def test_the_end_to_end_summary_quotes_the_best_cells_ratios():
    best, first = _best_end_to_end("e2e"), _best_end_to_end("e2e-first")
    text = " ".join(README.split())
    assert f"uses {best['pipeline defaults / this']}× less GPU energy per sample" in text
    assert f"and {best['this / best forward']}× its best forward-only cell" in text
    assert f"it runs at {float(best['samples/s'].replace(',', '')) / 1e3:.1f}k samples/s" in text
    assert f"gave {first['this / best forward']}× at about " in text
    assert f"{float(first['samples/s'].replace(',', '')) / 1e3:.0f}k samples/s" in text


def test_the_floor_gaps_explanation_quotes_the_window_split_and_power():
    paths = config.reports_paths(config.PROJ_ROOT / "reports" / "floor-gaps")
    trials = results.read_results(paths["results"])
    summary = stats.summarize(trials)
    text = " ".join(README.split())

    def split_of(cell):
        record = results.cell_record(paths["cells"], cell["cell_id"])
        windows = trials[trials["cell_id"] == cell["cell_id"]]
        return record, windows, kernels.window_split(record["kernels"], windows)

    best = summary.loc[summary["j_per_1k_samples_mean"].idxmin()]
    record, windows, split = split_of(best)
    assert f"Batch {best['batch_size']} (one batch of all" in text
    quoted = (
        f"no kernel running: {split['no kernel running']:.0%}",
        f"matrix products {split['matrix products']:.0%}",
        f"the varlen flash-attention kernel {split['attention']:.0%}",
        f"element-wise work {split['element-wise and other']:.0%}",
        f"layer norm {split['layer norm']:.0%} of the windows' time",
        f"the card at {(windows['energy_j'] / windows['time_s']).mean():.0f} W",
    )
    for phrase in quoted:
        assert phrase in text, phrase
    assert round(4 * (1 - 3.0 / best["j_per_1k_samples_mean"])) == 1  # 3 J/1k: a quarter less
    assert "needs about a quarter less GPU time per sample" in text
    original = stats.original_cell(summary)
    _, _, original_split = split_of(original)
    assert f"without a kernel for {original_split['no kernel running']:.0%} of its" in text
    gaps = [
        results.cell_record(paths["cells"], c)["kernels"]["idle_gap_share"]
        for c in summary["cell_id"]
    ]
    assert f"{100 * min(gaps):.0f}–{max(gaps):.0%} in these records" in text


def test_the_worker_agreement_shown_is_the_committed_output():
    output = (config.PROJ_ROOT / "reports/bench_workers-4gpu.txt").read_text()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[0].split()[:2] == ["task", "technique"]
    assert all(line.split()[-1] == "True" for line in lines[1:9])  # every cell agrees
    for line in lines:
        assert line in README, line


def test_the_study_record_count_quoted_is_the_committed_one():
    cells = list((config.PROJ_ROOT / "reports/study/results/cells/study").glob("*.json"))
    assert f"{len(cells)} cell records before and after" in " ".join(README.split())


def _measuring_minutes(reports_dir) -> float:
    (whole,) = [
        r
        for r in runs.run_records(reports_dir, "study")
        if r["kind"] == "reproduce" and r["cells_measured"]
    ]
    return whole["wall_s"] / 60


def test_the_study_time_on_one_and_two_gpus_and_their_agreement_come_from_the_records():
    """The published study on one GPU; two GPUs against their one-GPU partner of the same code
    and host; the published study against that partner, cell by cell."""
    one_gpu, two_gpus, partner = (
        config.PROJ_ROOT / "reports" / name for name in ("study", "study-2gpu", "study-1gpu-shared")
    )
    for reports_dir, gpus in ((one_gpu, "1 × NVIDIA H200"), (two_gpus, "2 × NVIDIA H200")):
        timed = runs.time_markdown(reports_dir, "study")
        assert "| whole run |" in timed and gpus in timed
        assert timed in README
    agreed = runs.agreement_markdown(two_gpus, partner, "study")
    assert agreed.endswith(".") and "GPU 1" in agreed and "GPU 2" in agreed
    assert agreed in README
    assert runs.agreement_markdown(one_gpu, partner, "study") in README
    text = " ".join(README.split())
    published, paired, two = (_measuring_minutes(d) for d in (one_gpu, partner, two_gpus))
    assert published <= 15, "the goal: the whole study in 15 minutes on one GPU"
    assert f"The whole study took {published:.1f} minutes on one H200" in text
    assert f"faster ({paired:.1f} → {published:.1f} min)" in text
    assert f"Wall time falls from {paired:.1f} to {two:.1f} minutes" in text
    assert f"it took {paired:.1f} minutes on one GPU of a shared host and {two:.1f}" in text
    trials = results.read_results(config.reports_paths(one_gpu)["results"], "study")
    first = trials.groupby("cell_id").first()
    int8 = first[first["technique"] == "int8"]["finish_s"]
    assert f"took {int8.min():.0f}–{int8.max():.0f} s each" in text
    assert f"still cost {int8.sum():.0f} s over six tasks" in text


def test_a_replay_of_the_published_study_measured_nothing():
    """Its last run record: a whole run over the committed records that measured no cell."""
    records = runs.run_records(config.PROJ_ROOT / "reports" / "study", "study")
    replay = records[-1]
    assert replay["kind"] == "reproduce" and replay["cells_measured"] == 0
    assert set(replay["notebooks"]) == {
        "00-check-environment",
        "10-finetune-checkpoints",
        "20-measure-techniques",
        "70-measure-frontier",
        "90-analyze-results",
    }
    assert f"again ({replay['wall_s']:.0f} s;" in " ".join(README.split())


def test_the_time_split_of_a_two_gpu_run_counts_gpu_time_held():
    two_gpus = config.PROJ_ROOT / "reports" / "study-2gpu"
    split = runs.time_split(two_gpus, "study").set_index("part")["gpu_time_s"]
    records = runs.run_records(two_gpus, "study")
    (whole,) = [r for r in records if r["kind"] == "reproduce"]
    (finetune,) = [r for r in records if r["kind"] == "finetune"]
    assert whole["gpu_count"] == 2 and len(finetune["gpus"]) == 2
    assert split["whole run"] == round(2 * whole["wall_s"])
    assert split["fine-tuning the checkpoints"] == round(2 * finetune["wall_s"])
    assert abs(split.drop("whole run").sum() - split["whole run"]) <= len(split)  # rounding
