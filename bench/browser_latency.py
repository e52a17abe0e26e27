"""Click to caption in a real browser: headless Chromium on the running app, the default `photo` preset.

    python bench/browser_latency.py [--images 8] [--json results/browser_latency.json]

Starts ``python app.py`` (as ``bench/app_latency.py`` does), opens the page in Debian's Chromium (Playwright, as the
browser tests do), and for each of the first ``--images`` val-dev photos after one warm-up photo: uploads it, waits
for the upload to settle, clicks *Caption* and times until the caption box is filled and the regions image is shown
(what a visitor waits for, page drawing included). Prints and writes the median and maximum. The question figure is
``bench/app_latency.py``'s (through ``gradio_client``). Figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.app_latency import summary  # noqa: E402
from bench.app_serving import report, running_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from zsc_core.device import cpu_summary
    from zsc_core.evaluation import coco_items

    paths = [p for p, _ in coco_items("val-dev")[:args.images + 1]]
    out: dict = {"machine": f"{os.cpu_count()} CPUs, {cpu_summary()}", "browser": "headless Chromium",
                 "images": args.images}
    with running_app() as (url, _, secs):
        out["cold_start_s"] = round(secs, 2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(120_000)
            page.goto(url)
            caption = page.get_by_label("Caption", exact=True)
            button = page.get_by_role("button", name="Caption", exact=True)
            times = []
            for i, path in enumerate(paths):
                page.locator("input[type=file]").first.set_input_files(path)
                # the upload clears the outputs (the app's "clear" event); let it settle
                page.wait_for_function("el => el.value.length === 0", arg=caption.element_handle())
                time.sleep(1.0)
                t = time.perf_counter()
                button.click()
                page.wait_for_function("el => el.value.length > 0", arg=caption.element_handle())
                page.locator("#regions img").first.wait_for(state="visible")
                dt = time.perf_counter() - t
                print(f"{os.path.basename(path)}: {dt:.2f} s {caption.input_value()!r}", flush=True)
                if i:  # the first is the warm-up
                    times.append(dt)
            browser.close()
        out["caption"] = summary(times)
    return report(out, args.json)


if __name__ == "__main__":
    main()
