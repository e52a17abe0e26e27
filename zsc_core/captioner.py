"""The one facade: ``Captioner.from_pretrained(name_or_path).caption(images) -> CaptionResult``.

The app, the CLI, the evaluation and the tests all caption through this class, and the training scripts build
their models with it, so training and inference share one copy of the model code.

A caption is a function of the photo, the settings and the seed: each image draws its sampling noise from its own
generator (gap.per_image), so a photo captioned alone (the app) and eighth in a batch (the benchmarks) gets the
same caption. Each result carries the effective settings it was made with (``CaptionResult.settings``), so what
shows a result reports them instead of re-deriving them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
from PIL import Image

from . import gap, regions
from .adaptor import ADAPTOR_KINDS, ADAPTORS, MacCapConfig, TIPCapConfig
from .bank import CaptionBank, load_bank
from .checkpoint import build_and_load, check_compatible, load_checkpoint, save_checkpoint
from .device import autocast, resolve_device, resolve_dtype
from .encode import ClipEncoder, ClipSpec
from .evidence import Detectors, Evidence, crop_query, neighbour_index, people_box, shared_detectors
from .guidance import BankGuidance, tables_for
from .lm import GenerationCfg, LanguageModel, LMSpec, load_lm
from .prompts import stage2_text
from .sampling import Candidate, mix_features, rerank
from .settings import AUTHORS_INFERENCE, CaptionConfig, InferenceSettings, read_settings, write_settings
from .specs import MAX_PROMPT_CHARS
from .towers import load_clip

__all__ = ["AUTHORS_INFERENCE", "CaptionConfig", "CaptionResult", "Captioner", "Pending", "Proposal", "RegionBox"]

MAX_PROMPT_TOKENS = 96
TIMINGS = ("encode_s", "detect_s", "retrieve_s", "generate_s", "rank_s", "total_s")  # seconds per image, per stage


@dataclass
class RegionBox:
    """A subregion centre as a box in the original image's pixels, with its CLS attention weight."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1)
    weight: float


@dataclass
class CaptionResult:
    """Everything one image's captioning produced, and the settings it was produced with."""

    caption: str
    candidates: list[Candidate]  # best first, duplicates merged
    regions: list[RegionBox]  # top N_cr patches by CLS attention, highest first
    timings: dict[str, float]  # seconds per stage (TIMINGS), for this call divided by the number of images
    settings: CaptionConfig = field(default_factory=CaptionConfig)  # effective: every "model's own" made concrete
    guided: bool = False  # the candidates were decoded with bank guidance (a prompted pass never is)
    rough_caption: str | None = None  # with a prompt: the first-pass caption that the prompt refined
    prompt: str | None = None
    entities: list[str] | None = None  # the entity prompt's nouns its first sample read (memory models)
    evidence: Evidence | None = None  # what the detectors found and the neighbours were conditioned on (evidence.py)
    # the nearest bank captions the CIDEr-D ranking read (conditioned on the evidence), nearest first: what the Ask
    # tab's evidence answers read too (vqa.seen_from), so a photo is encoded, detected and searched once
    neighbours: list[str] | None = None

    @property
    def sigma2(self) -> float:
        """The noise variance the S samples were drawn with."""
        return self.settings.decoding.sigma2

    @property
    def n_cr(self) -> int:
        """The number of subregions N_cr."""
        return self.settings.regions.n_cr

    def to_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "candidates": [{"text": c.text, "clip_score": round(c.clip_score, 6), "count": c.count,
                            "score": round(c.score, 6),
                            **({"consensus": round(c.consensus, 6)} if c.consensus is not None else {}),
                            **({"prompt_score": round(c.prompt_score, 6)} if c.prompt_score is not None else {})}
                           for c in self.candidates],
            "regions": [{"box": [round(v, 2) for v in r.box], "weight": round(r.weight, 6)} for r in self.regions],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "settings": self.settings.flat(),
            "guided": self.guided,
            **({"rough_caption": self.rough_caption, "prompt": self.prompt} if self.prompt is not None else {}),
            **({"entities": self.entities} if self.entities is not None else {}),
            **({"evidence": self.evidence.to_dict()} if self.evidence is not None else {}),
        }


@dataclass
class Pending:
    """Decoded candidates, not yet ranked: CPU tensors, picklable (what crosses a ZeroGPU process boundary)."""

    texts: list[list[str]]  # per image, its S x num_return candidates
    text_feats: torch.Tensor  # (B, n, D)
    image_feats: torch.Tensor  # (B, D) the retrieval query: the global feature, moved by people's crops (query())
    neighbours: torch.Tensor | None  # (B, k, D) for the consensus ranking
    prompt_feat: torch.Tensor | None  # (D,)
    prompt_weight: float
    cider_texts: list[list[str]] | None  # per image, the nearest bank captions for the CIDEr-D ranking


@dataclass
class Proposal:
    """:meth:`Captioner.propose`'s result: the pending candidates and what the results need besides them."""

    pending: Pending
    regions: list[list[RegionBox]]  # per image
    rough: list[str] | None
    prompt: str | None
    settings: CaptionConfig  # effective (CaptionConfig.resolved)
    guided: bool
    timings: dict[str, float]  # per image, the final ranking not included
    single: bool  # one image was passed (rank returns one result)
    entities: list[list[str]] | None = None  # per image, the entities its first sample read (memory models)
    evidence: list[Evidence] | None = None  # per image, what the detectors found (None: no detector ran)
    # a refinement's (prompts.propose_prompted): per image, the evidence its base's rough caption read, which the
    # base's retrieved caption reads too (the refiner may read none)
    rough_evidence: list[Evidence | None] | None = None

    @property
    def image_feats(self) -> torch.Tensor:
        """The images' retrieval queries (B, D), CPU: their global features, moved toward the body crops of the
        people found where the settings say so (:meth:`Captioner.query`)."""
        return self.pending.image_feats


@dataclass
class Lookup:
    """What one call found for its B images before decoding: features, subregions and the bank's neighbours."""

    cfg: CaptionConfig  # effective
    b: int
    s: int
    feats: Any  # encode.ImageFeatures
    memory: torch.Tensor  # (B, N_cr, D) region tokens
    sub: regions.Subregions
    neighbours: torch.Tensor | None = None  # (B, k, D): the nearest bank captions' features, nearest first
    cider_texts: list[list[str]] | None = None  # per image, the CIDEr-D ranking's references
    guide_texts: list[list[str]] | None = None  # per image, the captions of the guidance's n-gram table
    evidence: list[Evidence] | None = None  # per image, the detections the neighbours are conditioned on
    query: torch.Tensor | None = None  # (B, D) the search query where crops move it (None: the global feature)

    @property
    def search(self) -> torch.Tensor:
        """What the neighbours are searched with, (B, D): the query (Captioner.query), else the global feature."""
        return self.feats.global_feat if self.query is None else self.query

    @property
    def consensus_neighbours(self) -> torch.Tensor | None:
        """The consensus ranking's ranking_k nearest (None under another ranking)."""
        c = self.cfg
        return self.neighbours[:, :c.ranking.rerank_k] if c.ranking.rerank == "consensus" else None


@dataclass
class DecodePass:
    """One batched generate over the B x S prefixes, and what its candidates are ranked with."""

    prefix: torch.Tensor  # (B*S, N_q, H)
    prompts: list[list[int]] | None = None  # token ids after each prefix (a stage-2 template or an entity prompt)
    ranking_prompt: str | None = None  # the user's prompt: prompt_weight x its similarity joins each score
    prompt_weight: float = 0.0
    guide: BankGuidance | None = None  # bank guidance (guidance.py); None: the LM alone


class Captioner:
    """Frozen CLIP + trainable adaptor + frozen LM. Build with :meth:`from_pretrained` or :meth:`build`."""

    def __init__(self, clip: ClipEncoder, lm: LanguageModel, adaptor: nn.Module, kind: str = "maccap",
                 config: CaptionConfig | None = None, name: str = "", interactive: bool = False,
                 bank: CaptionBank | str | None = None, answers: str = "vqav2"):
        if kind not in ADAPTOR_KINDS:
            raise ValueError(f"unknown adaptor kind {kind!r}; known: {ADAPTOR_KINDS}")
        self.clip, self.lm, self.adaptor, self.kind = clip, lm, adaptor, kind
        # The caption bank for consensus ranking: loaded, or a path loaded on first use (start-up stays fast).
        self._bank = bank
        self.config = config or CaptionConfig()  # the defaults: the one setting served everywhere
        self.name = name or kind
        # Trained with interactive prompts (stage 2): the LM always reads the stage-2 template after the prefix.
        self.interactive = interactive
        # The answer vocabulary zero-shot VQA retrieves from (vqa.answer_vocabulary): the preset's.
        self.answers = answers
        # Pixel evidence (faces, people) for settings that read it; loaded on first use, shared by the process.
        self.detectors: Detectors | None = None
        self.adaptor.to(lm.device).eval()  # inference by default; training loops call .train() themselves

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, clip: ClipEncoder, lm: LanguageModel, adaptor_cfg: MacCapConfig | TIPCapConfig | None = None,
              config: CaptionConfig | None = None, seed: int = 0) -> "Captioner":
        """A captioner with a freshly initialised (seeded) adaptor of the config's kind, sized to the CLIP and LM."""
        torch.manual_seed(seed)
        adaptor_cfg = adaptor_cfg or MacCapConfig()
        kind = next(k for k, (c, _) in ADAPTORS.items() if type(adaptor_cfg) is c)
        sizes = {"clip_dim": clip.embed_dim, "lm_dim": lm.hidden_size}
        if isinstance(adaptor_cfg, MacCapConfig) and not adaptor_cfg.in_proj:
            sizes["d_model"] = clip.embed_dim  # no input projection: the decoder runs at the CLIP's width
        cfg = replace(adaptor_cfg, **sizes)
        return cls(clip, lm, ADAPTORS[kind][1](cfg), kind, config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, device: str = "auto", dtype: str = "auto",
                        clip: ClipEncoder | None = None, lm: LanguageModel | None = None) -> "Captioner":
        """Load a preset by name (None: the default preset, presets.default_preset) or an adaptor checkpoint by
        path, with the CLIP and LM it records.

        ``clip``/``lm`` reuse already loaded models (checked against the checkpoint's fingerprints). The LM loads in
        ``dtype``; ``"auto"`` lets the model's own ``lm_dtype`` decide on a CPU that computes bf16 (:func:`lm_dtype`).
        """
        from .presets import answer_vocabulary_of, default_preset, resolve

        name_or_path = name_or_path or default_preset()
        path = resolve(name_or_path)
        ck = load_checkpoint(path, expect_kind=ADAPTOR_KINDS)
        dev = resolve_device(device)
        spec = ClipSpec(**ck.clip["spec"])
        if clip is None:
            if spec.checkpoint and not os.path.isabs(spec.checkpoint):
                spec.checkpoint = os.path.join(os.path.dirname(os.path.abspath(path)), spec.checkpoint)
            clip = load_clip(spec, dev)
        settings = read_settings(path)  # the inference defaults beside the weights (settings.py)
        if lm is None:
            lm = load_lm(LMSpec(**ck.lm["spec"]), dev, resolve_dtype(dtype, dev, settings.lm_dtype))
        check_compatible(ck, clip.identity(), lm.identity())
        cfg_cls, module_cls = ADAPTORS[ck.kind]
        adaptor = build_and_load(lambda: module_cls(cfg_cls(**ck.config["adaptor"])), ck.tensors, path)
        name = name_or_path if not os.path.isfile(name_or_path) else os.path.basename(path)
        # Trainable weights stay fp32 whatever the LM's dtype (device.py's precision policy).
        return cls(clip, lm, adaptor.to(lm.device).eval(), ck.kind, settings.config, name=name,
                   interactive=bool(ck.config.get("interactive", False)), bank=settings.bank or None,
                   answers=answer_vocabulary_of(name_or_path, spec.name))

    @property
    def reads_memory(self) -> bool:
        """Whether the adaptor reads a region memory retrieved from the caption bank (memory.py)."""
        return bool(getattr(self.adaptor, "reads_memory", False))

    @property
    def takes_prompts(self) -> bool:
        """Whether :meth:`caption` accepts a user prompt: a stage-2 model, or a model that reads entity prompts
        (the prompt's nouns join the entities)."""
        return self.interactive or (self.reads_memory and self.config.entities.entities)

    @property
    def has_bank(self) -> bool:
        """Whether this model has a caption bank (loaded or not yet), i.e. can rank by consensus."""
        return self._bank is not None

    @property
    def bank(self) -> CaptionBank | None:
        """The caption bank (loaded on first access, checked against this CLIP's text encoder), or None."""
        if isinstance(self._bank, str):
            self._bank = load_bank(self._bank, self.clip.text_fingerprint)
        return self._bank

    @bank.setter
    def bank(self, bank: CaptionBank | str | None) -> None:
        self._bank = bank

    def save(self, path: str, extra: dict[str, Any] | None = None, dtype: torch.dtype | None = torch.float16) -> str:
        """Save the adaptor (trainable weights only, fp16 by default) with everything needed to load it again, and
        its inference settings (``self.config`` and the caption bank) in the JSON beside it (settings.py)."""
        clip_spec = asdict(self.clip.spec)
        if clip_spec.get("checkpoint"):  # store the CLIP path relative to the adaptor checkpoint
            clip_spec["checkpoint"] = os.path.relpath(os.path.abspath(clip_spec["checkpoint"]),
                                                      os.path.dirname(os.path.abspath(path)))
        save_checkpoint(
            path, self.adaptor.state_dict(), kind=self.kind,
            config={"adaptor": asdict(self.adaptor.cfg), "interactive": self.interactive},
            clip={**self.clip.identity(), "spec": clip_spec},
            lm={**self.lm.identity(), "spec": asdict(self.lm.spec)},
            extra=extra, dtype=dtype)
        bank = self._bank.path if isinstance(self._bank, CaptionBank) else self._bank
        write_settings(path, InferenceSettings(self.config, bank or ""))
        return path

    # -- training path ------------------------------------------------------------------------------------
    def text_prefix(self, text_feats: torch.Tensor) -> torch.Tensor:
        """The training-time prefix from caption features (B, D), as the adaptor defines it (MacCap: region
        noise; TIPCap: the N(mu, Sigma) mapping). Stage-2 prompt training uses it, so it shares stage 1's code."""
        return self.adaptor.text_prefix(text_feats)

    # -- inference ----------------------------------------------------------------------------------------
    def effective(self, **overrides: Any) -> CaptionConfig:
        """The settings a call with ``overrides`` (flat names; None values ignored) captions with: the defaults
        changed by them, checked, and resolved against this adaptor (its own sigma2 and N_cr)."""
        cfg = self.config.replace(**{k: v for k, v in overrides.items() if v is not None})
        cfg.check()
        return cfg.resolved(self.adaptor.noise_sigma2, self.adaptor.n_regions)

    def region_memory(self, feats, cfg: CaptionConfig, noisy: bool = False
                      ) -> tuple[torch.Tensor, regions.Subregions]:
        """The N_cr region tokens MacCap's adaptor reads, (B, N_cr, D), and the chosen subregions (``cfg``
        effective).

        With ``noisy`` and ``cfg.authors.noise_on_sum`` the region tokens are the unnormalised sums
        normalize(I_s) + I_c, for the noise to be added before their normalisation (the authors' order)."""
        n_cr = cfg.regions.n_cr
        a = cfg.authors
        aggregation = regions.Aggregation(a.region_weights, a.cls_candidate, a.normalize_tokens)
        sub = regions.subregions(feats.attention, feats.tokens, feats.global_feat, n_cr, aggregation)
        if cfg.regions.use_regions:
            memory = sub.sums if noisy and a.noise_on_sum else sub.feats
            if memory.shape[1] < n_cr:  # fewer patches than N_cr (tiny ViTs): cycle the chosen ones
                memory = memory.repeat(1, -(-n_cr // memory.shape[1]), 1)[:, :n_cr]
        else:
            memory = feats.global_feat[:, None].expand(-1, n_cr, -1)
        return memory, sub

    def caption(self, images: Image.Image | Sequence[Image.Image], prompt: str | None = None,
                rough: str | Sequence[str] | None = None, evidence: Evidence | Sequence[Evidence] | None = None,
                **overrides: Any) -> CaptionResult | list[CaptionResult]:
        """Caption one image (returns a :class:`CaptionResult`) or a list (returns a list).

        With ``prompt`` (interactive models only) the caption is refined in a second pass that reads the rough
        caption and the prompt: ``rough`` gives the rough caption(s), e.g. a stage-1 model's as in TIPCap;
        without it this model's own first pass writes them.

        ``evidence`` gives each image's detections (:meth:`detect`) instead of running the detectors again; it is
        read only where the settings read evidence (``faces`` / ``bodies``).

        ``overrides`` are settings by their flat names (:class:`zsc_core.settings.CaptionConfig`: samples,
        sigma2, num_beams, rerank, bank_mix, ...); None values are ignored. Runs the adaptor in eval mode (no
        dropout) and restores its mode afterwards, so training loops can call it for validation.
        """
        return self.rank(self.propose(images, prompt, rough, evidence, **overrides))

    def detect(self, images: Image.Image | Sequence[Image.Image], **overrides: Any) -> Evidence | list[Evidence]:
        """What the detectors the settings name find in one image or a list (evidence.py); nothing where the
        settings name none."""
        single = isinstance(images, Image.Image)
        found = self._detect([images] if single else list(images), self.effective(**overrides))
        return found[0] if single else found

    def query(self, images: Image.Image | Sequence[Image.Image],
              evidence: Evidence | Sequence[Evidence] | None = None, **overrides: Any) -> torch.Tensor:
        """What each image's nearest bank captions are searched with, (B, D): its global feature, moved toward the
        body crop of the people its evidence found by the settings' ``crop_weight`` (evidence.crop_query). The
        captioner, the retrieval baseline with the same evidence and the Ask tab's evidence all search with it.
        ``evidence`` as :meth:`caption` takes it (None: the detectors run where the settings read evidence)."""
        batch = [images] if isinstance(images, Image.Image) else list(images)
        cfg = self.effective(**overrides)
        feats = self.clip.encode_image(self.clip.pixels(batch))
        return self._query(batch, feats, self._found(batch, evidence, cfg), cfg)

    def _found(self, batch: list[Image.Image], evidence: Evidence | Sequence[Evidence] | None,
               cfg: CaptionConfig) -> list[Evidence] | None:
        """Each image's evidence where the settings read evidence: the entries passed in, else the detectors'
        findings; None where they read none."""
        if not cfg.evidence.detects:
            return None
        found = ([evidence] if isinstance(evidence, Evidence) else list(evidence)) if evidence is not None \
            else self._detect(batch, cfg)
        if len(found) != len(batch):
            raise ValueError(f"{len(found)} evidence entries for {len(batch)} images")
        return found

    def _query(self, batch: list[Image.Image], feats: torch.Tensor, found: list[Evidence] | None,
               cfg: CaptionConfig) -> torch.Tensor:
        v = cfg.evidence
        if not v.crop_weight or not found:
            return feats.float()
        boxes = [people_box(e, *im.size, v.crop_grow) for e, im in zip(found, batch)]
        rows = [i for i, b in enumerate(boxes) if b is not None]
        if not rows:
            return feats.float()
        crops = self.clip.encode_image(self.clip.pixels([batch[i].crop(boxes[i]) for i in rows]))
        return crop_query(feats, crops, rows, v.crop_weight).to(feats.device)

    def _detect(self, batch: list[Image.Image], cfg: CaptionConfig) -> list[Evidence]:
        v = cfg.evidence
        if not v.detects:
            return [Evidence() for _ in batch]
        if self.detectors is None:
            self.detectors = shared_detectors()
        return self.detectors.detect(batch, v.faces, v.bodies, v.face_prob, v.body_score)

    def propose(self, images: Image.Image | Sequence[Image.Image], prompt: str | None = None,
                rough: str | Sequence[str] | None = None, evidence: Evidence | Sequence[Evidence] | None = None,
                **overrides: Any) -> Proposal:
        """The model's half of :meth:`caption`: encode, retrieve, decode the candidates and embed them. What is
        left (ranking them, CIDEr-D included, and building the results) is CPU work, :meth:`rank`; a ZeroGPU
        Space runs only this half in its GPU-billed function. The result holds CPU tensors and pickles."""
        was_training = self.adaptor.training
        self.adaptor.eval()
        try:
            with torch.no_grad():
                return self._propose(images, prompt, rough, evidence, overrides)
        finally:
            self.adaptor.train(was_training)

    def rank(self, proposal: Proposal) -> CaptionResult | list[CaptionResult]:
        """Rank a :meth:`propose` result's candidates and build the :class:`CaptionResult` (one, or a list)."""
        t = time.perf_counter()
        ranked = self._rank(proposal.pending)
        results = [CaptionResult(caption=cands[0].text, candidates=cands, regions=proposal.regions[i], timings={},
                                 settings=proposal.settings, guided=proposal.guided,
                                 rough_caption=proposal.rough[i] if proposal.rough else None,
                                 prompt=proposal.prompt,
                                 entities=proposal.entities[i] if proposal.entities is not None else None,
                                 evidence=proposal.evidence[i] if proposal.evidence is not None else None,
                                 neighbours=proposal.pending.cider_texts[i]
                                 if proposal.pending.cider_texts is not None else None)
                   for i, cands in enumerate(ranked)]
        timings = dict(proposal.timings)
        timings["rank_s"] += (time.perf_counter() - t) / max(1, len(results))
        timings["total_s"] = sum(timings[k] for k in TIMINGS if k != "total_s")
        for r in results:
            r.timings = dict(timings)
        return results[0] if proposal.single else results

    def _rank(self, p: Pending) -> list[list[Candidate]]:
        """Rank each image's pending candidates (sampling.rerank); CIDEr-D reads the bank's n-gram weights."""
        idf = self.bank.captions().idf if p.cider_texts is not None else None
        return [rerank(p.texts[i], p.text_feats[i], p.image_feats[i],
                       p.neighbours[i] if p.neighbours is not None else None, p.prompt_feat, p.prompt_weight,
                       (p.cider_texts[i], idf) if p.cider_texts is not None else None)
                for i in range(len(p.texts))]

    def _propose(self, images, prompt, rough, evidence, overrides) -> Proposal:
        single = isinstance(images, Image.Image)
        batch = [images] if single else list(images)
        prompt = prompt.strip() if prompt is not None else None
        if rough is not None:
            rough = [rough] if isinstance(rough, str) else list(rough)
            if len(rough) != len(batch) or not prompt:
                raise ValueError("rough captions need a prompt and one rough caption per image")
        if prompt and not self.takes_prompts:
            raise NotImplementedError(f"the {self.kind!r} model {self.name!r} has no interactive-prompt stage; use "
                                      "a model trained with prompts (train/train_prompts.py)")
        cfg = self.effective(**overrides)
        if (cfg.uses_bank or self.reads_memory) and not self.has_bank:
            raise ValueError("consensus and cider ranking, bank_mix and bank guidance need a caption bank, and the "
                             f"model {self.name!r} has none (its settings JSON names one: train/build_bank.py "
                             "attach=...)")
        # a prompted pass is never guided: it writes the user's words, which the neighbours' n-grams pull away from
        guided = bool(cfg.guidance.guide_weight) and not prompt
        if not batch:
            return Proposal(Pending([], torch.zeros(0, 0, 0), torch.zeros(0, 0), None, None, 0.0, None), [], None,
                            None, cfg, guided, dict.fromkeys(TIMINGS, 0.0), single)
        t0 = time.perf_counter()
        feats = self.clip.image_features(self.clip.pixels(batch))
        s = cfg.decoding.samples
        noisy = s > 1 or cfg.authors.noise_single
        memory, sub = self.region_memory(feats, cfg, noisy)  # (B, N_cr, D)
        t_det = time.perf_counter()
        found = self._found(batch, evidence, cfg)
        query = self._query(batch, feats.global_feat, found, cfg) if cfg.evidence.crop_weight else None
        t1 = time.perf_counter()
        # the guidance's captions are looked up for a guided pass: a plain caption's, or a prompted one's first pass
        look = self._look_up(Lookup(cfg, len(batch), s, feats, memory, sub, evidence=found, query=query),
                             guided or bool(prompt and rough is None and not self.reads_memory))
        t2 = time.perf_counter()
        clock = {"retrieve_s": t2 - t1, "rank_s": 0.0}
        if self.reads_memory:
            if rough is not None:
                raise ValueError(f"{self.name!r} reads the prompt as entities in one pass: pass no rough caption")
            pending, entities = self._caption_from_memory(look, prompt, guided, clock)
        else:
            entities = None
            pending, rough = self._caption_from_features(look, noisy, prompt, rough, guided, clock)
        t3 = time.perf_counter()
        boxes = []
        for i, im in enumerate(batch):
            bx = regions.patch_boxes(sub.index[i], feats.grid, feats.patch_size, self.clip.preprocess_cfg.image_size,
                                     im.size)
            boxes.append([RegionBox(x, float(w)) for x, w in zip(bx, sub.weights[i].tolist())])
        b = len(batch)
        timings = {"encode_s": (t_det - t0) / b, "detect_s": (t1 - t_det) / b, "retrieve_s": clock["retrieve_s"] / b,
                   "generate_s": (t3 - t2 - clock["rank_s"] - (clock["retrieve_s"] - (t2 - t1))) / b,
                   "rank_s": clock["rank_s"] / b}
        timings["total_s"] = sum(timings.values())
        return Proposal(pending, boxes, rough, prompt or None, cfg, guided, timings, single, entities, found)

    def _look_up(self, look: Lookup, guided: bool) -> Lookup:
        """The bank captions nearest each image, nearest first, as far as the settings read them: the mix's
        mix_k, the ranking's rerank_k and (guided) the guidance's guide_k, in one search."""
        cfg = look.cfg
        if not cfg.uses_bank:
            return look
        mix_k, rank_k, guide_k = cfg.retrieval.mix_k, cfg.ranking.rerank_k, cfg.guidance.guide_k
        guide_k = guide_k if cfg.guidance.guide_weight and guided else 0
        gf = look.search
        v = cfg.evidence
        index = neighbour_index(self.bank, gf.float(), max(mix_k, rank_k, guide_k), look.evidence, v.count_people,
                                v.evidence_pool)
        look.neighbours = self.bank.feats(index).to(gf.device)  # (B, k, D)
        if cfg.ranking.rerank == "cider":  # the ranking's rank_k nearest texts, as CIDEr-D references
            look.cider_texts = self.bank.texts(index[:, :rank_k])
        if guide_k:  # the texts of the guidance's n-gram tables, per image (guidance.py)
            look.guide_texts = look.cider_texts if guide_k == rank_k and look.cider_texts is not None else \
                self.bank.texts(index[:, :guide_k])
        return look

    def _caption_from_features(self, look: Lookup, noisy: bool, prompt: str | None, rough: list[str] | None,
                               guided: bool, clock: dict[str, float]) -> tuple[Pending, list[str] | None]:
        """MacCap and TIPCap: the adaptor reads the image feature or the region tokens (mixed with the bank
        anchor by bank_mix), S noisy copies; with a prompt, a second pass after the stage-2 template. The first
        pass is guided when the settings guide; the prompted pass never is."""
        cfg, b, s = look.cfg, look.b, look.s
        global_in, memory = look.feats.global_feat, look.memory
        bank_mix = cfg.retrieval.bank_mix
        if bank_mix:
            anchor = torch.nn.functional.normalize(look.neighbours[:, :cfg.retrieval.mix_k].mean(1), dim=-1)
            global_in = mix_features(global_in, anchor, bank_mix)
            memory = mix_features(memory, anchor[:, None], bank_mix)
        x = self.adaptor.image_input(global_in, memory)  # what this adaptor reads: (B, N_cr, D) or (B, D)
        x = x.repeat_interleave(s, dim=0)  # (B*S, ...), image-major
        if noisy:  # each image's S copies from its own generator (gap.per_image): batch-independent captions
            sigma2 = cfg.decoding.sigma2
            x, = gap.per_image(b, cfg.decoding.seed,
                               lambda i, g: (self.adaptor.perturb(x[i * s:(i + 1) * s], sigma2, g),), x.device)
        with autocast(self.lm.device, self.lm.model.dtype):
            prefix = self.adaptor(x)  # (B*S, N_q, H)
        pending = None
        if rough is None:
            # the first pass (with a prompt: the rough caption) is guided where the settings guide (_look_up found
            # the guidance's captions only then)
            first = DecodePass(prefix, self._stage2_ids([""] * b, "", s) if self.interactive else None,
                               guide=self._guidance(look.guide_texts, cfg, s))
            pending = self._decode(first, look, clock)
            if prompt:  # the first pass is ranked here: its best caption is the second pass's rough one
                t = time.perf_counter()
                rough = [c[0].text for c in self._rank(pending)]
                clock["rank_s"] += time.perf_counter() - t
        if prompt:  # second pass: the rough caption and the user's prompt after the same prefix, never guided
            prompt = prompt[:MAX_PROMPT_CHARS]
            pending = self._decode(DecodePass(prefix, self._stage2_ids(rough, prompt, s), ranking_prompt=prompt,
                                              prompt_weight=cfg.ranking.prompt_weight), look, clock)
        return pending, rough if prompt else None

    def _caption_from_memory(self, look: Lookup, prompt: str | None, guided: bool, clock: dict[str, float]
                             ) -> tuple[Pending, list[list[str]] | None]:
        """The memory adaptor: retrieve each sample's memory (global and region anchors) from its query, the
        image and region features with N(0, sigma2) noise for S > 1, and its entities; one decoding pass. A user
        prompt's nouns come first among the entities (entities.merge_entities)."""
        from . import memory as mem
        from .entities import entity_prompt, merge_entities, prompt_nouns, retrieved_entities

        cfg, b, s = look.cfg, look.b, look.s
        r, e = cfg.retrieval, cfg.entities
        t = time.perf_counter()
        q = look.search.float().repeat_interleave(s, dim=0)  # (B*S, D)
        rq = look.memory.float().repeat_interleave(s, dim=0) if cfg.regions.use_regions else None  # (B*S, R, D)
        if s > 1:  # each image's S queries (then region queries) from its own generator, as in _caption_from_features
            sigma2 = cfg.decoding.sigma2

            def draw(i, g):
                rows = slice(i * s, (i + 1) * s)
                return (mem.noisy(q[rows], sigma2, g),) + ((mem.noisy(rq[rows], sigma2, g),) if rq is not None else ())

            drawn = gap.per_image(b, cfg.decoding.seed, draw, q.device)
            q, rq = drawn[0], (drawn[1] if rq is not None else None)
        m = mem.build_memory(self.bank, q, rq, mem.MemorySpec(r.mix_k, r.region_k, r.weighting, r.temperature))
        prompts = entities = None
        user = prompt_nouns(prompt) if prompt else []
        # detected people are an entity the LM reads, after the user's nouns (ViECap's hard prompt from a detector)
        seen = [([] if ev is None or not ev.n_people else ["people" if ev.n_people > 1 else "person"])
                for ev in (look.evidence or [None] * b)]
        if e.entities or user or any(seen):
            nouns = self.bank.nouns()
            k = min(e.entity_k, m.neighbours.shape[1])
            found = [retrieved_entities([nouns[j] for j in row], e.entity_min, e.max_entities) if e.entities else []
                     for row in m.neighbours[:, :k].tolist()]
            read = [merge_entities(user + [n for n in seen[i // s] if n not in user], f,
                                   max(e.max_entities, len(user) + len(seen[i // s])))
                    for i, f in enumerate(found)]
            prompts = [ids[:MAX_PROMPT_TOKENS] for ids in self.lm.encode([entity_prompt(x) for x in read])]
            entities = [read[i * s] for i in range(b)]  # each image's first sample's entities
        clock["retrieve_s"] += time.perf_counter() - t
        with autocast(self.lm.device, self.lm.model.dtype):
            prefix = self.adaptor(m.tokens.to(self.lm.device), m.padding.to(self.lm.device))  # (B*S, N_q, H)
        one = DecodePass(prefix, prompts, ranking_prompt=prompt, prompt_weight=cfg.ranking.prompt_weight if prompt
                         else 0.0, guide=self._guidance(look.guide_texts, cfg, s) if guided else None)
        return self._decode(one, look, clock), entities

    def answer(self, image: Image.Image, question: str, answers: Sequence[str] | None = None,
               use_caption: bool = True, samples: int | None = None, by_type: bool = False,
               caption: str | None = None, **caption_kw: Any):
        """Zero-shot VQA (MacCap): see :mod:`zsc_core.vqa`. ``answers`` default to this model's vocabulary
        (``self.answers``: VQAv2's 3,128 answers for real photos); the LM reads ``caption``, or the caption at the
        served setting. Returns a :class:`zsc_core.vqa.AnswerResult`."""
        from .vqa import answer

        return answer(self, image, question, answers, use_caption, samples, by_type, caption, **caption_kw)

    def _stage2_ids(self, rough: list[str], prompt: str, s: int) -> list[list[int]]:
        """The stage-2 template's token ids after each of the B x S prefixes (each image's S samples read its own)."""
        ids = [self.lm.encode([stage2_text(r, prompt)])[0][:MAX_PROMPT_TOKENS] for r in rough]
        return [ids[i // s] for i in range(len(rough) * s)]

    def _guidance(self, texts: list[list[str]] | None, cfg: CaptionConfig, s: int) -> BankGuidance | None:
        """The bank guidance of a pass over B x S rows from each image's guidance captions (each image's S samples
        read its table), or None. Tables are built here, only for a pass that is guided."""
        if not texts:
            return None
        tables = tables_for(self.lm, texts, cfg.guidance.guide_order)
        return BankGuidance([tables[i // s] for i in range(len(tables) * s)], cfg.guidance.guide_weight,
                            cfg.decoding.num_beams)

    def _decode(self, p: DecodePass, look: Lookup, clock: dict[str, float]) -> Pending:
        """One batched generate over B*S prefixes, all candidates encoded in one batch: what :meth:`_rank` ranks
        per image (by CIDEr-D against the lookup's texts, by consensus with its neighbours, or by CLIP score; plus
        ``prompt_weight`` x the cosine with the pass's prompt). Adds the seconds spent embedding to ``clock``."""
        d, b, s = look.cfg.decoding, look.b, look.s
        gen_cfg = GenerationCfg(max_new_tokens=d.max_new_tokens, num_beams=d.num_beams,
                                num_return=d.num_beams if d.keep_beams else 1, draft=d.draft_tokens if p.guide else 0,
                                min_new_tokens=d.min_new_tokens)
        vocab = self.bank.vocabulary(self.lm) if d.bank_vocab and d.num_beams == 1 and self.has_bank else None
        with autocast(self.lm.device, self.lm.model.dtype):
            texts = self.lm.generate(p.prefix, prompts=p.prompts, cfg=gen_cfg, logits_processor=p.guide,
                                     vocab=vocab)
        t = time.perf_counter()
        n = s * gen_cfg.num_return  # candidates per image: each sample's hypotheses, image-major
        text_feats = self.clip.encode_text(texts).view(b, n, -1)  # (B, S x num_return, D)
        prompt_feat = self.clip.encode_text([p.ranking_prompt])[0] if p.ranking_prompt and p.prompt_weight else None
        neighbours = look.consensus_neighbours
        pending = Pending([texts[i * n:(i + 1) * n] for i in range(b)], text_feats.float().cpu(),
                          look.search.float().cpu(),
                          neighbours.float().cpu() if neighbours is not None else None,
                          prompt_feat.float().cpu() if prompt_feat is not None else None,
                          p.prompt_weight if prompt_feat is not None else 0.0, look.cider_texts)
        clock["rank_s"] += time.perf_counter() - t
        return pending


def lm_dtype(name_or_path: str | None = None, device: str = "auto", dtype: str = "auto") -> torch.dtype:
    """The dtype :meth:`Captioner.from_pretrained` loads this model's LM in (``dtype`` on ``device``, with the
    model's own ``lm_dtype`` setting for ``"auto"``): what decides whether an already loaded LM can be shared."""
    from .presets import PRESETS, default_preset

    name = name_or_path or default_preset()
    path = PRESETS[name].checkpoint_path() if name in PRESETS else name  # absent: the defaults (float32)
    return resolve_dtype(dtype, resolve_device(device), read_settings(path).lm_dtype)
