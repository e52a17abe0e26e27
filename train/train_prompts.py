"""Stage 2: train a captioner to follow interactive prompts ("An image contains motorcycle"), on text only.

    python -m train.train_prompts base=checkpoints/tipcap-s4-offline-world.safetensors
    python -m train.train_prompts base=/tmp/m/maccap.safetensors steps=5 n_captions=64 eval_n=0 \
        run_dir=/tmp/p out=/tmp/p/p.safetensors

Starts from a stage-1 adaptor (MacCap or TIPCap) and fine-tunes it. For each training caption the stage-1
model first writes a rough caption from the caption's own noisy feature (once, cached in ``run_dir``); spaCy's
noun phrases of the caption that the rough caption misses become the prompt (half the time only their head nouns,
as users type them). The LM reads
``[prefix] Reference: <rough> Prompt: <prompt> Prediction:`` and is trained to produce the caption, with both
fields left empty with probability ``p_blank`` and whenever the rough caption equals the caption.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass

import torch

from train.common import RunLogger, parse_overrides, set_threads, write_json
from train.loop import RecordedEncoder, RunConfig, corpus_features, train_loop
from zsc_core.captioner import Captioner
from zsc_core.lm import GenerationCfg
from zsc_core.prompts import training_prompt


@dataclass
class PromptTrainConfig(RunConfig):
    base: str = "checkpoints/tipcap-s4-offline-world.safetensors"  # stage-1 checkpoint to start from
    n_captions: int = 4000  # corpus captions used in stage 2 (each needs one rough caption)
    p_blank: float = 0.1  # probability of empty Reference/Prompt fields
    p_bare: float = 0.5  # probability that a prompt names bare head nouns ("star") instead of noun phrases
    rough_batch: int = 64  # captions per batched generate when writing the rough captions
    phrases: str = ""  # JSON {text: [[phrase, head lemma], ...]} from spaCy, for machines without spaCy
    phrases_out: str = ""  # write that table for the captions and their rough captions, then stop
    steps: int = 400
    lr: float = 1e-4
    run_dir: str = "runs/prompts"
    out: str = "checkpoints/prompts-offline-world.safetensors"


def rough_key(cfg: PromptTrainConfig, captions: list[str]) -> dict:
    """What the rough captions depend on: the base checkpoint's bytes, the seed and the chosen captions."""
    import hashlib

    from zsc_core.checkpoint import file_fingerprint

    return {"base": file_fingerprint(cfg.base), "seed": cfg.seed, "corpus": cfg.corpus,
            "captions": hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]}


@torch.no_grad()
def rough_captions(cap: Captioner, feats: torch.Tensor, path: str, batch: int, seed: int, log: RunLogger,
                   key: dict | None = None) -> list[str]:
    """The stage-1 model's caption of each caption feature (its training-time input), cached in ``path`` under
    ``key`` (a cache written for another base model, seed or caption set is rebuilt)."""
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if isinstance(saved, dict) and saved.get("key") == key and len(saved.get("rough", [])) == len(feats):
            return saved["rough"]
    torch.manual_seed(seed)
    cap.adaptor.eval()
    rough = []
    bar = log.progress(total=len(feats), desc="rough captions")
    for i in range(0, len(feats), batch):
        prefix = cap.text_prefix(feats[i:i + batch].to(cap.lm.device))
        rough += cap.lm.generate(prefix, cfg=GenerationCfg(max_new_tokens=20))
        bar.update(len(prefix))
    bar.close()
    write_json(path, {"key": key, "rough": rough})
    return rough


def prompt_loss(cfg: PromptTrainConfig, cap: Captioner, captions: list[str], rough: list[str], table=None):
    def loss_fn(feats: torch.Tensor, targets: list, idx: torch.Tensor):
        rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,))))  # seeded per step by train_loop
        texts = [training_prompt(captions[i], rough[i], rng, cfg.p_blank, cfg.p_bare, table)
                 for i in idx.tolist()]
        prompts = cap.lm.encode(texts)
        return cap.lm.prefix_loss(cap.text_prefix(feats), targets, prompts=prompts), {}

    return loss_fn


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(PromptTrainConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    clip = RecordedEncoder.read(cfg.encoder_record) if cfg.encoder_record else None
    cap = Captioner.from_pretrained(cfg.base, device=cfg.device, dtype=cfg.dtype, clip=clip)
    cap.interactive = True
    captions, feats = corpus_features(cfg, cap.clip)
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.n_captions]
    captions, feats = [captions[i] for i in order.tolist()], feats[order]
    os.makedirs(cfg.run_dir, exist_ok=True)
    rough = rough_captions(cap, feats, os.path.join(cfg.run_dir, "rough.json"), cfg.rough_batch, cfg.seed, log,
                           rough_key(cfg, captions))
    log.info(f"{sum(r == c for r, c in zip(rough, captions))} of {len(captions)} rough captions equal their caption")
    if cfg.phrases_out:
        from zsc_core.prompts import phrase_table

        with open(cfg.phrases_out, "w") as f:
            json.dump(phrase_table(captions + rough), f)
        log.info(f"wrote the noun phrases of {len(captions)} captions and their rough captions to {cfg.phrases_out}")
        return cfg.phrases_out
    table = None
    if cfg.phrases:
        with open(cfg.phrases) as f:
            table = json.load(f)
    train_loop(cfg, cap, captions, feats, log, prompt_loss(cfg, cap, captions, rough, table))
    log.info(f"wrote {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
