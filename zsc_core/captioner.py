"""The one facade: ``Captioner.from_pretrained(name_or_path).caption(images) -> CaptionResult``.

The app, the CLI, the evaluation and the tests all caption through this class, and the training scripts build
their models with it, so training and inference share one copy of the model code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn as nn
from PIL import Image

from . import regions
from .adaptor import MacCapAdaptor, MacCapConfig, TIPCapAdaptor, TIPCapConfig
from .bank import CaptionBank, load_bank
from .checkpoint import build_and_load, check_compatible, load_checkpoint, save_checkpoint
from .device import autocast, resolve_device, resolve_dtype
from .encode import ClipEncoder, ClipSpec
from .lm import GenerationCfg, LanguageModel, LMSpec, load_lm
from .prompts import stage2_text
from .sampling import Candidate, mix_features, rerank
from .settings import AUTHORS_INFERENCE, CaptionConfig, InferenceSettings, read_settings, write_settings
from .towers import load_clip

__all__ = ["AUTHORS_INFERENCE", "CaptionConfig", "CaptionResult", "Captioner", "RegionBox"]

MAX_PROMPT_CHARS = 300  # longer prompts are cut: the LM context is short and the prompt names a few objects
MAX_PROMPT_TOKENS = 96

# kind -> (config dataclass, module): how a checkpoint's "kind" rebuilds its adaptor.
ADAPTORS: dict[str, tuple[type, type]] = {"maccap": (MacCapConfig, MacCapAdaptor),
                                          "tipcap": (TIPCapConfig, TIPCapAdaptor)}
ADAPTOR_KINDS = tuple(ADAPTORS)


@dataclass
class RegionBox:
    """A subregion centre as a box in the original image's pixels, with its CLS attention weight."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1)
    weight: float


@dataclass
class CaptionResult:
    """Everything one image's captioning produced."""

    caption: str
    candidates: list[Candidate]  # best first, duplicates merged
    regions: list[RegionBox]  # top N_cr patches by CLS attention, highest first
    timings: dict[str, float]  # seconds per stage, for this call divided by the number of images
    rough_caption: str | None = None  # with a prompt: the first-pass caption that the prompt refined
    prompt: str | None = None
    sigma2: float | None = None  # the noise variance the S samples were drawn with (CaptionConfig or the adaptor's)
    n_cr: int | None = None  # the subregions N_cr the adaptor read

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
            **({"rough_caption": self.rough_caption, "prompt": self.prompt} if self.prompt is not None else {}),
        }


class Captioner:
    """Frozen CLIP + trainable adaptor + frozen LM. Build with :meth:`from_pretrained` or :meth:`build`."""

    def __init__(self, clip: ClipEncoder, lm: LanguageModel, adaptor: nn.Module, kind: str = "maccap",
                 config: CaptionConfig | None = None, name: str = "", interactive: bool = False,
                 bank: CaptionBank | str | None = None):
        if kind not in ADAPTOR_KINDS:
            raise ValueError(f"unknown adaptor kind {kind!r}; known: {ADAPTOR_KINDS}")
        self.clip, self.lm, self.adaptor, self.kind = clip, lm, adaptor, kind
        # The caption bank for consensus ranking: loaded, or a path loaded on first use (start-up stays fast).
        self._bank = bank
        self.config = config or CaptionConfig()
        self.name = name or kind
        # Trained with interactive prompts (stage 2): the LM always reads the stage-2 template after the prefix.
        self.interactive = interactive
        self.adaptor.to(lm.device).eval()  # inference by default; training loops call .train() themselves

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, clip: ClipEncoder, lm: LanguageModel, adaptor_cfg: MacCapConfig | TIPCapConfig | None = None,
              config: CaptionConfig | None = None, seed: int = 0) -> "Captioner":
        """A captioner with a freshly initialised (seeded) adaptor of the config's kind, sized to the CLIP and LM."""
        torch.manual_seed(seed)
        adaptor_cfg = adaptor_cfg or MacCapConfig()
        kind = next(k for k, (c, _) in ADAPTORS.items() if isinstance(adaptor_cfg, c))
        sizes = {"clip_dim": clip.embed_dim, "lm_dim": lm.hidden_size}
        if isinstance(adaptor_cfg, MacCapConfig) and not adaptor_cfg.in_proj:
            sizes["d_model"] = clip.embed_dim  # no input projection: the decoder runs at the CLIP's width
        cfg = replace(adaptor_cfg, **sizes)
        return cls(clip, lm, ADAPTORS[kind][1](cfg), kind, config)

    @classmethod
    def from_pretrained(cls, name_or_path: str = "offline-world", device: str = "auto", dtype: str = "auto",
                        clip: ClipEncoder | None = None, lm: LanguageModel | None = None) -> "Captioner":
        """Load a preset by name or an adaptor checkpoint by path, with the CLIP and LM it records.

        ``clip``/``lm`` reuse already loaded models (checked against the checkpoint's fingerprints).
        """
        from .presets import resolve

        path = resolve(name_or_path)
        ck = load_checkpoint(path, expect_kind=ADAPTOR_KINDS)
        dev = resolve_device(device)
        if clip is None:
            spec = ClipSpec(**ck.clip["spec"])
            if spec.checkpoint and not os.path.isabs(spec.checkpoint):
                spec.checkpoint = os.path.join(os.path.dirname(os.path.abspath(path)), spec.checkpoint)
            clip = load_clip(spec, dev)
        if lm is None:
            lm = load_lm(LMSpec(**ck.lm["spec"]), dev, resolve_dtype(dtype, dev))
        check_compatible(ck, clip.identity(), lm.identity())
        cfg_cls, module_cls = ADAPTORS[ck.kind]
        adaptor = build_and_load(lambda: module_cls(cfg_cls(**ck.config["adaptor"])), ck.tensors, path)
        settings = read_settings(path)  # the inference defaults beside the weights (settings.py)
        name = name_or_path if not os.path.isfile(name_or_path) else os.path.basename(path)
        # Trainable weights stay fp32 whatever the LM's dtype (device.py's precision policy).
        return cls(clip, lm, adaptor.to(lm.device).eval(), ck.kind, settings.config, name=name,
                   interactive=bool(ck.config.get("interactive", False)), bank=settings.bank or None)

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
    def noise_variance(self, cfg: CaptionConfig) -> float:
        """The inference noise σ² under ``cfg``: its own, or (None) the adaptor's (``adaptor.noise_sigma2``)."""
        return self.adaptor.noise_sigma2 if cfg.decoding.sigma2 is None else cfg.decoding.sigma2

    def n_cr(self, cfg: CaptionConfig) -> int:
        """The number of subregions N_cr under ``cfg``: its own, or (None) the adaptor's."""
        return cfg.regions.n_cr or self.adaptor.n_regions

    def region_memory(self, feats, cfg: CaptionConfig, noisy: bool = False
                      ) -> tuple[torch.Tensor, regions.Subregions]:
        """The N_cr region tokens MacCap's adaptor reads, (B, N_cr, D), and the chosen subregions.

        With ``noisy`` and ``cfg.authors.noise_on_sum`` the region tokens are the unnormalised sums
        normalize(I_s) + I_c, for the noise to be added before their normalisation (the authors' order)."""
        n_cr = self.n_cr(cfg)
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
                rough: str | Sequence[str] | None = None, **overrides: Any) -> CaptionResult | list[CaptionResult]:
        """Caption one image (returns a :class:`CaptionResult`) or a list (returns a list).

        With ``prompt`` (interactive models only) the caption is refined in a second pass that reads the rough
        caption and the prompt: ``rough`` gives the rough caption(s), e.g. a stage-1 model's as in TIPCap;
        without it this model's own first pass writes them.

        ``overrides`` are settings by their flat names (:class:`zsc_core.settings.CaptionConfig`: samples,
        sigma2, num_beams, rerank, bank_mix, ...); None values are ignored. Runs the adaptor in eval mode (no
        dropout) and restores its mode afterwards, so training loops can call it for validation.
        """
        was_training = self.adaptor.training
        self.adaptor.eval()
        try:
            with torch.no_grad():
                return self._caption(images, prompt, rough, overrides)
        finally:
            self.adaptor.train(was_training)

    def _caption(self, images, prompt, rough, overrides) -> CaptionResult | list[CaptionResult]:
        single = isinstance(images, Image.Image)
        batch = [images] if single else list(images)
        prompt = prompt.strip() if prompt is not None else None
        if rough is not None:
            rough = [rough] if isinstance(rough, str) else list(rough)
            if len(rough) != len(batch) or not prompt:
                raise ValueError("rough captions need a prompt and one rough caption per image")
        if prompt and not self.interactive:
            raise NotImplementedError(f"the {self.kind!r} model {self.name!r} has no interactive-prompt stage; use "
                                      "a model trained with prompts (train/train_prompts.py)")
        if not batch:
            return []
        cfg = self.config.replace(**{k: v for k, v in overrides.items() if v is not None})
        cfg.check()
        if cfg.uses_bank and not self.has_bank:
            raise ValueError("consensus and cider ranking and bank_mix need a caption bank, and the model "
                             f"{self.name!r} has none (its settings JSON names one: train/build_bank.py attach=...)")
        t0 = time.perf_counter()
        pixels = self.clip.pixels(batch)
        feats = self.clip.image_features(pixels)
        d = cfg.decoding
        b, s = len(batch), d.samples
        noisy = s > 1 or cfg.authors.noise_single
        memory, sub = self.region_memory(feats, cfg, noisy)  # (B, N_cr, D)
        t1 = time.perf_counter()
        neighbours = cider_refs = None
        mix_k, rank_k, ranking = cfg.retrieval.mix_k, cfg.ranking_k, cfg.ranking.rerank
        if cfg.uses_bank:  # the bank captions nearest each image, nearest first: (B, k)
            index = self.bank.neighbours(feats.global_feat.float(), max(mix_k, rank_k))
            neighbours = self.bank.feats(index).to(feats.global_feat.device)  # (B, k, D)
            if ranking == "cider":  # the ranking's rank_k nearest texts, as CIDEr-D references
                idf = self.bank.captions().idf
                cider_refs = [(texts, idf) for texts in self.bank.texts(index[:, :rank_k])]
        t_rank = time.perf_counter() - t1
        global_in = feats.global_feat
        bank_mix = cfg.retrieval.bank_mix
        if bank_mix:
            anchor = torch.nn.functional.normalize(neighbours[:, :mix_k].mean(1), dim=-1)  # (B, D)
            global_in = mix_features(global_in, anchor, bank_mix)
            memory = mix_features(memory, anchor[:, None], bank_mix)
        x = self.adaptor.image_input(global_in, memory)  # what this adaptor reads: (B, N_cr, D) or (B, D)
        x = x.repeat_interleave(s, dim=0)  # (B*S, ...), image-major
        if noisy:
            gen = torch.Generator(device=x.device).manual_seed(d.seed)
            x = self.adaptor.perturb(x, self.noise_variance(cfg), gen)
        with autocast(self.lm.device, self.lm.model.dtype):
            prefix = self.adaptor(x)  # (B*S, N_q, H)
        gen_cfg = GenerationCfg(max_new_tokens=d.max_new_tokens, num_beams=d.num_beams,
                                num_return=d.num_beams if d.keep_beams else 1)
        # the consensus ranking's rank_k nearest (the input mix read its mix_k nearest)
        neighbours = neighbours[:, :rank_k] if ranking == "consensus" else None
        if rough is None:
            ranked, t = self._decode_and_rank(prefix, feats.global_feat, b, s, gen_cfg, [""] * b,
                                              "" if self.interactive else None, neighbours, cider_refs=cider_refs)
            t_rank += t
            rough = [c[0].text for c in ranked] if prompt else None
        if prompt:  # second pass: the rough caption and the user's prompt after the same prefix
            ranked, t = self._decode_and_rank(prefix, feats.global_feat, b, s, gen_cfg, rough,
                                              prompt[:MAX_PROMPT_CHARS], neighbours, cfg.ranking.prompt_weight,
                                              cider_refs)
            t_rank += t
        t2 = time.perf_counter()
        results = []
        for i, im in enumerate(batch):
            cands = ranked[i]
            boxes = regions.patch_boxes(sub.index[i], feats.grid, feats.patch_size,
                                        self.clip.preprocess_cfg.image_size, im.size)
            results.append(CaptionResult(
                caption=cands[0].text, candidates=cands,
                regions=[RegionBox(bx, float(w)) for bx, w in zip(boxes, sub.weights[i].tolist())],
                timings={}, rough_caption=rough[i] if rough else None, prompt=prompt or None,
                sigma2=self.noise_variance(cfg), n_cr=self.n_cr(cfg)))
        t3 = time.perf_counter()
        timings = {"encode_s": (t1 - t0) / b, "generate_s": (t2 - t1 - t_rank) / b,
                   "rerank_s": (t3 - t2 + t_rank) / b, "total_s": (t3 - t0) / b}
        for r in results:
            r.timings = dict(timings)
        return results[0] if single else results

    def answer(self, image: Image.Image, question: str, answers: Sequence[str] | None = None,
               use_caption: bool = True, samples: int | None = None, by_type: bool = False, **caption_kw: Any):
        """Zero-shot VQA (MacCap): see :mod:`zsc_core.vqa`. Returns a :class:`zsc_core.vqa.AnswerResult`."""
        from .vqa import answer

        return answer(self, image, question, answers, use_caption, samples, by_type, **caption_kw)

    def _decode_and_rank(self, prefix: torch.Tensor, image_feats: torch.Tensor, b: int, s: int,
                         gen_cfg: GenerationCfg, rough: list[str], prompt: str | None,
                         neighbours: torch.Tensor | None = None, prompt_weight: float = 0.0,
                         cider_refs: list | None = None) -> tuple[list[list[Candidate]], float]:
        """One batched generate over B*S prefixes (with the stage-2 template when ``prompt`` is not None),
        all candidates CLIP-encoded in one batch, ranked per image (by CIDEr-D against ``cider_refs`` (per image:
        texts, idf) when given, else by consensus with ``neighbours`` (B, k, D) when given, else by CLIP score;
        plus ``prompt_weight`` x the cosine with a non-empty ``prompt``). Also returns the seconds spent ranking."""
        prompts = None
        if prompt is not None:
            ids = [self.lm.encode([stage2_text(r, prompt)])[0][:MAX_PROMPT_TOKENS] for r in rough]
            prompts = [ids[i // s] for i in range(b * s)]
        with autocast(self.lm.device, self.lm.model.dtype):
            texts = self.lm.generate(prefix, prompts=prompts, cfg=gen_cfg)
        t = time.perf_counter()
        n = s * gen_cfg.num_return  # candidates per image: each sample's hypotheses, image-major
        text_feats = self.clip.encode_text(texts).view(b, n, -1)  # (B, S x num_return, D)
        prompt_feat = self.clip.encode_text([prompt])[0] if prompt and prompt_weight else None  # (D,)
        ranked = [rerank(texts[i * n:(i + 1) * n], text_feats[i], image_feats[i],
                         neighbours[i].to(text_feats.device) if neighbours is not None else None,
                         prompt_feat, prompt_weight, cider_refs[i] if cider_refs is not None else None)
                  for i in range(b)]
        return ranked, time.perf_counter() - t
