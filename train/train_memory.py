"""Train the memory adaptor on TEXT only, on the inputs it reads at inference (Knight, IFCap, ViECap, MacCap).

    python -m train.train_memory                                     # the photo preset (~45 min on 2 CPU cores)
    python -m train.train_memory steps=5 eval_every=5 eval_n=4 run_dir=/tmp/m out=/tmp/m/memory.safetensors

Each step, for each caption of the batch (zsc_core.memory): its text feature plus N(0, sigma2) noise retrieves its
``k`` nearest bank captions, **itself and its verbatim duplicates excluded**, whose mean is the global anchor; up to
``n_cr`` of its own noun phrases, embedded and noised the same way, retrieve ``region_k`` neighbours each, the
region anchors (none with probability ``p_no_regions``, so "regions off" stays in distribution); the nouns that at
least ``entity_min`` of its ``entity_k`` global neighbours name become the entity prompt (none with probability
``p_no_entities``; with probability ``p_own_entity`` one of the caption's own nouns is added, so that a noun the user
types is read as present). The decoder reads the memory, the LM reads the prefix and the entity prompt and is scored
on the caption. The decoder starts from ``init_from`` (a MacCap adaptor of the same sizes, its slot embedding new).

Resumes from ``run_dir/state.pt``; validates on train-paired photos at S=1 (never val-dev).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass, field

import torch

from train.common import RunLogger, parse_overrides, set_threads
from train.loop import RunConfig, load_frozen, train_loop
from zsc_core.adaptor import MemoryConfig
from zsc_core.captioner import CaptionConfig, Captioner
from zsc_core.checkpoint import load_checkpoint, save_checkpoint
from zsc_core.entities import entity_prompt, retrieved_entities
from zsc_core.memory import MemorySpec, build_memory, duplicate_rows, noisy, pick_regions


@dataclass
class MemoryTrainConfig(RunConfig):
    """A memory-adaptor run. The adaptor's fields (n_cr, k, region_k, weighting, sigma2, entity_*) are
    MemoryConfig's, set by name; they are also the inference defaults written beside the export."""

    adaptor: MemoryConfig = field(default_factory=MemoryConfig)
    preset: str = "photo"
    corpus: str = "coco"
    eval_set: str = "coco"
    eval_n: int = 40
    eval_every: int = 100
    steps: int = 600
    bank: str = "checkpoints/bank-coco-photo.safetensors"
    phrases: str = "runs/features/coco-phrases.json.gz"  # train.build_entities' noun phrases of every bank row
    init_from: str = "checkpoints/maccap-photo.safetensors"  # decoder weights to start from ("" : fresh)
    p_no_regions: float = 0.2
    p_no_entities: float = 0.1
    p_own_entity: float = 0.3
    run_dir: str = "runs/memory-photo"
    out: str = "runs/memory-photo/out.safetensors"


def inference_defaults(a: MemoryConfig) -> CaptionConfig:
    """What the export serves by default: its training retrieval, S=8 greedy, CIDEr-D ranked against the 300
    nearest bank captions (the photo preset's ranking). The served setting is set on train-paired afterwards."""
    return CaptionConfig().replace(samples=8, num_beams=1, mix_k=a.k, region_k=a.region_k, weighting=a.weighting,
                                   temperature=a.temperature, entities=a.entities, entity_k=a.entity_k,
                                   entity_min=a.entity_min, max_entities=a.max_entities, rerank="cider",
                                   rerank_k=300, bank_mix=0.0)


def phrase_features(clip, captions: list[str], path: str, cache: str) -> list[torch.Tensor]:
    """Each caption's noun-phrase features (n_i, D), from ``path`` (train.build_entities), encoded once by the
    text tower and cached in ``cache``."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = json.load(f)["phrases"]
    if len(rows) != len(captions):
        raise SystemExit(f"{path} has {len(rows)} rows, the corpus {len(captions)}: rerun train.build_entities")
    unique = sorted({p for row in rows for p, _ in row})
    if os.path.isfile(cache):
        feats = load_checkpoint(cache, expect_kind="phrase-features").tensors["feats"].float()
    else:
        feats = torch.cat([clip.encode_text(unique[i:i + 2048]).float().cpu() for i in range(0, len(unique), 2048)])
        save_checkpoint(cache, {"feats": feats}, kind="phrase-features", config={"n": len(unique)}, dtype=None)
    at = {p: i for i, p in enumerate(unique)}
    return [feats[[at[p] for p, _ in row]] if row else feats[:0] for row in rows]


def memory_loss(cfg: MemoryTrainConfig, cap: Captioner, phrase_feats: list[torch.Tensor],
                dups: list[list[int]]):
    a = cfg.adaptor
    spec = MemorySpec(a.k, a.region_k, a.weighting, a.temperature)
    nouns = cap.bank.nouns()

    def loss_fn(feats: torch.Tensor, targets: list, idx: torch.Tensor):
        rows = idx.tolist()
        q = noisy(feats, a.sigma2)  # the global RNG is seeded per step by the loop: resumable
        rq, pad = pick_regions([phrase_feats[j] for j in rows], a.n_cr, None, cfg.p_no_regions)
        rq = noisy(rq, a.sigma2)
        m = build_memory(cap.bank, q, rq, spec, pad, exclude=[dups[j] for j in rows])
        prompts = None
        if a.entities:
            texts = []
            for i, row in enumerate(m.neighbours[:, :a.entity_k].tolist()):
                ents = retrieved_entities([nouns[j] for j in row], a.entity_min, a.max_entities)
                own = [n for n in nouns[rows[i]] if n not in ents]
                if own and a.max_entities and torch.rand(()).item() < cfg.p_own_entity:  # ViECap: a named noun
                    pick = own[int(torch.randint(len(own), ()).item())]  # is in the caption
                    ents = ents[:a.max_entities - 1]
                    ents.insert(int(torch.randint(len(ents) + 1, ()).item()), pick)
                if torch.rand(()).item() < cfg.p_no_entities:
                    ents = []
                texts.append(entity_prompt(ents))
            prompts = cap.lm.encode(texts)
        prefix = cap.adaptor(m.tokens.to(cap.lm.device), m.padding.to(cap.lm.device))
        n_regions = (~m.padding[:, 1:]).sum(1).float().mean().item() if m.padding.shape[1] > 1 else 0.0
        return cap.lm.prefix_loss(prefix, targets, prompts), {"regions": round(n_regions, 2)}

    return loss_fn


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(MemoryTrainConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    clip, lm, captions, feats = load_frozen(cfg)
    cap = Captioner.build(clip, lm, cfg.adaptor, config=inference_defaults(cfg.adaptor), seed=cfg.seed)
    cap.bank = os.path.abspath(cfg.bank)
    if cap.bank.captions().captions != captions:
        raise SystemExit(f"{cfg.bank} does not hold the corpus {cfg.corpus!r} row for row: rebuild it")
    if cfg.init_from and not cfg.init:
        ck = load_checkpoint(cfg.init_from, expect_kind="maccap")
        missing, unexpected = cap.adaptor.load_state_dict({k: v.float() for k, v in ck.tensors.items()}, strict=False)
        if unexpected or set(missing) != {"slots"}:
            raise SystemExit(f"init_from={cfg.init_from}: not a MacCap adaptor of this size ({missing}, {unexpected})")
        log.info(f"decoder initialised from {cfg.init_from}")
    cache = os.path.join(os.path.dirname(os.path.abspath(cfg.run_dir)), "features",
                         f"phrases-{clip.text_fingerprint}.safetensors")
    pf = phrase_features(clip, captions, cfg.phrases, cache)
    train_loop(cfg, cap, captions, feats, log, memory_loss(cfg, cap, pf, duplicate_rows(captions)))
    log.info(f"wrote {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
