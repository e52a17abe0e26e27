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

:class:`Aggregation` names these choices. :data:`AUTHORS` is how the public MacCap code behaves instead (issue
#17, README "Fidelity"): a softmax over the full attention row, which already sums to 1, so the weights are
nearly uniform (``softmax(p)`` of a probability vector ``p`` over ``n`` tokens lies within ``e``-fold of ``1/n``);
the CLS token is a candidate centre (it usually attends to itself most, so it is usually chosen first); every
token is L2-normalised before weighting. The sum ``normalize(I_s) + I_c`` is returned unnormalised as well, for
the authors' inference noise, which is added before the normalisation of step 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Aggregation:
    """How subregions are chosen and pooled. The defaults are this project's; :data:`AUTHORS` the authors' code's."""

    weights: str = "renorm"  # "renorm": a centre's row over patches, renormalised; "softmax": softmax(full row)
    cls_candidate: bool = False  # the CLS token may be chosen as a centre
    normalize_tokens: bool = False  # L2-normalise every token before weighting

    def __post_init__(self):
        if self.weights not in ("renorm", "softmax"):
            raise ValueError(f"region weights must be 'renorm' or 'softmax', got {self.weights!r}")


OURS = Aggregation()
AUTHORS = Aggregation(weights="softmax", cls_candidate=True, normalize_tokens=True)


@dataclass
class Subregions:
    """The chosen subregions of a batch of images."""

    feats: torch.Tensor  # (B, N_cr, D) I_cr, L2-normalised
    index: torch.Tensor  # (B, N_cr) patch indices, 0-based over patches; -1 where the CLS token was chosen
    weights: torch.Tensor  # (B, N_cr) the CLS attention of each chosen token, renormalised over the candidates
    sums: torch.Tensor | None = None  # (B, N_cr, D) normalize(I_s) + I_c before step 3's normalisation


def select_patches(attention: torch.Tensor, n_cr: int, cls_candidate: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``n_cr`` centres by CLS attention: (index (B, n), weight (B, n)), highest first.

    ``attention`` is (B, 1+N, 1+N) with the CLS token at index 0. Indices count patches from 0; the CLS token is a
    candidate only with ``cls_candidate`` (the authors' code), and is then reported as index -1.
    """
    first = 0 if cls_candidate else 1
    cls_row = attention[:, 0, first:]  # (B, N) or (B, 1+N)
    cls_row = cls_row / cls_row.sum(-1, keepdim=True).clamp_min(1e-12)
    n = min(n_cr, cls_row.shape[-1])
    weights, index = cls_row.topk(n, dim=-1)
    return index + first - 1, weights


def aggregate_subregions(attention: torch.Tensor, tokens: torch.Tensor, global_feat: torch.Tensor,
                         index: torch.Tensor, how: Aggregation = OURS) -> torch.Tensor:
    """I_cr for the chosen centres (MacCap eq. 11-13), (B, n, D), L2-normalised."""
    return F.normalize(region_sums(attention, tokens, global_feat, index, how), dim=-1)


def region_sums(attention: torch.Tensor, tokens: torch.Tensor, global_feat: torch.Tensor, index: torch.Tensor,
                how: Aggregation = OURS) -> torch.Tensor:
    """normalize(I_s) + I_c for the chosen centres, before the final normalisation, (B, n, D).

    ``index`` counts patches from 0 (-1: the CLS token). "renorm" weighs the patches by the centre's attention
    row restricted to patches and renormalised; "softmax" weighs every token, CLS included, by the softmax of the
    centre's full row.
    """
    rows = torch.gather(attention, 1, (index + 1)[..., None].expand(-1, -1, attention.shape[-1]))  # (B, n, 1+N)
    if how.weights == "softmax":
        rows, feats = rows.softmax(-1), tokens
    else:
        rows = rows[..., 1:]
        rows, feats = rows / rows.sum(-1, keepdim=True).clamp_min(1e-12), tokens[:, 1:]
    if how.normalize_tokens:
        feats = F.normalize(feats, dim=-1)
    i_s = rows @ feats  # (B, n, D)
    return F.normalize(i_s, dim=-1) + F.normalize(global_feat, dim=-1)[:, None]


def subregions(attention: torch.Tensor, tokens: torch.Tensor, global_feat: torch.Tensor, n_cr: int,
               how: Aggregation = OURS) -> Subregions:
    """Select and aggregate in one call."""
    index, weights = select_patches(attention, n_cr, how.cls_candidate)
    sums = region_sums(attention, tokens, global_feat, index, how)
    return Subregions(F.normalize(sums, dim=-1), index, weights, sums)


def patch_boxes(index: torch.Tensor, grid: tuple[int, int], patch_size: tuple[int, int], input_size: int,
                image_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Pixel boxes (x0, y0, x1, y1) in the ORIGINAL image for patch indices of one image.

    Undoes open_clip's eval preprocessing: resize the shortest side to ``input_size``, then centre-crop a
    square of ``input_size``. ``image_size`` is the original (width, height). Index -1 (the CLS token, chosen
    only under the authors' aggregation) is the whole crop.
    """
    gh, gw = grid
    ph, pw = patch_size
    w, h = image_size
    scale = input_size / min(w, h)
    ox, oy = (w * scale - input_size) / 2, (h * scale - input_size) / 2
    boxes = []
    for p in index.tolist():
        if p < 0:
            x0, y0, x1, y1 = 0, 0, gw * pw, gh * ph
        else:
            r, c = divmod(int(p), gw)
            x0, y0, x1, y1 = c * pw, r * ph, c * pw + pw, r * ph + ph
        boxes.append(((x0 + ox) / scale, (y0 + oy) / scale, (x1 + ox) / scale, (y1 + oy) / scale))
    return boxes
