"""Drive JupyterLab in headless Chromium as a user would: open a notebook (a jupytext .py),
report whether it opens modified, run all cells, save, report again, and screenshot it.

    make lab LAB_FLAGS="--port 8899 --no-browser --ServerApp.token= --ServerApp.password="
    python docs/screenshots/lab_session.py 00-check-environment.py [--browser PATH] [--out DIR]

Needs playwright (pip install playwright) and a Chromium (``--browser``, else playwright's own).
Afterwards ``git status`` shows whether saving changed a tracked file.
"""

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright


def is_dirty(page) -> bool:
    tab = page.locator(".lm-TabBar-tab.lm-mod-current").first
    return "jp-mod-dirty" in (tab.get_attribute("class") or "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="a file in notebooks/, e.g. 00-check-environment.py")
    parser.add_argument("--url", default="http://localhost:8899")
    parser.add_argument("--browser", help="a Chromium executable (default: playwright's)")
    parser.add_argument("--out", default=".", help="folder for the two screenshots")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    out = Path(args.out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{args.url}/lab/tree/notebooks/{args.notebook}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
        page.wait_for_selector(idle, timeout=120_000)
        print("opened; modified:", is_dirty(page))
        page.screenshot(path=str(out / f"{args.notebook}-opened.png"))
        code_prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
        last_before = code_prompts.all_inner_texts()[-1]  # an earlier run's count, or "[ ]:"
        page.locator(".jp-Notebook").first.click()
        page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
        page.click("li.lm-Menu-item:has-text('Run All Cells')")
        start = time.time()
        while time.time() - start < args.timeout_s:
            prompts = code_prompts.all_inner_texts()
            # done: no cell queued or running, and the last one has a new execution count
            last = prompts[-1].strip()
            if "*" not in "".join(prompts) and last not in ("", "[ ]:", last_before.strip()):
                break
            time.sleep(2)
        print(f"ran all in {time.time() - start:.0f} s; prompts: {prompts}")
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']").count()
        print("error outputs:", errors)
        page.keyboard.press("Control+s")
        time.sleep(4)
        print("after save; modified:", is_dirty(page))
        page.screenshot(path=str(out / f"{args.notebook}-ran.png"))
        browser.close()


if __name__ == "__main__":
    main()
