"""Train TIPCap on TEXT (plus, in settings 1-3, a little image data used only to estimate the modality gap).

    python -m train.train_tipcap setting=S4                    # text only
    python -m train.train_tipcap setting=S1 n_paired=100       # a few paired images estimate N(mu, Sigma)
    python -m train.train_tipcap setting=S2                    # web alt-text pairs + corpus correction
    python -m train.train_tipcap setting=S3                    # unpaired images, KL in whitened image space
    python -m train.train_tipcap setting=S4 covariance=isotropic use_reverse=false out=...   # ablations
    python -m train.train_tipcap setting=S4 init=OLD.safetensors seed=1 run_dir=NEW ...      # train on from an export

Training path: caption feature T -> mapping module M(T) = T + eps, eps ~ N(mu, L L^T) (reparameterised) ->
reverse mapping R (one feed-forward layer) -> prefix projector (small transformer, L prefix tokens) -> frozen
LM. At inference the image feature skips the mapping module: I -> R -> projector.

Losses: caption cross-entropy; reverse-mapping reconstruction of T from M(T) (cosine + contrastive, tau=0.1);
and per setting, for the Gaussian:

* S1, S2: mu and Sigma are estimated once (S1: differences of ``n_paired`` paired image/caption features;
  S2: differences of ``n_web`` web image/alt-text pairs, shifted by the corpus correction delta_w->c) and fixed;
* S3: mu and L are trained; mapped features whitened by a Gaussian fitted on ``n_unpaired`` unpaired images
  are pulled towards N(0, I) by a KL term;
* S4: mu and L are trained; a KL term ties N(mu, Sigma) to the pseudo differences M(T) - R(M(T)), and the
  relational distillation loss keeps the similarity structure of the mapped features like that of the text.

The images come from the offline world's ``paired``, ``web`` and ``unpaired`` splits (never ``eval``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace

import torch

from train.common import RunLogger, parse_overrides, set_threads
from train.loop import RunConfig, load_frozen, train_loop
from zsc_core import gap, world
from zsc_core.adaptor import TIPCapConfig
from zsc_core.captioner import Captioner
from zsc_core.encode import ClipEncoder

SETTINGS = ("S1", "S2", "S3", "S4")


@dataclass
class TIPCapTrainConfig(RunConfig):
    """A TIPCap run. The adaptor's fields are TIPCapConfig's, set by name: ``setting=S1``, ``covariance=isotropic``,
    ``use_reverse=false``, ``prefix_len=4``, ... (trainable_gaussian follows the setting: S3/S4 learn it)."""

    adaptor: TIPCapConfig = field(default_factory=TIPCapConfig)  # clip_dim and lm_dim come from the frozen models
    n_paired: int = 100  # S1: paired scenes
    n_web: int = 2000  # S2: web pairs
    n_unpaired: int = 2000  # S3: unpaired images
    shrinkage: float = 0.2  # covariance shrinkage for the estimated Gaussians (few samples against D)
    image_size: int = 128  # rendered size of the setting images
    w_rev: float = 1.0  # reverse-mapping reconstruction loss weight
    tau: float = 0.1  # contrastive temperature of the reconstruction loss
    w_kl: float = 0.01  # KL weight (S3, S4)
    w_rd: float = 1.0  # relational distillation weight (S4)
    gaussian: str = ""  # S1/S2: a safetensors file with the estimated "mu" and "L" (estimate once, train anywhere:
    #                     `python -m train.train_tipcap setting=S1 ... gaussian_out=F steps=0` writes it)
    gaussian_out: str = ""  # write the setting's estimated mu and L here
    run_dir: str = "runs/tipcap-S4"
    out: str = "checkpoints/tipcap-s4-offline-world.safetensors"


def adaptor_config(cfg: TIPCapTrainConfig) -> TIPCapConfig:
    if cfg.adaptor.setting not in SETTINGS:
        raise SystemExit(f"setting must be one of {SETTINGS}, got {cfg.adaptor.setting!r}")
    return replace(cfg.adaptor, trainable_gaussian=cfg.adaptor.setting in ("S3", "S4"))


@torch.no_grad()
def image_features(clip: ClipEncoder, split: str, n: int, size: int, batch: int = 200) -> torch.Tensor:
    """Global CLIP features of ``n`` scenes of a world split, (n, D)."""
    out = []
    for i in range(0, n, batch):
        scenes = list(world.iter_scenes(0, split, min(batch, n - i), start=i))
        out.append(clip.encode_image(clip.pixels([world.render(s, size) for s in scenes])).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def coco_paired_features(clip: ClipEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and caption features of data/coco/train-paired, one row per (photo, caption) pair, (5N, D) each."""
    from train.build_bridge import coco_set
    from zsc_core.images import load_image

    paths, refs = coco_set("train-paired")
    img = clip.encode_image(clip.pixels([load_image(p) for p in paths])).float().cpu()
    txt = clip.encode_text([c for r in refs for c in r]).float().cpu()
    return img.repeat_interleave(torch.tensor([len(r) for r in refs]), dim=0), txt


def setting_statistics(cfg: TIPCapTrainConfig, clip: ClipEncoder, corpus_feats: torch.Tensor) -> dict:
    """Everything a setting estimates from its data before training: the Gaussian, or S3's image Gaussian."""
    d = corpus_feats.shape[1]
    if cfg.gaussian:
        from safetensors.torch import load_file

        g = load_file(cfg.gaussian)
        return {"mu": g["mu"].float(), "L": g["L"].float()}
    if cfg.adaptor.setting == "S1" and cfg.eval_set == "coco":  # real photos: the 80 paired COCO train photos
        img, txt = coco_paired_features(clip)
        mu, L = gap.estimate_paired(img, txt, cfg.shrinkage)
        return {"mu": mu, "L": L}
    if cfg.adaptor.setting == "S1":
        img = image_features(clip, "paired", cfg.n_paired, cfg.image_size)
        txt = clip.encode_text([s.captions[0] for s in world.iter_scenes(0, "paired", cfg.n_paired)]).float().cpu()
        mu, L = gap.estimate_paired(img, txt, cfg.shrinkage)
        return {"mu": mu, "L": L}
    if cfg.adaptor.setting == "S2":
        img = image_features(clip, "web", cfg.n_web, cfg.image_size)
        txt = clip.encode_text([s.alt_text for s in world.iter_scenes(0, "web", cfg.n_web)]).float().cpu()
        mu, L = gap.estimate_web(img, txt, corpus_feats, cfg.shrinkage)
        return {"mu": mu, "L": L}
    init_L = torch.eye(d) * cfg.adaptor.sigma2 ** 0.5
    if cfg.adaptor.setting == "S3":
        img = image_features(clip, "unpaired", cfg.n_unpaired, cfg.image_size)
        mu_i, cov_i = gap.fit_gaussian(img, cfg.shrinkage)
        # Start the mapping at the gap between the two modalities' centroids; training refines it.
        return {"mu": img.mean(0) - corpus_feats.mean(0), "L": init_L, "image_mu": mu_i,
                "image_L": gap.cholesky_factor(cov_i)}
    return {"mu": torch.zeros(d), "L": init_L}


def tipcap_loss(cfg: TIPCapTrainConfig, cap: Captioner, stats: dict):
    ad = cap.adaptor

    def loss_fn(text: torch.Tensor, targets: list, idx: torch.Tensor):
        out = ad.forward_text(text)
        loss = cap.lm.prefix_loss(out.prefix, targets)
        logs = {"ce": loss.item()}
        if out.recon is not None:
            rev = gap.cosine_loss(out.recon, text) + gap.contrastive_loss(out.recon, text, cfg.tau)
            loss = loss + cfg.w_rev * rev
            logs["rev"] = rev.item()
        if cfg.adaptor.setting == "S3":
            kl = gap.whitened_kl_to_standard(out.mapped, stats["image_mu"].to(text), stats["image_L"].to(text))
            loss = loss + cfg.w_kl * kl
            logs["kl"] = kl.item()
        if cfg.adaptor.setting == "S4":
            pseudo = out.mapped - (out.recon if out.recon is not None else text)  # pseudo differences
            kl = gap.batch_kl_to_gaussian(pseudo, ad.mapping.mu, ad.mapping.L)
            rd = gap.relational_distillation(out.mapped, text)
            loss = loss + cfg.w_kl * kl + cfg.w_rd * rd
            logs.update(kl=kl.item(), rd=rd.item())
        return loss, logs

    return loss_fn


def build(cfg: TIPCapTrainConfig, clip, lm, feats: torch.Tensor) -> tuple[Captioner, dict]:
    """The captioner with its mapping module set from the setting's statistics."""
    cap = Captioner.build(clip, lm, adaptor_config(cfg), seed=cfg.seed)
    stats = setting_statistics(cfg, clip, feats)
    cap.adaptor.mapping.set_gaussian(stats["mu"].to(lm.device), stats["L"].to(lm.device))
    return cap, stats


def train(cfg: TIPCapTrainConfig, cap: Captioner, stats: dict, captions: list[str], feats: torch.Tensor,
          log: RunLogger) -> list[float]:
    return train_loop(cfg, cap, captions, feats, log, tipcap_loss(cfg, cap, stats))


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(TIPCapTrainConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    log = RunLogger(os.path.join(cfg.run_dir, "train.log"))
    clip, lm, captions, feats = load_frozen(cfg)
    cap, stats = build(cfg, clip, lm, feats)
    if cfg.gaussian_out:
        from safetensors.torch import save_file

        save_file({"mu": stats["mu"].contiguous(), "L": stats["L"].contiguous()}, cfg.gaussian_out)
        log.info(f"wrote the {cfg.adaptor.setting} Gaussian to {cfg.gaussian_out}")
        if cfg.steps == 0:
            return cfg.gaussian_out
    train(cfg, cap, stats, captions, feats, log)
    log.info(f"wrote {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
