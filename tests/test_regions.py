"""Subregion aggregation on hand-made attention maps (MacCap eq. 10-13) and patch boxes."""

import torch
import torch.nn.functional as F

from zsc_core import regions


def _attention():
    # 1 CLS + 4 patches. The CLS row prefers patch 2 (token 3), then patch 0 (token 1); CLS->CLS is largest
    # and must never be chosen.
    a = torch.tensor([
        [0.50, 0.15, 0.05, 0.25, 0.05],
        [0.20, 0.40, 0.20, 0.10, 0.10],
        [0.20, 0.20, 0.20, 0.20, 0.20],
        [0.10, 0.00, 0.30, 0.60, 0.00],
        [0.20, 0.20, 0.20, 0.20, 0.20],
    ])
    return a[None]


def test_select_excludes_cls_and_orders_by_attention():
    idx, w = regions.select_patches(_attention(), 2)
    assert idx.tolist() == [[2, 0]]
    # CLS attention renormalised over the 4 patches: 0.25 / 0.5 and 0.15 / 0.5
    assert torch.allclose(w, torch.tensor([[0.5, 0.3]]))
    idx_all, _ = regions.select_patches(_attention(), 10)  # more than there are: all patches
    assert sorted(idx_all[0].tolist()) == [0, 1, 2, 3]


def test_aggregate_hand_computed():
    tokens = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])  # (1, 5, 2)
    glob = torch.tensor([[0.0, 1.0]])
    idx = torch.tensor([[2]])  # token 3, row over patches [0, .3, .6, 0] / .9
    out = regions.aggregate_subregions(_attention(), tokens, glob, idx)
    i_s = (0.3 * torch.tensor([0.0, 1.0]) + 0.6 * torch.tensor([1.0, 1.0])) / 0.9
    expected = F.normalize(F.normalize(i_s, dim=0) + glob[0], dim=0)
    assert out.shape == (1, 1, 2)
    assert torch.allclose(out[0, 0], expected, atol=1e-6)
    # The CLS token's own feature (9, 9) never enters a subregion.
    assert out[0, 0, 0] < out[0, 0, 1]


def test_subregions_bundle():
    tokens = torch.randn(1, 5, 3)
    sub = regions.subregions(_attention(), tokens, F.normalize(tokens[:, 0], dim=-1), 3)
    assert sub.feats.shape == (1, 3, 3) and sub.index.shape == (1, 3) and sub.weights.shape == (1, 3)
    assert torch.allclose(sub.feats.norm(dim=-1), torch.ones(1, 3))


def test_patch_boxes_undo_resize_and_centre_crop():
    # 2x2 grid of 16 px patches on a 32 px input; original 64 wide x 128 high -> scale 0.5, crop offset y=16.
    boxes = regions.patch_boxes(torch.tensor([0, 3]), (2, 2), (16, 16), 32, (64, 128))
    assert boxes[0] == (0.0, 32.0, 32.0, 64.0)
    assert boxes[1] == (32.0, 64.0, 64.0, 96.0)
