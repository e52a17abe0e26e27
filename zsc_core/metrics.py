"""Caption metrics through pycocoevalcap 1.2: BLEU-1..4, METEOR, ROUGE-L, CIDEr, and SPICE where it can run.

Every result records which tokenizer and which scorers ran (``tokenizer``, ``scorers``): pycocoevalcap's PTB
tokenizer needs Java, and without it a regex tokenizer is used, whose CIDEr is NOT comparable with PTB figures.
The Java scorers (METEOR, SPICE) are reported as ``{"unavailable": reason}`` when Java or SPICE's CoreNLP jars
are missing or their process fails; the pure-Python scorers (BLEU, ROUGE-L, CIDEr) are never silenced: a bug
there raises.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from .people import PERSON_WORDS, names_person  # noqa: F401 - the metric reads the shared word lists

ALL_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")
PTB = "ptb (pycocoevalcap, Java)"
REGEX = "regex fallback (no Java; not comparable with PTB-tokenised scores)"
JAVA_FAILURES = (OSError, subprocess.SubprocessError, RuntimeError, ValueError)  # process start / pipe / output


def _tokenize(captions: Mapping[int, Sequence[str]]) -> tuple[dict[int, list[str]], str]:
    """PTB tokenisation (Java) where Java exists, else a lower-case punctuation-stripping fallback; and which."""
    if shutil.which("java"):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()}), PTB
    import re

    return {k: [" ".join(re.findall(r"[a-z0-9]+", c.lower())) for c in v] for k, v in captions.items()}, REGEX


def _tokenized(references: Mapping[int, Sequence[str]], hypotheses: Mapping[int, str]):
    """The hypotheses that have references, and those references, tokenised as the scorers want them:
    (gts, res, which tokenizer). No hypothesis with references is an error."""
    ids = [i for i in hypotheses if i in references]
    if not ids:
        raise ValueError("no hypothesis has references")
    gts, tokenizer = _tokenize({i: list(references[i]) for i in ids})
    res, _ = _tokenize({i: [hypotheses[i]] for i in ids})
    return gts, res, tokenizer


def caption_metrics(references: Mapping[int, Sequence[str]], hypotheses: Mapping[int, str],
                    metrics: Sequence[str] = ("bleu", "meteor", "rouge", "cider")) -> dict[str, object]:
    """Corpus-level scores of ``hypotheses`` (id -> caption) against ``references`` (id -> captions).

    Returns {"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"} for the metrics asked for (a Java scorer
    that cannot run here maps to ``{"unavailable": reason}``), plus ``tokenizer`` (which one ran) and ``scorers``
    (metric -> "ran" or why not).
    """
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {ALL_METRICS}")
    gts, res, tokenizer = _tokenized(references, hypotheses)
    out: dict[str, object] = {}
    ran: dict[str, str] = {}
    for name in metrics:
        if name == "bleu":
            from pycocoevalcap.bleu.bleu import Bleu

            scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
            out.update({f"BLEU-{n + 1}": float(s) for n, s in enumerate(scores)})
        elif name == "rouge":
            from pycocoevalcap.rouge.rouge import Rouge

            out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        elif name == "cider":
            from pycocoevalcap.cider.cider import Cider

            out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        elif name == "meteor":
            out["METEOR"] = _meteor(gts, res)
        else:
            out["SPICE"] = _spice(gts, res)
        key = {"bleu": "BLEU-4", "meteor": "METEOR", "rouge": "ROUGE-L", "cider": "CIDEr", "spice": "SPICE"}[name]
        ran[name] = out[key]["unavailable"] if isinstance(out[key], dict) else "ran"
    out["tokenizer"] = tokenizer
    out["scorers"] = ran
    return out


def _meteor(gts, res) -> object:
    """METEOR (Java), or why it could not run."""
    if not shutil.which("java"):
        return {"unavailable": "METEOR needs Java"}
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        m = Meteor()
        try:
            return float(m.compute_score(gts, res)[0])
        finally:
            m.close() if hasattr(m, "close") else None
    except JAVA_FAILURES as e:
        return {"unavailable": f"METEOR's Java process failed: {type(e).__name__}: {e}"}


def _spice(gts, res) -> object:
    """SPICE if its CoreNLP jars are present; else why not (no download is attempted)."""
    import os

    import pycocoevalcap.spice as sp

    lib = os.path.join(os.path.dirname(sp.__file__), "lib")
    jars = [f for f in os.listdir(lib)] if os.path.isdir(lib) else []
    if not any(f.startswith("stanford-corenlp") for f in jars):
        return {"unavailable": "SPICE needs Stanford CoreNLP 3.6.0 jars in pycocoevalcap/spice/lib, which "
                               "pycocoevalcap downloads on first use; no download is possible here"}
    if not shutil.which("java"):
        return {"unavailable": "SPICE needs Java"}
    from pycocoevalcap.spice.spice import Spice

    try:
        return float(Spice().compute_score(gts, res)[0])
    except JAVA_FAILURES as e:
        return {"unavailable": f"SPICE's Java process failed: {type(e).__name__}: {e}"}


def per_image_cider(references: Mapping[int, Sequence[str]], hypotheses: Mapping[int, str]) -> dict[int, float]:
    """Each hypothesis's CIDEr-D against its own references (id -> score); their mean is the corpus CIDEr.

    CIDEr's document frequencies come from the references alone, so two systems scored on the same references get
    per-image scores on one scale: what a paired comparison needs.
    """
    from pycocoevalcap.cider.cider import Cider

    gts, res, _ = _tokenized(references, hypotheses)
    _, scores = Cider().compute_score(gts, res)
    # pycocoevalcap scores the ids in gts' key order
    return {i: float(s) for i, s in zip(gts.keys(), scores)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], draws: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Mean of the per-item differences a - b, its bootstrap confidence interval (items resampled in pairs), and
    the share of resamples where a's mean is above b's. Wins / losses count items where a is above / below b."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need two equally long, non-empty score lists, got {len(a)} and {len(b)}")
    d = a - b
    means = d[np.random.default_rng(seed).integers(0, len(d), (draws, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "low": float(lo), "high": float(hi), "p_above": float((means > 0).mean()),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "n": len(d)}


def distinct_per_100(captions: Sequence[str]) -> float:
    """Distinct captions per 100 photos (100: every photo its own caption)."""
    return 100.0 * len(set(captions)) / max(1, len(captions))


def person_rate(captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Of the photos whose references mostly (at least 3) name a person, how many captions name one."""
    photos = [i for i, refs in enumerate(references) if sum(names_person(r) for r in refs) >= 3]
    named = sum(names_person(captions[i]) for i in photos)
    return {"photos": len(photos), "named": named, "rate": named / len(photos) if photos else None}
