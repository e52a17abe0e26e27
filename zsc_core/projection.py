"""Projection stage (inference only): move an image feature onto the caption manifold of the text space.

A text-only captioner is trained on caption features and reads image features at inference, which lie elsewhere
(the modality gap). DeCap (Li et al., ICLR 2023) closes the gap at inference with a bank of caption embeddings
``M`` (N, D): an image feature ``v`` is replaced by ``normalize(softmax(v M^T / tau) M)``, a mixture of the
captions nearest it. ``tau`` -> 0 gives the single nearest caption's feature; a large ``tau`` the bank's mean.

Nothing here is trained. The bank is the text encoder's embeddings of a caption corpus, stored as a ``bank``
checkpoint (``train/build_bank.py``): int8 rows with one scale per row (83k x 384 COCO captions: 32 MB instead of
64 MB in fp16; the projection is unchanged to within rounding), recording the text encoder's fingerprint, so a
bank built on another encoder is refused. An adaptor checkpoint names its bank (a path relative to its own
folder) in ``config["bank"]``; :class:`zsc_core.captioner.CaptionConfig` ``project_tau`` switches it on (0: off).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KIND = "bank"


@dataclass
class BankConfig:
    """What a caption bank holds (stored in its checkpoint)."""

    corpus: str = ""  # the caption corpus it embeds
    size: int = 0  # number of captions (rows)
    tau: float = 0.03  # the temperature chosen when it was built (on the selection set)
    max_words: int = 15  # captions longer than this were left out, as in training


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: x (N, D) float -> (codes (N, D) int8, scale (N,) float32), x ~ codes * scale."""
    scale = x.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    codes = torch.round(x / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scale.float()


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`quantize_rows`, float32."""
    return codes.float() * scale.float()[:, None]


def project(x: torch.Tensor, bank: torch.Tensor, tau: float, chunk: int = 256,
            scale: torch.Tensor | None = None) -> torch.Tensor:
    """normalize(softmax(x M^T / tau) M) for x (..., D) against bank rows M (N, D); the same shape as ``x``.

    With ``scale`` (N,), the rows are ``bank * scale[:, None]`` (int8 codes held as bfloat16, which represents
    them exactly); the products then run in the bank's dtype, the softmax in float32. Rows of ``x`` are processed
    ``chunk`` at a time, so the (rows, N) weights never exceed chunk x N floats."""
    if tau <= 0:
        raise ValueError(f"the projection temperature must be > 0, got {tau}")
    if x.shape[-1] != bank.shape[1]:
        raise ValueError(f"features of width {x.shape[-1]} cannot be projected onto a bank of width {bank.shape[1]}")
    flat = x.reshape(-1, x.shape[-1])
    s = scale.float() if scale is not None else torch.ones(bank.shape[0], device=bank.device)
    outs = []
    for part in flat.split(chunk):
        sims = (part.to(bank.dtype) @ bank.T).float() * s  # (rows, N)
        w = (sims / tau).softmax(-1) * s
        outs.append((w.to(bank.dtype) @ bank).float())
    out = torch.cat(outs) if outs else flat.float()
    return F.normalize(out, dim=-1).reshape(x.shape).to(x.dtype)


class CaptionBank:
    """Caption embeddings (N, D) in a text encoder's space, and the projection onto them.

    Built from float rows (kept as they are), or from int8 ``codes`` and their ``scale``, which are held as
    bfloat16 codes (exact for integers up to 256; 64 MB for 83k x 384, against 128 MB as float32, and bfloat16
    products are fast on CPU where float16 ones are not)."""

    def __init__(self, feats: torch.Tensor | None, cfg: BankConfig, text_fingerprint: str, path: str = "",
                 codes: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        if feats is None and (codes is None or scale is None):
            raise ValueError("a caption bank needs its rows: feats, or codes and scale")
        if feats is not None:
            self.rows, self.scale = feats.float(), None
        else:
            self.rows, self.scale = codes.to(torch.bfloat16), scale.float()
        self.cfg = cfg
        self.text_fingerprint = text_fingerprint
        self.path = path

    @property
    def feats(self) -> torch.Tensor:
        """The rows as float32 (N, D)."""
        return self.rows.float() * (self.scale[:, None] if self.scale is not None else 1.0)

    def project(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        return project(x, self.rows.to(x.device), tau,
                       scale=self.scale.to(x.device) if self.scale is not None else None)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest bank row for each row of ``x`` (B, D)."""
        sims = (x.to(self.rows.device).to(self.rows.dtype) @ self.rows.T).float()
        return (sims * self.scale if self.scale is not None else sims).argmax(-1)


def save_bank(path: str, feats: torch.Tensor, cfg: BankConfig, text: dict[str, Any],
              extra: dict[str, Any] | None = None) -> str:
    """Write a bank checkpoint; ``text`` is the text encoder's identity ({"name", "text_fingerprint"})."""
    codes, scale = quantize_rows(feats.float().cpu())
    return save_checkpoint(path, {"codes": codes, "scale": scale}, kind=KIND, config=asdict(cfg), clip=dict(text),
                           extra=extra, dtype=None)


@lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]) -> CaptionBank:
    ck = load_checkpoint(path, expect_kind=KIND)
    known = BankConfig.__dataclass_fields__
    cfg = BankConfig(**{k: v for k, v in ck.config.items() if k in known})
    return CaptionBank(None, cfg, (ck.clip or {}).get("text_fingerprint", ""), path, codes=ck.tensors["codes"],
                       scale=ck.tensors["scale"])


def load_bank(path: str, text_fingerprint: str | None = None) -> CaptionBank:
    """Load a bank (once per file: captioners on the same bank share it); with ``text_fingerprint``, refuse a
    bank embedded by another text encoder."""
    if not os.path.isfile(path):
        raise CheckpointError(f"caption bank not found: {path} (build it with `python -m train.build_bank`)")
    st = os.stat(path)
    bank = _load(os.path.abspath(path), (st.st_mtime_ns, st.st_size))  # a rewritten file is read again
    if text_fingerprint is not None and bank.text_fingerprint != text_fingerprint:
        raise CheckpointError(f"{path} was embedded by a text encoder with fingerprint {bank.text_fingerprint}, "
                              f"this CLIP's text encoder has {text_fingerprint}")
    return bank


def attach_bank(adaptor_path: str, bank_path: str | None, tau: float = 0.0) -> str:
    """Make an adaptor checkpoint project onto ``bank_path`` at ``tau`` by default (``None``: detach it).

    Only the metadata changes (the bank's path relative to the adaptor's folder, and the default
    ``project_tau``); the tensors are rewritten bit for bit. The bank's text encoder is checked when the
    captioner loads, against the CLIP it loads."""
    ck = load_checkpoint(adaptor_path, expect_kind=("maccap", "tipcap"))
    config = dict(ck.config)
    caption = dict(config.get("caption") or {})
    if bank_path is None:
        config.pop("bank", None)
        caption["project_tau"] = 0.0
    else:
        if tau <= 0:
            raise ValueError(f"the projection temperature must be > 0, got {tau}")
        load_bank(bank_path)  # refuse a missing or non-bank file before touching the adaptor
        config["bank"] = os.path.relpath(os.path.abspath(bank_path), os.path.dirname(os.path.abspath(adaptor_path)))
        caption["project_tau"] = float(tau)
    config["caption"] = caption
    return save_checkpoint(adaptor_path, ck.tensors, kind=ck.kind, config=config, clip=ck.clip, lm=ck.lm,
                           extra=ck.extra, dtype=None)
