"""Train MacCap's adaptor decoder on TEXT only (no images): noisy text features -> adaptor -> frozen LM.

    python -m train.train_maccap                               # offline-world preset (~1 h on 2 CPU cores)
    python -m train.train_maccap steps=5 eval_every=5 eval_n=4 run_dir=/tmp/m out=/tmp/m/maccap.safetensors

Each step: a batch of captions' CLIP text features T_c (cached once by train/features.py) is repeated N_cr
times with N(0, sigma2) noise and L2-normalised (region noise injection, MacCap eq. 2-4); the adaptor turns
the N_cr noisy tokens into N_q prefix embeddings; the frozen LM scores the caption tokens after the prefix
(cross-entropy on caption tokens only, padding masked). The run resumes from ``run_dir/state.pt`` after a
kill; the fp16 adaptor checkpoint is written to ``out`` at every evaluation.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

from train.common import RunLogger, parse_overrides, set_threads
from train.features import cached_text_features
from zsc_core import gap
from zsc_core.adaptor import MacCapConfig
from zsc_core.captioner import Captioner
from zsc_core.device import resolve_device, resolve_dtype
from zsc_core.encode import load_clip
from zsc_core.evaluation import evaluate_world
from zsc_core.lm import load_lm
from zsc_core.presets import PRESETS


@dataclass
class MacCapTrainConfig:
    """A MacCap text-only training run."""

    preset: str = "offline-world"  # gives the frozen CLIP and LM
    corpus: str = "world:12000"  # caption corpus (see train/features.py); 12k scenes ~ 50k distinct captions
    max_words: int = 15  # longer captions are dropped
    max_tokens: int = 24  # LM tokens per caption, EOS included
    # adaptor (MacCapConfig)
    n_queries: int = 10
    d_model: int = 512
    n_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    n_cr: int = 10  # noisy copies of T_c = region tokens; 1 gives the "single token" ablation
    sigma2: float = 0.016  # injected noise variance; 0 gives the "without noise" ablation
    # optimisation
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    # bookkeeping
    save_every: int = 25  # steps between resumable state saves
    eval_every: int = 200  # steps between validation captioning (and checkpoint export)
    eval_n: int = 100  # validation scenes
    run_dir: str = "runs/maccap"
    out: str = "checkpoints/maccap-offline-world.safetensors"
    device: str = "auto"
    threads: int = 0


def lr_at(cfg, step: int) -> float:
    """Linear warm-up then cosine decay to 10% (shared by the trainers)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """The corpus rows of a step: a fresh seeded permutation per epoch, so a resumed run sees the same data."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size]


def train(cfg: MacCapTrainConfig, cap: Captioner, captions: list[str], feats: torch.Tensor,
          log: RunLogger) -> list[float]:
    """The training loop on an already built captioner; resumes from ``cfg.run_dir/state.pt``.

    Returns the losses of the steps it ran. Data order, injected noise and dropout of step k depend on
    (seed, k) alone, so a run killed and resumed ends with exactly the weights of an uninterrupted one.
    """
    lm, model = cap.lm, cap.adaptor
    dev = lm.device
    targets = [ids[:cfg.max_tokens - 1] + [lm.eos_id] for ids in lm.encode(captions)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    os.makedirs(cfg.run_dir, exist_ok=True)
    state_path = os.path.join(cfg.run_dir, "state.pt")
    start = 0
    if os.path.exists(state_path):
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        start = int(st["step"])
        log.info(f"resumed from {state_path} at step {start}")
    else:
        log.info(f"new run: {asdict(cfg)}; {len(captions)} captions; "
                 f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M trainable parameters")

    def save_state(step: int) -> None:
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, state_path + ".tmp")
        os.replace(state_path + ".tmp", state_path)

    model.train()
    losses: list[float] = []
    bar = log.progress(total=cfg.steps, initial=start, desc="maccap")
    t0, ema = time.time(), None
    for step in range(start, cfg.steps):
        torch.manual_seed(cfg.seed * 7919 + step)  # noise and dropout of step k depend on k alone
        idx = batch_indices(len(captions), cfg.batch_size, step, cfg.seed)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        x = gap.inject_noise(feats[idx].to(dev), cfg.n_cr, cfg.sigma2)  # (B, N_cr, D)
        prefix = model(x.to(lm.model.dtype))  # (B, N_q, H)
        loss = lm.prefix_loss(prefix, [targets[i] for i in idx.tolist()])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        ema = losses[-1] if ema is None else 0.95 * ema + 0.05 * losses[-1]
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}")
        done = step + 1
        if done % 10 == 0:
            log.info(f"step {done} loss {losses[-1]:.4f} ema {ema:.4f} lr {lr_at(cfg, step):.2e} "
                     f"{(time.time() - t0) / (done - start):.2f}s/step")
        if done % cfg.save_every == 0 or done == cfg.steps:
            save_state(done)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            scores = {}
            if cfg.eval_n > 0:
                ev = evaluate_world(cap, cfg.eval_n, "val", samples=1)
                model.train()
                scores = ev.scores
                log.info(f"step {done} val ({cfg.eval_n} scenes, S=1) {scores}; "
                         f"e.g. {list(ev.captions.values())[:3]}")
            cap.save(cfg.out, extra={"step": done, "val": scores, "train": asdict(cfg)})
    bar.close()
    model.eval()
    return losses


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(MacCapTrainConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    os.makedirs(cfg.run_dir, exist_ok=True)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    preset = PRESETS[cfg.preset]
    dev = resolve_device(cfg.device)
    clip = load_clip(preset.clip_spec(), dev)
    lm = load_lm(preset.lm, dev, resolve_dtype("auto", dev))
    captions, feats = cached_text_features(clip, cfg.corpus, os.path.join(cfg.run_dir, "features.safetensors"),
                                           cfg.max_words)
    cap = Captioner.build(clip, lm, adaptor_config(cfg), seed=cfg.seed)
    train(cfg, cap, captions, feats, log)
    log.info(f"wrote {cfg.out}")
    return cfg.out


def adaptor_config(cfg: MacCapTrainConfig) -> MacCapConfig:
    return MacCapConfig(n_queries=cfg.n_queries, d_model=cfg.d_model, n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                        dropout=cfg.dropout, n_cr=cfg.n_cr, sigma2=cfg.sigma2)


if __name__ == "__main__":
    main()
