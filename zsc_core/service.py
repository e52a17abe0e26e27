"""What the app's Caption tab needs from the core, in display-ready form: checked requests, captions with their
regions drawn and candidates tabulated, and the nearest human caption. No UI code here, and no model code in
app.py; display text lives in display.py, loading in models.py, VQA and the gap analysis in their own services."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image

from . import display
from .models import ModelCache, UserError, preset_name
from .presets import PRESETS
from .prompts import propose_prompted
from .requests import check_settings, check_text, nothing_to_see, read_image
from .specs import MAX_PROMPT_CHARS
from .viz import draw_detections, draw_regions

__all__ = ["CaptionMemo", "CaptionRequest", "CaptionService", "CaptionView", "UserError"]


class CaptionMemo:
    """The captions the Caption tab showed, by image, preset and effective settings (a few hundred, oldest dropped),
    with what the photo's caption found (vqa.Seen: its nearest bank captions and detections): the Ask tab reads the
    same caption the Caption tab shows, and the same evidence, without decoding, detecting or searching again."""

    def __init__(self, size: int = 256):
        self.size = size
        self._entries: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(image: Image.Image, preset: str, settings: dict[str, Any]) -> tuple:
        digest = hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()
        return digest, image.size, preset, tuple(sorted(settings.items()))

    def get(self, image: Image.Image, preset: str, settings: dict[str, Any]) -> str | None:
        """The caption shown for the photo at these settings, if one was."""
        return self.entry(image, preset, settings).get("caption")

    def seen(self, image: Image.Image, preset: str, settings: dict[str, Any]) -> Any:
        """What the photo's lookup found at these settings (vqa.Seen), if it was kept."""
        return self.entry(image, preset, settings).get("seen")

    def entry(self, image: Image.Image, preset: str, settings: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return dict(self._entries.get(self.key(image, preset, settings), {}))

    def put(self, image: Image.Image, preset: str, settings: dict[str, Any], caption: str | None = None,
            seen: Any = None, evidence: list | None = None) -> None:
        """Keep the photo's caption and/or its lookup (what is not given stays as it was). ``evidence``: what the
        caption read ([one evidence.Evidence or None], as ``Proposal.rough_evidence`` holds it), given with the
        caption: a prompted re-caption reads both as its rough caption."""
        key = self.key(image, preset, settings)
        with self._lock:
            entry = self._entries.pop(key, {})
            entry.update({k: v for k, v in (("caption", caption), ("seen", seen), ("evidence", evidence))
                          if v is not None})
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


@dataclass
class CaptionRequest:
    """A checked caption request (CaptionService.caption_request): what the model step needs, picklable."""

    image: Image.Image
    preset: str
    settings: dict[str, Any]  # only what the request sets (flat CaptionConfig names); the rest: the model's own
    prompt: str = ""


@dataclass
class CaptionView:
    caption: str
    regions_image: Image.Image
    candidates: dict[str, list]  # {"headers": [...], "data": [[chosen mark, text, ...]]} (display.candidates_table)
    info: str  # timings and settings, one line (display.caption_info)
    rough_caption: str = ""  # with a prompt: the first-pass caption
    retrieved: str = ""  # the nearest human-written caption (the benchmark's retrieval baseline), when there is a bank
    settings: dict[str, Any] | None = None  # the effective settings the caption was made with (flat)
    warning: str = ""  # the image has almost nothing to see (requests.nothing_to_see): the caption is a guess


class CaptionService:
    """Captions user images through the :class:`Captioner` facade, each preset loaded once (``models``)."""

    def __init__(self, models: ModelCache | None = None, memo: CaptionMemo | None = None):
        self.models = models or ModelCache()
        self.memo = memo or CaptionMemo()

    def captioner(self, name: str | None, prompts: bool = False):
        return self.models.captioner(name, prompts)

    @staticmethod
    def served_config(name: str | None = None):
        """The setting a preset serves (its settings JSON's defaults, on CPU and GPU alike), read without loading
        the model: what the app's sliders start at."""
        from .settings import read_settings

        return read_settings(PRESETS[preset_name(name)].checkpoint_path()).config

    def caption(self, image_source: Any, preset: str | None = None, samples: int | None = None,
                sigma2: float | None = None, n_cr: int | None = None, num_beams: int | None = None,
                seed: int | None = None, prompt: str | None = None, guide_weight: float | None = None) -> CaptionView:
        """Caption an upload; with a prompt, re-caption it. The three steps below, in one call. Every setting left
        out (None) is the model's own, from the JSON beside its weights."""
        request = self.caption_request(image_source, preset, samples, sigma2, n_cr, num_beams, seed, prompt,
                                       guide_weight)
        return self.caption_view(request, self.propose(request))

    def caption_request(self, image_source: Any, preset: str | None = None, samples: int | None = None,
                        sigma2: float | None = None, n_cr: int | None = None, num_beams: int | None = None,
                        seed: int | None = None, prompt: str | None = None,
                        guide_weight: float | None = None) -> CaptionRequest:
        """Step 1 (CPU): read the upload and check every setting; a clear UserError for anything wrong. A setting
        left out or blank is the model's own."""
        image = read_image(image_source)
        prompt = check_text(prompt, "prompt", MAX_PROMPT_CHARS, required=False)
        name = preset_name(preset)
        settings = check_settings(samples=samples, sigma2=sigma2, n_cr=n_cr, num_beams=num_beams, seed=seed,
                                  guide_weight=guide_weight)
        return CaptionRequest(image, name, settings, prompt)

    def propose(self, request: CaptionRequest):
        """Step 2 (the model's work, what a ZeroGPU Space runs on its GPU): the candidates, not yet ranked
        (:meth:`Captioner.propose`; with a prompt, :func:`prompts.propose_prompted`)."""
        base = self.models.captioner(request.preset)
        # bank guidance reads the caption bank; the app hides its slider for other models
        settings = self._plain(request.settings, base)
        if not request.prompt:
            return base.propose(request.image, **settings)
        # the rough caption this photo already got at these settings (the Caption tab's) is read, not decoded again
        shown = self.memo.entry(request.image, request.preset, base.effective(**settings).flat())
        rough, evidence = (shown["caption"], shown["evidence"]) if "evidence" in shown else (None, None)
        return propose_prompted(base, self.models.refiner(request.preset), request.image, request.prompt,
                                rough=rough, rough_evidence=evidence, **settings)

    def caption_view(self, request: CaptionRequest, proposal) -> CaptionView:
        """Step 3 (CPU): rank the candidates (CIDEr-D included), draw the subregions, write the table and the info
        line from the result's own settings, and retrieve the nearest human caption from the image feature the
        model already computed."""
        from .vqa import seen_from  # torch: imported once a model is, not with the page

        prompt, preset = request.prompt, request.preset
        base = self.models.captioner(preset)
        cap = self.models.refiner(preset) if prompt else base
        r = cap.rank(proposal)
        info = display.caption_info(r, preset, cap.adaptor.reads_regions, cap.reads_memory,
                                    own_sigma2="sigma2" not in request.settings)
        rough = r.rough_caption or ""
        if prompt and not cap.interactive:
            rough = "(one pass: this model reads the prompt's nouns as entities, before the ones it retrieved)"
        elif not prompt:  # what the Ask tab reads for this photo (vqa_service): its caption and its evidence; a
            # re-caption with a prompt at these settings reads it as its rough caption
            self.memo.put(request.image, preset, r.settings.flat(), r.caption, seen_from(cap, r), [r.evidence])
        elif rough:  # the rough caption is this model's plain caption at these settings
            self.memo.put(request.image, preset, base.effective(**self._plain(request.settings, base)).flat(), rough,
                          evidence=proposal.rough_evidence)
        # the base model's CIDEr-D ranking already looked up the photo's ranking_k nearest bank captions
        nearest = proposal.pending.cider_texts[0] if cap is base and proposal.pending.cider_texts else None
        warning = nothing_to_see(request.image)
        ev = r.evidence
        if warning:  # no boxes on nothing
            regions = request.image
        elif ev is not None and ev.detections:  # what the caption read: the detections its neighbours followed
            regions = draw_detections(request.image, ev.detections, f"read: {ev.summary()}")
        else:
            regions = draw_regions(request.image, r.regions, banner=display.regions_banner(
                cap.adaptor.reads_regions and r.settings.regions.use_regions, ev is not None))
        # a refinement's retrieved caption is the base's, read with the evidence of the base's rough caption
        read = proposal.evidence if cap is base or proposal.rough_evidence is None else proposal.rough_evidence
        return CaptionView(r.caption, regions, display.candidates_table(r, preset), info, rough,
                           self.retrieved_caption(base, proposal.image_feats, nearest, read),
                           r.settings.flat(), warning)

    @staticmethod
    def _plain(settings: dict[str, Any], base) -> dict[str, Any]:
        """A request's settings as the preset's plain (unprompted) caption reads them."""
        out = dict(settings)
        if not base.has_bank:
            out.pop("guide_weight", None)
        return out

    @staticmethod
    def retrieved_caption(cap, image_feats, nearest: list[str] | None = None, evidence=None) -> str:
        """The nearest human-written caption: of the image's nearest bank captions (as many as the model's ranking
        reads, conditioned on the same ``evidence``, a list of one :class:`zsc_core.evidence.Evidence`), the one
        with the highest CIDEr-D against the others, i.e. the retrieval baseline the benchmark reports.
        ``image_feats`` (1, D): the feature the captioning already computed; ``nearest``: those captions when the
        ranking already looked them up. "" without a caption bank."""
        if not cap.has_bank:
            return ""
        from .bank import cider_consensus_caption, cider_consensus_pick

        bank = cap.bank
        captions = bank.captions()
        if nearest is not None and len(nearest) == cap.config.ranking_k:
            return cider_consensus_pick(nearest, captions.idf)
        v = cap.config.evidence
        return cider_consensus_caption(bank, captions.captions, image_feats[:1].float(), cap.config.ranking_k,
                                       captions.idf, evidence[:1] if evidence else None, v.count_people,
                                       v.evidence_pool)[0]
