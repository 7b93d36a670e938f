import pandas as pd
import pytest
from PIL import Image

from effbert import plots


def summary(energy=True):
    rows = []
    for task, metric in [("sst2", 0.9), ("mrpc", 0.85)]:
        for technique, scale in [("fp32", 1.0), ("fp16", 0.25), ("int8", 2.5)]:
            rows.append(
                {
                    "profile": "p",
                    "task": task,
                    "technique": technique,
                    "batch_size": 16,
                    "metric": "accuracy",
                    "metric_value": metric - 0.01 * scale,
                    "energy_source": "nvml" if energy else "none",
                    "device_name": "GPU",
                    "j_per_1k_samples_mean": 200 * scale if energy else float("nan"),
                    "j_per_1k_samples_ci95": 5.0,
                    "samples_per_s_mean": 3000 / scale,
                    "samples_per_s_ci95": 50.0,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("energy", [True, False])
def test_all_five_figures_are_written(tmp_path, energy):
    paths = plots.save_all(summary(energy), tmp_path)
    assert [p.name for p in paths] == [f"{n}.png" for n in plots.FIGURES]
    for path in paths:
        width, height = Image.open(path).size
        assert width > 300 and height > 200


def test_technique_comparison_falls_back_to_throughput_without_energy():
    fig = plots.compare(summary(energy=False), ["fp16"])
    assert fig.axes[0].get_ylabel() == "samples per second"
    fig = plots.compare(summary(energy=True), ["fp16"])
    assert "energy" in fig.axes[0].get_ylabel()
