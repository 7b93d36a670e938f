"""The README is a front page whose numbers are printed from committed records: the answer
(its number and both commands on the first screen), the claims, and links that resolve."""

import re

from effbert import config, report

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


def test_every_local_link_and_image_resolves():
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    local = [t for t in targets if not t.startswith("http")]
    assert local
    missing = [t for t in local if not (config.PROJ_ROOT / t).exists()]
    assert not missing, missing


def test_the_readme_stays_a_front_page():
    assert len(README.splitlines()) <= 160
