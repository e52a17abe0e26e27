"""How long a ZeroGPU call asks for (``@spaces.GPU(duration=...)``), sized from the request.

The quota pre-check refuses a visitor whose remaining quota is under the requested duration, and anonymous
visitors have little, so the duration is sized from the request, not set high. No GPU was lent to measure it; the
bound is generous against this machine's CPU figures divided by a GPU's speed-up.
"""

from __future__ import annotations

GPU_BASE_S = 10.0  # a fresh worker: the first CUDA call, the bank look-ups, the candidates' text encoding
GPU_PER_SEQUENCE_S = 0.25  # per decoded sequence (S x beams, twice for a two-pass prompt)
GPU_PER_IMAGE_S = 0.05  # per image the gap tab encodes
GPU_MAX_S = 120


def gpu_seconds(samples: int, beams: int = 1, prompt: bool = False, images: int = 0) -> int:
    """The duration a ZeroGPU call asks for: a base, plus each sequence decoded and each image encoded; whole
    seconds, at most GPU_MAX_S."""
    seq = max(1, int(samples)) * max(1, int(beams)) * (2 if prompt else 1)
    return int(min(GPU_MAX_S, -(-(GPU_BASE_S + GPU_PER_SEQUENCE_S * seq + GPU_PER_IMAGE_S * images) // 1)))
