"""Multiple sampling and CLIP reranking (MacCap Fig. 3).

S noisy copies of the image's region features are decoded in one batched ``generate`` call (the captioner does
that); here the candidates are merged and ranked by the cosine between their CLIP text feature and the global
image feature I_c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Candidate:
    """One sampled caption and its CLIP score (cosine with I_c)."""

    text: str
    clip_score: float
    count: int = 1  # how many of the S samples produced this text


def rerank(texts: list[str], text_feats: torch.Tensor, image_feat: torch.Tensor) -> list[Candidate]:
    """Merge duplicate texts and sort by CLIP score, best first.

    texts: S candidates; text_feats: (S, D) L2-normalised; image_feat: (D,) L2-normalised. Empty texts are
    kept only if nothing else was produced (scored like any other).
    """
    scores = (text_feats @ image_feat).tolist()  # (S,)
    merged: dict[str, Candidate] = {}
    for t, s in zip(texts, scores):
        if t in merged:
            merged[t].count += 1
        else:
            merged[t] = Candidate(t, float(s))
    out = sorted(merged.values(), key=lambda c: (-c.clip_score, c.text))
    non_empty = [c for c in out if c.text]
    return non_empty or out
