"""The gap between what an adaptor reads in training and what it reads on val-dev photos, before and after the
memory model (issue #45: "report the gap between training inputs and val-dev inference inputs").

    python -m experiments.memory_gap            # -> results/memory_gap.json

Before: the `photo` TIPCap S4 model is trained on M(T) (a caption's feature through its learned N(mu, Sigma)
mapping) and served the normalised mean of the photo's 50 nearest bank captions (bank_mix=1). After: the memory
model is trained on the global anchor of a noisy caption feature's 50 nearest other captions and served the global
anchor of the photo's 50 nearest. For 2,000 corpus captions and the 109 val-dev photos: the distance between the
two sets' centroids, and the mean over photos of the best cosine with any training input (matched cosine).
Reported only: nothing is chosen from val-dev.
"""

from __future__ import annotations

import json

import torch

from experiments.memory_noise import anchor_stats
from zsc_core.captioner import Captioner
from zsc_core.evaluation import coco_items
from zsc_core.images import load_image
from zsc_core.memory import MemorySpec, build_memory, duplicate_rows, noisy

MEMORY = "runs/memory-photo/out.safetensors"


def main(memory: str = MEMORY, old: str = "photo") -> dict:
    tip = Captioner.from_pretrained(old)
    mem = Captioner.from_pretrained(memory, clip=tip.clip, lm=tip.lm)
    bank = mem.bank
    captions = bank.captions().captions
    images = [load_image(p) for p, _ in coco_items("val-dev")]
    img = torch.cat([tip.clip.encode_image(tip.clip.pixels(images[i:i + 16])).float()
                     for i in range(0, len(images), 16)])
    served = build_memory(bank, img, None, MemorySpec(k=50)).tokens[:, 0]  # both models' served global input
    rows = torch.randperm(len(captions), generator=torch.Generator().manual_seed(0))[:2000].tolist()
    text = bank.feats(torch.tensor(rows))
    torch.manual_seed(0)
    with torch.no_grad():
        before = tip.adaptor.mapping(text).float()  # M(T), TIPCap's training input
    a = mem.adaptor.cfg
    dups = duplicate_rows(captions)
    after = build_memory(bank, noisy(text, a.sigma2), None, MemorySpec(a.k, a.region_k, a.weighting, a.temperature),
                         exclude=[dups[j] for j in rows]).tokens[:, 0]
    out = {"n_captions": len(rows), "n_photos": len(images),
           "before": {"training": "TIPCap S4: M(T)", "served": "mean of the 50 nearest bank captions",
                      **anchor_stats(before, served)},
           "after": {"training": f"memory: anchor of the 50 nearest other captions of T + N(0, {a.sigma2})",
                     "served": "anchor of the 50 nearest bank captions", **anchor_stats(after, served)}}
    with open("results/memory_gap.json", "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
