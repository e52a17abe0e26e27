"""A checkpoint's self-description (the JSON under the safetensors metadata key ``"zsc"``), read without torch or
its tensors: what the app's page and the Models tab read about each preset before any model is loaded.
``checkpoint`` writes it and re-exports what is here."""

from __future__ import annotations

import json
import os
from typing import Any

from safetensors import safe_open

FORMAT_VERSION = 1
META_KEY = "zsc"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format, or does not match the models at hand."""


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata document of a checkpoint, without reading its tensors (nor importing torch)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises several error types for a non-safetensors file
        raise CheckpointError(f"{path} is not a safetensors file: {e}") from e
    if raw is None:
        raise CheckpointError(f"{path} has no zsc metadata (not written by zsc_core.checkpoint.save_checkpoint)")
    meta = json.loads(raw)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta.get('format_version')}, this zsc_core reads {FORMAT_VERSION}")
    return meta
