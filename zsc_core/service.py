"""What the app needs from the core, in display-ready form: presets loaded once, safe image reading,
captions with their regions drawn and candidates tabulated. No UI code here, and no model code in app.py."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .captioner import MAX_PROMPT_CHARS
from .images import ImageError, load_image
from .presets import OFFLINE_CLIP, PHOTO_BRIDGE, PRESETS, default_preset, preset_status, prompt_status
from .viz import draw_regions
from .vqa import MAX_QUESTION_CHARS, answer_vocabulary

MAX_GAP_IMAGES = 64
MAX_COCO_GAP = 109  # every val-dev photo


VQA_SAMPLES = 1  # the caption VQA reads: one greedy sample
APP_BEAMS = 1  # ...decoded greedily (the caption tab starts at the preset's served setting, service.served_config)
# What a ZeroGPU call may take (gpu_seconds): the quota pre-check refuses a visitor whose remaining quota is under
# the requested duration, and anonymous visitors have little, so it is sized from the request, not set high. No GPU
# was lent to measure it; the bound is generous against this machine's CPU figures divided by the GPU's speed-up.
GPU_BASE_S = 10.0  # a fresh worker: the first CUDA call, the bank look-ups, the candidates' text encoding
GPU_PER_SEQUENCE_S = 0.25  # per decoded sequence (S x beams, twice for a two-pass prompt)
GPU_PER_IMAGE_S = 0.05  # per image the gap tab encodes
GPU_MAX_S = 120


def score_name(preset: str) -> str:
    """The candidates' similarity-with-the-image column: the photo bridge's cosine is no CLIP score."""
    return "bridge cosine" if PRESETS[preset].clip == PHOTO_BRIDGE else "CLIP score"


def ranking_header(cfg, score: str, prompt: bool = False) -> str:
    """The candidates table's ranking column, named after the ranking that ordered it (settings ``cfg``)."""
    head = {"cider": f"CIDEr-D vs {cfg.ranking_k} nearest captions",
            "consensus": f"consensus with {cfg.ranking_k} nearest captions"}.get(cfg.ranking.rerank, score)
    if prompt and cfg.ranking.prompt_weight:
        head += f" + {cfg.ranking.prompt_weight:g} x prompt similarity"
    return head + " (ranks)"


class UserError(ValueError):
    """Something the user can fix; the message is shown as is."""


def preset_name(name: str | None) -> str:
    """A preset's name as a request gives it (None: the default); a UserError for one that is not a preset."""
    name = name or default_preset()
    if name not in PRESETS:
        raise UserError(f"Unknown model {name!r}; choose one of {', '.join(PRESETS)}.")
    return name


def _blank_is_none(value: Any) -> Any:
    """A settings field left blank (None, or a text box holding only spaces) means the model's own value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


@dataclass
class PresetLabels:
    """What the app's labels say about a preset, so that each panel names what produced it."""

    header: str  # the page's one-paragraph description of the model
    regions: str  # the subregions panel's title
    score: str  # the candidates' similarity-with-the-image column
    ranking: str  # the column that ranks the candidates
    reads_regions: bool  # the adaptor reads the N_cr subregions (else N_cr is not a setting of it)
    offline_world: bool  # built on the offline world's CLIP (its random-scene button applies)
    has_bank: bool  # has a caption bank (the retrieved human caption is shown)

    def candidate_headers(self) -> list[str]:
        return ["chosen", "candidate", self.score, self.ranking, "count"]


def gpu_seconds(samples: int, beams: int = 1, prompt: bool = False, images: int = 0) -> int:
    """The duration a ZeroGPU call asks for: a base, plus each sequence decoded and each image encoded; whole
    seconds, at most GPU_MAX_S."""
    seq = max(1, int(samples)) * max(1, int(beams)) * (2 if prompt else 1)
    return int(min(GPU_MAX_S, -(-(GPU_BASE_S + GPU_PER_SEQUENCE_S * seq + GPU_PER_IMAGE_S * images) // 1)))


@dataclass
class CaptionRequest:
    """A checked caption request (CaptionService.caption_request): what the model step needs, picklable."""

    image: Image.Image
    preset: str
    settings: dict[str, Any]  # samples, sigma2, n_cr, num_beams, seed (flat CaptionConfig names)
    prompt: str = ""


@dataclass
class CaptionView:
    caption: str
    regions_image: Image.Image
    candidates: dict[str, list]  # {"headers": PresetLabels.candidate_headers(), "data": [[chosen mark, text, ...]]}
    info: str  # timings and settings, one line
    rough_caption: str = ""  # with a prompt: the first-pass caption
    retrieved: str = ""  # the nearest human-written caption (the benchmark's retrieval baseline), when there is a bank


class CaptionService:
    """Loads each preset once (thread-safe) and captions user images through the Captioner facade."""

    def __init__(self, device: str = "auto", dtype: str = "auto"):
        self.device = device
        self.dtype = dtype
        self._models: dict[str, Any] = {}
        self._failed: dict[str, str] = {}  # model key -> why it could not be loaded (kept, not retried per request)
        self._lock = threading.Lock()

    def device_type(self) -> str:
        from .device import resolve_device

        return resolve_device(self.device).type

    def served_config(self, name: str | None = None):
        """The setting a preset serves on this service's device (its settings JSON: the defaults on CPU, plus its
        ``served["cuda"]`` changes on a GPU), read without loading the model: what the app's sliders start at."""
        from .settings import read_settings

        name = preset_name(name)
        return read_settings(PRESETS[name].checkpoint_path()).for_device(self.device_type())

    def usable(self, name: str) -> bool:
        """Whether a preset's files are here and it has not failed to load."""
        return preset_status(name).ready and name not in self._failed

    def preset_choices(self) -> list[tuple[str, str]]:
        """(label, name) for a dropdown: only the presets that can caption here (the Models tab lists the rest)."""
        return [(name, name) for name in PRESETS if self.usable(name)]

    def labels(self, name: str | None = None) -> PresetLabels:
        """What the page says about a preset, read from the registry and the files beside its weights (nothing is
        loaded): which tower it sees with, whether its adaptor reads subregions, how it ranks."""
        from .captioner import ADAPTORS
        from .checkpoint import read_metadata
        from .settings import read_settings

        name = preset_name(name)
        p, path = PRESETS[name], PRESETS[name].checkpoint_path()
        exists = os.path.isfile(path)
        settings = read_settings(path)
        reads = ADAPTORS[read_metadata(path)["kind"]][1].reads_regions if exists else True
        bridge = p.clip == PHOTO_BRIDGE
        lm = "SmolLM2-135M" if p.lm.source == "smollm2-135m" else p.lm.display_name()
        tower = ("a frozen image-text **bridge** (torchvision's ImageNet MobileNetV2, whose class probabilities mix "
                 "class prototypes built from caption text in all-MiniLM-L6-v2's space: it knows ImageNet's 1,000 "
                 "classes)") if bridge else f"a frozen **CLIP** ({p.clip.display_name()})"
        header = (f"**{name}**: {tower}, a small adaptor trained on caption text alone, and a frozen language model "
                  f"({lm}) that writes the caption.")
        regions = ("Top subregions, numbered by CAM saliency (the CNN's class-activation maps)" if bridge else
                   "Top attention subregions, numbered by CLS attention")
        if not reads:
            regions += ": shown, not read (this model reads the whole-image feature)"
        score = score_name(name)
        return PresetLabels(header, regions, score, ranking_header(settings.config, score), reads,
                            p.clip == OFFLINE_CLIP, bool(settings.bank))

    def status_markdown(self) -> str:
        """Each preset: what it is, what it was trained on, what it cannot know, and whether it runs here."""
        lines = []
        for name, p in PRESETS.items():
            st = preset_status(name)
            if name in self._failed:
                state = f"**Failed to load**: {self._failed[name]}"
            else:
                state = "Ready." if st.ready else f"Not available here: {st.reason}."
            lines.append(f"- **{name}**: {p.description}. *Trained on:* {p.trained_on}. *Cannot know:* {p.limits}. "
                         f"{state}")
        return "\n".join(lines)

    def captioner(self, name: str | None, prompts: bool = False):
        """The preset's captioner (``prompts``: its interactive-prompt model), loaded once and kept."""
        name = preset_name(name)
        key = f"{name}:prompts" if prompts else name
        what = "interactive-prompt model" if prompts else "model"
        with self._lock:
            if key in self._failed:
                raise UserError(f"The {name} {what} could not be loaded: {self._failed[key]}")
            if key not in self._models:
                st = prompt_status(name) if prompts else preset_status(name)
                if not st.ready:
                    raise UserError(f"The {name} {what} is not available here: {st.reason}.")
                from .captioner import Captioner

                path = PRESETS[name].prompt_checkpoint_path() if prompts else name
                clip, lm = self._frozen_models(name)
                try:
                    self._models[key] = Captioner.from_pretrained(path, device=self.device, dtype=self.dtype,
                                                                  clip=clip, lm=lm)
                except Exception as e:  # a missing package, a checkpoint mismatch...: say so, keep serving
                    self._failed[key] = f"{type(e).__name__}: {e}"
                    raise UserError(f"The {name} {what} could not be loaded: {self._failed[key]}") from None
            return self._models[key]

    def _frozen_models(self, name: str):
        """Already loaded frozen models that this preset names too, each found on its own: one CLIP (or bridge)
        per encoder and one LM in memory for every model on them (photo and offline-world share SmolLM2)."""
        p = PRESETS[name]
        clip = lm = None
        for key, cap in self._models.items():
            q = PRESETS[key.split(":")[0]]
            clip = clip or (cap.clip if q.clip == p.clip else None)
            lm = lm or (cap.lm if q.lm == p.lm else None)
        return clip, lm

    def warm_up(self, name: str | None = None) -> str:
        """Load a preset and its prompt model at start-up (so the first request is fast). Never raises: returns
        what went wrong and what to do, for the page; the other presets stay usable."""
        name = name or default_preset()
        try:
            self.captioner(name)
            if prompt_status(name).ready:
                self.captioner(name, prompts=True)
        except UserError as e:
            others = [n for n in PRESETS if n != name and self.usable(n)]
            return f"{e} " + (f"Other models still work: {', '.join(others)}." if others else "")
        return ""

    def warm_all(self) -> None:
        """Load every usable preset, its prompt model and what its requests read lazily (caption bank, its texts
        and nouns), so forked GPU workers (ZeroGPU) inherit them instead of loading them on every call. Never
        raises; a preset that fails is recorded as failed, as in :meth:`warm_up`."""
        for name in [n for n in PRESETS if self.usable(n)]:
            self.warm_up(name)
            for key in (name, f"{name}:prompts"):
                cap = self._models.get(key)
                if cap is not None and cap.has_bank:
                    try:
                        cap.bank.captions()
                        if cap.reads_memory:
                            cap.bank.nouns()
                    except Exception as e:  # keep serving the others
                        self._failed[key] = f"{type(e).__name__}: {e}"

    @staticmethod
    def example_images() -> list[str]:
        """Real photos for the app's examples: a few held-out COCO photos (data/coco/val-dev) and scikit-learn's
        two packaged photos (written once to a temp folder)."""
        import os
        import tempfile

        from .presets import EXAMPLE_PHOTOS, data_dir

        d = os.path.join(data_dir(), "coco", "val-dev", "images")
        paths = [os.path.join(d, f) for f in EXAMPLE_PHOTOS if os.path.isfile(os.path.join(d, f))]
        tmp = os.path.join(tempfile.gettempdir(), "zsc-examples")
        os.makedirs(tmp, exist_ok=True)
        for name in ("china.jpg", "flower.jpg"):
            p = os.path.join(tmp, name)
            if not os.path.exists(p):  # scikit-learn is imported only the first time (it costs ~0.5 s)
                from sklearn.datasets import load_sample_image

                Image.fromarray(load_sample_image(name)).save(p)
            paths.append(p)
        return paths

    @staticmethod
    def read_image(source: Any) -> Image.Image:
        """A clean RGB image from a path, bytes, a PIL image, or an upload as Gradio sends it ({"path": ...})."""
        if isinstance(source, dict):
            source = source.get("path") or source.get("url")
        if source is None or (isinstance(source, str) and not source.strip()):
            raise UserError("Please upload an image first.")
        try:
            return load_image(source, name="The uploaded file")
        except ImageError as e:
            raise UserError(str(e)) from None

    def caption(self, image_source: Any, preset: str | None = None, samples: int = 20, sigma2: float | None = None,
                n_cr: int | None = None, num_beams: int = 1, seed: int = 0, prompt: str | None = None,
                guide_weight: float | None = None) -> CaptionView:
        """Caption an upload; with a prompt, re-caption it (the preset's interactive-prompt model, or the preset
        itself when it reads prompts as entities). The three steps below, in one call."""
        request = self.caption_request(image_source, preset, samples, sigma2, n_cr, num_beams, seed, prompt,
                                       guide_weight)
        return self.caption_view(request, self.propose(request))

    def caption_request(self, image_source: Any, preset: str | None = None, samples: int = 20,
                        sigma2: float | None = None, n_cr: int | None = None, num_beams: int = 1, seed: int = 0,
                        prompt: str | None = None, guide_weight: float | None = None) -> CaptionRequest:
        """Step 1 (CPU): read the upload and check every setting; a clear UserError for anything wrong.
        ``guide_weight`` None: the model's own bank guidance (it applies only to a model with a caption bank)."""
        image = self.read_image(image_source)
        prompt = self.check_text(prompt, "prompt", MAX_PROMPT_CHARS, required=False)
        name = preset_name(preset)
        n_cr, sigma2 = _blank_is_none(n_cr), _blank_is_none(sigma2)  # blank: the model's own
        guide_weight = _blank_is_none(guide_weight)
        try:
            samples, num_beams, seed = int(samples), int(num_beams), int(seed)
            n_cr = int(n_cr) if n_cr is not None else None
            sigma2 = float(sigma2) if sigma2 is not None else None
            guide_weight = float(guide_weight) if guide_weight is not None else None
        except (TypeError, ValueError):
            raise UserError("Samples, N_cr, beams and seed must be whole numbers, sigma² a number, the guidance "
                            "weight a number.") from None
        if guide_weight is not None and not 0 <= guide_weight < 1:
            raise UserError("The bank guidance weight must be at least 0 and below 1.")
        if n_cr is not None and not 1 <= n_cr <= 49:
            raise UserError("N_cr must be between 1 and 49.")
        if not 1 <= samples <= 64:
            raise UserError("Samples must be between 1 and 64.")
        if sigma2 is not None and not 0 <= sigma2 <= 1:
            raise UserError("Noise σ² must be between 0 and 1.")
        if not 1 <= num_beams <= 8:
            raise UserError("Beams must be between 1 and 8.")
        settings = dict(samples=samples, sigma2=sigma2, n_cr=n_cr, num_beams=num_beams, seed=seed,
                        guide_weight=guide_weight)
        return CaptionRequest(image, name, settings, prompt)

    def prompt_model(self, name: str):
        """Who re-captions with a prompt: the preset itself when it reads prompts as entities, else its
        interactive-prompt (stage-2) model."""
        base = self.captioner(name)
        return base if base.takes_prompts else self.captioner(name, prompts=True)

    def propose(self, request: CaptionRequest):
        """Step 2 (the model's work, what a ZeroGPU Space runs on its GPU): the candidates, not yet ranked
        (:meth:`Captioner.propose`). TIPCap's two-stage prompt path first captions with the preset (ranked here:
        its caption is the rough one the prompt model reads)."""
        base = self.captioner(request.preset)
        # the device's served setting, with what the request sets (None: the model's own)
        settings = {**base.served_settings(self.device_type()),
                    **{k: v for k, v in request.settings.items() if v is not None}}
        if not base.has_bank:  # bank guidance reads the caption bank; the app hides its slider for other models
            settings.pop("guide_weight", None)
        if not request.prompt:
            return base.propose(request.image, **settings)
        cap = self.prompt_model(request.preset)
        if cap.interactive:
            rough = base.caption(request.image, **settings).caption
            return cap.propose(request.image, prompt=request.prompt, rough=rough, **settings)
        return cap.propose(request.image, prompt=request.prompt, **settings)

    def caption_view(self, request: CaptionRequest, proposal) -> CaptionView:
        """Step 3 (CPU): rank the candidates (CIDEr-D included), draw the subregions, write the table and the info
        line, and retrieve the nearest human caption from the image feature the model already computed."""
        prompt, preset, settings = request.prompt, request.preset, request.settings
        cap = self.prompt_model(preset) if prompt else self.captioner(preset)
        r = cap.rank(proposal)
        samples, num_beams, sigma2 = settings["samples"], settings["num_beams"], settings["sigma2"]
        rows = [["✔" if i == 0 else "", c.text, round(c.clip_score, 4), round(c.score, 4), c.count]
                for i, c in enumerate(r.candidates)]
        cfg, score = cap.config, score_name(preset)  # no file is read per request
        table = {"headers": ["chosen", "candidate", score, ranking_header(cfg, score, bool(prompt)), "count"],
                 "data": rows}
        ranked = {"consensus": "consensus with the caption bank",
                  "cider": f"CIDEr-D against the photo's {cfg.ranking_k} nearest corpus captions"}.get(
            cfg.ranking.rerank, score)
        mix = cfg.retrieval.bank_mix
        if cap.reads_memory:
            e = cfg.entities
            ranked += (f"; decoded from a memory of its {cfg.retrieval.mix_k} nearest corpus captions and, per "
                       f"subregion, {cfg.retrieval.region_k} more")
            if e.entities or prompt:
                ranked += ", with entity prompts" + (" (yours first)" if prompt else "")
        elif mix:
            mean = f"the mean of its {cfg.retrieval.mix_k} nearest corpus captions"
            ranked += ("; decoded from " + mean if mix == 1 else
                       f"; decoded from the photo's feature mixed {mix:g} with {mean}")
        if prompt and cfg.ranking.prompt_weight:
            ranked += f" + {cfg.ranking.prompt_weight:g} x similarity to the prompt"
        guide = settings.get("guide_weight")
        if guide is None:  # the setting this model serves on this device (read at load: no file per request)
            guide = cap.config.replace(**cap.served_settings(self.device_type())).guidance.guide_weight
        if guide and not prompt and cap.has_bank:  # a prompted pass is never guided (Captioner._caption_from_*)
            ranked += (f"; each token mixed {guide:g} with the n-grams of its {cfg.guide_k} nearest corpus captions "
                       "(bank guidance)")
        noise = f"σ² {r.sigma2:g}" + (" (the model's)" if sigma2 is None else "")
        regions = f"N_cr {r.n_cr}, " if cap.adaptor.reads_regions and cfg.regions.use_regions else ""
        info = (f"{len(r.candidates)} distinct candidates from S={samples} x beam {num_beams}, {noise}, "
                f"{regions}ranked by {ranked}; "
                f"{r.timings['total_s']:.2f} s (encode {r.timings['encode_s']:.2f}, "
                f"generate {r.timings['generate_s']:.2f}, rerank {r.timings['rerank_s']:.2f})")
        if r.entities is not None:
            info += f"; entities the first sample read: {', '.join(r.entities) or 'none'}"
        rough = r.rough_caption or ""
        if prompt and not cap.interactive:
            rough = "(one pass: this model reads the prompt's nouns as entities, before the ones it retrieved)"
        base = self.captioner(preset)
        # the base model's CIDEr-D ranking already looked up the photo's ranking_k nearest bank captions
        nearest = proposal.pending.cider_texts[0] if cap is base and proposal.pending.cider_texts else None
        return CaptionView(r.caption, draw_regions(request.image, r.regions), table, info, rough,
                           self.retrieved_caption(base, proposal.image_feats, nearest))

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

    @staticmethod
    def check_text(text: Any, what: str, limit: int, required: bool = True) -> str:
        text = "" if text is None else str(text)
        text = " ".join(text.split())  # newlines and runs of spaces from a pasted text
        if not text:
            if required:
                raise UserError(f"Please type a {what}.")
            return ""
        if len(text) > limit:
            raise UserError(f"The {what} is {len(text):,} characters long; please keep it under {limit}.")
        return text

    def answer(self, image_source: Any, question: Any, preset: str | None = None) -> AnswerView:
        """Zero-shot VQA on an upload: the checks (CPU), then :meth:`answer_image` (the model's work)."""
        question = self.check_text(question, "question", MAX_QUESTION_CHARS)
        return self.answer_image(self.read_image(image_source), question, preset)

    def answer_image(self, image: Image.Image, question: str, preset: str | None = None) -> AnswerView:
        """Zero-shot VQA on a decoded image and a checked question (what a ZeroGPU Space runs on its GPU)."""
        name = preset or default_preset()
        cap = self.captioner(name)
        # The preset's answer vocabulary (VQAv2's for real photos), the candidates of the question's answer type, and
        # a caption decoded fast (one greedy sample): the LM reads only the caption, so S=20 would buy little here.
        r = cap.answer(image, question, answers=answer_vocabulary(PRESETS[name].answers), samples=VQA_SAMPLES,
                       num_beams=APP_BEAMS, by_type=True)
        return AnswerView(r.answer, r.generated, r.caption or "", [[a, round(sc, 4)] for a, sc in r.ranking[:5]])

    def gap(self, preset: str | None = None, source: str = "generated scenes", n: int = 200,
            files: list | None = None, captions: str = "") -> GapView:
        """The modality-gap analysis of generated scenes, or of the user's own images and captions: the three
        steps below in one call."""
        images, texts = self.gap_inputs(source, n, files, captions)
        return self.gap_view(self.gap_features(preset, images, texts))

    def gap_inputs(self, source: str = "generated scenes", n: int = 200, files: list | None = None,
                   captions: str = "") -> tuple[list[Image.Image], list[str]]:
        """Step 1 (CPU): the images and one caption each, read and checked."""
        from . import world

        if source == "COCO photos":  # the held-out real photos, each with its first reference caption
            from .evaluation import coco_items

            items = coco_items("val-dev")[:MAX_COCO_GAP]
            return [load_image(p) for p, _ in items], [caps[0] for _, caps in items]
        if source == "generated scenes":
            try:
                n = int(n)
            except (TypeError, ValueError):
                raise UserError("The number of scenes must be a whole number.") from None
            if not 10 <= n <= 1000:
                raise UserError("Choose between 10 and 1000 scenes.")
            scenes = list(world.iter_scenes(0, "eval", n))
            return [world.render(s, 128) for s in scenes], [s.captions[0] for s in scenes]
        files = [f for f in (files or []) if f]
        texts = [t.strip() for t in (captions or "").splitlines() if t.strip()]
        if len(files) < 3:
            raise UserError("Upload at least 3 images, with one caption per line for each.")
        if len(files) > MAX_GAP_IMAGES:
            raise UserError(f"Upload at most {MAX_GAP_IMAGES} images.")
        if len(texts) != len(files):
            raise UserError(f"{len(files)} images but {len(texts)} captions: give one caption per line, "
                            "in the order of the images.")
        return [self.read_image(f if isinstance(f, dict) else getattr(f, "name", f)) for f in files], texts

    def gap_features(self, preset: str | None, images: list[Image.Image], texts: list[str]):
        """Step 2 (the encoder's work, on a ZeroGPU Space's GPU): CPU tensors (global, subregion, caption)."""
        from .analysis import gap_features

        return gap_features(self.captioner(preset).clip, images, texts)

    @staticmethod
    def gap_view(features) -> GapView:
        """Step 3 (CPU): Table-1 numbers, histograms and t-SNE from the features."""
        from .analysis import gap_report_from

        glob = features[0]
        rep = gap_report_from(*features, tsne_n=min(300, len(glob)))
        t = rep.table
        md = ("| feature | matched cosine mean (max / min) | image-image | text-text | centroid distance |\n"
              "| --- | --- | --- | --- | --- |\n")
        for k in ("global", "subregion"):
            g = t[k]
            md += (f"| {k} | {g['paired_cos_mean']:.3f} ({g['paired_cos_max']:.3f} / {g['paired_cos_min']:.3f}) | "
                   f"{g['image_image_cos']:.3f} | {g['text_text_cos']:.3f} | {g['centroid_distance']:.3f} |\n")
        md += (f"\nSome subregion is closer to the caption than the global feature for "
               f"**{100 * t['share_subregion_closer']:.1f}%** of {t['n_pairs']} pairs (MacCap: 33% on COCO).")
        return GapView(md, _figure_image(rep.histograms), _figure_image(rep.tsne), t)


def _figure_image(fig) -> Image.Image:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@dataclass
class AnswerView:
    answer: str
    generated: str  # the LM's free answer before retrieval
    caption: str  # the caption the LM read
    top: list[list[Any]]  # [answer, cosine] rows, best first


@dataclass
class GapView:
    markdown: str  # Table-1 numbers
    histograms: Image.Image
    tsne: Image.Image
    table: dict
