"""zsc_core: zero-shot image captioning trained on text only (MacCap and TIPCap on open_clip + a frozen LM).

The public entry point is :class:`zsc_core.captioner.Captioner`; one module per pipeline stage:
``world`` (the offline world), ``encode`` (CLIP), ``regions`` (subregion aggregation), ``gap`` (noise,
Gaussians, losses), ``adaptor``, ``lm``, ``sampling`` (rerank), ``checkpoint``, ``presets``, ``images``.
"""

__version__ = "0.1.0"

__all__ = ["Captioner", "CaptionResult", "CaptionConfig"]


def __getattr__(name: str):
    # Lazy, so that `import zsc_core` (and `python -m zsc_core world`) does not import torch up front.
    if name in __all__:
        from . import captioner

        return getattr(captioner, name)
    raise AttributeError(name)
