"""Drive JupyterLab in headless Chromium: open a notebook (.py via jupytext), check it opens
clean, run all cells, save, screenshot; print what was seen."""
import sys, time
from playwright.sync_api import sync_playwright

BASE = "http://localhost:8899"
name = sys.argv[1]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{BASE}/lab/tree/notebooks/{name}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector("text=Idle", timeout=120_000) if False else time.sleep(8)
    tab = page.locator(".lm-TabBar-tab.lm-mod-current").first
    print("opened; dirty:", "jp-mod-dirty" in (tab.get_attribute("class") or ""))
    page.screenshot(path=f"/tmp/labrun/{name}-opened.png")
    page.locator(".jp-Notebook").first.click()
    page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li.lm-Menu-item:has-text('Run All Cells')")
    t0 = time.time()
    time.sleep(3)
    while time.time() - t0 < 300:
        prompts = page.locator(".jp-InputPrompt").all_inner_texts()
        busy = [x for x in prompts if "*" in x]
        empty = [x for x in prompts if x.strip() in ("[ ]:", "")]
        if not busy and not empty:
            break
        time.sleep(2)
        if int(time.time() - t0) % 30 < 2: print(int(time.time()-t0), prompts, flush=True)
    print(f"ran all in {time.time() - t0:.0f} s; prompts: {prompts}")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
    print("error outputs:", page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count(), "stderr outputs:", errors)
    page.keyboard.press("Control+s")
    time.sleep(4)
    print("after save; dirty:", "jp-mod-dirty" in (tab.get_attribute("class") or ""))
    page.screenshot(path=f"/tmp/labrun/{name}-ran.png", full_page=False)
    browser.close()
