"""Device and dtype, decided in one place, and the one precision policy.

Every other module receives a ``torch.device`` from here; nothing else calls ``.cuda()``. Precision: the frozen
LM runs in the runtime dtype (:func:`resolve_dtype`), every trainable weight (the adaptors) stays float32, and
the forward passes that mix them run inside :func:`autocast`; the LM casts its input prefix to its own dtype at
its boundary. Nothing else casts by hand. Fingerprints are taken of the weights as stored (float32), so a
checkpoint loads whatever the runtime dtype.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; any other value is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _cpu_fields(cpuinfo: str) -> tuple[str, list[str]]:
    """(model name, flags) of the first CPU that ``cpuinfo`` (Linux's /proc/cpuinfo) lists; ("", []) unread."""
    try:
        with open(cpuinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return "", []

    def field(key: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() == key), "")

    return field("model name"), field("flags").split()


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86's AVX512-BF16 or AMX-BF16, as Linux lists them); where it
    does not, torch emulates bf16 and an LM runs 1.6x slower than in float32 (2026-12-07-lm-precision.md)."""
    flags = _cpu_fields(cpuinfo)[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


# the vector extensions a CPU timing depends on, widest last (the benches name them beside their figures)
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_summary(cpuinfo: str = "/proc/cpuinfo") -> str:
    """This CPU in words for a bench report: its model and which of :data:`VECTOR_FLAGS` it has, e.g. "AMD EPYC
    (avx2; no avx512f, avx512_vnni, avx512_bf16, amx_bf16)". The same core count runs at very different speeds on
    different CPUs, so a timing says which it ran on."""
    name, flags = _cpu_fields(cpuinfo)
    has = [f for f in VECTOR_FLAGS if f in flags]
    lacks = [f for f in VECTOR_FLAGS if f not in flags]
    return f"{name or 'unknown CPU'} ({', '.join(has) or 'none of ' + '/'.join(VECTOR_FLAGS)}" + (
        f"; no {', '.join(lacks)})" if has and lacks else ")")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, preferred: str = "float32") -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA GPUs that support it; on a CPU, ``preferred`` where that is ``"bfloat16"`` and
    the CPU computes bf16 (:func:`cpu_has_bf16`), else float32. ``preferred`` is a model's own ``lm_dtype``
    (settings.InferenceSettings): set only for models shown at parity in bf16, because bf16 is not harmless for
    every model (the offline world's MacCap loses its grounding bar in bf16,
    docs/experiments/2026-12-07-cold-start-and-memory.md). Any other value is that dtype, whatever the model."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and preferred in ("bfloat16", "bf16") and cpu_has_bf16():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
            "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[dtype]


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed precision for a forward pass that feeds the LM: matmuls in ``dtype`` (the LM's runtime dtype) while
    fp32 weights stay fp32; a no-op for float32."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
