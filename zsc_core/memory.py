"""Region memory from a text memory: what the memory adaptor reads, built the same way in training and inference.

DeCap projects an image into a text memory (a weighted sum of corpus caption embeddings); MacCap's decoder reads
a memory of region tokens. Here the two meet. An image's memory is

* one **global anchor**: the ``k`` bank captions nearest the image feature, averaged (flat, or DeCap's softmax
  over similarity, :func:`neighbour_anchor`);
* ``R`` **region anchors**: the same for each subregion's own point in the text space (the bridge's class mixture
  at that location, ``regions.py``), with ``region_k`` neighbours each, kept as separate tokens (parts of the
  image, not averaged into the whole), marked as regions by a learned slot embedding in the adaptor.

Training builds each caption's memory the way an image's is built (Knight decodes a caption from its nearest other
captions; IFCap retrieves from a noise-injected text feature): the global anchor from the bank neighbours of the
caption's feature plus N(0, sigma2) noise, **the caption itself and its verbatim duplicates excluded**; the region
anchors from the caption's own noun phrases, embedded and noised the same way, with their neighbours. Entities
(``zsc_core.entities``) come from the same neighbours.

Multiple sampling noises the *query* (the image feature and the region features) before retrieval, as training
noised the caption feature; one sample (S=1) reads the noise-free query. Everything here is pure tensor code over
a :class:`zsc_core.bank.CaptionBank`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .settings import WEIGHTINGS


def neighbour_anchor(sims: torch.Tensor, feats: torch.Tensor, weighting: str = "mean",
                     temperature: float = 0.05) -> torch.Tensor:
    """The anchor of k neighbours: sims (..., k), feats (..., k, D) -> (..., D), L2-normalised.

    "mean": their flat mean (Knight's k nearest); "softmax": weights softmax(sims / temperature) (DeCap)."""
    if weighting == "mean":
        w = torch.full_like(sims, 1.0 / sims.shape[-1])
    elif weighting == "softmax":
        if temperature <= 0:
            raise ValueError(f"the softmax temperature must be > 0, got {temperature}")
        w = (sims.float() / temperature).softmax(-1)
    else:
        raise ValueError(f"unknown weighting {weighting!r}; known: {WEIGHTINGS}")
    return F.normalize((w[..., None] * feats.float()).sum(-2), dim=-1)


def search(bank, queries: torch.Tensor, k: int, exclude: Sequence[Sequence[int]] | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sims, index), each (Q, k), of the k bank rows nearest each query (Q, D), nearest first; ``exclude[i]``:
    rows query i may not retrieve (in training: the caption itself and its duplicates)."""
    sims = bank.similarities(F.normalize(queries.float(), dim=-1))  # (Q, N)
    if exclude is not None:
        for i, rows in enumerate(exclude):
            if rows:
                sims[i, torch.as_tensor(list(rows), dtype=torch.long)] = float("-inf")
    top = sims.topk(k, dim=1)
    return top.values, top.indices


@dataclass
class MemorySpec:
    """How a memory is retrieved (the adaptor's training config and the inference settings both give one)."""

    k: int = 50  # bank captions behind the global anchor
    region_k: int = 20  # bank captions behind each region anchor
    weighting: str = "mean"  # "mean" or "softmax" (neighbour_anchor)
    temperature: float = 0.05  # of the softmax weighting


@dataclass
class Memory:
    """A batch of memories: tokens (B, 1 + R, D) (global anchor first), padding (B, 1 + R) True where a region
    slot is empty, and the global neighbours (B, k) (for entities and ranking)."""

    tokens: torch.Tensor
    padding: torch.Tensor
    neighbours: torch.Tensor


def build_memory(bank, queries: torch.Tensor, region_queries: torch.Tensor | None, spec: MemorySpec,
                 region_padding: torch.Tensor | None = None, exclude: Sequence[Sequence[int]] | None = None
                 ) -> Memory:
    """Memories from global queries (B, D) and region queries (B, R, D) (None: no region token).

    ``region_padding`` (B, R) marks region slots with no query (their token is a copy of the global anchor,
    masked). ``exclude[i]`` holds the bank rows sample i's global and region queries may not retrieve."""
    b = queries.shape[0]
    sims, index = search(bank, queries, spec.k, exclude)
    anchor = neighbour_anchor(sims, bank.feats(index).to(queries.device), spec.weighting, spec.temperature)  # (B, D)
    if region_queries is None or region_queries.shape[1] == 0:
        return Memory(anchor[:, None], torch.zeros(b, 1, dtype=torch.bool, device=queries.device), index)
    r = region_queries.shape[1]
    flat_ex = None if exclude is None else [exclude[i] for i in range(b) for _ in range(r)]
    rs, ri = search(bank, region_queries.reshape(b * r, -1), spec.region_k, flat_ex)
    regions = neighbour_anchor(rs, bank.feats(ri).to(queries.device), spec.weighting, spec.temperature)
    regions = regions.view(b, r, -1)
    pad = torch.zeros(b, r, dtype=torch.bool, device=queries.device) if region_padding is None else region_padding
    regions = torch.where(pad[..., None], anchor[:, None].expand_as(regions), regions)
    padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=queries.device), pad], 1)
    return Memory(torch.cat([anchor[:, None], regions], 1), padding, index)


def noisy(x: torch.Tensor, sigma2: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """normalize(x + N(0, sigma2) per dimension): the query noise of training and of multiple sampling."""
    if sigma2 <= 0:
        return F.normalize(x.float(), dim=-1)
    eps = torch.randn(x.shape, generator=generator, device=x.device) * sigma2 ** 0.5
    return F.normalize(x.float() + eps, dim=-1)


def duplicate_rows(texts: Sequence[str]) -> list[list[int]]:
    """For each row, every row with the same text (case and trailing dot ignored), itself included: what a
    caption may not retrieve in training."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t.strip().rstrip(".").lower(), []).append(i)
    return [groups[t.strip().rstrip(".").lower()] for t in texts]


def pick_regions(phrase_feats: Sequence[torch.Tensor], n_regions: int, generator: torch.Generator | None = None,
                 p_none: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Region queries for a training batch: up to ``n_regions`` of each caption's noun-phrase features (a random
    subset, in caption order), none with probability ``p_none``. Returns (B, R, D) queries and (B, R) padding."""
    b, d = len(phrase_feats), next((p.shape[-1] for p in phrase_feats if p.numel()), 0)
    out = torch.zeros(b, n_regions, max(d, 1))
    pad = torch.ones(b, n_regions, dtype=torch.bool)
    for i, p in enumerate(phrase_feats):
        if p.shape[0] == 0 or torch.rand((), generator=generator).item() < p_none:
            continue
        keep = torch.randperm(p.shape[0], generator=generator)[:n_regions].sort().values
        out[i, :len(keep)] = p[keep]
        pad[i, :len(keep)] = False
    return out, pad
