"""Train MacCap's adaptor decoder on TEXT only (no images): noisy text features -> adaptor -> frozen LM.

    python -m train.train_maccap                               # offline-world preset (~1 h on 2 CPU cores)
    python -m train.train_maccap steps=5 eval_every=5 eval_n=4 run_dir=/tmp/m out=/tmp/m/maccap.safetensors
    python -m train.train_maccap n_cr=1 out=checkpoints/ablations/maccap-single-token.safetensors run_dir=runs/m1
    python -m train.train_maccap style=authors out=checkpoints/maccap-authors-offline-world.safetensors \
        run_dir=runs/maccap-authors                            # the authors' adaptor and inference (issue #17)

Each step: a batch of captions' CLIP text features T_c (cached once, train/features.py) is repeated N_cr times
with N(0, sigma2) noise and L2-normalised (region noise injection, MacCap eq. 2-4); the adaptor turns the N_cr
noisy tokens into N_q prefix embeddings; the frozen LM scores the caption tokens after the prefix
(cross-entropy on caption tokens only, padding masked). ``style=authors`` starts from the authors' adaptor
(AUTHORS_MACCAP) and stores their inference settings (AUTHORS_INFERENCE) in the checkpoint; any other override
applies on top of the style. Resumes from ``run_dir/state.pt`` after a kill; the fp16
adaptor checkpoint is written to ``out`` at every evaluation.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch

from train.common import RunLogger, parse_overrides, set_threads
from train.loop import RunConfig, load_frozen, train_loop
from zsc_core.adaptor import AUTHORS_MACCAP, MacCapConfig
from zsc_core.captioner import AUTHORS_INFERENCE, CaptionConfig, Captioner

STYLES = {"ours": (MacCapConfig(), CaptionConfig()), "authors": (AUTHORS_MACCAP, AUTHORS_INFERENCE)}


@dataclass
class MacCapTrainConfig(RunConfig):
    """A MacCap text-only training run. The adaptor's fields (n_queries, d_model, n_cr, sigma2, ...) are
    MacCapConfig's, set by name: ``n_cr=1`` is the single-token ablation, ``sigma2=0`` the one without noise."""

    adaptor: MacCapConfig = field(default_factory=MacCapConfig)  # clip_dim and lm_dim come from the frozen models
    style: str = "ours"  # "authors": the adaptor and inference settings of the authors' code (set before the rest)
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


def parse(argv: list[str]) -> MacCapTrainConfig:
    """The run's config: the style's adaptor first, then every other override on top of it."""
    style = next((a.partition("=")[2] for a in argv if a.lstrip("-").startswith("style=")), "ours")
    if style not in STYLES:
        raise SystemExit(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return parse_overrides(MacCapTrainConfig(adaptor=STYLES[style][0], style=style), argv)


def main(argv: list[str] | None = None) -> str:
    cfg = parse(sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    clip, lm, captions, feats = load_frozen(cfg)
    cap = Captioner.build(clip, lm, adaptor_config(cfg), config=STYLES[cfg.style][1], seed=cfg.seed)
    train(cfg, cap, captions, feats, log)
    log.info(f"wrote {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
