"""Caption latency of a photo preset's served settings on real photos (speed goals live here, not in tests).

    python bench/photo_latency.py [--images 8] [--reps 2] [--samples S] [--json results/photo_latency.json]

Loads the preset as the app does, captions the first ``--images`` val-dev photos one at a time, ``--reps`` times
each after one warm-up call, and prints the median seconds per photo for each named setting: the one served on
CPU (the model's defaults, with the LM in the dtype it is served in here: bf16 on a CPU that computes it, for a
model whose settings ask for it), S=1; then with the LM in float32 the served decoding and the one before #55; and,
for a float32 model on a CPU that computes bf16, the served decoding with the LM in bf16 (an opt-in). Each with the
stage split (encode / detect / retrieve / generate / rank); a question of each kind the Ask tab routes (warm, its
caption known), the process's peak resident memory, the caption bank's one-off load times, and whether the CPU
setting is within the budget (1 s a photo on 2 cores, issue #55; and the fp32 floor of the same run: 16 plain
decode steps of the LM at batch 8, and the served median over it). Figures depend on the
machine and on what else runs on it: say which when reporting them.
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


# One question of each kind the Ask tab routes (vqa.parse_question): existence, counting, class, and one for the LM.
QUESTIONS = ("Is there a person in the image?", "How many people are there?", "What animal is this?",
             "What color is it?")
SETTINGS_HELP = "cpu: the served CPU setting (the model's defaults); cuda: its served GPU setting, timed on this CPU"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="photo")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds a photo may take at the served CPU setting")
    ap.add_argument("--extra", action="store_true", help="also S=20 greedy, CLIP ranking and S=60 (slow)")
    ap.add_argument("--samples", type=int, default=0,
                    help="also the served decoding at this many samples (a candidate setting, not served)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    import torch

    from train.cache_keys import model_fingerprint
    from zsc_core.captioner import TIMINGS, Captioner
    from zsc_core.device import cpu_summary
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.presets import PRESETS

    t = time.perf_counter()
    cap = Captioner.from_pretrained(args.preset)
    load_s = time.perf_counter() - t
    images = [load_image(p) for p, _ in coco_items("val-dev")[:args.images]]
    path = PRESETS[args.preset].checkpoint_path() if args.preset in PRESETS else args.preset
    out = {"preset": args.preset, "model": model_fingerprint(path),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_summary()}, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads", "load_s": round(load_s, 2)}
    # The named settings: what the app (CPU and GPU), `caption` and `evaluate` serve (the defaults), and one
    # noise-free sample.
    settings = {"served (defaults)": {}, "S=1": {"samples": 1, "num_beams": 1}}
    if args.samples:
        settings[f"served decoding at S={args.samples} (a candidate, not served)"] = {"samples": args.samples}
    # After the served LM's rows, the question and the peak memory: the same with the LM in float32 (where the
    # served LM is not: on a GPU, device.resolve_dtype), and the decoding before #55, in float32
    out["lm_dtype"] = str(cap.lm.model.dtype).removeprefix("torch.")
    fp32_settings = {"before #55 (one token a pass, full head, fp32 LM)": {"draft_tokens": 0, "bank_vocab": False}}
    if cap.lm.model.dtype != torch.float32:
        fp32_settings = {"served, fp32 LM": {}, **fp32_settings}
    if cap.has_bank:  # the caption bank is read on first use (not at load): its one-off cost
        t = time.perf_counter()
        _ = cap.bank
        out["bank_load_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        cap.bank.captions()
        if cap.reads_memory:
            cap.bank.nouns()
        out["bank_texts_load_s"] = round(time.perf_counter() - t, 3)
        if cap.config.decoding.bank_vocab:
            t = time.perf_counter()
            cap.bank.vocabulary(cap.lm)
            out["bank_vocab_load_s"] = round(time.perf_counter() - t, 3)  # the user cache's, after the first run
    if args.extra:
        settings["S=20 greedy"] = {"samples": 20, "num_beams": 1}
        settings["S=60 greedy"] = {"samples": 60, "num_beams": 1}

    def timed(model, rows: dict) -> None:
        for name, kw in rows.items():
            model.caption(images[0], **kw)  # warm-up
            totals, stages = [], {k: [] for k in TIMINGS if k != "total_s"}
            for _ in range(args.reps):
                for im in images:
                    r = model.caption(im, **kw)
                    totals.append(r.timings["total_s"])
                    for k in stages:
                        stages[k].append(r.timings[k])
            out[name] = {"settings": model.config.replace(**kw).flat(),
                         "median_s": round(statistics.median(totals), 3), "max_s": round(max(totals), 3),
                         **{k: round(statistics.median(v), 3) for k, v in stages.items()}}
            print(f"{name}: { {k: v for k, v in out[name].items() if k != 'settings'} }", flush=True)

    timed(cap, settings)
    # a question, warm, as the Ask tab asks it after the Caption tab captioned the photo (its caption known)
    served = {id(im): cap.caption(im).caption for im in images}
    by_route: dict[str, list[float]] = {}
    for q in QUESTIONS:  # warm-up: each route once (the LM's first question encodes the 3,128 answers)
        cap.answer(images[0], q, by_type=True, caption=served[id(images[0])])
    for im in images:
        for q in QUESTIONS:
            t = time.perf_counter()
            r = cap.answer(im, q, by_type=True, caption=served[id(im)])
            by_route.setdefault(r.route, []).append(time.perf_counter() - t)
    every = [x for v in by_route.values() for x in v]
    out["question"] = {"questions": list(QUESTIONS), "median_s": round(statistics.median(every), 3),
                       "max_s": round(max(every), 3),
                       "by_route": {k: {"n": len(v), "median_s": round(statistics.median(v), 3),
                                        "max_s": round(max(v), 3)} for k, v in by_route.items()}}
    print(f"question: {out['question']}", flush=True)
    out["peak_rss_gb"] = round(peak_rss_gb(), 2)  # the served model's process, before a float32 LM is loaded
    fp32 = cap if cap.lm.model.dtype == torch.float32 else Captioner.from_pretrained(args.preset, dtype="float32",
                                                                                     clip=cap.clip)
    timed(fp32, fp32_settings)
    # the fp32 floor in the same run: 16 plain decode steps of the LM at batch 8 (a pass over every weight each)
    from experiments.lm_precision import decode_seconds

    out["fp32_floor_s"] = round(decode_seconds(fp32.lm.model), 3)
    # the opt-in (--dtype bfloat16, ZSC_DTYPE=bfloat16) on a CPU that computes bf16: the LM half the bytes
    from zsc_core.device import cpu_has_bf16

    out["cpu_bf16"] = cpu_has_bf16()
    if out["cpu_bf16"] and cap.lm.model.dtype != torch.bfloat16:
        timed(Captioner.from_pretrained(args.preset, dtype="bfloat16", clip=cap.clip),
              {"served, bf16 LM (opt-in)": {}})
    out["served_over_floor"] = round(out["served (defaults)"]["median_s"] / out["fp32_floor_s"], 3)
    print(f"fp32 floor (16 steps, batch 8): {out['fp32_floor_s']:.2f} s; served / floor "
          f"{out['served_over_floor']:.2f}", flush=True)
    cpu = out["served (defaults)"]["median_s"]
    out["budget_s"], out["within_budget"] = args.budget, cpu <= args.budget
    print(f"served CPU setting: median {cpu:.2f} s a photo, budget {args.budget:.1f} s: "
          f"{'within' if cpu <= args.budget else 'OVER'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
