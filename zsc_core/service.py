"""What the app's Caption tab needs from the core, in display-ready form: checked requests, captions with their
regions drawn and candidates tabulated, and the nearest human caption. No UI code here, and no model code in
app.py; display text lives in display.py, loading in models.py, VQA and the gap analysis in their own services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from . import display
from .captioner import MAX_PROMPT_CHARS
from .models import ModelCache, UserError, preset_name
from .presets import PRESETS
from .prompts import propose_prompted
from .requests import check_settings, check_text, read_image
from .viz import draw_regions

__all__ = ["CaptionRequest", "CaptionService", "CaptionView", "UserError"]


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


class CaptionService:
    """Captions user images through the :class:`Captioner` facade, each preset loaded once (``models``)."""

    def __init__(self, models: ModelCache | None = None):
        self.models = models or ModelCache()

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
        settings = dict(request.settings)
        if not base.has_bank:  # bank guidance reads the caption bank; the app hides its slider for other models
            settings.pop("guide_weight", None)
        if not request.prompt:
            return base.propose(request.image, **settings)
        return propose_prompted(base, self.models.refiner(request.preset), request.image, request.prompt, **settings)

    def caption_view(self, request: CaptionRequest, proposal) -> CaptionView:
        """Step 3 (CPU): rank the candidates (CIDEr-D included), draw the subregions, write the table and the info
        line from the result's own settings, and retrieve the nearest human caption from the image feature the
        model already computed."""
        prompt, preset = request.prompt, request.preset
        base = self.models.captioner(preset)
        cap = self.models.refiner(preset) if prompt else base
        r = cap.rank(proposal)
        info = display.caption_info(r, preset, cap.adaptor.reads_regions, cap.reads_memory,
                                    own_sigma2="sigma2" not in request.settings)
        rough = r.rough_caption or ""
        if prompt and not cap.interactive:
            rough = "(one pass: this model reads the prompt's nouns as entities, before the ones it retrieved)"
        # the base model's CIDEr-D ranking already looked up the photo's ranking_k nearest bank captions
        nearest = proposal.pending.cider_texts[0] if cap is base and proposal.pending.cider_texts else None
        return CaptionView(r.caption, draw_regions(request.image, r.regions), display.candidates_table(r, preset),
                           info, rough, self.retrieved_caption(base, proposal.image_feats, nearest),
                           r.settings.flat())

    @staticmethod
    def retrieved_caption(cap, image_feats, nearest: list[str] | None = None) -> str:
        """The nearest human-written caption: of the image's nearest bank captions (as many as the model's ranking
        reads), the one with the highest CIDEr-D against the others, i.e. the retrieval baseline the benchmark
        reports. ``image_feats`` (1, D): the feature the captioning already computed; ``nearest``: those captions
        when the ranking already looked them up. "" without a caption bank."""
        if not cap.has_bank:
            return ""
        from .bank import cider_consensus_caption, cider_consensus_pick

        bank = cap.bank
        captions = bank.captions()
        if nearest is not None and len(nearest) == cap.config.ranking_k:
            return cider_consensus_pick(nearest, captions.idf)
        return cider_consensus_caption(bank, captions.captions, image_feats[:1].float(), cap.config.ranking_k,
                                       captions.idf)[0]
