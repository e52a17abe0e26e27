"""Multiple sampling and reranking (MacCap Fig. 3), by CLIP or by consensus with a caption bank.

S noisy copies of the image's region features are decoded in one batched ``generate`` call (the captioner does
that); here the candidates are merged and ranked. MacCap ranks by the cosine between a candidate's CLIP text
feature and the global image feature I_c. With a caption bank (:mod:`zsc_core.bank`) a candidate can instead be
ranked by its *consensus* with the k corpus captions nearest the image: its mean text-text cosine with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RERANKERS = ("clip", "consensus")


@dataclass
class Candidate:
    """One sampled caption, its CLIP score (cosine with I_c) and, under consensus ranking, its consensus."""

    text: str
    clip_score: float
    count: int = 1  # how many of the S samples produced this text
    consensus: float | None = None  # mean cosine with the image's k nearest bank captions (consensus ranking)

    @property
    def score(self) -> float:
        """What the candidates were ranked by."""
        return self.clip_score if self.consensus is None else self.consensus


def consensus_scores(text_feats: torch.Tensor, neighbour_feats: torch.Tensor) -> torch.Tensor:
    """Mean cosine of each candidate with the neighbours: text_feats (S, D) and neighbour_feats (k, D), both
    L2-normalised -> (S,). Equal to the cosine with the neighbours' (unnormalised) mean."""
    return text_feats.float() @ neighbour_feats.float().mean(0)  # (S,)


def rerank(texts: list[str], text_feats: torch.Tensor, image_feat: torch.Tensor,
           neighbour_feats: torch.Tensor | None = None) -> list[Candidate]:
    """Merge duplicate texts and sort best first: by CLIP score, or with ``neighbour_feats`` (k, D) by consensus
    (ties by CLIP score).

    texts: S candidates; text_feats: (S, D) L2-normalised; image_feat: (D,) L2-normalised. Empty texts are
    kept only if nothing else was produced (scored like any other).
    """
    scores = (text_feats.float() @ image_feat.float()).tolist()  # (S,)
    cons = ([None] * len(texts) if neighbour_feats is None
            else consensus_scores(text_feats, neighbour_feats).tolist())  # (S,)
    merged: dict[str, Candidate] = {}
    for t, s, c in zip(texts, scores, cons):
        if t in merged:
            merged[t].count += 1
        else:
            merged[t] = Candidate(t, float(s), consensus=c)
    out = sorted(merged.values(), key=lambda c: (-c.score, -c.clip_score, c.text))
    non_empty = [c for c in out if c.text]
    return non_empty or out
