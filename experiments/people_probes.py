"""More evidence of people than MTCNN's faces (issue #53): what else, installable offline, finds the people faces miss?

    python -m experiments.people_probes          # -> results/people_probes.json

On both choice sets (train-paired, val-dev), each probe reported per set. *People*: photos whose references name
people (>= 3 of 5); *none*: photos none of whose references names one (zsc_core.people). No decoding, so no seeds:

1. MTCNN at other input sizes (512 px is served; 640 is COCO's own size; 960 and 1280 upsample, so smaller faces
   reach the 12 px MTCNN looks for): photos with a face of p >= each threshold.
2. Body crops through the bridge: for photos with a served face, the union of each face's body box (the face box
   widened ``grow`` times its width each side, down ``2 grow`` face heights) is encoded and mixed into the retrieval
   query, q = norm(norm(global) + w norm(crop)): the face-conditioned retrieval caption, scored.
3. ImageNet's people classes: the bridge's softmax mass on 71 classes that imply a person (clothing, sports gear,
   "groom", "ballplayer", "scuba diver"), on the whole photo and the most of 5 crops (quadrants and centre), on the
   photos without a served face; then the retrieval caption with "mass >= t" read as a face.
4. OpenCV's Haar cascades (shipped in the wheel: upper body, full body, frontal and profile face) on the photos
   without a served face.
"""

from __future__ import annotations

import json
import time

PEOPLE_CLASSES = (
    "abaya", "academic gown", "apron", "balance beam", "barbell", "baseball", "bearskin", "bib", "bikini", "bonnet",
    "bow tie", "brassiere", "bulletproof vest", "cardigan", "cloak", "clog", "cowboy boot", "cowboy hat",
    "crash helmet", "diaper", "dumbbell", "football helmet", "fur coat", "gown", "hair slide", "hair spray",
    "hoopskirt", "horizontal bar", "jean", "jersey", "kimono", "knee pad", "lab coat", "lipstick", "Loafer", "maillot",
    "mask", "military uniform", "miniskirt", "mortarboard", "neck brace", "overskirt", "paddle", "pajama",
    "parallel bars", "pickelhaube", "poncho", "racket", "running shoe", "sandal", "sarong", "seat belt", "ski",
    "ski mask", "snorkel", "sombrero", "stole", "suit", "sunglass", "sunglasses", "sweatshirt", "swimming trunks",
    "tennis ball", "trench coat", "unicycle", "vestment", "wig", "Windsor tie", "ballplayer", "groom", "scuba diver")
FACE_P = 0.9  # the served face threshold


def tally(hit: list[bool], people: list[bool], none: list[bool], among: list[bool] | None = None) -> dict:
    """[found, of] on the photos with people and on those without, among the photos ``among`` marks (default all)."""
    keep = among or [True] * len(hit)
    return {kind: [sum(h for h, q, k in zip(hit, which, keep) if q and k), sum(q for q, k in zip(which, keep) if k)]
            for kind, which in (("people", people), ("none", none))}


def main() -> dict:
    import cv2
    import numpy as np
    import torch
    import torch.nn.functional as F

    from train.tune_evidence import row_metrics
    from zsc_core.bank import cider_consensus_caption
    from zsc_core.bridge import imagenet_categories
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.evidence import Detection, DetectorConfig, Detectors, Evidence, body_box
    from zsc_core.images import load_image
    from zsc_core.metrics import paired_bootstrap, per_image_cider
    from zsc_core.people import names_person

    cap = Captioner.from_pretrained("photo")
    bank, br = cap.bank, cap.clip
    texts = bank.captions()
    names = imagenet_categories()
    cls = [i for i, n in enumerate(names) if n in PEOPLE_CLASSES]
    cascades = {k: cv2.CascadeClassifier(cv2.data.haarcascades + f"haarcascade_{f}.xml")
                for k, f in (("upper body", "upperbody"), ("full body", "fullbody"),
                             ("frontal face", "frontalface_default"), ("profile face", "profileface"))}
    report: dict = {"people_classes": [names[i] for i in cls], "splits": {}}

    def retrieval(feats, ev, refs, against=None):
        """The conditioned retrieval caption's metrics; with ``against`` (another row), a paired bootstrap of the
        per-photo CIDEr-D of this row minus that one."""
        picks = cider_consensus_caption(bank, texts.captions, feats, 300, texts.idf, ev)
        m = row_metrics(picks, refs)
        per = per_image_cider(dict(enumerate(refs)), dict(enumerate(picks)))
        row = {"CIDEr": round(m["CIDEr"], 4), "person_named": m["person_named"],
               "person_named_without": m["person_named_without"], "fires": sum(bool(e.faces) for e in ev),
               "per_photo": [round(per[i], 4) for i in range(len(refs))]}
        if against is not None:
            b = paired_bootstrap(row["per_photo"], against["per_photo"])
            row["minus_served"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in b.items()}
        return row

    for split in ("train-paired", "val-dev"):
        items = coco_items(split)
        ims = [load_image(p) for p, _ in items]
        refs = [c for _, c in items]
        people = [sum(names_person(x) for x in r) >= 3 for r in refs]
        none = [not any(names_person(x) for x in r) for r in refs]
        sp: dict = report["splits"].setdefault(split, {"people": sum(people), "none": sum(none)})

        # 1. MTCNN's input size
        found: dict[int, list] = {}
        sp["mtcnn_sizes"] = {}
        for side in (512, 640, 960, 1280):
            det = Detectors(DetectorConfig(face_side=side))
            t, faces = time.perf_counter(), []
            for im in ims:
                s = max(1.0, side / max(im.size))  # upsample where the side is larger than the photo
                big = im.resize((round(im.width * s), round(im.height * s))) if s > 1 else im
                faces.append([(f.score, tuple(v / s for v in f.box)) for f in det.faces(big, 0.5)])
            found[side] = faces
            sp["mtcnn_sizes"][str(side)] = {"seconds": round((time.perf_counter() - t) / len(ims), 3), **{
                str(p): tally([any(sc >= p for sc, _ in f) for f in faces], people, none)
                for p in (0.8, 0.9, 0.95, 0.97, 0.99)}}
        served = [[Detection("face", b, sc) for sc, b in f if sc >= FACE_P] for f in found[512]]
        ev = [Evidence(f, []) for f in served]
        noface = [not f for f in served]
        with torch.inference_mode():
            logits, _, _ = br.class_logits(br.pixels(ims))
            g = F.normalize(br.encode_image(br.pixels(ims)).float(), dim=-1)
        sp["retrieval_faces"] = retrieval(g, ev, refs)

        # 2. body crops of the faces, mixed into the query
        sp["body_crops"] = {}
        for grow in (1.5, 3.0):
            crop = {}
            with torch.inference_mode():
                for i, f in enumerate(served):
                    if f:
                        bs = [body_box(d.box, *ims[i].size, grow) for d in f]
                        u = (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))
                        crop[i] = F.normalize(br.encode_image(br.pixels([ims[i].crop(u)])).float()[0], dim=-1)
            for w in (0.3, 0.6, 1.0):
                q = g.clone()
                for i, c in crop.items():
                    q[i] = F.normalize(g[i] + w * c, dim=-1)
                sp["body_crops"][f"grow {grow}, w {w}"] = retrieval(q, ev, refs, sp["retrieval_faces"])

        # 3. ImageNet's people classes
        mass = logits.float().softmax(-1)[:, cls].sum(-1)
        crops_mass = []
        with torch.inference_mode():
            for im in ims:
                w, h = im.size
                parts = [im.crop(b) for b in ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h),
                                              (w // 2, h // 2, w, h), (w // 5, h // 5, 4 * w // 5, 4 * h // 5))]
                lg, _, _ = br.class_logits(br.pixels(parts))
                crops_mass.append(float(lg.float().softmax(-1)[:, cls].sum(-1).max()))
        sp["class_mass"] = {f"{where} >= {t}": tally([m >= t for m in ms], people, none, noface)
                            for t in (0.1, 0.2, 0.3, 0.5)
                            for where, ms in (("photo", mass.tolist()), ("most of 5 crops", crops_mass))}
        sp["retrieval_faces_or_class_mass"] = {
            str(t): retrieval(g, [Evidence(f + ([Detection("face", (0, 0, 1, 1), float(m))] if m >= t and not f
                                                else []), []) for f, m in zip(served, mass.tolist())], refs,
                          sp["retrieval_faces"])
            for t in (0.05, 0.1, 0.2, 0.3)}

        # 4. Haar cascades
        grey = [np.asarray(im.convert("L")) for im in ims]
        sp["haar"] = {k: tally([len(c.detectMultiScale(gr, 1.1, 4, minSize=(24, 24))) > 0 for gr in grey],
                                 people, none, noface)
                      for k, c in cascades.items()}
        print(json.dumps({split: sp}), flush=True)
    with open("results/people_probes.json", "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
