"""Which query noise makes training memories look like train-paired image memories (issue #45, 2026-12-06).

    python -m experiments.memory_noise            # -> results/memory_noise.json

For each sigma2: 2,000 corpus captions' noisy features retrieve their global anchors (themselves excluded), and
we measure cos(anchor, the caption); on the 80 train-paired photos, cos(image anchor, each reference). Also the
gap between the two sets of anchors (centroid distance, and each photo anchor's best cosine to a training anchor).
The sigma2 whose cos(anchor, target) matches the photos' is the training noise. Never reads val-dev.
"""

from __future__ import annotations

import json

import torch

from zsc_core.captioner import Captioner
from zsc_core.evaluation import coco_items
from zsc_core.images import load_image
from zsc_core.memory import MemorySpec, build_memory, duplicate_rows, noisy


def anchor_stats(train_anchor: torch.Tensor, image_anchor: torch.Tensor) -> dict:
    centroid = (train_anchor.mean(0) - image_anchor.mean(0)).norm().item()
    matched = (image_anchor @ train_anchor.T).max(1).values.mean().item()
    return {"centroid_distance": round(centroid, 4), "matched_cosine": round(matched, 4)}


def main() -> dict:
    cap = Captioner.from_pretrained("photo")
    bank = cap.bank
    captions = bank.captions().captions
    items = coco_items("train-paired")
    images = [load_image(p) for p, _ in items]
    img = torch.cat([cap.clip.encode_image(cap.clip.pixels(images[i:i + 16])).float() for i in range(0, 80, 16)])
    spec = MemorySpec(k=50)
    im = build_memory(bank, img, None, spec)
    ref_feats = [cap.clip.encode_text(refs).float() for _, refs in items]
    photo_cos = torch.stack([(r @ im.tokens[i, 0]).mean() for i, r in enumerate(ref_feats)]).mean().item()
    g = torch.Generator().manual_seed(0)
    rows = torch.randperm(len(captions), generator=g)[:2000].tolist()
    text = bank.feats(torch.tensor(rows))
    dups = duplicate_rows(captions)
    out = {"photos": {"cos_anchor_refs": round(photo_cos, 4), "n": len(items)}, "train": {}}
    for s2 in (0.0, 0.004, 0.016, 0.03, 0.05, 0.08, 0.12):
        torch.manual_seed(1)
        m = build_memory(bank, noisy(text, s2), None, spec, exclude=[dups[j] for j in rows])
        a = m.tokens[:, 0]
        out["train"][str(s2)] = {"cos_anchor_caption": round((a * text).sum(1).mean().item(), 4),
                                 **anchor_stats(a, im.tokens[:, 0])}
        print(s2, out["train"][str(s2)], flush=True)
    with open("results/memory_noise.json", "w") as f:
        json.dump(out, f, indent=1)
    print(out["photos"])
    return out


if __name__ == "__main__":
    main()
