"""The CLIP wrapper: features, attention, the real ViT-B-32 architecture, loading custom checkpoints."""

import pytest
import torch

from zsc_core import regions, world
from zsc_core.checkpoint import CheckpointError
from zsc_core.encode import ClipSpec, PreprocessCfg, save_clip
from zsc_core.towers import load_clip

from .conftest import TINY_CLIP_CFG, make_tiny_clip


def _images(n, size=64):
    return [world.render(world.make_scene(0, "eval", i), size) for i in range(n)]


def test_image_features_match_open_clip(tiny_clip):
    pix = tiny_clip.pixels(_images(3))
    f = tiny_clip.image_features(pix)
    assert f.global_feat.shape == (3, 32) and f.tokens.shape == (3, 17, 32) and f.attention.shape == (3, 17, 17)
    assert f.grid == (4, 4) and f.patch_size == (8, 8)
    # Our single pass gives exactly what open_clip's own encode_image gives.
    assert torch.allclose(f.global_feat, tiny_clip.encode_image(pix), atol=1e-5)
    # Head-averaged attention rows are distributions.
    assert torch.allclose(f.attention.sum(-1), torch.ones(3, 17), atol=1e-5)


def test_truncated_text_pass_equals_open_clip():
    clip = load_clip(ClipSpec(arch="ViT-B-32"))
    texts = ["a red car", "a big blue boat to the left of a small green tree on a grassy field", ""]
    ours = clip.encode_text(texts)
    ref = clip.model.encode_text(clip.tokenize(texts), normalize=True)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_text_features_are_unit_vectors(tiny_clip):
    t = tiny_clip.encode_text(["a red car", "a blue boat next to a tree"])
    assert t.shape == (2, 32)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert tiny_clip.encode_text([]).shape == (0, 32)


def test_vit_b32_architecture_region_extraction():
    clip = load_clip(ClipSpec(arch="ViT-B-32"))  # random weights: no download
    assert clip.preprocess_cfg.image_size == 224 and clip.embed_dim == 512
    from PIL import Image

    img = Image.new("RGB", (320, 240), (120, 30, 200))
    f = clip.image_features(clip.pixels([img]))
    assert f.tokens.shape == (1, 50, 512) and f.attention.shape == (1, 50, 50) and f.grid == (7, 7)
    sub = regions.subregions(f.attention, f.tokens, f.global_feat, 10)
    assert sub.feats.shape == (1, 10, 512)
    boxes = regions.patch_boxes(sub.index[0], f.grid, f.patch_size, 224, img.size)
    assert len(boxes) == 10
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 320 + 1e-6 and 0 <= y0 < y1 <= 240 + 1e-6
        assert abs((x1 - x0) - 32 * 240 / 224) < 1e-4  # one patch of the resized image, in original pixels


def test_custom_clip_checkpoint_round_trip(tmp_path):
    clip = make_tiny_clip(1)
    path = str(tmp_path / "clip.safetensors")
    save_clip(path, clip.model, TINY_CLIP_CFG, PreprocessCfg(image_size=32), "tiny-saved")
    loaded = load_clip(ClipSpec(checkpoint=path))
    assert loaded.spec.display_name() == "tiny-saved"
    assert loaded.fingerprint == clip.fingerprint  # fp16 on disk, same fingerprint (hashed as fp16)
    pix = clip.pixels(_images(2))
    assert torch.allclose(loaded.encode_image(pix), clip.encode_image(pix), atol=2e-2)


def test_loading_an_adaptor_file_as_clip_is_an_error(tmp_path):
    from zsc_core.checkpoint import save_checkpoint

    p = str(tmp_path / "x.safetensors")
    save_checkpoint(p, {"w": torch.zeros(2)}, kind="maccap", config={})
    with pytest.raises(CheckpointError, match="expected one of"):
        load_clip(ClipSpec(checkpoint=p))
