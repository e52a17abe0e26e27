"""Train MacCap's adaptor decoder on TEXT only (no images): noisy text features -> adaptor -> frozen LM.

    python -m train.train_maccap                               # offline-world preset (~1 h on 2 CPU cores)
    python -m train.train_maccap steps=5 eval_every=5 eval_n=4 run_dir=/tmp/m out=/tmp/m/maccap.safetensors
    python -m train.train_maccap n_cr=1 out=checkpoints/ablations/maccap-single-token.safetensors run_dir=runs/m1

Each step: a batch of captions' CLIP text features T_c (cached once, train/features.py) is repeated N_cr times
with N(0, sigma2) noise and L2-normalised (region noise injection, MacCap eq. 2-4); the adaptor turns the N_cr
noisy tokens into N_q prefix embeddings; the frozen LM scores the caption tokens after the prefix
(cross-entropy on caption tokens only, padding masked). Resumes from ``run_dir/state.pt`` after a kill; the fp16
adaptor checkpoint is written to ``out`` at every evaluation.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch

from train.common import RunLogger, parse_overrides, set_threads
from train.loop import RunConfig, load_frozen, train_loop
from zsc_core.adaptor import MacCapConfig
from zsc_core.captioner import Captioner


@dataclass
class MacCapTrainConfig(RunConfig):
    """A MacCap text-only training run. The adaptor's fields (n_queries, d_model, n_cr, sigma2, ...) are
    MacCapConfig's, set by name: ``n_cr=1`` is the single-token ablation, ``sigma2=0`` the one without noise."""

    adaptor: MacCapConfig = field(default_factory=MacCapConfig)  # clip_dim and lm_dim come from the frozen models
    run_dir: str = "runs/maccap"
    out: str = "checkpoints/maccap-offline-world.safetensors"


def adaptor_config(cfg: MacCapTrainConfig) -> MacCapConfig:
    return cfg.adaptor


def maccap_loss(cfg: MacCapTrainConfig, cap: Captioner):
    def loss_fn(feats: torch.Tensor, targets: list, idx: torch.Tensor):
        prefix = cap.text_prefix(feats)  # noisy copies (B, N_cr, D) -> adaptor -> (B, N_q, H)
        return cap.lm.prefix_loss(prefix, targets), {}

    return loss_fn


def train(cfg: MacCapTrainConfig, cap: Captioner, captions: list[str], feats: torch.Tensor,
          log: RunLogger) -> list[float]:
    """Train (or resume) on an already built captioner; returns the losses of the steps run."""
    return train_loop(cfg, cap, captions, feats, log, maccap_loss(cfg, cap))


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(MacCapTrainConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    clip, lm, captions, feats = load_frozen(cfg)
    cap = Captioner.build(clip, lm, adaptor_config(cfg), seed=cfg.seed)
    train(cfg, cap, captions, feats, log)
    log.info(f"wrote {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
