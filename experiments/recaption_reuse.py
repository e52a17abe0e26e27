"""A re-caption with a prompt after the photo's caption: does reading the shown caption as the rough one save its
decode, and is the refined caption the same? (issue #55, per-image work shared)

    python -m experiments.recaption_reuse      # -> results/recaption_reuse.json

Through ``CaptionService`` (what the app calls), the ``photo`` preset at its own settings, the first 8 val-dev
photos, after one warm-up photo: the caption, then the re-caption with the app's example prompt (its rough caption
read from the memo of what the Caption tab showed), then the same re-caption by a service that showed nothing
(it decodes its rough caption first, as every re-caption did before). The two re-captions must agree (caption,
rough caption, retrieved caption). One thread of work at a time, torch's default threads.
"""

from __future__ import annotations

import os
import statistics
import time

OUT = "results/recaption_reuse.json"


def main(out: str = OUT, images: int = 8) -> dict:
    from bench.app_serving import report as bench_report
    from zsc_core.device import cpu_summary
    from zsc_core.evaluation import coco_items
    from zsc_core.models import ModelCache
    from zsc_core.presets import EXAMPLE_PROMPTS
    from zsc_core.service import CaptionMemo, CaptionService

    example_prompt = next(iter(EXAMPLE_PROMPTS.values()))  # the app's example prompt
    service = CaptionService(ModelCache(device="cpu"))
    paths = [p for p, _ in coco_items("val-dev")[:images + 1]]
    service.caption(paths[0], "photo")
    service.caption(paths[0], "photo", prompt=example_prompt)  # warm: the prompt model, spaCy
    times: dict[str, list[float]] = {"caption": [], "re-caption after the caption (reads it)": [],
                                     "re-caption, nothing shown before (decodes it)": []}
    rows = []
    for path in paths[1:]:
        took = []
        for prompt, memo in ((None, None), (example_prompt, None), (example_prompt, CaptionMemo())):
            if memo is not None:
                service.memo = memo
            t = time.perf_counter()
            view = service.caption(path, "photo", prompt=prompt)
            took.append(time.perf_counter() - t)
            rows.append(view)
        plain, read, fresh = rows[-3:]
        assert (read.caption, read.rough_caption, read.retrieved) == (fresh.caption, fresh.rough_caption,
                                                                      fresh.retrieved), (read, fresh)
        for name, dt in zip(times, took):
            times[name].append(dt)
        print(f"{os.path.basename(path)}: " + " / ".join(f"{x:.2f}" for x in took)
              + f" s  {plain.caption!r} -> {read.caption!r}", flush=True)
    report = {"machine": f"{os.cpu_count()} CPUs, {cpu_summary()}", "images": images, "prompt": example_prompt,
              "same_refined_captions": True,
              "seconds": {k: {"median_s": round(statistics.median(v), 2), "max_s": round(max(v), 2)}
                          for k, v in times.items()}}
    return bench_report(report, out)


if __name__ == "__main__":
    main()
