"""Shared fixtures: tiny seeded random-init CLIP and LM that build in milliseconds, fully offline."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

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


def make_tiny_checkpoints(ck) -> None:
    """Tiny seeded checkpoints named like the offline-world presets' (CLIP, TIPCap, MacCap, prompt model)."""
    from zsc_core.adaptor import MacCapConfig, TIPCapConfig
    from zsc_core.captioner import Captioner
    from zsc_core.encode import load_clip, save_clip

    small = MacCapConfig(d_model=32, n_heads=8, ffn_dim=64, n_queries=4, n_cr=4)
    clip_path = str(ck / "clip-offline-world.safetensors")
    save_clip(clip_path, make_tiny_clip(0).model, TINY_CLIP_CFG, PreprocessCfg(image_size=32), "offline-world-clip")
    clip = load_clip(ClipSpec(checkpoint=clip_path))
    lm = load_lm(LMSpec("tiny"))
    Captioner.build(clip, lm, small).save(str(ck / "maccap-offline-world.safetensors"))
    tip = TIPCapConfig(prefix_len=3, d_model=32, n_layers=1, n_heads=8, ffn_dim=64)
    Captioner.build(clip, lm, tip, seed=2).save(str(ck / "tipcap-s4-offline-world.safetensors"))
    two = Captioner.build(clip, lm, small, seed=1)
    two.interactive = True
    two.save(str(ck / "prompts-offline-world.safetensors"))


@contextlib.contextmanager
def tiny_app(tmp_path_factory):
    """Launch app.py on loopback with tiny seeded checkpoints standing in for the offline-world preset
    (maccap + interactive-prompt model, via $ZSC_CHECKPOINTS); yields its URL."""
    ck = tmp_path_factory.mktemp("checkpoints")
    make_tiny_checkpoints(ck)
    old = os.environ.get("ZSC_CHECKPOINTS")
    os.environ["ZSC_CHECKPOINTS"] = str(ck)
    sys.modules.pop("app", None)
    app = importlib.import_module("app")
    try:
        assert app.STARTUP_PROBLEM == ""
        app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, max_file_size=app.MAX_UPLOAD)
        yield app.demo.local_url
    finally:
        app.demo.close()
        sys.modules.pop("app", None)
        if old is None:
            os.environ.pop("ZSC_CHECKPOINTS", None)
        else:
            os.environ["ZSC_CHECKPOINTS"] = old
