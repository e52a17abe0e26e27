"""Caption bank (inference only): a caption corpus embedded by the preset's text encoder, for consensus reranking.

The adaptor was trained on caption *text*; its S sampled candidates are ranked at inference. MacCap ranks them by
their CLIP cosine with the image, and with a weak image tower (the photo bridge's softmax over ImageNet classes)
that cosine picks captions that merely repeat the image's class words. The bank gives a second opinion: the k
corpus captions nearest the image feature are what people wrote about images like this one, and a candidate that
agrees with them (mean cosine, :func:`zsc_core.sampling.consensus_scores`) is preferred. Nothing here is trained
and nothing here sees an image of the training data: the bank holds the same caption texts the adaptors were
trained on (``train/build_bank.py``).

The same neighbours can also steer the decoding (``CaptionConfig.bank_mix``, retrieval-augmented input): the
adaptor was trained to write a caption from a caption's text feature, and the normalised mean of the k nearest
bank captions is such a feature, in the text distribution the adaptor knows, where the bridge's image feature is
not (the modality gap). Mixing it into the image feature moves the adaptor's input towards what it was trained on;
the image still chooses the neighbours. This is DeCap's idea (project the image into a text memory) with a kNN
mean instead of a softmax over the whole bank.

Storage: int8 rows with one scale per row (83k x 384 COCO captions: 32 MB instead of 64 MB as fp16). The bank
records the text encoder's fingerprint, so a bank embedded by another encoder is refused when it loads. An adaptor
checkpoint names its bank (a path relative to its own folder) in ``config["bank"]``; the captioner loads it the
first time a consensus ranking needs it (not at start-up: the app's warm start has no time to spare).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint, read_metadata, rewrite_adaptor_config, save_checkpoint

KIND = "bank"


@dataclass
class BankConfig:
    """What a caption bank holds (stored in its checkpoint)."""

    corpus: str = ""  # the caption corpus it embeds (a train.features corpus name)
    size: int = 0  # number of captions (rows)
    max_words: int = 15  # captions longer than this were left out, as in training


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: x (N, D) float -> (codes (N, D) int8, scale (N,) float32), x ~ codes * scale."""
    scale = x.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    codes = torch.round(x / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scale.float()


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`quantize_rows`, float32 (N, D)."""
    return codes.float() * scale.float()[:, None]


class CaptionBank:
    """Caption embeddings (N, D) in a text encoder's space, and nearest-neighbour look-ups in it.

    Built from float rows, or from int8 ``codes`` and their ``scale``; int8 codes are held as bfloat16, which
    represents them exactly (64 MB for 83k x 384 against 128 MB as float32), and bfloat16 products are fast on CPU
    where float16 ones are not."""

    def __init__(self, cfg: BankConfig, text_fingerprint: str, feats: torch.Tensor | None = None,
                 codes: torch.Tensor | None = None, scale: torch.Tensor | None = None, path: str = ""):
        if feats is None and (codes is None or scale is None):
            raise ValueError("a caption bank needs its rows: feats, or codes and scale")
        if feats is not None:
            self.rows, self.scale = feats.float(), torch.ones(feats.shape[0])
        else:
            self.rows, self.scale = codes.to(torch.bfloat16), scale.float()
        self.cfg, self.text_fingerprint, self.path = cfg, text_fingerprint, path

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def dim(self) -> int:
        return self.rows.shape[1]

    def similarities(self, x: torch.Tensor) -> torch.Tensor:
        """Cosines (B, N) of L2-normalised features x (B, D) with every (unit-norm) row."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"features of width {x.shape[-1]} cannot be looked up in a bank of width {self.dim}")
        rows = self.rows.to(x.device)
        return (x.to(rows.dtype) @ rows.T).float() * self.scale.to(x.device)

    def neighbours(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (B, k) of the k rows nearest each row of x (B, D), nearest first."""
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be between 1 and the bank's {len(self)} rows, got {k}")
        return self.similarities(x).topk(k, dim=1).indices

    def feats(self, index: torch.Tensor) -> torch.Tensor:
        """Rows at ``index`` (any shape) as float32 features (*index.shape, D)."""
        flat = index.reshape(-1).cpu()
        out = self.rows[flat].float() * self.scale[flat, None]
        return out.reshape(*index.shape, self.dim)


def save_bank(path: str, feats: torch.Tensor, cfg: BankConfig, text: dict[str, Any],
              extra: dict[str, Any] | None = None) -> str:
    """Write a bank checkpoint of L2-normalised ``feats`` (N, D); ``text`` is the text encoder's identity
    ({"name", "text_fingerprint"})."""
    codes, scale = quantize_rows(feats.float().cpu())
    return save_checkpoint(path, {"codes": codes, "scale": scale}, kind=KIND, config=asdict(cfg), clip=dict(text),
                           extra=extra, dtype=None)


@lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]) -> CaptionBank:
    ck = load_checkpoint(path, expect_kind=KIND)
    known = BankConfig.__dataclass_fields__
    cfg = BankConfig(**{k: v for k, v in ck.config.items() if k in known})
    return CaptionBank(cfg, (ck.clip or {}).get("text_fingerprint", ""), codes=ck.tensors["codes"],
                       scale=ck.tensors["scale"], path=path)


_LOCK = threading.Lock()


def load_bank(path: str, text_fingerprint: str | None = None) -> CaptionBank:
    """Load a bank, once per file (captioners on the same bank share it); with ``text_fingerprint``, refuse a
    bank embedded by another text encoder."""
    if not os.path.isfile(path):
        raise CheckpointError(f"caption bank not found: {path} (build it with `python -m train.build_bank`)")
    st = os.stat(path)
    with _LOCK:  # two requests asking at once read the file once
        bank = _load(os.path.abspath(path), (st.st_mtime_ns, st.st_size))  # a rewritten file is read again
    if text_fingerprint is not None and bank.text_fingerprint != text_fingerprint:
        raise CheckpointError(f"{path} was embedded by a text encoder with fingerprint {bank.text_fingerprint}, "
                              f"but this CLIP's text encoder has {text_fingerprint}")
    return bank


def attach_bank(adaptor_path: str, bank_path: str | None, k: int = 20, mix: float = 0.0) -> str:
    """Make an adaptor checkpoint rank its candidates by consensus with the ``k`` nearest captions of
    ``bank_path`` by default, and read its input mixed with their mean by ``mix`` (CaptionConfig.bank_mix);
    ``None``: detach it, back to CLIP ranking and the image feature alone.

    Only the metadata changes (the bank's path relative to the adaptor's folder, and the default ranking); the
    tensors are rewritten bit for bit. The bank's text encoder is checked when the captioner first uses it."""
    if bank_path is not None:
        if k < 1:
            raise ValueError(f"the number of neighbours must be >= 1, got {k}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"the bank mix must be between 0 and 1, got {mix}")
        if read_metadata(bank_path)["kind"] != KIND:  # refuse a non-bank file before touching the adaptor
            raise CheckpointError(f"{bank_path} is not a caption bank")

    def edit(config: dict[str, Any]) -> dict[str, Any]:
        caption = dict(config.get("caption") or {})
        if bank_path is None:
            config.pop("bank", None)
            caption.update(rerank="clip", bank_mix=0.0)
        else:
            config["bank"] = os.path.relpath(os.path.abspath(bank_path),
                                             os.path.dirname(os.path.abspath(adaptor_path)))
            caption.update(rerank="consensus", consensus_k=int(k), bank_mix=float(mix))
        return {**config, "caption": caption}

    return rewrite_adaptor_config(adaptor_path, edit)


def recorded_bank(adaptor_path: str, config: dict[str, Any] | None = None) -> str:
    """The absolute path of the caption bank an adaptor checkpoint names (``config["bank"]``, relative to the
    checkpoint's folder), or "" when it names none; ``config``: the checkpoint's, when already read."""
    if config is None:
        config = read_metadata(adaptor_path)["config"]
    bank = config.get("bank")
    if not bank:
        return ""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(adaptor_path)), bank))
