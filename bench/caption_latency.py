"""Caption latency: S=1, S=20 as a loop of 20 single calls (MacCap's code), and S=20 in one batch.

    python bench/caption_latency.py [--reps 3] [--json OUT]

ViT-B-32 with random weights (timing does not depend on the weights; no download) + the offline SmolLM2-135M,
a random-init MacCap adaptor (default sizes), greedy decoding of exactly ``max_new_tokens`` (a random adaptor
rarely emits EOS, so every run decodes the full 20 tokens: the worst case). Prints seconds per image for each
way, the loop/batched ratio (target >= 5), the batched run's FLOPs (torch's FlopCounterMode) against this
machine's measured matmul throughput (time / floor, target <= 1.5), and the batched run's peak resident memory
(target < 2.5 GB; the peak is reset just before the run, so it is that run's high-water mark, models included).
A second floor uses the matmul throughput measured at the LM's own decode shapes (S rows times each weight
matrix), which on a CPU is far below the square-GEMM peak: it shows how much of the gap is the hardware's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsc_core import gap
from zsc_core.captioner import Captioner
from zsc_core.encode import ClipSpec
from zsc_core.lm import GenerationCfg, LMSpec, load_lm
from zsc_core.towers import load_clip


def matmul_flops_per_s(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def decode_shape_flops_per_s(lm, rows: int, reps: int = 50) -> float:
    """Matmul throughput at the shapes one decoding step of ``rows`` sequences runs: (rows x H) times each
    of the LM's weight matrices. On a CPU these skinny products run far below the square-GEMM peak."""
    mats = [m.weight.detach() for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {d: torch.randn(rows, d, dtype=mats[0].dtype) for d in {w.shape[1] for w in mats}}  # one input per width
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in mats)
    for w in mats:
        xs[w.shape[1]] @ w.T
    t = time.perf_counter()
    for _ in range(reps):
        for w in mats:
            xs[w.shape[1]] @ w.T
    return flops * reps / (time.perf_counter() - t)


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 ** 2
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def loop_of_single_calls(cap: Captioner, image, s: int, max_new_tokens: int) -> str:
    """MacCap's reference way: one noisy copy -> adaptor -> generate -> CLIP score, s times, then pick."""
    feats = cap.clip.image_features(cap.clip.pixels([image]))
    memory, _ = cap.region_memory(feats, cap.effective())
    gen = torch.Generator().manual_seed(0)
    best, best_score = "", -2.0
    for _ in range(s):
        x = gap.inject_noise(memory, memory.shape[1], cap.adaptor.cfg.sigma2, gen)
        text = cap.lm.generate(cap.adaptor(x), cfg=GenerationCfg(max_new_tokens=max_new_tokens))[0]
        score = float(cap.clip.encode_text([text])[0] @ feats.global_feat[0])
        if score > best_score:
            best, best_score = text, score
    return best


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    from PIL import Image
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image("china.jpg"))
    cap = Captioner.build(load_clip(ClipSpec(arch="ViT-B-32")), load_lm(LMSpec("smollm2-135m")))
    cap.config = cap.config.replace(max_new_tokens=args.max_new_tokens)
    cap.adaptor.requires_grad_(False)  # inference only (FlopCounterMode's module hooks trip on grad-leaf inputs)
    s, mnt = args.samples, args.max_new_tokens
    with torch.no_grad():  # (inference_mode breaks FlopCounterMode's module hooks)
        cap.caption(image, samples=2)  # warm-up
        t_a = timed(lambda: cap.caption(image, samples=1), args.reps)
        t_b = timed(lambda: loop_of_single_calls(cap, image, s, mnt), max(1, args.reps - 2))
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            cap.caption(image, samples=s)
        flops = counter.get_total_flops()
        reset_ok = reset_peak_rss()
        t_c = timed(lambda: cap.caption(image, samples=s), args.reps)
        peak = peak_rss_gb()
        tput = matmul_flops_per_s()
        decode_tput = decode_shape_flops_per_s(cap.lm, s)
    floor = flops / tput
    decode_floor = flops / decode_tput
    out = {
        "threads": torch.get_num_threads(),
        "a_s1_s_per_image": t_a,
        "b_loop_s20_s_per_image": t_b,
        "c_batched_s20_s_per_image": t_c,
        "ratio_b_over_c": t_b / t_c,
        "c_gflops": flops / 1e9,
        "matmul_gflops_per_s": tput / 1e9,
        "c_floor_s": floor,
        "c_time_over_floor": t_c / floor,
        "decode_shape_gflops_per_s": decode_tput / 1e9,
        "c_time_over_decode_shape_floor": t_c / decode_floor,
        "c_peak_rss_gb": peak,
        "peak_reset": reset_ok,
    }
    print(f"(a) S=1                       {t_a:7.3f} s/image")
    print(f"(b) S={s} loop of single calls {t_b:7.3f} s/image")
    print(f"(c) S={s} batched              {t_c:7.3f} s/image")
    print(f"(b)/(c) = {t_b / t_c:.2f}  (target >= 5)")
    print(f"(c) {flops / 1e9:.1f} GFLOP; matmul {tput / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads; "
          f"floor {floor:.3f} s; time/floor = {t_c / floor:.2f}  (target <= 1.5)")
    print(f"    at the LM's decode shapes ({s} rows) matmul runs at {decode_tput / 1e9:.1f} GFLOP/s; "
          f"time / that floor = {t_c / decode_floor:.2f}")
    print(f"(c) peak resident memory {peak:.2f} GB  (target < 2.5)" + ("" if reset_ok else " (process peak)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
