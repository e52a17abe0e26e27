"""Caption latency of the `photo` preset on real photos: S=1, S=20 and the app's setting (batched generate + rerank).

    python bench/photo_latency.py [--images 8] [--reps 2] [--json results/photo_latency.json]

Loads the preset as the app does (bridge: MobileNetV2 + MiniLM; TIPCap S4; SmolLM2-135M), captions the first
``--images`` val-dev photos one at a time, ``--reps`` times each after one warm-up call, and prints the median
seconds per photo for each setting with the stage split (encode / generate / rerank) and the process's peak
resident memory; with a caption bank, also its one-off load time (and its captions file's, under CIDEr-D
ranking) and S=20 under CLIP ranking, for the cost of the consensus ranking. Figures depend on the machine and
on what else runs on it: say which when reporting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    return float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="photo")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    import torch

    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.service import CPU_SAMPLES

    t = time.perf_counter()
    cap = Captioner.from_pretrained(args.preset)
    load_s = time.perf_counter() - t
    images = [load_image(p) for p, _ in coco_items("val-dev")[:args.images]]
    out = {"preset": args.preset, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch "
           f"{torch.__version__}, {torch.get_num_threads()} threads", "load_s": round(load_s, 2)}
    # the preset's own default (`photo`: each of S=20 samples a beam of 5, all 100 hypotheses ranked), one greedy
    # sample, and the greedy decoding the app uses (service.APP_BEAMS) at S=20 and at its CPU default S
    settings = {"S=1": {"samples": 1, "num_beams": 1}, "S=20 (the preset's default decoding)": {"samples": 20},
                "S=20 greedy": {"samples": 20, "num_beams": 1},
                f"S={CPU_SAMPLES} greedy (the app on CPU)": {"samples": CPU_SAMPLES, "num_beams": 1}}
    if cap.has_bank:  # the caption bank is read on first use (not at load): its one-off cost
        t = time.perf_counter()
        _ = cap.bank
        out["bank_load_s"] = round(time.perf_counter() - t, 3)
        if cap.config.ranking.rerank == "cider":  # its texts and n-gram frequencies, also read on first use
            t = time.perf_counter()
            cap.bank.captions()
            out["bank_captions_load_s"] = round(time.perf_counter() - t, 3)
        settings["S=20 greedy, CLIP rerank"] = {"samples": 20, "num_beams": 1, "rerank": "clip"}
    # 60 candidates the other way (README "More candidates, not better decoding"): 60 greedy samples
    settings["S=60 greedy"] = {"samples": 60, "num_beams": 1}
    for name, kw in settings.items():
        cap.caption(images[0], **kw)  # warm-up
        totals, stages = [], {"encode_s": [], "generate_s": [], "rerank_s": []}
        for _ in range(args.reps):
            for im in images:
                r = cap.caption(im, **kw)
                totals.append(r.timings["total_s"])
                for k in stages:
                    stages[k].append(r.timings[k])
        out[name] = {"median_s": round(statistics.median(totals), 3), "max_s": round(max(totals), 3),
                     **{k: round(statistics.median(v), 3) for k, v in stages.items()}}
        print(f"{name} ({kw.get('rerank', cap.config.ranking.rerank)} ranking): {out[name]}",
              flush=True)
    out["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
