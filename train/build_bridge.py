"""Build the photo preset's bridge (CNN + sentence encoder, see zsc_core/bridge.py) from TEXT only, measured.

    python -m train.build_bridge                     # -> checkpoints/bridge-photo.safetensors, results/bridge_photo.md

The class prototypes E (1000, 384) are built step by step, and every step is measured on retrieval (image->text
and text->image R@1/R@5 among the set's own captions) and on nearest-corpus-caption CIDEr:

1. ``template``: the MiniLM embedding of "a photo of a {name}." (the starting point);
2. ``ensemble``: the mean over several prompt templates;
3. ``+names``: mixed with the mean embedding of the corpus captions that name the class (>= ``min_hits``);
4. ``+knn``: mixed with the mean of the ``knn`` corpus captions nearest each class's prompt embedding, so that
   every class, odd ImageNet names included, speaks COCO caption style;
5. the temperature T of softmax(logits / T) and the saliency temperature of the subregions.

Choices are made on ``coco/train-paired`` (80 photos, never evaluated on); ``coco/val-dev`` is only reported.
No image-caption pair is used to build E: the photos only choose among a handful of settings.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from train.common import parse_overrides, set_threads
from train.features import cached_text_features

TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "a {} in the picture.", "there is a {} in this image.",
             "a close up of a {}.", "a {} sitting on a table.")


@dataclass
class BridgeBuildConfig:
    """What to build and where to write it."""

    corpus: str = "coco"
    knn: int = 24  # corpus captions averaged per class in the +knn step
    min_hits: int = 3  # corpus captions that must name a class for the +names step
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
    saliency_temperatures: tuple[float, ...] = (1.0, 4.0, 16.0)
    out: str = "checkpoints/bridge-photo.safetensors"
    report: str = "results/bridge_photo"
    features_cache: str = "runs/features"
    threads: int = 0


def coco_set(split: str) -> tuple[list[str], list[list[str]]]:
    """(image paths, their reference captions) of data/coco/<split>."""
    from zsc_core.evaluation import coco_items

    items = coco_items(split)
    return [p for p, _ in items], [c for _, c in items]


def retrieval(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor) -> dict[str, float]:
    """R@1/R@5 both ways: img (N, D), txt (M, D) unit rows, owner (M,) the image index of each caption."""
    sim = img @ txt.T  # (N, M)
    top_t = sim.topk(5, dim=1).indices  # (N, 5) caption indices
    hit_i2t = owner[top_t] == torch.arange(len(img))[:, None]
    top_i = sim.T.topk(5, dim=1).indices  # (M, 5) image indices
    hit_t2i = top_i == owner[:, None]
    return {"i2t_R@1": hit_i2t[:, 0].float().mean().item(), "i2t_R@5": hit_i2t.any(1).float().mean().item(),
            "t2i_R@1": hit_t2i[:, 0].float().mean().item(), "t2i_R@5": hit_t2i.any(1).float().mean().item()}


def nearest_caption_cider(img: torch.Tensor, corpus: list[str], corpus_feats: torch.Tensor,
                          refs: list[list[str]]) -> tuple[float, list[str]]:
    """CIDEr of the nearest corpus caption of each image (the retrieval baseline)."""
    from zsc_core.metrics import caption_metrics

    picks = [corpus[i] for i in (img @ corpus_feats.T).argmax(1).tolist()]
    scores = caption_metrics(dict(enumerate(refs)), dict(enumerate(picks)), ("cider",))
    return float(scores["CIDEr"]), picks


def name_variants(name: str) -> list[str]:
    """Lower-case words a caption would use for an ImageNet class name (and a simple plural)."""
    base = name.lower().replace("_", " ")
    return [base, base + "s", base + "es"]


def name_means(names: list[str], corpus: list[str], feats: torch.Tensor, min_hits: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the mean embedding of corpus captions naming it (zeros where fewer than ``min_hits``), and
    the hit counts."""
    lowered = [" " + re.sub(r"[^a-z ]", " ", c.lower()) + " " for c in corpus]
    means = torch.zeros(len(names), feats.shape[1])
    hits = torch.zeros(len(names), dtype=torch.long)
    for c, name in enumerate(names):
        pats = [f" {v} " for v in name_variants(name)]
        rows = [i for i, cap in enumerate(lowered) if any(p in cap for p in pats)]
        hits[c] = len(rows)
        if len(rows) >= min_hits:
            means[c] = F.normalize(feats[rows].mean(0), dim=0)
    return means, hits


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(BridgeBuildConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from zsc_core.bridge import (
        BridgeConfig,
        BridgeEncoder,
        BridgeModel,
        imagenet_categories,
        load_minilm,
        load_mobilenet,
        save_bridge,
    )
    from zsc_core.encode import ClipSpec
    from zsc_core.images import load_image

    names = imagenet_categories()
    text, tok = load_minilm()
    enc = BridgeEncoder(BridgeModel(load_mobilenet(), text, torch.zeros(len(names), 384)), tok, BridgeConfig(),
                        ClipSpec(name="bridge-build"))
    corpus, corpus_feats = cached_text_features(enc, cfg.corpus, os.path.join(
        cfg.features_cache, f"{cfg.corpus}-{enc.text_fingerprint}.safetensors"), max_words=15)
    corpus, corpus_feats = list(corpus), corpus_feats.float()

    sets = {}
    for split in ("train-paired", "val-dev"):
        paths, refs = coco_set(split)
        logits, _, _ = enc.class_logits(enc.pixels([load_image(p) for p in paths]))
        flat = [c for r in refs for c in r]
        sets[split] = {"logits": logits, "refs": refs, "txt": enc.encode_text(flat),
                       "owner": torch.tensor([i for i, r in enumerate(refs) for _ in r])}

    template = enc.encode_text([TEMPLATES[0].format(n) for n in names])
    ensemble = F.normalize(torch.stack([enc.encode_text([t.format(n) for n in names]) for t in TEMPLATES]).mean(0),
                           dim=-1)
    nm, hits = name_means(names, corpus, corpus_feats, cfg.min_hits)
    has = (nm.norm(dim=-1) > 0).float()[:, None]
    with_names = F.normalize(ensemble + has * nm, dim=-1)
    knn_idx = (ensemble @ corpus_feats.T).topk(cfg.knn, dim=1).indices  # (C, knn)
    knn = F.normalize(corpus_feats[knn_idx].mean(1), dim=-1)
    with_knn = F.normalize(ensemble + has * nm + knn, dim=-1)
    knn_only = F.normalize(has * nm + knn, dim=-1)
    variants = {"template": template, "ensemble": ensemble, "+names": with_names, "+names+knn": with_knn,
                "names+knn (no template)": knn_only}

    rows, best = [], None
    for vname, E in variants.items():
        for T in cfg.temperatures:
            row = {"prototypes": vname, "T": T}
            for split, s in sets.items():
                img = F.normalize(s["logits"].div(T).softmax(-1) @ E, dim=-1)
                r = retrieval(img, s["txt"], s["owner"])
                cider, picks = nearest_caption_cider(img, corpus, corpus_feats, s["refs"])
                row[split] = {**r, "nearest_caption_CIDEr": cider, "examples": picks[:3]}
            rows.append(row)
            sel = row["train-paired"]
            key = sel["nearest_caption_CIDEr"] + sel["i2t_R@5"] + sel["t2i_R@5"]
            shown = {k: round(v, 3) for k, v in sel.items() if k != "examples"}
            print(f"{vname:26s} T={T:<4} train-paired {json.dumps(shown)}",
                  file=sys.stderr)
            if best is None or key > best[0]:
                best = (key, vname, T)
    _, vname, T = best
    E = variants[vname]
    top1 = {split: [names[i] for i in s["logits"].argmax(1).tolist()] for split, s in sets.items()}
    from zsc_core.metrics import caption_metrics

    photo_of = {split: float(caption_metrics(dict(enumerate(s["refs"])),
                                             dict(enumerate(f"a photo of a {n}" for n in top1[split])),
                                             ("cider",))["CIDEr"]) for split, s in sets.items()}
    bcfg = replace(BridgeConfig(), temperature=T, region_temperature=T)
    # The saliency temperature: chosen on train-paired so that the chosen subregions add to the global feature.
    enc.model.prototypes.copy_(E)
    enc.cfg = bcfg
    sal_rows = []
    paths, refs = coco_set("train-paired")
    pix = enc.pixels([load_image(p) for p in paths])
    for st in cfg.saliency_temperatures:
        enc.cfg = replace(bcfg, saliency_temperature=st)
        f = enc.image_features(pix)
        sal = f.attention[:, 0, 1:]
        entropy = (-(sal * sal.clamp_min(1e-12).log()).sum(-1) / torch.log(torch.tensor(sal.shape[1]))).mean()
        sal_rows.append({"saliency_temperature": st, "normalised_entropy": round(entropy.item(), 3),
                         "top10_mass": round(sal.topk(10, dim=-1).values.sum(-1).mean().item(), 3)})
    # Keep the saliency informative (top-10 locations hold most, not all, of the mass): entropy nearest 0.7.
    chosen_st = min(sal_rows, key=lambda r: abs(r["normalised_entropy"] - 0.7))["saliency_temperature"]
    bcfg = replace(bcfg, saliency_temperature=chosen_st)
    extra = {"chosen_on": "coco/train-paired", "prototypes": vname, "rows": rows, "saliency": sal_rows,
             "class_hits_in_corpus": int((hits >= cfg.min_hits).sum()), "top1_photo_of_CIDEr": photo_of}
    save_bridge(cfg.out, E, bcfg, names, extra={k: v for k, v in extra.items() if k != "rows"})
    os.makedirs(os.path.dirname(cfg.report) or ".", exist_ok=True)
    with open(cfg.report + ".json", "w") as f:
        json.dump(extra, f, indent=1)
    with open(cfg.report + ".md", "w") as f:
        f.write("# The photo bridge, built from text only (`python -m train.build_bridge`)\n\n"
                "Retrieval among each set's own captions (chance R@1 = 1/N images), and CIDEr of the nearest "
                f"corpus caption ({len(corpus):,} COCO captions). Chosen on train-paired: **{vname}, T={T}**, "
                f"saliency temperature {chosen_st}. {int((hits >= cfg.min_hits).sum())} of {len(names)} classes are "
                f"named by >= {cfg.min_hits} corpus captions.\n\n"
                "| prototypes | T | set | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 | nearest-caption CIDEr |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
        for r in rows:
            for split in ("train-paired", "val-dev"):
                s = r[split]
                f.write(f"| {r['prototypes']} | {r['T']} | {split} | {s['i2t_R@1']:.3f} | {s['i2t_R@5']:.3f} | "
                        f"{s['t2i_R@1']:.3f} | {s['t2i_R@5']:.3f} | {s['nearest_caption_CIDEr']:.3f} |\n")
        f.write(f"\n\"a photo of a <top-1 class>\" baseline CIDEr: train-paired {photo_of['train-paired']:.3f}, "
                f"val-dev {photo_of['val-dev']:.3f}.\n\nSaliency temperature (train-paired): {sal_rows}\n")
    print(f"wrote {cfg.out} ({vname}, T={T}, saliency T={chosen_st})")
    return cfg.out


if __name__ == "__main__":
    main()
