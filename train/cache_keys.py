"""The keys the benchmark drivers cache their rows under (train.benchmark, train.benchmark_photo, train.tune_memory).

A row is reused while what it captioned with is unchanged: the adaptor's weight bytes and its settings. These keys
are bookkeeping of the benchmarks, not inference settings, so they live here and not in zsc_core.settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from zsc_core.checkpoint import file_fingerprint
from zsc_core.settings import GROUPS, CaptionConfig, read_settings

# Settings added after the first settings files were written (2026-12-06: the memory model, bank guidance): a key
# hashes them only where they differ from their defaults, so the cached rows of older models stay valid.
FIRST_GROUPS = ("decoding", "regions", "retrieval", "ranking", "authors")
LATER_FIELDS = {"decoding": {"draft_tokens", "bank_vocab", "min_new_tokens"},
                "retrieval": {"region_k", "weighting", "temperature"},
                "entities": {"entities", "entity_k", "entity_min", "max_entities"},
                "guidance": {"guide_weight", "guide_k", "guide_order"},
                "evidence": {"faces", "bodies", "count_people", "evidence_pool", "face_prob", "body_score",
                             "crop_weight", "crop_grow"},
                "answering": {"evidence_answers", "answer_k", "exist_share", "count_faces"}}
# Settings that change how a question is answered and never a caption: left out of every caption key, so setting
# them re-runs no caption row.
NOT_CAPTIONING = {"answering": {"lm_examples"}}
# Since 2026-12-07 (issue #52) each image draws its sampling noise from its own generator, so a row that draws noise
# and was captioned 8 photos a call has other captions than before: its key names the protocol, and older rows
# re-run. Rows without noise (S=1) keep their keys: their captions are unchanged.
NOISE_PROTOCOL = "noise drawn per image"


def precision(lm_dtype: str = "auto", preferred: str = "float32") -> dict[str, str]:
    """``{"lm_dtype": NAME}`` where the frozen LM runs in another dtype than float32 (``"auto"``: as
    :class:`Captioner` resolves it on this machine for a model whose own setting is ``preferred``,
    device.resolve_dtype: bf16 on a GPU, and on a bf16 CPU for a bf16 model), else ``{}``, so the keys of float32
    rows stay as they were and a bf16 row is never read as a float32 one."""
    import torch

    from zsc_core.device import resolve_device, resolve_dtype

    dt = resolve_dtype(lm_dtype, resolve_device("auto"), preferred)
    return {} if dt == torch.float32 else {"lm_dtype": str(dt).removeprefix("torch.")}


def draws_noise(cfg: CaptionConfig) -> bool:
    """Whether captioning under ``cfg`` draws sampling noise (several samples, or the authors' noise at S=1)."""
    return cfg.decoding.samples > 1 or cfg.authors.noise_single


def _bank(weights_path: str, bank: str) -> str | None:
    return os.path.relpath(bank, os.path.dirname(os.path.abspath(weights_path))) if bank else None


def model_fingerprint(weights_path: str, lm_dtype: str = "auto") -> str:
    """What a model captions with by default, as one short key: the weights file's sha256 prefix and that of its
    settings (the defaults and the bank's path relative to the weights). ``WEIGHTS:SETTINGS``."""
    s = read_settings(weights_path)
    settings = s.config.to_dict()
    for group, names in NOT_CAPTIONING.items():
        settings[group] = {k: v for k, v in settings.get(group, {}).items() if k not in names}
    for group, names in LATER_FIELDS.items():  # at their defaults they change nothing: keep older keys valid
        kept = {k: v for k, v in settings.get(group, {}).items()
                if k not in names or v != getattr(GROUPS[group](), k)}
        if kept or group in FIRST_GROUPS:
            settings[group] = kept
        else:
            settings.pop(group)
    doc = json.dumps({"bank": _bank(weights_path, s.bank), **settings, **precision(lm_dtype, s.lm_dtype)},
                     sort_keys=True)
    return f"{file_fingerprint(weights_path)}:{hashlib.sha256(doc.encode()).hexdigest()[:16]}"


def setting_fingerprint(weights_path: str, *, lm_dtype: str = "auto", **flat: Any) -> str:
    """What one captioning run depends on, as one short key: the weights file's sha256 prefix and that of the
    *effective* settings (the defaults with ``flat`` applied, and the bank's relative path). Unlike
    :func:`model_fingerprint` it survives a change of the defaults that leaves this run's settings as they were.
    A run that draws noise also names :data:`NOISE_PROTOCOL`. ``WEIGHTS:SETTINGS``."""
    s = read_settings(weights_path)
    later = {name for names in LATER_FIELDS.values() for name in names}
    answering_only = {name for names in NOT_CAPTIONING.values() for name in names}
    defaults = CaptionConfig().flat()
    cfg = s.config.replace(**flat)
    eff = {k: v for k, v in cfg.flat().items()
           if k not in answering_only and (k not in later or v != defaults[k])}
    if eff["num_beams"] == 1:
        eff["keep_beams"] = False  # one beam has one hypothesis: keeping "all" of them changes nothing
    if draws_noise(cfg):
        eff["noise"] = NOISE_PROTOCOL
    doc = json.dumps({"bank": _bank(weights_path, s.bank), **eff, **precision(lm_dtype, s.lm_dtype)}, sort_keys=True)
    return f"{file_fingerprint(weights_path)}:{hashlib.sha256(doc.encode()).hexdigest()[:16]}"


def noise_key(weights_path: str, **flat: Any) -> list[str]:
    """``[NOISE_PROTOCOL]`` for a run that draws noise, else ``[]``: what a key built from
    :func:`model_fingerprint` appends so that its noisy rows re-run under per-image noise."""
    return [NOISE_PROTOCOL] if draws_noise(read_settings(weights_path).config.replace(**flat)) else []
