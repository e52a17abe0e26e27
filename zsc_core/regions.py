"""Subregion aggregation (MacCap eq. 10-13) from the CLS attention of the last ViT layer.

Given the last layer's head-averaged attention ``A`` (B, 1+N, 1+N) and the projected tokens ``F`` (B, 1+N, D):

1. the CLS row ``A[:, 0, 1:]`` scores every patch; the top ``N_cr`` patches are the subregion centres. The CLS
   token itself is excluded: its own column is the global feature, which every subregion already receives as
   ``I_c`` in step 3, and choosing it would duplicate the global feature as a "region";
2. each centre ``j`` aggregates the patches it attends to: ``I_s[j] = sum_k a_jk F_k`` over patches ``k``, with
   ``a_j`` the centre's attention row restricted to patches and renormalised to sum to 1;
3. ``I_cr[j] = normalize(normalize(I_s[j]) + I_c)``. Both terms are unit vectors before the sum, so a region and
   the global feature weigh the same whatever the token norms (patch tokens of a CLS-pooled ViT are often much
   shorter or longer than the CLS token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Subregions:
    """The chosen subregions of a batch of images."""

    feats: torch.Tensor  # (B, N_cr, D) I_cr, L2-normalised
    index: torch.Tensor  # (B, N_cr) patch indices, 0-based over patches (CLS excluded)
    weights: torch.Tensor  # (B, N_cr) the CLS attention of each chosen patch, renormalised over all patches


def select_patches(attention: torch.Tensor, n_cr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``n_cr`` patches by CLS attention: (index (B, n), weight (B, n)), highest first.

    ``attention`` is (B, 1+N, 1+N) with the CLS token at index 0; it is not a candidate (see module doc).
    """
    cls_row = attention[:, 0, 1:]  # (B, N)
    cls_row = cls_row / cls_row.sum(-1, keepdim=True).clamp_min(1e-12)
    n = min(n_cr, cls_row.shape[-1])
    weights, index = cls_row.topk(n, dim=-1)
    return index, weights


def aggregate_subregions(attention: torch.Tensor, tokens: torch.Tensor, global_feat: torch.Tensor,
                         index: torch.Tensor) -> torch.Tensor:
    """I_cr for the chosen patches (MacCap eq. 11-13), (B, n, D)."""
    rows = torch.gather(attention[:, 1:, 1:], 1, index[..., None].expand(-1, -1, attention.shape[-1] - 1))
    rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-12)  # (B, n, N), each row sums to 1 over patches
    i_s = rows @ tokens[:, 1:]  # (B, n, D)
    return F.normalize(F.normalize(i_s, dim=-1) + F.normalize(global_feat, dim=-1)[:, None], dim=-1)


def subregions(attention: torch.Tensor, tokens: torch.Tensor, global_feat: torch.Tensor, n_cr: int) -> Subregions:
    """Select and aggregate in one call."""
    index, weights = select_patches(attention, n_cr)
    return Subregions(aggregate_subregions(attention, tokens, global_feat, index), index, weights)


def patch_boxes(index: torch.Tensor, grid: tuple[int, int], patch_size: tuple[int, int], input_size: int,
                image_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Pixel boxes (x0, y0, x1, y1) in the ORIGINAL image for patch indices of one image.

    Undoes open_clip's eval preprocessing: resize the shortest side to ``input_size``, then centre-crop a
    square of ``input_size``. ``image_size`` is the original (width, height).
    """
    gh, gw = grid
    ph, pw = patch_size
    w, h = image_size
    scale = input_size / min(w, h)
    ox, oy = (w * scale - input_size) / 2, (h * scale - input_size) / 2
    boxes = []
    for p in index.tolist():
        r, c = divmod(int(p), gw)
        x0, y0 = c * pw, r * ph
        boxes.append(((x0 + ox) / scale, (y0 + oy) / scale, (x0 + pw + ox) / scale, (y0 + ph + oy) / scale))
    return boxes
