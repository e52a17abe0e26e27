"""The registry of image-text towers: which loader builds the encoder a :class:`~zsc_core.encode.ClipSpec` names.

Two kinds exist, with the same feature interface (``ImageFeatures``, ``encode_text``): an open_clip CLIP
(``encode.py``: the offline world's, or ViT-B-32 ``openai``) and the photo bridge (``bridge.py``: MobileNetV2 +
MiniLM). This module is the one place that chooses between them, so neither module imports the other.
"""

from __future__ import annotations

import torch

from .bridge import KIND as BRIDGE_KIND
from .bridge import BridgeEncoder, load_bridge
from .checkpoint import read_metadata
from .encode import ClipEncoder, ClipSpec, load_open_clip


def load_clip(spec: ClipSpec, device: torch.device | str = "cpu") -> ClipEncoder | BridgeEncoder:
    """Build and load the tower a spec names: a checkpoint of kind ``bridge`` gives the photo bridge, anything
    else an open_clip CLIP. Reads weights (or, for an open_clip pretrained tag, downloads them); nothing else does."""
    if spec.checkpoint and read_metadata(spec.checkpoint)["kind"] == BRIDGE_KIND:
        return load_bridge(spec, device)
    return load_open_clip(spec, device)
