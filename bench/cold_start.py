"""Cold start, launch by launch: how long a visitor of a fresh server waits for the page, and for a first caption.

    python bench/cold_start.py [--launches 3] [--json results/cold_start.json]

Starts ``python app.py`` (the ``photo`` default) ``--launches`` times, one after the other. For each: the seconds
from process start until the server answers HTTP (the page), and until the first caption of a val-dev photo comes
back through ``gradio_client`` when it is asked at once (it waits behind the model's load and is served when the
load ends). Prints and writes each launch and the medians. Figures depend on the machine (named in the report) and
on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.app_serving import report, running_app  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--launches", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file

    from zsc_core.device import cpu_summary
    from zsc_core.evaluation import coco_items

    path = coco_items("val-dev")[0][0]
    runs = []
    for _ in range(args.launches):
        t0 = time.perf_counter()
        with running_app() as (url, _, secs), tempfile.TemporaryDirectory() as d:
            client = Client(url, verbose=False, download_files=d)
            caption = client.predict(handle_file(path), "photo", None, None, None, None, None, api_name="/caption")[0]
            runs.append({"page_s": round(secs, 2), "first_caption_s": round(time.perf_counter() - t0, 2)})
            print(runs[-1], repr(caption), flush=True)
    out = {"machine": f"{os.cpu_count()} CPUs, {cpu_summary()}", "launches": runs,
           "median_page_s": round(statistics.median(r["page_s"] for r in runs), 2),
           "median_first_caption_s": round(statistics.median(r["first_caption_s"] for r in runs), 2)}
    return report(out, args.json)


if __name__ == "__main__":
    main()
