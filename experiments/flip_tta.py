"""Test-time augmentation of the bridge's class posterior (issue #53): does a mirrored copy move retrieval?

    python -m experiments.flip_tta               # -> results/flip_tta.json

On both choice sets (train-paired, val-dev), each photo's global feature three ways: as served, from the mean of
its and its mirror image's class logits, and the normalised sum of the two features. Each is scored by the
face-conditioned CIDEr-consensus retrieval caption of its 300 nearest bank captions (the best retrieval baseline,
no decoding, so no seeds), with a paired bootstrap against the served feature.
"""

from __future__ import annotations

import json
import os


def main() -> dict:
    import torch
    import torch.nn.functional as F
    from PIL import ImageOps

    from zsc_core.bank import cider_consensus_caption
    from zsc_core.bridge import class_mixture
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics, paired_bootstrap, per_image_cider

    cap = Captioner.from_pretrained("photo")
    bank, clip = cap.bank, cap.clip
    texts = bank.captions()
    v = cap.config.evidence
    report: dict = {"retrieval_k": 300, "splits": {}}
    for split in ("train-paired", "val-dev"):
        items = coco_items(split)
        images = [load_image(p) for p, _ in items]
        refs = dict(enumerate(c for _, c in items))
        found = cap.detect(images)

        def logits(ims):
            with torch.no_grad():
                return torch.cat([clip.class_logits(clip.pixels(ims[i:i + 16]))[0] for i in range(0, len(ims), 16)])

        plain, mirrored = logits(images), logits([ImageOps.mirror(im) for im in images])
        E, T = clip.model.prototypes, clip.cfg.temperature
        feats = {"served": F.normalize(class_mixture(plain, E, T), dim=-1),
                 "mirror, mean logits": F.normalize(class_mixture((plain + mirrored) / 2, E, T), dim=-1),
                 "mirror, mean features": F.normalize(F.normalize(class_mixture(plain, E, T), dim=-1)
                                                      + F.normalize(class_mixture(mirrored, E, T), dim=-1), dim=-1)}
        rows, base = {}, None
        for name, f in feats.items():
            picks = cider_consensus_caption(bank, texts.captions, f.float(), 300, texts.idf, found, v.count_people,
                                            v.evidence_pool)
            per = per_image_cider(refs, dict(enumerate(picks)))
            base = base or per
            rows[name] = {"CIDEr": float(caption_metrics(refs, dict(enumerate(picks)), ("cider",))["CIDEr"]),
                          "minus_served": paired_bootstrap([per[i] for i in range(len(images))],
                                                           [base[i] for i in range(len(images))])}
            print(json.dumps({"split": split, "row": name, "CIDEr": round(rows[name]["CIDEr"], 4)}), flush=True)
        report["splits"][split] = rows
    os.makedirs("results", exist_ok=True)
    with open("results/flip_tta.json", "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
