"""Encode stage: the frozen CLIP (open_clip) and the features the captioner reads from it.

A CLIP is given by a :class:`ClipSpec`: an open_clip architecture name plus a pretrained tag (downloaded from
the Hub where it is reachable), or a local weights file, or a zsc ``clip`` checkpoint that carries its own
custom open_clip config (the offline world's CLIP is one). :func:`load_open_clip` is the only function here that may
touch the disk or the network; :class:`ClipEncoder` itself only wraps a built model.

From an image batch the encoder returns (:class:`ImageFeatures`):

* ``global_feat``: the global image feature I_c (the projected CLS token), L2-normalised, (B, D);
* ``tokens``: ``ln_post`` of every token of the last layer times ``proj``, (B, 1 + N, D), unnormalised;
* ``attention``: the last ViT layer's attention averaged over heads, (B, 1 + N, 1 + N); row 0 is the CLS row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from .checkpoint import FrozenIdentity, build_and_load, load_checkpoint, save_checkpoint
from .specs import ClipSpec


@dataclass
class PreprocessCfg:
    """How images become pixels: open_clip's eval transform (resize shortest side, centre crop, normalise)."""

    image_size: int = 224  # square model input, pixels
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's mean
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)  # OpenAI CLIP's std
    interpolation: str = "bicubic"


@dataclass
class ImageFeatures:
    """What the captioner reads from the CLIP image tower (shapes in comments)."""

    global_feat: torch.Tensor  # (B, D) I_c, L2-normalised
    tokens: torch.Tensor  # (B, 1 + N, D) ln_post(tokens) @ proj; index 0 is CLS
    attention: torch.Tensor  # (B, 1 + N, 1 + N) last layer attention, mean over heads
    grid: tuple[int, int]  # (gh, gw) patch grid, N = gh * gw
    patch_size: tuple[int, int]  # (ph, pw) pixels of the model input per patch


def causal_mask(n: int) -> torch.Tensor:
    """open_clip's additive causal mask for a text tower of context ``n``: -inf above the diagonal, (n, n)."""
    return torch.full((n, n), float("-inf")).triu_(1)


def build_custom_clip(config: dict[str, Any]) -> nn.Module:
    """An open_clip ``CLIP`` from a custom config dict (embed_dim, vision_cfg, text_cfg); random weights."""
    from open_clip.model import CLIP

    return CLIP(embed_dim=config["embed_dim"], vision_cfg=dict(config["vision_cfg"]),
                text_cfg=dict(config["text_cfg"]), quick_gelu=config.get("quick_gelu", False))


class ClipEncoder(FrozenIdentity, nn.Module):
    """A frozen open_clip CLIP with the feature functions the captioner needs. Never downloads."""

    def __init__(self, model: nn.Module, preprocess: PreprocessCfg, context_length: int, spec: ClipSpec):
        super().__init__()
        import open_clip

        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.preprocess_cfg = preprocess
        self.context_length = context_length
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)  # ships its BPE
        self.transform = open_clip.image_transform(preprocess.image_size, is_train=False, mean=preprocess.mean,
                                                   std=preprocess.std, interpolation=preprocess.interpolation)
        v = self.model.visual
        if getattr(v, "attn_pool", None) is not None or getattr(v, "pool_type", "tok") != "tok" \
                or getattr(v, "final_ln_after_pool", False) or not hasattr(v, "transformer"):
            raise NotImplementedError("zsc needs a ViT image tower with CLS-token pooling (open_clip pool_type='tok')")

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if isinstance(self.model.text_projection, torch.Tensor) \
            else int(self.model.text_projection.out_features)

    # -- text ---------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
        """L2-normalised text features, (len(texts), D)."""
        outs = [self._encode_tokens(self.tokenize(texts[i:i + batch_size]))
                for i in range(0, len(texts), batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, self.embed_dim, device=self.device)

    def _encode_tokens(self, text: torch.Tensor) -> torch.Tensor:
        """open_clip's encode_text, run only up to the longest sequence's end-of-text token.

        With a causal mask and end-of-text (argmax) pooling, positions after the EOT token cannot change the
        pooled feature, so they are cut: a short caption costs ~1/4 of the 77-token context of ViT-B-32's
        text tower. Towers without a causal mask or with other pooling run in full.
        """
        m = self.model
        if getattr(m, "attn_mask", None) is None or getattr(m, "text_pool_type", "argmax") != "argmax" \
                or not hasattr(m, "token_embedding"):
            return m.encode_text(text, normalize=True)
        n = int(text.argmax(dim=-1).max()) + 1  # (EOT has the largest id) -> positions 0..n-1 matter
        text = text[:, :n]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(text).to(cast) + m.positional_embedding[:n].to(cast)  # (B, n, W)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]  # (B, W) at EOT
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        return F.normalize(x, dim=-1)

    # -- images -------------------------------------------------------------------------------------------
    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images to the model's input, (B, 3, H, W)."""
        return torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised global image features I_c, (B, D)."""
        return self.model.encode_image(pixels, normalize=True)

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> ImageFeatures:
        """Global feature, projected tokens and the last layer's head-averaged attention, in one pass."""
        v = self.model.visual
        x = v._embeds(pixels.to(self.device, next(v.parameters()).dtype))  # (B, 1+N, W)
        blocks = v.transformer.resblocks
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for blk in blocks[:-1]:
            x = blk(x)
        last = blocks[-1]
        if not isinstance(last.attn, nn.MultiheadAttention):
            raise NotImplementedError("the last ViT block must use torch.nn.MultiheadAttention")
        h = last.ln_1(x)
        a_out, attn = last.attn(h, h, h, need_weights=True, average_attn_weights=True)  # attn: (B, 1+N, 1+N)
        x = x + last.ls_1(a_out)
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        if not batch_first:
            x = x.transpose(0, 1)
        tokens = v.ln_post(x)  # (B, 1+N, W)
        if v.proj is not None:
            tokens = tokens @ v.proj  # (B, 1+N, D)
        gh, gw = v.grid_size
        ph, pw = v.patch_size
        return ImageFeatures(global_feat=F.normalize(tokens[:, 0], dim=-1), tokens=tokens, attention=attn,
                             grid=(int(gh), int(gw)), patch_size=(int(ph), int(pw)))


# ---------------------------------------------------------------------------------------------------------
# Loading.


def load_open_clip(spec: ClipSpec, device: torch.device | str = "cpu") -> ClipEncoder:
    """Build and load the open_clip CLIP a spec names (a zsc ``clip`` checkpoint, or an architecture with a
    pretrained tag or local weights). The only place an open_clip CLIP's weights are read (or downloaded); callers
    go through :func:`zsc_core.towers.load_clip`, which also knows the photo bridge."""
    import open_clip

    if spec.checkpoint:
        ck = load_checkpoint(spec.checkpoint, expect_kind="clip")
        cfg = ck.config
        n_ctx = int(cfg["open_clip"]["text_cfg"]["context_length"])
        model = build_and_load(lambda: build_custom_clip(cfg["open_clip"]), ck.tensors, spec.checkpoint,
                               buffers={"attn_mask": lambda: causal_mask(n_ctx)})
        pre = PreprocessCfg(**{**cfg["preprocess"], "mean": tuple(cfg["preprocess"]["mean"]),
                               "std": tuple(cfg["preprocess"]["std"])})
        name = spec.name or cfg.get("name", spec.checkpoint)
        enc = ClipEncoder(model, pre, cfg["open_clip"]["text_cfg"]["context_length"],
                          ClipSpec(name=name, checkpoint=spec.checkpoint))
        return enc.to(device)
    if not spec.arch:
        raise ValueError("a ClipSpec needs an open_clip architecture name or a zsc clip checkpoint")
    model = open_clip.create_model(spec.arch, pretrained=spec.pretrained, load_weights=spec.pretrained is not None)
    if spec.weights:
        if spec.weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(spec.weights)
        else:
            state = torch.load(spec.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    pre = PreprocessCfg(image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
                        mean=tuple(pp.get("mean", PreprocessCfg.mean)), std=tuple(pp.get("std", PreprocessCfg.std)),
                        interpolation=pp.get("interpolation", "bicubic"))
    return ClipEncoder(model, pre, int(model.context_length), spec).to(device)


def save_clip(path: str, model: nn.Module, open_clip_cfg: dict[str, Any], preprocess: PreprocessCfg, name: str,
              extra: dict[str, Any] | None = None) -> str:
    """Save a custom CLIP as a zsc ``clip`` checkpoint (fp16, config and preprocessing included)."""
    cfg = {"name": name, "open_clip": json.loads(json.dumps(open_clip_cfg)), "preprocess": asdict(preprocess)}
    return save_checkpoint(path, model.state_dict(), kind="clip", config=cfg, extra=extra)
