import base64
import io
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from effbert import figures, plots, stats
from effbert.techniques import TECHNIQUES

PNG = b"\x89PNG\r\n\x1a\n"


def summary(energy=True, tasks=("mrpc", "sst2"), techniques=("int8", "fp32", "fp16")):
    scales = {"fp32": 1.0, "fp16": 0.25, "int8": 2.5}
    metrics = {"sst2": "accuracy", "mrpc": "f1", "cola": "matthews_correlation"}
    rows = []
    for task in tasks:
        for technique in techniques:
            scale = scales.get(technique, 0.5)
            rows.append(
                {
                    "profile": "p",
                    "task": task,
                    "technique": technique,
                    "batch_size": 16,
                    "metric": metrics.get(task, "pearson"),
                    "metric_value": 0.9 - 0.01 * scale,
                    "energy_source": "nvml" if energy else "none",
                    "device_name": "GPU",
                    "j_per_1k_samples_mean": 200 * scale if energy else float("nan"),
                    "j_per_1k_samples_ci95": 5.0,
                    "samples_per_s_mean": 3000 / scale,
                    "samples_per_s_ci95": 50.0,
                }
            )
    return pd.DataFrame(rows)


def drawn(fig):
    fig.draw_without_rendering()
    return fig


def error_segments(ax):
    """(x, low, high) of each vertical error bar drawn on the axes."""
    segments = []
    for container in ax.containers:
        if getattr(container, "errorbar", None) is not None:
            for collection in container.errorbar.lines[2]:
                segments += [(s[0][0], s[0][1], s[1][1]) for s in collection.get_segments()]
    return segments


@pytest.mark.parametrize("energy", [True, False])
def test_every_figure_is_written(tmp_path, energy):
    paths = figures.save_all(summary(energy), tmp_path)
    assert figures.FIGURES == (
        "baseline",
        "energy",
        "glue",
        "throughput",
        "tradeoff",
        "frontier",
        "scopes",
        "waterfall",
    )
    # no end-to-end cells here, nor the waterfall's levers; without energy, only the figures
    # of metrics and throughput have something to draw (no file says "nothing measured")
    drawn = [n for n in figures.FIGURES if n not in ("scopes", "waterfall")]
    if not energy:
        drawn = ["glue", "throughput"]
    assert [p.name for p in paths] == [f"{n}.png" for n in drawn]
    for path in paths:
        width, height = Image.open(path).size
        assert width > 300 and height > 200


def test_ratio_interval_propagates_both_relative_errors():
    ratio, half = stats.ratio_ci95(50.0, 5.0, 200.0, 10.0)
    assert ratio == 0.25
    assert half == pytest.approx(0.25 * math.sqrt(0.1**2 + 0.05**2))
    assert stats.ratio_ci95(2.0, 0.0, 1.0, 0.0) == (2.0, 0.0)
    assert math.isnan(stats.ratio_ci95(2.0, float("nan"), 1.0, 0.1)[1])
    ratios, halves = stats.ratio_ci95([1.0, 4.0], [0.1, 0.4], [2.0, 2.0], [0.0, 0.0])
    np.testing.assert_allclose(ratios, [0.5, 2.0])
    np.testing.assert_allclose(halves, [0.05, 0.2])


def test_order_follows_the_study_then_unknown_names_sorted():
    assert plots.ordered(["zz", "mrpc", "aa", "sst2", "cola"], plots.TASKS) == [
        "cola",
        "sst2",
        "mrpc",
        "aa",
        "zz",
    ]


def test_importing_plots_leaves_the_notebook_backend_alone():
    inline = "module://matplotlib_inline.backend_inline"
    code = "import matplotlib, sys, effbert.plots; print(matplotlib.get_backend()); "
    code += "print('matplotlib.pyplot' in sys.modules)"
    env = {**os.environ, "MPLBACKEND": inline}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == [inline, "False"], out.stderr


def test_a_figure_displays_as_png_in_ipython():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats

    shell = InteractiveShell.instance()
    select_figure_formats(shell, {"png"})
    fig = plots.energy(summary())
    assert isinstance(fig, Figure)
    data, _ = shell.display_formatter.format(fig)
    png = data["image/png"]
    assert (png if isinstance(png, bytes) else base64.b64decode(png))[:8] == PNG


def test_bars_keep_study_order_and_legend_outside_the_axes():
    fig = drawn(plots.throughput(summary(techniques=("zz", "int8", "fp32", "fp16"))))
    (ax,) = fig.axes
    assert ax.get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["fp32", "int8", "fp16", "zz"]
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sst2", "mrpc"]


def test_energy_ratios_carry_intervals_from_both_cells():
    fig = plots.energy(summary(), "fp32")
    (ax,) = fig.axes
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.25, 0.25, 2.5, 2.5]
    _, half = stats.ratio_ci95(50.0, 5.0, 200.0, 5.0)
    lengths = sorted(high - low for _, low, high in error_segments(ax))
    assert lengths[0] == pytest.approx(2 * half)


def test_error_bars_never_go_below_zero():
    frame = summary().assign(samples_per_s_ci95=1e6, j_per_1k_samples_ci95=1e6)
    for fig in (plots.throughput(frame), plots.baseline(frame), plots.compare(frame, ["fp16"])):
        segments = error_segments(fig.axes[0])
        assert segments and min(low for _, low, _ in segments) == 0.0


def test_empty_data_gives_one_sentence_instead_of_axes():
    empty = summary().iloc[0:0]
    for fig in [getattr(plots, name, None) or getattr(figures, name) for name in figures.FIGURES]:
        fig = fig(empty)
        assert fig.axes == [] and len(fig.texts) == 1
    for name in ("baseline", "energy", "tradeoff"):
        fig = getattr(plots, name)(summary(energy=False))
        assert fig.axes == [] and "energy" in fig.texts[0].get_text()
    nan_energy = summary().assign(j_per_1k_samples_mean=float("nan"))
    assert plots.energy(nan_energy).axes == []
    assert plots.compare(empty, ["fp16"]).axes == []


def test_tradeoff_has_one_panel_per_task_in_its_metric():
    fig = drawn(plots.tradeoff(summary(tasks=("mrpc", "cola", "sst2"))))
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["cola", "sst2", "mrpc"]
    assert [ax.get_ylabel() for ax in panels] == [
        "Δ matthews_correlation",
        "Δ accuracy",
        "Δ f1",
    ]
    first = panels[0]
    points = {c.get_label(): c.lines[0].get_xydata()[0] for c in first.containers}
    np.testing.assert_allclose(points["fp16"], [0.25, 0.01 * 0.75])
    np.testing.assert_allclose(points["int8"], [2.5, -0.015])
    dashed = [line.get_xydata().tolist() for line in first.lines if line.get_linestyle() == "--"]
    assert [[1, 0], [1, 1]] in dashed and [[0, 0], [1, 0]] in dashed
    (legend,) = fig.legends
    assert legend.get_window_extent().x0 >= max(ax.get_window_extent().x1 for ax in panels)


@pytest.mark.parametrize(
    "frame",
    [
        summary()[["task", "technique", "metric_value", "j_per_1k_samples_mean"]],
        summary().assign(j_per_1k_samples_ci95=np.nan, samples_per_s_ci95=np.nan),
        summary(tasks=("sst2",)),
        summary(techniques=("fp32",)),
        summary(techniques=("fp16",)),
    ],
    ids=["missing-columns", "single-trial", "one-task", "only-baseline", "no-baseline"],
)
def test_figures_tolerate_sparse_summaries(tmp_path, frame):
    for path in figures.save_all(frame, tmp_path):
        assert path.read_bytes()[:8] == PNG
    assert isinstance(plots.compare(frame, ["fp16"]), Figure)


def test_technique_comparison_falls_back_to_throughput_without_energy():
    fig = plots.compare(summary(energy=False), ["fp16"])
    assert fig.axes[0].get_ylabel() == "samples per second"
    fig = plots.compare(summary(energy=True), ["fp16"])
    assert "energy" in fig.axes[0].get_ylabel()


def test_scopes_figure_puts_both_scopes_of_a_configuration_side_by_side():
    model = summary(tasks=("sst2",), techniques=("fp32", "fp16")).assign(
        scope="model", padding="max_length"
    )
    e2e = model.assign(scope="end_to_end", j_per_1k_samples_mean=model["j_per_1k_samples_mean"] * 3)
    fig = figures.scopes(pd.concat([model, e2e], ignore_index=True))
    (ax,) = fig.axes
    bars = [p for p in ax.patches]
    assert len(bars) == 4  # two configurations, each in both scopes
    widths = sorted(round(b.get_width()) for b in bars)
    assert widths == [50, 150, 200, 600]
    assert {t.get_text() for t in ax.get_yticklabels()} == {
        "fp32 · bs16 · max_length",
        "fp16 · bs16 · max_length",
    }
    assert "No end-to-end" in figures.scopes(model).texts[0].get_text()


def test_baseline_shows_the_part_above_idle_power_where_recorded():
    frame = summary().assign(dynamic_j_per_1k_samples_mean=120.0)
    fig = plots.baseline(frame)
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert [round(p.get_height()) for p in hatched] == [120, 120]
    assert not [p for p in plots.baseline(summary()).axes[0].patches if p.get_hatch()]


def test_every_technique_of_a_figure_gets_its_own_colour():
    among = [*TECHNIQUES, "fp32+compile", "int8+compile", "fp8+varlen+compile+cls_last"]
    among += ["bf16+varlen+graphs+cls_last", "bf16+flex+compile+cls_last"]
    colours = [plots._style(t, among)["color"] for t in among]
    assert len(set(colours)) == len(among)
    # the same technique keeps its style where the figure's set is smaller
    assert plots._style("fp32+compile", among) == plots._style("fp32+compile", ["fp32+compile"])
    many = [f"t{i}+compile" for i in range(40)]  # more than the colours: shared, not stuck
    assert len({plots._style(t, many)["color"] for t in many}) == len(plots._COLOURS) - len(
        TECHNIQUES
    )


def test_the_scopes_figure_is_saved_only_for_records_with_end_to_end_cells(tmp_path):
    forward = summary(True)
    stale = tmp_path / "scopes.png"
    stale.write_bytes(b"an earlier run's figure")
    assert stale not in figures.save_all(forward, tmp_path) and not stale.exists()
    both = pd.concat([forward.assign(scope="model"), forward.assign(scope="end_to_end")])
    assert stale in figures.save_all(both, tmp_path)
    assert stale.read_bytes()[:8] == PNG


def test_the_waterfall_is_drawn_where_its_levers_are_measured(tmp_path):
    from effbert import stats

    rows = []
    for i, (_, technique, batch_size, padding) in enumerate(stats.WATERFALL_STEPS[:4]):
        rows.append(
            {
                "task": "sst2",
                "technique": technique,
                "batch_size": batch_size,
                "padding": padding,
                "j_per_1k_samples_mean": 200.0 / (i + 1),
                "j_per_1k_samples_ci95": 1.0,
                "dynamic_j_per_1k_samples_mean": 150.0 / (i + 1),
            }
        )
    frame = pd.DataFrame(rows)
    table = stats.waterfall(frame, "sst2")
    assert table["factor"].round(3).tolist()[1:] == [2.0, 1.5, 1.333]
    assert figures.has_waterfall(frame) and figures.waterfall(frame).axes
    assert (tmp_path / "waterfall.png") not in figures.save_all(frame.iloc[:2], tmp_path)


def test_the_waterfall_figure_shows_complete_waterfalls_and_counts_joined_levers():
    """SST-2 with every step and MRPC with three (original, two levers joined, the last):
    the figure holds SST-2 alone; drawn alone, MRPC's joined bar counts its levers."""
    import warnings

    from effbert import stats

    def cells(task, steps):
        return [
            {
                "task": task,
                "technique": technique,
                "batch_size": batch_size,
                "padding": padding,
                "j_per_1k_samples_mean": 200.0 / (i + 1),
                "j_per_1k_samples_ci95": 1.0,
                "dynamic_j_per_1k_samples_mean": 150.0 / (i + 1),
            }
            for i, (_, technique, batch_size, padding) in enumerate(steps)
        ]

    steps = stats.WATERFALL_STEPS
    frame = pd.DataFrame(cells("sst2", steps) + cells("mrpc", [steps[0], *steps[-2:]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = figures.waterfall(frame)
        fig.savefig(io.BytesIO(), format="png")
        assert [ax.get_title(loc="left") or ax.get_title() for ax in fig.axes] == ["sst2"]
        mrpc = figures.waterfall(frame[frame["task"] == "mrpc"])
        mrpc.savefig(io.BytesIO(), format="png")
    labels = [t.get_text() for t in mrpc.axes[0].get_yticklabels()]
    assert any(label.startswith(f"{len(steps) - 2} levers: batch 512 …") for label in labels)


def test_legends_say_which_attention_kernel_ran_where_the_name_promised_another():
    """``flash`` cells that ran the memory-efficient kernel are labelled so in the figures and
    the findings; a technique that kept its promise keeps its name."""
    from effbert import kernels, tables

    rows = []
    for technique, kernel, energy in (
        ("fp32", "math", 200.0),
        ("flash", "memory-efficient", 190.0),
        ("bf16+varlen+graphs+cls_last", "flash", 5.0),
    ):
        rows.append(
            {
                "task": "sst2",
                "technique": technique,
                "batch_size": 16,
                "padding": "max_length",
                "max_length": 128,
                "scope": "model",
                "attention_kernel": kernel,
                "j_per_1k_samples_mean": energy,
                "j_per_1k_samples_ci95": 1.0,
                "dynamic_j_per_1k_samples_mean": energy / 2,
                "samples_per_s_mean": 1000.0,
                "samples_per_s_ci95": 10.0,
                "metric": "accuracy",
                "metric_value": 0.9,
                "cv_flag": False,
                "cell_id": technique,
            }
        )
    summary = pd.DataFrame(rows)
    assert kernels.ran_labels(summary) == {"flash": "flash (ran memory-efficient)"}
    fig = plots.energy(summary, "fp32")
    shown = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "flash (ran memory-efficient)" in shown and "flash" not in shown
    assert "**flash (ran memory-efficient)**" in tables.findings(summary)
