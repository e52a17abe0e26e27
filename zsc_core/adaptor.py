"""Adaptor stage: the small trainable network between the frozen CLIP and the frozen LM.

MacCap's adaptor decoder (eq. 5-8): ``N_q`` learnable queries attend, through one transformer decoder layer
(self-attention over the queries, cross-attention over the ``N_cr`` region tokens, feed-forward; 8 heads), to
the (noisy) CLIP features; an MLP maps each query to the LM's hidden size, giving ``N_q`` prefix embeddings.
:data:`AUTHORS_MACCAP` is the same decoder as the public MacCap code builds it (README "Fidelity").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from . import gap
from .specs import READS_REGIONS


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
    query_init_std: float = 0.02  # std of the queries' normal init (the authors' code: 1.0)
    norm_first: bool = True  # pre-norm decoder layer (the authors' code: post-norm, torch's default)
    activation: str = "gelu"  # of the decoder's feed-forward (the authors' code: relu)
    in_proj: bool = True  # a linear map CLIP dim -> d_model before the decoder (the authors' code: none, so
    #                       d_model is the CLIP dim)
    head: str = "ln-mlp2"  # query -> LM width: "ln-mlp2" LayerNorm + Linear-GELU-Linear; "mlp3" 3 Linear with ReLU

    def __post_init__(self):
        if self.head not in ("ln-mlp2", "mlp3"):
            raise ValueError(f"head must be 'ln-mlp2' or 'mlp3', got {self.head!r}")
        if not self.in_proj and self.d_model != self.clip_dim:
            raise ValueError(f"without an input projection d_model ({self.d_model}) must be the CLIP dim "
                             f"({self.clip_dim})")


# The adaptor as the authors' code builds it (issue #17): 32 queries drawn from N(0, 1), a post-norm ReLU
# decoder layer reading the CLIP features directly, a 3-layer ReLU MLP head. d_model follows the CLIP dim.
AUTHORS_MACCAP = MacCapConfig(n_queries=32, query_init_std=1.0, norm_first=False, activation="relu", in_proj=False,
                              head="mlp3")


class MacCapAdaptor(nn.Module):
    """(B, N_cr, D) region features -> (B, N_q, H) LM prefix embeddings."""

    def __init__(self, cfg: MacCapConfig):
        super().__init__()
        self.cfg = cfg
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, cfg.d_model) * cfg.query_init_std)  # (N_q, d)
        self.in_proj = nn.Linear(cfg.clip_dim, cfg.d_model) if cfg.in_proj else nn.Identity()
        self.decoder = nn.TransformerDecoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout,
                                                  activation=cfg.activation, batch_first=True,
                                                  norm_first=cfg.norm_first)
        if cfg.head == "mlp3":
            self.out = nn.Sequential(nn.Linear(cfg.d_model, cfg.lm_dim), nn.ReLU(), nn.Linear(cfg.lm_dim, cfg.lm_dim),
                                     nn.ReLU(), nn.Linear(cfg.lm_dim, cfg.lm_dim))
        else:
            self.out = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.lm_dim), nn.GELU(),
                                     nn.Linear(cfg.lm_dim, cfg.lm_dim))

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        memory = self.in_proj(regions)  # (B, N_cr, d)
        q = self.queries[None].expand(regions.shape[0], -1, -1)  # (B, N_q, d)
        return self.out(self.decoder(q, memory))  # (B, N_q, H)

    # -- what the facade asks of every adaptor --------------------------------------------------------------
    reads_regions = READS_REGIONS["maccap"]  # the N_cr subregion tokens are its input (the app shows N_cr)

    @property
    def n_regions(self) -> int:
        """Subregions to select at inference (the N_cr tokens it reads)."""
        return self.cfg.n_cr

    @property
    def noise_sigma2(self) -> float:
        """The default noise variance of multiple sampling: MacCap samples with the noise it was trained on."""
        return self.cfg.sigma2

    def text_prefix(self, text: torch.Tensor) -> torch.Tensor:
        """Training: caption features (B, D) -> N_cr noisy copies (region noise injection) -> prefix (B, N_q, H)."""
        return self(gap.inject_noise(text, self.cfg.n_cr, self.cfg.sigma2))

    def image_input(self, global_feat: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Inference: MacCap reads the N_cr subregion features I_cr, (B, N_cr, D)."""
        return regions

    def perturb(self, x: torch.Tensor, sigma2: float, generator: torch.Generator) -> torch.Tensor:
        """Multiple sampling: noise on every region token of every copy, (B*S, N_cr, D)."""
        return gap.inject_noise(x, x.shape[1], sigma2, generator)


# ---------------------------------------------------------------------------------------------------------
# TIPCap: a mapping module driven by N(mu, Sigma), a reverse mapping module and a prefix projector.


@dataclass
class TIPCapConfig:
    """Sizes and choices of the TIPCap adaptor. ``clip_dim`` and ``lm_dim`` come from the frozen models."""

    clip_dim: int = 512  # D
    lm_dim: int = 576  # H
    prefix_len: int = 4  # L prefix tokens for the LM
    d_model: int = 512  # width of the prefix projector's transformer
    n_layers: int = 2  # transformer layers in the prefix projector
    n_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    setting: str = "S4"  # data setting the Gaussian was estimated under: S1, S2, S3 or S4
    covariance: str = "full"  # "full": N(mu, L L^T); "isotropic": N(mu, sigma2 I) (ablation)
    # The Gaussian's isotropic variance: L = sqrt(sigma2) I, fixed under "isotropic", the start of a trainable L
    # otherwise. (Not the sampling noise at inference: that is noise_sigma2 / the settings' sigma2.)
    sigma2: float = 0.016
    trainable_gaussian: bool = True  # S3/S4 learn mu and L; S1/S2 keep their estimates fixed
    use_reverse: bool = True  # the reverse mapping module (ablation: off)


class GaussianMapping(nn.Module):
    """Text feature -> pseudo image feature: T_e + eps, eps ~ N(mu, L L^T), reparameterised (differentiable).

    ``L`` is stored as an unconstrained matrix whose lower triangle is used; the isotropic ablation uses
    sqrt(sigma2) I instead. The output is L2-normalised like CLIP features.
    """

    def __init__(self, dim: int, covariance: str = "full", sigma2: float = 0.016, trainable: bool = True):
        super().__init__()
        if covariance not in ("full", "isotropic"):
            raise ValueError(f"covariance must be 'full' or 'isotropic', got {covariance!r}")
        self.covariance = covariance
        self.sigma2 = sigma2
        self.mu = nn.Parameter(torch.zeros(dim), requires_grad=trainable)
        self.L_raw = nn.Parameter(torch.eye(dim) * sigma2 ** 0.5, requires_grad=trainable and covariance == "full")

    @property
    def L(self) -> torch.Tensor:
        if self.covariance == "isotropic":
            return torch.eye(self.mu.shape[0], device=self.mu.device) * self.sigma2 ** 0.5
        return torch.tril(self.L_raw)

    def set_gaussian(self, mu: torch.Tensor, L: torch.Tensor) -> None:
        """Load an estimated N(mu, L L^T) (settings S1/S2, or the start of S3/S4)."""
        with torch.no_grad():
            self.mu.copy_(mu)
            self.L_raw.copy_(L)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        from .gap import sample_gaussian

        eps = sample_gaussian(self.mu, self.L, tuple(text.shape[:-1]))  # (B, D), reparameterised
        return torch.nn.functional.normalize(text + eps, dim=-1)


class ReverseMapping(nn.Module):
    """Pseudo image (or image) feature -> text-like feature: one residual feed-forward layer, L2-normalised."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden or 2 * dim), nn.GELU(),
                                nn.Linear(hidden or 2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x + self.ff(x), dim=-1)


class PrefixProjector(nn.Module):
    """(B, D) feature -> (B, L, H) prefix: a linear map to L tokens, a small transformer, a map to the LM width."""

    def __init__(self, cfg: TIPCapConfig):
        super().__init__()
        self.cfg = cfg
        self.expand = nn.Linear(cfg.clip_dim, cfg.prefix_len * cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.prefix_len, cfg.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.lm_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x).view(x.shape[0], self.cfg.prefix_len, self.cfg.d_model) + self.pos  # (B, L, d)
        return self.out(self.encoder(h))  # (B, L, H)


@dataclass
class TIPCapOutput:
    """What one training forward produced (shapes in comments)."""

    prefix: torch.Tensor  # (B, L, H)
    mapped: torch.Tensor  # (B, D) M(T): pseudo image features
    recon: torch.Tensor | None  # (B, D) R(M(T)), or None without the reverse mapping


class TIPCapAdaptor(nn.Module):
    """Training: T -> M(T) -> [R] -> projector. Inference: the image feature skips M: I -> [R] -> projector."""

    def __init__(self, cfg: TIPCapConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = GaussianMapping(cfg.clip_dim, cfg.covariance, cfg.sigma2, cfg.trainable_gaussian)
        self.reverse = ReverseMapping(cfg.clip_dim) if cfg.use_reverse else None
        self.projector = PrefixProjector(cfg)

    def forward_text(self, text: torch.Tensor) -> TIPCapOutput:
        mapped = self.mapping(text)  # (B, D)
        recon = self.reverse(mapped) if self.reverse is not None else None
        return TIPCapOutput(self.projector(recon if recon is not None else mapped), mapped, recon)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Inference on image features (B, D) -> prefix (B, L, H)."""
        return self.projector(self.reverse(image) if self.reverse is not None else image)

    # -- what the facade asks of every adaptor --------------------------------------------------------------
    reads_regions = READS_REGIONS["tipcap"]  # TIPCap reads the global feature only; subregions are shown, not read
    n_regions = 10
    # The default noise variance of multiple sampling (TIPCap decodes once; its S samples borrow MacCap's noise).
    noise_sigma2 = 0.016

    def text_prefix(self, text: torch.Tensor) -> torch.Tensor:
        """Training: caption features (B, D) -> M -> [R] -> projector, (B, L, H)."""
        return self.forward_text(text).prefix

    def image_input(self, global_feat: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Inference: the global image feature (B, D) skips the mapping module."""
        return global_feat

    def perturb(self, x: torch.Tensor, sigma2: float, generator: torch.Generator) -> torch.Tensor:
        """Multiple sampling: isotropic noise on each copy of the global feature, (B*S, D)."""
        return gap.inject_noise(x, 1, sigma2, generator)[:, 0]


# ---------------------------------------------------------------------------------------------------------
# The memory adaptor: MacCap's decoder reading a region memory retrieved from the caption bank (memory.py).


@dataclass
class MemoryConfig(MacCapConfig):
    """MacCap's decoder over [global anchor ; N_cr region anchors] (memory.py), with how its training inputs
    were retrieved (the inference settings default to the same; see ``train/train_memory.py``)."""

    n_cr: int = 3  # region anchors (subregions at inference, noun phrases in training)
    k: int = 50  # bank captions behind the global anchor
    region_k: int = 20  # ... behind each region anchor
    weighting: str = "mean"  # neighbour weighting: "mean" or "softmax" (DeCap)
    temperature: float = 0.05
    sigma2: float = 0.016  # query noise before retrieval (training; the default of multiple sampling)
    entities: bool = True  # entity hard prompts after the prefix (entities.py)
    entity_k: int = 20  # neighbours whose nouns are counted
    entity_min: int = 4  # a noun named by at least this many of them is an entity
    max_entities: int = 4


class MemoryAdaptor(MacCapAdaptor):
    """(B, 1 + R, D) memory (global anchor first) -> (B, N_q, H) prefix. A learned slot embedding tells the
    global anchor from the region anchors; empty region slots are masked out of the cross-attention."""

    reads_memory = True
    reads_regions = READS_REGIONS["memory"]

    def __init__(self, cfg: MemoryConfig):
        super().__init__(cfg)
        self.slots = nn.Parameter(torch.zeros(2, cfg.d_model))  # [global, region]

    def forward(self, memory: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        m = self.in_proj(memory)  # (B, 1 + R, d)
        kinds = torch.ones(m.shape[1], dtype=torch.long, device=m.device)
        kinds[0] = 0
        m = m + self.slots[kinds]
        q = self.queries[None].expand(memory.shape[0], -1, -1)
        return self.out(self.decoder(q, m, memory_key_padding_mask=padding))

    def text_prefix(self, text: torch.Tensor) -> torch.Tensor:
        """Without a bank: the caption's own noisy feature as the global anchor, no region (stage-2 training of
        a bank-free model; the memory trainer builds real memories, train/train_memory.py)."""
        return self(gap.inject_noise(text, 1, self.cfg.sigma2))

    def perturb(self, x: torch.Tensor, sigma2: float, generator: torch.Generator) -> torch.Tensor:
        """Multiple sampling noises the retrieval query instead (memory.noisy); the memory is read as retrieved."""
        return x


# kind -> (config dataclass, module): how a checkpoint's "kind" rebuilds its adaptor. The one list of adaptor kinds.
ADAPTORS: dict[str, tuple[type, type]] = {"maccap": (MacCapConfig, MacCapAdaptor),
                                          "tipcap": (TIPCapConfig, TIPCapAdaptor),
                                          "memory": (MemoryConfig, MemoryAdaptor)}
ADAPTOR_KINDS = tuple(ADAPTORS)
