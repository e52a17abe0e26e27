"""Build a caption bank (zsc_core/projection.py) from TEXT only, choose its temperature, measured.

    python -m train.build_bank            # -> checkpoints/bank-coco-photo.safetensors, results/bank_photo.md
    python -m train.build_bank attach=checkpoints/tipcap-s4-photo.safetensors,checkpoints/tipcap-s1-photo.safetensors

The bank is the preset's text encoder's embeddings of the caption corpus (the same captions, filtered to
``max_words``, that the adaptors were trained on), stored int8. The projection temperature ``tau`` is chosen on
``coco/train-paired`` (80 photos, never evaluated on) by the preset's own captioner at S=1; for each ``tau`` the
report also gives the nearest corpus caption to the projected feature (a retrieval baseline of its own), and
tau=0 is the captioner without projection. ``coco/val-dev`` is not read here. ``attach=`` makes the listed adaptor
checkpoints project onto the bank at the chosen ``tau`` by default (metadata only, tensors bit for bit).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import torch

from train.common import parse_overrides, set_threads
from train.features import cached_text_features


@dataclass
class BankBuildConfig:
    preset: str = "photo"  # the captioner whose text encoder embeds the bank, and which chooses tau
    corpus: str = "coco"
    max_words: int = 15
    taus: tuple[float, ...] = (0.01, 0.02, 0.03, 0.05, 0.1)
    split: str = "train-paired"  # the selection set
    batch: int = 16
    out: str = "checkpoints/bank-coco-photo.safetensors"
    report: str = "results/bank_photo"
    features_cache: str = "runs/features"
    attach: tuple[str, ...] = ()
    threads: int = 0


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(BankBuildConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics
    from zsc_core.projection import BankConfig, CaptionBank, attach_bank, quantize_rows, save_bank

    cap = Captioner.from_pretrained(cfg.preset)
    enc = cap.clip
    corpus, feats = cached_text_features(enc, cfg.corpus, os.path.join(
        cfg.features_cache, f"{cfg.corpus}-{enc.text_fingerprint}.safetensors"), max_words=cfg.max_words)
    # The sweep reads the bank exactly as it will ship: int8 codes and their scales.
    codes, scale = quantize_rows(feats)
    cap.bank = CaptionBank(None, BankConfig(cfg.corpus, len(corpus), 0.0, cfg.max_words), enc.text_fingerprint,
                           codes=codes, scale=scale)
    items = coco_items(cfg.split)
    refs = dict(enumerate(c for _, c in items))
    images = [load_image(p) for p, _ in items]
    image_feats = torch.cat([enc.encode_image(enc.pixels(images[i:i + cfg.batch]))
                             for i in range(0, len(images), cfg.batch)])

    def cider(hyps: list[str]) -> float:
        return float(caption_metrics(refs, dict(enumerate(hyps)), ("cider",))["CIDEr"])

    rows = []
    for tau in (0.0, *cfg.taus):
        caps = []
        for i in range(0, len(images), cfg.batch):
            caps += [r.caption for r in cap.caption(images[i:i + cfg.batch], samples=1, project_tau=tau)]
        point = cap.bank.project(image_feats, tau) if tau > 0 else image_feats
        nearest = [corpus[j] for j in cap.bank.nearest(point).tolist()]
        row = {"tau": tau, "S1_CIDEr": cider(caps), "nearest_caption_CIDEr": cider(nearest),
               "examples": caps[:3]}
        rows.append(row)
        print(f"tau={tau:<5} {cfg.split} S=1 CIDEr {row['S1_CIDEr']:.3f}, nearest caption to the projected "
              f"feature {row['nearest_caption_CIDEr']:.3f}", file=sys.stderr)
    best = max((r for r in rows if r["tau"] > 0), key=lambda r: r["S1_CIDEr"])
    tau = best["tau"]
    text_id = {"name": enc.spec.display_name() + " (text)", "text_fingerprint": enc.text_fingerprint}
    save_bank(cfg.out, feats, BankConfig(cfg.corpus, len(corpus), tau, cfg.max_words), text_id,
              extra={"chosen_on": f"coco/{cfg.split}", "rows": [{k: v for k, v in r.items() if k != "examples"}
                                                               for r in rows]})
    for path in cfg.attach:
        attach_bank(path, cfg.out, tau)
        print(f"attached {cfg.out} to {path} (project_tau={tau})", file=sys.stderr)
    os.makedirs(os.path.dirname(cfg.report) or ".", exist_ok=True)
    with open(cfg.report + ".json", "w") as f:
        json.dump({"chosen_tau": tau, "split": cfg.split, "bank_size": len(corpus), "rows": rows}, f, indent=1)
    with open(cfg.report + ".md", "w") as f:
        f.write(f"# Caption bank for the `{cfg.preset}` preset (`python -m train.build_bank`)\n\n"
                f"{len(corpus):,} corpus captions (<= {cfg.max_words} words) embedded by the preset's text encoder, "
                f"int8. Each image feature is projected to normalize(softmax(v M^T / tau) M) before the adaptor "
                f"(DeCap's inference step); tau=0 is no projection. Chosen on {cfg.split} ({len(items)} photos) by "
                f"the captioner's S=1 CIDEr: **tau={tau}**.\n\n"
                "| tau | S=1 CIDEr | nearest corpus caption to the (projected) feature, CIDEr |\n| --- | --- | --- |\n")
        for r in rows:
            f.write(f"| {r['tau']} | {r['S1_CIDEr']:.3f} | {r['nearest_caption_CIDEr']:.3f} |\n")
    print(f"wrote {cfg.out} (tau={tau})")
    return cfg.out


if __name__ == "__main__":
    main()
