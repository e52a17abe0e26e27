"""zsc_core: zero-shot image captioning trained on text only: MacCap and TIPCap on a frozen image-text encoder (the
MobileNetV2 x MiniLM photo bridge, a small CLIP of the offline world, or open_clip) and a frozen causal LM.

The public entry point is :class:`zsc_core.captioner.Captioner` (``Captioner.from_pretrained()`` loads
:data:`DEFAULT_PRESET`). One module per pipeline stage: ``towers``/``encode``/``bridge`` (the frozen encoder),
``regions`` (subregions), ``gap`` (noise, Gaussians, losses), ``adaptor``, ``bank`` and ``memory`` (the caption
bank), ``lm``, ``guidance``, ``sampling`` (ranking), ``settings``, ``prompts``, ``vqa``; the app's side in
``models``, ``requests``, ``display``, ``service``, ``vqa_service``, ``gap_service``.
"""

__version__ = "0.1.0"
# The default preset, in one place (torch-free, so that `python -m zsc_core` starts light); $ZSC_DEFAULT_PRESET
# overrides it for a deployment or a test (presets.default_preset).
DEFAULT_PRESET = "photo"

__all__ = ["Captioner", "CaptionResult", "CaptionConfig"]


def __getattr__(name: str):
    # Lazy, so that `import zsc_core` (and `python -m zsc_core world`) does not import torch up front.
    if name in __all__:
        from . import captioner

        return getattr(captioner, name)
    raise AttributeError(name)
