"""What a visitor waits for in the running app, one request at a time: cold start, a caption, a question.

    python bench/app_latency.py [--images 8] [--json results/app_latency.json]

Starts ``python app.py`` (the ``photo`` default) as a separate process and times, from process start, until the
server answers HTTP (the cold start). Then, one request in flight at a time through ``gradio_client`` (upload,
queue, the model's work, the regions image and the table sent back: what a browser's click waits for, less the
page's own drawing), it captions the first ``--images`` val-dev photos at the model's own settings, each twice (the
second is warm), asks each photo the four questions of ``bench/photo_latency.py`` after its caption, as a
visitor of the Ask tab would, then re-captions it with the app's example prompt (its rough caption is the one the
Caption tab showed). The first caption is reported apart (it may wait for the warm-up still running in
the background). Prints and writes the medians and maxima, and the server's peak resident memory (VmHWM). The
model's own seconds are ``bench/photo_latency.py``'s: the difference is what the app adds. Figures depend on the
machine and on what else runs on it: say which when reporting them.
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

from bench.app_serving import peak_rss_gb, report, rss_split_gb, running_app  # noqa: E402
from bench.photo_latency import QUESTIONS  # noqa: E402
from zsc_core.presets import EXAMPLE_PROMPTS  # noqa: E402

PROMPT = next(iter(EXAMPLE_PROMPTS.values()))  # the app's example prompt


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median_s": round(statistics.median(xs), 3), "max_s": round(max(xs), 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file

    from zsc_core.device import cpu_summary
    from zsc_core.evaluation import coco_items

    paths = [p for p, _ in coco_items("val-dev")[:args.images]]
    out: dict = {"machine": f"{os.cpu_count()} CPUs, {cpu_summary()}", "images": len(paths)}
    with running_app() as (url, proc, secs), tempfile.TemporaryDirectory() as d:
        out["cold_start_s"] = round(secs, 2)
        print(f"serving after {secs:.1f} s", flush=True)
        client = Client(url, verbose=False, download_files=d)
        own = ("photo", None, None, None, None, None)  # preset; samples, sigma2, n_cr, beams, seed: its own
        first, captions, questions, recaptions = None, [], [], []
        for i, path in enumerate(paths):
            for rep in range(2):
                t = time.perf_counter()
                caption = client.predict(handle_file(path), *own, api_name="/caption")[0]
                dt = time.perf_counter() - t
                if i == 0 and rep == 0:
                    first = dt
                else:
                    captions.append(dt)
            for q in QUESTIONS:
                t = time.perf_counter()
                client.predict(handle_file(path), q, "photo", api_name="/answer")
                questions.append(time.perf_counter() - t)
            t = time.perf_counter()  # then the photo re-captioned with the app's own example prompt
            refined = client.predict(handle_file(path), PROMPT, *own, None, api_name="/recaption")[3]
            recaptions.append(time.perf_counter() - t)
            print(f"{os.path.basename(path)}: {caption!r}; + {PROMPT!r}: {refined!r}", flush=True)
        out["first_caption_s"] = round(first, 3)
        out["first_caption_from_start_s"] = round(secs + first, 2)  # process start to the first caption shown
        out["caption"] = summary(captions)
        out["question"] = summary(questions)
        out["recaption"] = summary(recaptions)
        out["peak_rss_gb"] = round(peak_rss_gb(proc.pid), 2)
        out["rss_now"] = rss_split_gb(proc.pid)  # after the run: what of it is private, what file-backed
    return report(out, args.json)


if __name__ == "__main__":
    main()
