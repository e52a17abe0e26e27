"""Offline-world generation speed: scene layouts (captions, alt-text, VQA) per second, and rendered images.

    python bench/world_speed.py [--n 5000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsc_core import world


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    scenes = list(world.iter_scenes(0, "corpus", args.n))
    layout = args.n / (time.perf_counter() - t)
    out = {"layouts_per_s": layout}
    for size in (64, 128):
        m = min(args.n, 2000)
        t = time.perf_counter()
        for s in scenes[:m]:
            world.render(s, size)
        out[f"render{size}_per_s"] = m / (time.perf_counter() - t)
    print(f"layouts (captions + alt-text + VQA): {layout:,.0f} scenes/s")
    print(f"render 64 px: {out['render64_per_s']:,.0f} images/s; 128 px: {out['render128_per_s']:,.0f} images/s")
    return out


if __name__ == "__main__":
    main()
