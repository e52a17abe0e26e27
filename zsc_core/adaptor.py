"""Adaptor stage: the small trainable network between the frozen CLIP and the frozen LM.

MacCap's adaptor decoder (eq. 5-8): ``N_q`` learnable queries attend, through one transformer decoder layer
(self-attention over the queries, cross-attention over the ``N_cr`` region tokens, feed-forward; 8 heads), to
the (noisy) CLIP features; an MLP maps each query to the LM's hidden size, giving ``N_q`` prefix embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class MacCapConfig:
    """Sizes of the MacCap adaptor decoder. ``clip_dim`` and ``lm_dim`` come from the frozen models."""

    clip_dim: int = 512  # D of the CLIP joint embedding
    lm_dim: int = 576  # hidden size H of the language model
    n_queries: int = 10  # N_q learnable queries = prefix length
    d_model: int = 512  # width of the decoder layer
    n_heads: int = 8  # attention heads (the paper's 8)
    ffn_dim: int = 2048  # feed-forward width of the decoder layer
    dropout: float = 0.1
    n_cr: int = 10  # N_cr region tokens the decoder reads (training: noisy copies of T_c)
    sigma2: float = 0.016  # variance of the injected noise per dimension (training and multiple sampling)


class MacCapAdaptor(nn.Module):
    """(B, N_cr, D) region features -> (B, N_q, H) LM prefix embeddings."""

    def __init__(self, cfg: MacCapConfig):
        super().__init__()
        self.cfg = cfg
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, cfg.d_model) * 0.02)  # (N_q, d)
        self.in_proj = nn.Linear(cfg.clip_dim, cfg.d_model)
        self.decoder = nn.TransformerDecoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout,
                                                  activation="gelu", batch_first=True, norm_first=True)
        self.out = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.lm_dim), nn.GELU(),
                                 nn.Linear(cfg.lm_dim, cfg.lm_dim))

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        memory = self.in_proj(regions)  # (B, N_cr, d)
        q = self.queries[None].expand(regions.shape[0], -1, -1)  # (B, N_q, d)
        return self.out(self.decoder(q, memory))  # (B, N_q, H)
