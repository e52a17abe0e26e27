"""Shared fixtures: tiny seeded random-init CLIP and LM that build in milliseconds, fully offline."""

from __future__ import annotations

import pytest
import torch

from zsc_core.encode import ClipEncoder, ClipSpec, PreprocessCfg, build_custom_clip
from zsc_core.lm import LMSpec, load_lm

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_tiny_clip(seed: int = 0) -> ClipEncoder:
    torch.manual_seed(seed)
    return ClipEncoder(build_custom_clip(TINY_CLIP_CFG), PreprocessCfg(image_size=32), 16,
                       ClipSpec(name=f"tiny-clip-{seed}"))


@pytest.fixture(scope="session")
def tiny_clip() -> ClipEncoder:
    return make_tiny_clip(0)


@pytest.fixture(scope="session")
def tiny_lm():
    return load_lm(LMSpec("tiny"))
