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

The CIDEr-D reranking (``rerank="cider"``, :mod:`zsc_core.cider`) reads the neighbours' *texts* and the bank's
n-gram document frequencies. They live beside the bank in ``<bank>.captions.json.gz`` (2.0 MB), which records the
bank's row count, text encoder and a fingerprint of its rows, and is refused for another bank; it is read the first
time a CIDEr ranking needs it.

Storage: int8 rows with one scale per row (83k x 384 COCO captions: 32 MB instead of 64 MB as fp16). The bank
records the text encoder's fingerprint, so a bank embedded by another encoder is refused when it loads. An adaptor
names its bank (a path relative to its own folder) in the settings JSON beside its weights (``NAME.inference.json``,
field ``bank``; settings.py); the captioner loads it the first time a bank ranking, mix or guidance needs it (not
at start-up: the app's warm start has no time to spare).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import torch

from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_json_gz,
    read_metadata,
    save_checkpoint,
    state_fingerprint,
    write_json_gz,
)
from .cider import Idf
from .settings import read_settings, require_adaptor, write_settings

KIND = "bank"
CAPTIONS_KIND = "bank-captions"


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
        self._captions: BankCaptions | None = None
        self._nouns: list[list[str]] | None = None
        self._people: tuple[torch.Tensor, torch.Tensor] | None = None
        self._vocab: dict[str, torch.Tensor] = {}  # LM fingerprint -> the token ids the captions use
        self._captions_lock = threading.Lock()

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

    def rows_fingerprint(self) -> str:
        """A content hash of the rows and scales (what a captions file is checked against)."""
        return state_fingerprint({"rows": self.rows, "scale": self.scale})  # hashed as fp16: no float32 copy

    def captions(self) -> "BankCaptions":
        """The rows' caption texts and n-gram document frequencies, read on first use from the captions file
        beside the bank file (:func:`save_bank_captions`); refused when it belongs to another bank."""
        with self._captions_lock:
            if self._captions is None:
                self._captions = load_bank_captions(captions_path(self.path), self)
        return self._captions

    def nouns(self) -> list[list[str]]:
        """Each row's head nouns (entity prompts), read on first use from the entities file beside the bank
        (:mod:`zsc_core.entities`); refused when it belongs to another bank."""
        from .entities import load_entities

        with self._captions_lock:
            if self._nouns is None:
                self._nouns = load_entities(self.path, len(self), self.rows_fingerprint())
        return self._nouns

    def people(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, whether its caption names a person and whether it names several people ((N,) bool each;
        :mod:`zsc_core.people`): what pixel evidence conditions the neighbours on (evidence.condition_neighbours)."""
        from .people import names_person, names_several_people

        caps = self.captions().captions  # outside the lock: captions() takes it
        with self._captions_lock:
            if self._people is None:
                self._people = (torch.tensor([names_person(c) for c in caps], dtype=torch.bool),
                                torch.tensor([names_several_people(c) for c in caps], dtype=torch.bool))
        return self._people

    def vocabulary(self, lm) -> torch.Tensor:
        """The sorted token ids of ``lm``'s tokenizer that the bank's captions use, and its end of text: what a
        head restricted to the bank's vocabulary scores (decode.py). Tokenising 83k captions takes ~2.5 s on 2
        cores, so the ids are kept in the user cache (lm.cache_dir()), keyed by the captions and the LM."""
        import hashlib
        import json

        from .lm import cache_dir

        caps = self.captions().captions
        with self._captions_lock:
            if lm.fingerprint not in self._vocab:
                h = hashlib.sha256(lm.fingerprint.encode())
                for c in caps:
                    h.update(c.encode() + b"\n")
                path = os.path.join(cache_dir(), "vocab", h.hexdigest()[:16] + ".json")
                try:
                    with open(path) as f:
                        ids = torch.tensor(json.load(f), dtype=torch.long)
                except (OSError, ValueError):
                    ids = lm.vocabulary(caps)
                    try:
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        with open(path + ".tmp", "w") as f:
                            json.dump(ids.tolist(), f)
                        os.replace(path + ".tmp", path)
                    except OSError:  # a read-only cache: tokenise again next time
                        pass
                self._vocab[lm.fingerprint] = ids
        return self._vocab[lm.fingerprint]

    def texts(self, index: torch.Tensor) -> list[list[str]]:
        """The caption texts at ``index`` (B, k)."""
        caps = self.captions().captions
        return [[caps[int(j)] for j in row] for row in index.tolist()]


@dataclass
class BankCaptions:
    """A bank's caption texts (row order) and their n-gram document frequencies (a caption is a document)."""

    captions: list[str]
    idf: Idf


def captions_path(bank_path: str) -> str:
    """Where a bank's captions file lives: beside it, ``<stem>.captions.json.gz``."""
    stem = bank_path[:-len(".safetensors")] if bank_path.endswith(".safetensors") else bank_path
    return stem + ".captions.json.gz"


def save_bank_captions(bank_path: str, captions: list[str], bank: CaptionBank, idf: Idf | None = None) -> str:
    """Write the captions file of the bank at ``bank_path`` (rows: ``bank``'s, in the order of ``captions``), with
    the document frequencies of their n-grams (those in >= 2 captions: the rest weigh as if in one; ``idf``: those
    already counted, one document per caption). The bytes depend on the content only, so an unchanged file stays
    unchanged in git."""
    if len(captions) != len(bank):
        raise ValueError(f"{len(captions)} captions for a bank of {len(bank)} rows")
    idf = idf or Idf.from_documents([c] for c in captions)
    doc = {"kind": CAPTIONS_KIND, "rows": len(bank), "text_fingerprint": bank.text_fingerprint,
           "rows_fingerprint": bank.rows_fingerprint(), "n_docs": idf.n_docs, "captions": captions,
           "df": [dict(sorted(d.items())) for d in idf.df]}
    return write_json_gz(captions_path(bank_path), doc)


def load_bank_captions(path: str, bank: CaptionBank) -> BankCaptions:
    """Read a captions file and check that it belongs to ``bank`` (rows, text encoder, row fingerprint)."""
    doc = read_json_gz(path, CAPTIONS_KIND, "captions file",
                       f"the caption bank {bank.path or '(in memory)'} has no captions file {path}, which CIDEr "
                       "ranking needs (build it with `python -m train.build_bank`)")
    if (doc["rows"], doc["text_fingerprint"], doc["rows_fingerprint"]) != (
            len(bank), bank.text_fingerprint, bank.rows_fingerprint()):
        raise CheckpointError(f"{path} belongs to another caption bank ({doc['rows']} rows, text encoder "
                              f"{doc['text_fingerprint']}) than {bank.path or 'this one'} ({len(bank)} rows, text "
                              f"encoder {bank.text_fingerprint}); rebuild both with `python -m train.build_bank`")
    return BankCaptions(doc["captions"], Idf(doc["df"], int(doc["n_docs"])))


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


def consensus_caption(bank: CaptionBank, corpus: list[str], image_feats: torch.Tensor, k: int) -> list[str]:
    """Retrieval baseline: among each image's k nearest bank captions, the one with the highest mean cosine with
    the k (itself included), i.e. the consensus ranking applied to retrieved captions instead of generated ones."""
    from .sampling import consensus_scores

    idx = bank.neighbours(image_feats, k)  # (B, k)
    feats = bank.feats(idx)  # (B, k, D)
    return [corpus[int(idx[i, consensus_scores(feats[i], feats[i]).argmax()])] for i in range(len(idx))]


def cider_consensus_caption(bank: CaptionBank, corpus: list[str], image_feats: torch.Tensor, k: int,
                            idf: Idf, evidence=None, count_people: bool = False, pool: int = 3000) -> list[str]:
    """Retrieval baseline of the CIDEr ranking: among each image's k nearest bank captions, the one with the
    highest CIDEr-D against the other k-1 (Devlin et al.'s consensus caption, n-gram weights ``idf``). What the
    benchmark reports as the retrieval baseline, and what the app shows beside the generated caption.

    With ``evidence`` (per image, :class:`zsc_core.evidence.Evidence`) the k are conditioned on it as the
    captioner's are (:func:`zsc_core.evidence.neighbour_index`): the retrieval baseline with the same evidence."""
    from .evidence import neighbour_index

    index = neighbour_index(bank, image_feats, k, evidence, count_people, pool)
    return [cider_consensus_pick([corpus[j] for j in row], idf) for row in index.tolist()]


def cider_consensus_pick(texts: list[str], idf: Idf) -> str:
    """Of some captions, the one with the highest CIDEr-D against the others (first of equals)."""
    from .cider import leave_one_out_cider_d

    scores = leave_one_out_cider_d(texts, idf)
    return texts[max(range(len(texts)), key=scores.__getitem__)]


def attach_bank(adaptor_path: str, bank_path: str | None, k: int = 20, mix: float = 0.0) -> str:
    """Make an adaptor rank its candidates by consensus with the ``k`` nearest captions of ``bank_path`` by
    default, and read its input mixed with their mean by ``mix`` (the settings' bank_mix); ``None``: detach it,
    back to CLIP ranking and the image feature alone.

    Only the settings JSON beside the weights changes (settings.py); the weights file is not touched. The bank's
    text encoder is checked when the captioner first uses it. Returns the JSON's path."""
    if bank_path is not None:
        if k < 1:
            raise ValueError(f"the number of neighbours must be >= 1, got {k}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"the bank mix must be between 0 and 1, got {mix}")
        if read_metadata(bank_path)["kind"] != KIND:  # refuse a non-bank file before touching the adaptor
            raise CheckpointError(f"{bank_path} is not a caption bank")
    require_adaptor(adaptor_path)
    current = read_settings(adaptor_path)
    if bank_path is None:
        new = replace(current, config=current.config.replace(rerank="clip", bank_mix=0.0), bank="")
    else:
        new = replace(current, config=current.config.replace(rerank="consensus", mix_k=int(k), bank_mix=float(mix)),
                      bank=os.path.abspath(bank_path))
    return write_settings(adaptor_path, new)


def recorded_bank(adaptor_path: str) -> str:
    """The absolute path of the caption bank an adaptor's settings name, or "" when they name none."""
    return read_settings(adaptor_path).bank
