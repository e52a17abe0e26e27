"""Multiple sampling and reranking (MacCap Fig. 3), by CLIP or by consensus with a caption bank.

S noisy copies of the image's region features are decoded in one batched ``generate`` call (the captioner does
that); here the candidates are merged and ranked. MacCap ranks by the cosine between a candidate's CLIP text
feature and the global image feature I_c. With a caption bank (:mod:`zsc_core.bank`) a candidate can instead be
ranked by its *consensus* with the k corpus captions nearest the image: its mean text-text cosine with them
("consensus"), or its CIDEr-D with them as references ("cider", :mod:`zsc_core.cider`: shared words and phrases,
weighted by how rare they are in the bank).
When the user typed a prompt (TIPCap's interactive captioning), ``prompt_weight`` x the candidate's text cosine
with the prompt is added, so that of the refined candidates those that take the prompt up come first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cider import Idf, cider_d


@dataclass
class Candidate:
    """One sampled caption and the scores it was ranked by."""

    text: str
    clip_score: float  # cosine with I_c (MacCap's ranking)
    count: int = 1  # how many of the S samples produced this text
    # agreement with the image's k nearest bank captions: mean cosine ("consensus") or CIDEr-D ("cider")
    consensus: float | None = None
    prompt_score: float | None = None  # text cosine with the user's prompt (prompted pass with a prompt weight)
    score: float = 0.0  # what the candidates were ranked by: clip_score or consensus, + weight x prompt_score


def consensus_scores(text_feats: torch.Tensor, neighbour_feats: torch.Tensor) -> torch.Tensor:
    """Mean cosine of each candidate with the neighbours: text_feats (S, D) and neighbour_feats (k, D), both
    L2-normalised -> (S,). Equal to the cosine with the neighbours' (unnormalised) mean."""
    return text_feats.float() @ neighbour_feats.float().mean(0)  # (S,)


def mix_features(x: torch.Tensor, anchor: torch.Tensor, weight: float) -> torch.Tensor:
    """normalize((1 - weight) x + weight anchor) along the last dim; ``anchor`` broadcasts against x (both
    L2-normalised): weight 0 gives x, 1 the anchor, in between a point on the arc between them."""
    return torch.nn.functional.normalize((1.0 - weight) * x.float() + weight * anchor.float(), dim=-1).to(x.dtype)


def same_caption_key(text: str) -> str:
    """What makes two candidates the same caption: case, runs of spaces and a final full stop do not count
    ("A person holding a tennis racket" and "a person holding a tennis racket." are one candidate)."""
    return " ".join(text.split()).rstrip(".").strip().lower()


def rerank(texts: list[str], text_feats: torch.Tensor, image_feat: torch.Tensor,
           neighbour_feats: torch.Tensor | None = None, prompt_feat: torch.Tensor | None = None,
           prompt_weight: float = 0.0, cider_refs: tuple[list[str], Idf] | None = None) -> list[Candidate]:
    """Merge duplicate texts and sort best first: by CLIP score, with ``neighbour_feats`` (k, D) by consensus,
    or with ``cider_refs`` (the k neighbours' texts and the bank's idf) by CIDEr-D against them; with
    ``prompt_feat`` (D,) and a ``prompt_weight``, plus that weight x the cosine with the prompt. Ties go to the
    higher CLIP score.

    texts: S candidates; text_feats: (S, D) L2-normalised; image_feat: (D,) L2-normalised. Empty texts are
    kept only if nothing else was produced (scored like any other).
    """
    scores = (text_feats.float() @ image_feat.float()).tolist()  # (S,)
    none = [None] * len(texts)
    if cider_refs is not None:
        cons = cider_d(texts, *cider_refs)  # (S,)
    else:
        cons = none if neighbour_feats is None else consensus_scores(text_feats, neighbour_feats).tolist()  # (S,)
    use_prompt = prompt_feat is not None and prompt_weight != 0
    prompt = (text_feats.float() @ prompt_feat.float()).tolist() if use_prompt else none  # (S,)
    merged: dict[str, Candidate] = {}
    for t, s, c, p in zip(texts, scores, cons, prompt):
        key = same_caption_key(t)
        base = s if c is None else c
        score = base + (prompt_weight * p if p is not None else 0.0)
        if key in merged:  # one caption however it is capitalised or ended: it keeps its best-scored spelling
            m = merged[key]
            m.count += 1
            if (score, s) > (m.score, m.clip_score):
                merged[key] = Candidate(t, float(s), count=m.count, consensus=c, prompt_score=p, score=score)
        else:
            merged[key] = Candidate(t, float(s), consensus=c, prompt_score=p, score=score)
    out = sorted(merged.values(), key=lambda c: (-c.score, -c.clip_score, c.text))
    non_empty = [c for c in out if c.text]
    return non_empty or out
