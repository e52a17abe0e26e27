"""Choose how each of the S samples is decoded (CaptionConfig.num_beams, keep_beams) on the selection set, measured.

    python -m experiments.tune_decoding                          # -> results/decoding_photo.{md,json}
    python -m experiments.tune_decoding attach=checkpoints/tipcap-s4-photo.safetensors

The caption bank's settings (input mix, noise, ranking: train/build_bank.py) stay as the preset ships them; only
how each of the S noisy prefixes is decoded changes: ``greedy``; ``beamB``, a beam search of width B whose best
hypothesis is that sample's candidate (S candidates either way; MacCap's own single-caption setting is S=4 x beam
4); or ``beamB-all``, every one of its B hypotheses a candidate (S x B candidates: more to rank, not more samples). The
captioner runs through the facade, S=20, seeds 0-3, on ``coco/train-paired`` (never on val-dev). A width replaces
greedy decoding only when it scores higher on most seeds (train.build_bank.prevails); beams cost about b times the
generation time, which the report states beside the CIDEr. ``attach=`` writes the chosen width into the listed
checkpoints' inference defaults (metadata only).
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass

from train.build_bank import prevails
from train.common import parse_overrides, set_threads, write_json


@dataclass
class DecodingConfig:
    preset: str = "photo"
    # "greedy", "beamB", "beamB-all"; the first is the incumbent
    decodings: tuple[str, ...] = ("greedy", "beam3", "beam3-all")
    samples: int = 20
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    split: str = "train-paired"
    batch: int = 8
    report: str = "results/decoding_photo"
    attach: tuple[str, ...] = ()
    threads: int = 0


def parse_decoding(name: str) -> tuple[int, bool]:
    """``"greedy"`` -> (1, False); ``"beam3"`` -> (3, False); ``"beam3-all"`` -> (3, True): (num_beams, keep_beams)."""
    if name == "greedy":
        return 1, False
    m = re.fullmatch(r"beam([1-9][0-9]*)(-all)?", name)
    if m is None:
        raise ValueError(f"unknown decoding {name!r}: use 'greedy', 'beamB' or 'beamB-all' (B >= 1)")
    return int(m.group(1)), m.group(2) is not None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(DecodingConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import evaluate_coco
    from zsc_core.presets import data_dir
    from zsc_core.settings import set_defaults

    settings = [parse_decoding(d) for d in cfg.decodings]  # fails before any model loads
    cap = Captioner.from_pretrained(cfg.preset)
    split_dir = os.path.join(data_dir(), "coco", cfg.split)
    rows, n_photos = [], 0
    for name, (width, keep) in zip(cfg.decodings, settings):
        per_seed, seconds = [], 0.0
        for seed in cfg.seeds:
            t = time.perf_counter()
            res = evaluate_coco(cap, os.path.join(split_dir, "images"), os.path.join(split_dir, "references.json"),
                                cfg.samples, cfg.batch, ("cider",), progress=False, seed=seed, num_beams=width,
                                keep_beams=keep)
            seconds += time.perf_counter() - t
            n_photos = res["n_captioned"]
            per_seed.append(float(res["metrics"]["CIDEr"]))
            print(f"{name} seed {seed}: CIDEr {per_seed[-1]:.3f}", file=sys.stderr, flush=True)
        rows.append({"decoding": name, "num_beams": width, "keep_beams": keep,
                     "candidates": cfg.samples * (width if keep else 1), "S_CIDEr": per_seed,
                     "mean_CIDEr": sum(per_seed) / len(per_seed),
                     "s_per_photo": seconds / (n_photos * len(cfg.seeds))})
    chosen = prevails(max(rows, key=lambda r: r["mean_CIDEr"]), rows[0])
    for path in cfg.attach:
        set_defaults(path, num_beams=chosen["num_beams"], keep_beams=chosen["keep_beams"])
        print(f"{path}: {chosen['decoding']}", file=sys.stderr)
    report = {"split": cfg.split, "samples": cfg.samples, "seeds": list(cfg.seeds), "preset": cfg.preset,
              "chosen": chosen["decoding"], "rows": rows}
    os.makedirs(os.path.dirname(cfg.report) or ".", exist_ok=True)
    write_json(cfg.report + ".json", report)
    md = [f"# Decoding of each sample, chosen on `coco/{cfg.split}` (`python -m experiments.tune_decoding`)\n\n",
          f"The `{cfg.preset}` preset as shipped (its caption bank's mix, noise and ranking), S={cfg.samples}, "
          f"seeds {list(cfg.seeds)}; each sample's prefix decoded greedily or by a beam search of width B, "
          "keeping its best hypothesis (beamB) or all B (beamB-all: S x B candidates ranked). A row replaces the "
          "first only when it scores higher on most seeds. Seconds per photo: this machine, loading and captioning.\n\n"
          "| decoding | candidates | CIDEr (mean of seeds) | per seed | s / photo |\n| --- | --- | --- | --- | --- |\n"]
    md += [f"| {r['decoding']}{' (chosen)' if r is chosen else ''} | {r['candidates']} | {r['mean_CIDEr']:.3f} | "
           f"{' / '.join(f'{x:.3f}' for x in r['S_CIDEr'])} | {r['s_per_photo']:.2f} |\n" for r in rows]
    with open(cfg.report + ".md", "w") as f:
        f.write("".join(md))
    return report


if __name__ == "__main__":
    main()
