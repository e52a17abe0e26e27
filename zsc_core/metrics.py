"""Caption metrics through pycocoevalcap 1.2: BLEU-1..4, METEOR, ROUGE-L, CIDEr, and SPICE where it can run.

SPICE needs Stanford CoreNLP jars that pycocoevalcap downloads on first use; where that cannot happen (no
network, no Java) it is reported as unavailable with the reason, never a crash.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

ALL_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")


def _tokenize(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """PTB tokenisation (Java) where Java exists, else a lower-case punctuation-stripping fallback."""
    if shutil.which("java"):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    import re

    return {k: [" ".join(re.findall(r"[a-z0-9]+", c.lower())) for c in v] for k, v in captions.items()}


def caption_metrics(references: Mapping[int, Sequence[str]], hypotheses: Mapping[int, str],
                    metrics: Sequence[str] = ("bleu", "meteor", "rouge", "cider")) -> dict[str, object]:
    """Corpus-level scores of ``hypotheses`` (id -> caption) against ``references`` (id -> captions).

    Returns {"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"} for the metrics asked for; a metric
    that cannot run here maps to ``{"unavailable": reason}``.
    """
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {ALL_METRICS}")
    ids = [i for i in hypotheses if i in references]
    if not ids:
        raise ValueError("no hypothesis has references")
    gts = _tokenize({i: list(references[i]) for i in ids})
    res = _tokenize({i: [hypotheses[i]] for i in ids})
    out: dict[str, object] = {}
    for name in metrics:
        try:
            if name == "bleu":
                from pycocoevalcap.bleu.bleu import Bleu

                scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
                out.update({f"BLEU-{n + 1}": float(s) for n, s in enumerate(scores)})
            elif name == "meteor":
                from pycocoevalcap.meteor.meteor import Meteor

                if not shutil.which("java"):
                    raise RuntimeError("METEOR needs Java")
                m = Meteor()
                try:
                    out["METEOR"] = float(m.compute_score(gts, res)[0])
                finally:
                    m.close() if hasattr(m, "close") else None
            elif name == "rouge":
                from pycocoevalcap.rouge.rouge import Rouge

                out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
            elif name == "cider":
                from pycocoevalcap.cider.cider import Cider

                out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
            else:
                out["SPICE"] = _spice(gts, res)
        except Exception as e:  # a metric that cannot run here is reported, the others still count
            key = {"bleu": "BLEU-4", "meteor": "METEOR", "rouge": "ROUGE-L", "cider": "CIDEr"}.get(name, name)
            out[key] = {"unavailable": f"{type(e).__name__}: {e}"}
    return out


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

    return float(Spice().compute_score(gts, res)[0])
