"""The README is a front page whose numbers are printed from committed records: the answer
(its number and both commands on the first screen), the claims, and links that resolve."""

import re

from effbert import config, floor, report, results

README = (config.PROJ_ROOT / "README.md").read_text()


def test_the_answer_and_both_commands_are_on_the_first_screen():
    first = "\n".join(README.splitlines()[:40])
    answer = report.answer_markdown(config.PROJ_ROOT / "reports" / "study", "study")
    number = re.search(r"\*\*([0-9.]+)× less energy\*\*", answer).group(1)
    assert f"**{number}× less energy**" in first
    assert "make smoke" in first and "make reproduce PROFILE=study" in first
    assert "make test" in README


def test_the_answer_and_claims_are_printed_from_the_records():
    study = config.PROJ_ROOT / "reports" / "study"
    assert report.answer_markdown(study, "study") in README
    assert report.claims_lines(study, "study") in README


def test_the_fp8_floor_numbers_are_the_records_of_its_run():
    trials = results.read_results(config.PROJ_ROOT / "reports" / "floor-fp8-tanh" / "results")
    best = ("fp8s+varlen_mem+graphs+cls_last+tanh_gelu", 1024)
    bf16 = ("bf16+varlen_mem+graphs+cls_last+epilogue", 1024)
    exact_gelu = ("fp8s+varlen_mem+graphs+cls_last", 1024)
    text = " ".join(README.split())

    def row(reference):
        table = floor.paired_rows(trials, "sst2", reference)
        return table[(table["technique"] == best[0]) & (table["batch"] == best[1])].iloc[0]

    def interval(cell: str) -> str:  # "76.1× [73.6, 78.7]", "0.961 [0.93, 0.994]"
        value, low, high = (float(x) for x in re.findall(r"[0-9.]+", cell))
        digits = 1 if value > 10 else 3
        return f"{value:.{digits}f}× [{low:.{digits}f}, {high:.{digits}f}]"

    assert f"{interval(row(('fp32', 16))['reference / this'])} below the original" in text
    assert f"{interval(row(exact_gelu)['this / reference'])} of the exact GELU" in text
    assert f"{row(bf16)['this / reference'].split()[0]}× the bf16 best" in text
    assert f"took SST-2 to {row(('fp32', 16))['J/1k']:.2f} J/1k" in text
    every_task = floor.every_task_rows(trials).set_index("task")
    for task, name in (("rte", "RTE"), ("cola", "CoLA")):
        ratio = every_task.loc[task, "original / this"].split()[0]
        assert f"{ratio} ({name})" in text


def test_every_local_link_and_image_resolves():
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    local = [t for t in targets if not t.startswith("http")]
    assert local
    missing = [t for t in local if not (config.PROJ_ROOT / t).exists()]
    assert not missing, missing


def test_the_readme_stays_a_front_page():
    assert len(README.splitlines()) <= 160
