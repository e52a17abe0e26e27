"""Self-describing checkpoints: safetensors weights plus JSON metadata.

Every file zsc writes carries, beside its tensors, a JSON document under the safetensors metadata key
``"zsc"``: the format version, what kind of model it is (``clip``, ``maccap``, ``tipcap``, ...), the config
that built it, and, for adaptors, the specs (name + weight fingerprint) of the frozen CLIP and language model it
was trained against. A loader therefore rebuilds the exact model with no hard-coded sizes and can refuse a
checkpoint that does not belong to the CLIP or LM at hand.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .header import FORMAT_VERSION, META_KEY, CheckpointError, read_metadata


def build_and_load(build: Callable[[], torch.nn.Module], tensors: Mapping[str, torch.Tensor], what: str,
                   buffers: Mapping[str, Callable[[], torch.Tensor]] | None = None) -> torch.nn.Module:
    """Construct a module on the meta device (no memory, no random initialisation) and adopt ``tensors`` as its
    weights (``load_state_dict(assign=True)``, cast to fp32). Thread-safe: nothing global is patched.

    A missing or unexpected weight raises :class:`CheckpointError` naming ``what``. Non-persistent buffers are
    not in a state dict: ``buffers`` gives a function per such buffer name that makes it; one left on the meta
    device is an error. Saves the cost of initialising weights that are overwritten at once (the app's start-up).
    """
    with torch.device("meta"):
        model = build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # a shape that does not fit the config
        raise CheckpointError(f"{what}: weights do not fit its config: {e}") from e
    if missing or unexpected:
        raise CheckpointError(f"{what}: weights do not fit its config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for name, make in (buffers or {}).items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, make())
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{what}: no value for {left[:3]}")
    return model




@dataclass
class Checkpoint:
    """Tensors and metadata of one checkpoint file."""

    tensors: dict[str, torch.Tensor]
    kind: str  # "clip", "maccap", "tipcap", ...
    config: dict[str, Any]  # the config dataclass (as a dict) that built the model
    clip: dict[str, Any] | None = None  # {"name": ..., "fingerprint": ...} of the frozen CLIP
    lm: dict[str, Any] | None = None  # {"name": ..., "fingerprint": ...} of the frozen LM
    extra: dict[str, Any] = field(default_factory=dict)  # training step, metrics, notes
    path: str = ""


def save_checkpoint(
    path: str,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    config: Mapping[str, Any],
    clip: Mapping[str, Any] | None = None,
    lm: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = torch.float16,
) -> str:
    """Write ``tensors`` (cast to ``dtype`` when floating, default fp16) and the metadata atomically."""
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": dict(config),
        "clip": dict(clip) if clip else None,
        "lm": dict(lm) if lm else None,
        "extra": dict(extra or {}),
    }
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file(out, tmp, metadata={META_KEY: json.dumps(meta)})
    os.replace(tmp, path)  # a kill mid-write never leaves a half-written checkpoint behind
    return path


def copy_checkpoint(src: str, dst: str) -> str:
    """Copy a checkpoint to ``dst`` with the CLIP path it records re-based on ``dst``'s folder.

    An adaptor stores its CLIP checkpoint's path relative to its own folder, so a plain ``cp`` of one trained in
    ``runs/x/`` into ``checkpoints/`` points nowhere. Tensors are copied bit for bit (no dtype change)."""
    ck = load_checkpoint(src)
    clip = dict(ck.clip) if ck.clip else None
    spec = dict((clip or {}).get("spec") or {})
    if spec.get("checkpoint") and not os.path.isabs(spec["checkpoint"]):
        target = os.path.join(os.path.dirname(os.path.abspath(src)), spec["checkpoint"])
        if not os.path.isfile(target):
            raise CheckpointError(f"{src} names a CLIP checkpoint that does not exist: {target}")
        spec["checkpoint"] = os.path.relpath(target, os.path.dirname(os.path.abspath(dst)))
        clip["spec"] = spec
    return save_checkpoint(dst, ck.tensors, kind=ck.kind, config=ck.config, clip=clip, lm=ck.lm, extra=ck.extra,
                           dtype=None)


def load_checkpoint(path: str, expect_kind: str | tuple[str, ...] | None = None) -> Checkpoint:
    """Read a checkpoint; with ``expect_kind``, refuse one of another kind."""
    meta = read_metadata(path)
    if expect_kind is not None:
        kinds = (expect_kind,) if isinstance(expect_kind, str) else expect_kind
        if meta["kind"] not in kinds:
            raise CheckpointError(f"{path} holds a {meta['kind']!r} model, expected one of {kinds}")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(path, framework="pt") as f:
        for k in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            tensors[k] = f.get_tensor(k)
    return Checkpoint(tensors=tensors, kind=meta["kind"], config=meta["config"], clip=meta.get("clip"),
                      lm=meta.get("lm"), extra=meta.get("extra") or {}, path=path)


def check_compatible(ckpt: Checkpoint, clip: Mapping[str, Any] | None, lm: Mapping[str, Any] | None) -> None:
    """Raise :class:`CheckpointError`, naming both sides, if ``ckpt`` was trained against another CLIP or LM."""
    for what, want, have in (("CLIP", ckpt.clip, clip), ("language model", ckpt.lm, lm)):
        if want is None or have is None:
            continue
        if want.get("fingerprint") != have.get("fingerprint"):
            raise CheckpointError(
                f"{ckpt.path or 'checkpoint'} was trained against the {what} {want.get('name')!r} "
                f"(fingerprint {want.get('fingerprint')}), but the loaded {what} is {have.get('name')!r} "
                f"(fingerprint {have.get('fingerprint')}); load it with the {what} it was trained on")


class FrozenIdentity:
    """For wrappers of a frozen model (``self.model``, ``self.spec``): its device, weight fingerprint, and the
    identity that adaptor checkpoints record (name + fingerprint)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device  # type: ignore[attr-defined]

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights (see :func:`state_fingerprint`), computed once."""
        if "_fingerprint" not in self.__dict__:
            self.__dict__["_fingerprint"] = state_fingerprint(self.model.state_dict())  # type: ignore[attr-defined]
        return self.__dict__["_fingerprint"]

    @property
    def text_fingerprint(self) -> str:
        """Fingerprint of what encodes text (caption feature caches are keyed by it): the whole model here."""
        return self.fingerprint

    def identity(self) -> dict[str, str]:
        """What adaptor checkpoints record of the frozen model they were trained against."""
        return {"name": self.spec.display_name(), "fingerprint": self.fingerprint}  # type: ignore[attr-defined]


def state_fingerprint(state: Mapping[str, torch.Tensor], n_hex: int = 16) -> str:
    """A short content hash of a state dict: same weights, same fingerprint, whatever the dtype on disk.

    Tensors are hashed as fp16 so that fp32 weights and their fp16 checkpoint agree.
    """
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach()
        h.update(k.encode())
        if v.is_floating_point():
            v = v.to(torch.float16)
        h.update(v.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:n_hex]


def file_fingerprint(path: str, n_hex: int = 16) -> str:
    """A short sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:n_hex]


# -- the gzipped JSON files beside a caption bank (its texts, its nouns) ------------------------------------------


def write_json_gz(path: str, doc: dict[str, Any]) -> str:
    """Write ``doc`` as gzipped JSON, atomically; the bytes depend on the content only (no time stamp, no name),
    so an unchanged file stays unchanged in git."""
    import gzip

    with open(path + ".tmp", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(json.dumps(doc, separators=(",", ":")).encode())
    os.replace(path + ".tmp", path)
    return path


def read_json_gz(path: str, kind: str, what: str, missing: str) -> dict[str, Any]:
    """Read a gzipped JSON file whose ``kind`` field must be ``kind``; a CheckpointError naming ``what`` it is, and
    saying ``missing`` when there is no file."""
    import gzip

    if not os.path.isfile(path):
        raise CheckpointError(missing)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable {what}: {e}") from e
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise CheckpointError(f"{path} is not a caption bank's {what}")
    return doc
