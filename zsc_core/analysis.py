"""Modality-gap and retrieval statistics (pure functions on embeddings; plots come with the gap CLI)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def retrieval_recall(sim: torch.Tensor, image_of_text: torch.Tensor, k: int = 1) -> tuple[float, float]:
    """COCO-style R@k from an (N_img, N_txt) similarity matrix; ``image_of_text[j]`` is caption j's image.

    Image->text: an image counts if any of its captions is in its top k. Text->image: per caption.
    """
    topk_txt = sim.topk(k, dim=1).indices  # (N_img, k)
    i2t = (image_of_text[topk_txt] == torch.arange(sim.shape[0])[:, None]).any(1).float().mean().item()
    topk_img = sim.topk(k, dim=0).indices  # (k, N_txt)
    t2i = (topk_img == image_of_text[None]).any(0).float().mean().item()
    return i2t, t2i


def _mean_offdiag(x: torch.Tensor) -> float:
    s = x @ x.T
    n = len(x)
    return ((s.sum() - s.diagonal().sum()) / (n * (n - 1))).item()


def gap_stats(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """The modality gap of matched pairs (row i of ``image`` with row i of ``text``), all L2-normalised.

    ``paired_cos``: mean cosine of matched image-text pairs; ``image_image_cos`` / ``text_text_cos``: mean
    cosine between different items within one modality; ``centroid_distance``: the distance between the two
    modalities' mean embeddings (the gap vector's length). A gap is visible when matched pairs are *less*
    similar than unrelated items of the same modality.
    """
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    paired = (image * text).sum(-1)
    return {
        "paired_cos_mean": paired.mean().item(),
        "paired_cos_max": paired.max().item(),
        "paired_cos_min": paired.min().item(),
        "image_image_cos": _mean_offdiag(image),
        "text_text_cos": _mean_offdiag(text),
        "centroid_distance": (image.mean(0) - text.mean(0)).norm().item(),
    }


def subregion_share(global_feat: torch.Tensor, sub_feats: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """How often some subregion is closer to the caption than the global feature (MacCap: 33% on COCO).

    global_feat: (N, D); sub_feats: (N, N_cr, D); text: (N, D) the paired captions; all L2-normalised.
    Also the mean/max/min cosine of the best subregion per pair (MacCap Table 1's augmented column).
    """
    g = (global_feat * text).sum(-1)  # (N,)
    best = (sub_feats * text[:, None]).sum(-1).max(1).values  # (N,)
    return {"share_subregion_closer": (best > g).float().mean().item(), "global_cos_mean": g.mean().item(),
            "best_subregion_cos_mean": best.mean().item(), "best_subregion_cos_max": best.max().item(),
            "best_subregion_cos_min": best.min().item()}
