"""Pretrain the offline world's small CLIP, contrastively, on generated image-caption pairs.

    python -m train.pretrain_clip                       # full run (~2 h on 2 CPU cores), resumes if killed
    python -m train.pretrain_clip steps=20 run_dir=/tmp/c out=/tmp/c/clip.safetensors   # a smoke run

Fields of :class:`PretrainConfig` are overridden as ``field=value`` arguments. The run keeps its state in
``run_dir`` (``state.pt``: weights, optimiser, step; ``train.log``) and resumes from it; the final model is
written as a small fp16 zsc checkpoint to ``out``. Pairs come from the world's ``clip`` split only, generated on
the fly in a worker process (the pairs of step k are a pure function of k, so a resumed run sees exactly the
data it would have seen). Evaluation scenes are never used.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from train.common import RunLogger, load_state, parse_overrides, save_state, set_threads
from zsc_core import world
from zsc_core.encode import PreprocessCfg, build_custom_clip, save_clip


@dataclass
class PretrainConfig:
    """The offline CLIP and its training run. Sizes were measured to fit ~2 h on 2 cores."""

    # model (an open_clip ViT CLIP: patch tokens and a CLS attention row exist, as subregion aggregation needs)
    image_size: int = 64  # model input, pixels
    patch_size: int = 8  # 8x8 grid of patches -> 64 patch tokens + CLS
    vision_width: int = 192
    vision_layers: int = 4
    head_width: int = 64  # 3 heads at width 192
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 2
    context_length: int = 32  # world captions are <= 25 BPE tokens
    embed_dim: int = 256  # joint embedding size D
    # run
    steps: int = 2000  # optimiser steps (~3 s each here with data generation)
    batch_size: int = 256  # pairs per step; contrastive negatives
    lr: float = 1e-3  # peak AdamW learning rate
    warmup: int = 150  # linear warm-up steps, then cosine decay to 0
    weight_decay: float = 0.05
    alt_text_p: float = 0.15  # share of pairs captioned with alt-text instead of a reference caption
    render_sizes: tuple[int, ...] = (64, 96, 128)  # rendered sizes, resized by the real preprocessing
    world_seed: int = 0
    save_every: int = 100  # steps between resumable state saves
    eval_every: int = 250  # steps between validation retrieval checks
    seed: int = 0
    run_dir: str = "runs/clip"
    out: str = "checkpoints/clip-offline-world.safetensors"
    name: str = "offline-world-clip"  # the name adaptors record
    workers: int = 1  # data worker processes
    threads: int = 0  # torch threads (0: leave torch's default)

    def open_clip_config(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {"image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                           "layers": self.vision_layers, "head_width": self.head_width, "mlp_ratio": 4.0},
            "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                         "heads": self.text_heads, "layers": self.text_layers},
        }


class PairStream(torch.utils.data.IterableDataset):
    """Batches of (pixels, tokens) for steps ``start .. steps-1``; batch k depends on k alone."""

    def __init__(self, cfg: PretrainConfig, start: int):
        self.cfg, self.start = cfg, start

    def __iter__(self):
        import open_clip

        cfg = self.cfg
        pre = PreprocessCfg(image_size=cfg.image_size)
        tf = open_clip.image_transform(cfg.image_size, is_train=False, mean=pre.mean, std=pre.std)
        tok = open_clip.tokenizer.SimpleTokenizer(context_length=cfg.context_length)
        for step in range(self.start, cfg.steps):
            yield make_batch(cfg, step, tf, tok)


def make_batch(cfg: PretrainConfig, step: int, tf, tok) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([cfg.seed, step])
    pix, texts = [], []
    for i in range(cfg.batch_size):
        s = world.make_scene(cfg.world_seed, "clip", step * cfg.batch_size + i)
        size = int(rng.choice(cfg.render_sizes))
        pix.append(tf(world.render(s, size)))
        texts.append(s.alt_text if rng.random() < cfg.alt_text_p else s.captions[int(rng.integers(0, 5))])
    return torch.stack(pix), tok(texts)


def lr_at(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def retrieval_r1(model, cfg: PretrainConfig, n: int = 500) -> tuple[float, float]:
    """Image->text and text->image R@1 among ``n`` validation scenes (first caption of each)."""
    import open_clip

    model.eval()
    pre = PreprocessCfg(image_size=cfg.image_size)
    tf = open_clip.image_transform(cfg.image_size, is_train=False, mean=pre.mean, std=pre.std)
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=cfg.context_length)
    scenes = list(world.iter_scenes(cfg.world_seed, "val", n))
    img = model.encode_image(torch.stack([tf(world.render(s, 128)) for s in scenes]), normalize=True)
    txt = model.encode_text(tok([s.captions[0] for s in scenes]), normalize=True)
    sim = img @ txt.T
    lab = torch.arange(n)
    model.train()
    return (sim.argmax(1) == lab).float().mean().item(), (sim.argmax(0) == lab).float().mean().item()


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(PretrainConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.run_dir, exist_ok=True)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    model = build_custom_clip(cfg.open_clip_config())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    state_path = os.path.join(cfg.run_dir, "state.pt")
    start = load_state(state_path, model, opt)
    if start:
        log.info(f"resumed from {state_path} at step {start}")
    else:
        log.info(f"new run: {asdict(cfg)}; {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.train()
    loader = torch.utils.data.DataLoader(PairStream(cfg, start), batch_size=None, num_workers=cfg.workers,
                                         prefetch_factor=2 if cfg.workers else None,
                                         persistent_workers=False)

    bar = log.progress(total=cfg.steps, initial=start, desc="clip")
    t0, step = time.time(), start
    for step, (pixels, tokens) in enumerate(loader, start=start):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        img, txt, scale = model(pixels, tokens)[:3]
        logits = scale * img @ txt.T  # (B, B)
        lab = torch.arange(len(logits))
        loss = (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{scale.item():.1f}")
        done = step + 1
        if done % 20 == 0:
            log.info(f"step {done} loss {loss.item():.4f} scale {scale.item():.2f} lr {lr_at(cfg, step):.2e} "
                     f"{(time.time() - t0) / (done - start):.2f}s/step")
        if done % cfg.save_every == 0 or done == cfg.steps:
            save_state(state_path, model, opt, done)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            i2t, t2i = retrieval_r1(model, cfg)
            log.info(f"step {done} val R@1 (500 scenes) image->text {i2t:.3f} text->image {t2i:.3f}")
            save_clip(cfg.out, model, cfg.open_clip_config(), PreprocessCfg(image_size=cfg.image_size), cfg.name,
                      extra={"step": done, "val_r1_i2t": i2t, "val_r1_t2i": t2i, "world_seed": cfg.world_seed})
    bar.close()
    if start >= cfg.steps:
        log.info("run already complete")
    log.info(f"wrote {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
