"""The LM's blocks kept as their GGUF 4-bit codes and widened per pass (issue #55, memory): what it costs.

    python -m experiments.dequant_per_pass      # -> results/dequant_per_pass.json

SmolLM2-135M's GGUF stores every block weight as Q4_1 (groups of 32 along the input: w = d * q + m, q in 0..15),
which the app widens to float32 once at load (425 MB of its 2 GB). Kept as one byte a code (106 MB) plus each
group's d and m (27 MB), a weight would be widened into one cache-sized buffer just before its product, every
LM pass, and be exact (the same float32 values). This times one LM pass's block products (30 layers x the q, k,
v, o, gate, up and down projections, SmolLM2's shapes) at 8 and 32 rows (a decode step of the served S=8, and
the drafting decoder's widest pass), on random codes of those shapes: the float32 product, the widen + product,
and the widening alone. Best of 3 rounds of 5 passes, torch's default threads. No model is loaded.
"""

from __future__ import annotations

import os
import platform
import time

import torch

OUT = "results/dequant_per_pass.json"
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)] * 30  # (out, in)
GROUP = 32


def best_ms(fn, x, rounds: int = 3, passes: int = 5) -> float:
    fn(x)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(passes):
            fn(x)
        best = min(best, (time.perf_counter() - t) / passes)
    return round(best * 1000, 1)


def main(out: str = OUT) -> dict:
    from bench.app_serving import report as bench_report
    from zsc_core.device import cpu_summary

    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=g) for o, i in SHAPES]
    codes = [torch.randint(0, 16, (o, i // GROUP, GROUP), dtype=torch.uint8, generator=g) for o, i in SHAPES]
    scales = [torch.rand(o, i // GROUP, 1, generator=g) for o, i in SHAPES]
    mins = [torch.rand(o, i // GROUP, 1, generator=g) for o, i in SHAPES]
    buf = torch.empty(max(o * i for o, i in SHAPES))

    def widen(q, d, m):
        w = buf[:q.numel()].view(q.shape)
        w.copy_(q)
        w.mul_(d)
        w.add_(m)  # in this order, as gguf's numpy dequantisation rounds: exact
        return w.view(q.shape[0], -1)

    def fp32(x):
        for w in weights:
            torch.nn.functional.linear(x[:, :w.shape[1]], w)

    def widened(x):
        for q, d, m in zip(codes, scales, mins):
            w = widen(q, d, m)
            torch.nn.functional.linear(x[:, :w.shape[1]], w)

    def widen_only(x):
        for q, d, m in zip(codes, scales, mins):
            widen(q, d, m)

    n = sum(o * i for o, i in SHAPES)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_summary()}, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads",
              "block_weights_mb": {"float32": round(n * 4 / 2**20),
                                   "codes + group d, m": round(n * (1 + 8 / GROUP) / 2**20)},
              "ms_per_pass": {}}
    for rows in (8, 32):
        x = torch.randn(rows, 1536, generator=g)
        report["ms_per_pass"][f"{rows} rows"] = {name: best_ms(fn, x) for name, fn in
                                                 (("float32 product", fp32), ("widen + product", widened),
                                                  ("widen only", widen_only))}
    return bench_report(report, out)


if __name__ == "__main__":
    main()
