"""What the app says: labels of each panel, the Models tab, the candidates table and the info line.

Pure display text from the preset registry, the files beside the weights and a :class:`CaptionResult`: every
number it states is one the result reports (its effective settings, whether it was guided), never re-derived.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .presets import OFFLINE_CLIP, PHOTO_BRIDGE, PRESETS, preset_status


def score_name(preset: str) -> str:
    """The candidates' similarity-with-the-image column: the photo bridge's cosine is no CLIP score."""
    return "bridge cosine" if PRESETS[preset].clip == PHOTO_BRIDGE else "CLIP score"


def ranking_header(cfg, score: str, prompt: bool = False) -> str | None:
    """The candidates table's ranking column, named after the ranking that ordered it (settings ``cfg``); None
    when the candidates are ranked by the similarity column itself (no second column that repeats it)."""
    head = {"cider": f"CIDEr-D vs {cfg.ranking_k} nearest captions",
            "consensus": f"consensus with {cfg.ranking_k} nearest captions"}.get(cfg.ranking.rerank)
    if prompt and cfg.ranking.prompt_weight:
        head = (head or score) + f" + {cfg.ranking.prompt_weight:g} x prompt similarity"
    return head + " (ranks)" if head else None


def candidate_headers(score: str, ranking: str | None) -> list[str]:
    """The candidates table's columns: the similarity with the image, and the ranking's own score where it is
    another one."""
    if ranking is None:
        return ["chosen", "candidate", f"{score} (ranks)", "count"]
    return ["chosen", "candidate", score, ranking, "count"]


@dataclass
class PresetLabels:
    """What the app's labels say about a preset, so that each panel names what produced it."""

    header: str  # the page's one-paragraph description of the model
    regions: str  # the subregions panel's title
    score: str  # the candidates' similarity-with-the-image column
    ranking: str | None  # the column that ranks the candidates (None: the similarity column ranks them)
    reads_regions: bool  # the adaptor reads the N_cr subregions (else N_cr is not a setting of it)
    offline_world: bool  # built on the offline world's CLIP (its random-scene button applies)
    has_bank: bool  # has a caption bank (the retrieved human caption is shown)

    def candidate_headers(self) -> list[str]:
        return candidate_headers(self.score, self.ranking)


def labels(name: str) -> PresetLabels:
    """What the page says about a preset, read from the registry and the files beside its weights (nothing is
    loaded): which tower it sees with, whether its adaptor reads subregions, how it ranks."""
    from .header import read_metadata
    from .settings import read_settings
    from .specs import READS_REGIONS

    p, path = PRESETS[name], PRESETS[name].checkpoint_path()
    exists = os.path.isfile(path)
    settings = read_settings(path)
    reads = READS_REGIONS[read_metadata(path)["kind"]] if exists else True
    bridge = p.clip == PHOTO_BRIDGE
    lm = "SmolLM2-135M" if p.lm.source == "smollm2-135m" else p.lm.display_name()
    tower = ("a frozen image-text **bridge** (torchvision's ImageNet MobileNetV2, whose class probabilities mix "
             "class prototypes built from caption text in all-MiniLM-L6-v2's space: it knows ImageNet's 1,000 "
             "classes)") if bridge else f"a frozen **CLIP** ({p.clip.display_name()})"
    header = (f"**{name}**: {tower}, a small adaptor trained on caption text alone, and a frozen language model "
              f"({lm}) that writes the caption.")
    if p.clip == OFFLINE_CLIP:
        header += (" It knows only the generated world's 14 shapes, 9 colours and 6 backgrounds: a real photo comes "
                   "out as shapes.")
    regions = ("Top subregions, numbered by CAM saliency (the CNN's class-activation maps)" if bridge else
               "Top attention subregions, numbered by CLS attention")
    if not reads:
        regions += ": shown, not read (this model reads the whole-image feature)"
    if settings.config.evidence.detects:
        regions = ("What the caption read: the faces and people detected in the photo (its nearest captions are "
                   "then captions about people); where none is found, " + regions[0].lower() + regions[1:])
    score = score_name(name)
    return PresetLabels(header, regions, score, ranking_header(settings.config, score), reads,
                        p.clip == OFFLINE_CLIP, bool(settings.bank))


def regions_banner(read: bool, detected: bool) -> str:
    """The label drawn across the subregions picture: whether the model read those boxes."""
    what = "subregions (CAM saliency)"
    if detected:
        return f"no face or person found; {what}: " + ("read" if read else "shown, not read")
    return f"{what}: " + ("read by the adaptor" if read else "shown, not read")


DETECTORS = {"faces": "Faces: MTCNN (facenet-pytorch)", "bodies": "Whole people: OpenCV's HOG detector"}


def detectors_markdown(status: dict[str, str]) -> str:
    """The Models tab's pixel-evidence lines: each detector a preset reads, and whether it runs here."""
    if not status:
        return ""
    lines = [f"- {DETECTORS[k]}: " + ("ready." if v == "ready" else f"**{v}**; the presets caption without it.")
             for k, v in status.items()]
    return ("\n\n**Pixel evidence** (people, which ImageNet's classes do not have; a face is no evidence of gender: "
            "the caption words people as the nearest human captions do):\n" + "\n".join(lines))


def status_markdown(failed: dict[str, str], detectors: dict[str, str] | None = None) -> str:
    """The Models tab: each preset, what it is, what it was trained on, what it cannot know (once per kind of
    tower), and whether it runs here; no server paths or commands (docs/training.md has those). ``detectors``: the
    status of each pixel-evidence detector the presets read (evidence.Detectors.status)."""
    lines, said = [], {}
    for name, p in PRESETS.items():
        st = preset_status(name)
        if name in failed:
            state = "**Failed to load here.**"
        elif st.ready:
            state = "Ready."
        elif p.needs_hub:
            state = "Not available here: it needs the Hugging Face Hub."
        else:
            state = "Not available here: its weights are not installed."
        limits = f" *Cannot know:* {p.limits}." if p.limits not in said else \
            f" *Cannot know:* as `{said[p.limits]}` above."
        said.setdefault(p.limits, name)
        lines.append(f"- **{name}**: {p.description}. *Trained on:* {p.trained_on}.{limits} {state}")
    return "\n".join(lines) + detectors_markdown(detectors or {})


def candidates_table(result, preset: str) -> dict[str, list]:
    """The candidates, best first, with the scores that ranked them: {"headers": [...], "data": [[...], ...]}."""
    score = score_name(preset)
    ranking = ranking_header(result.settings, score, bool(result.prompt))
    rows = [["✔" if i == 0 else "", c.text, round(c.clip_score, 4)] + ([round(c.score, 4)] if ranking else [])
            + [c.count] for i, c in enumerate(result.candidates)]
    return {"headers": candidate_headers(score, ranking), "data": rows}


def caption_info(result, preset: str, reads_regions: bool, reads_memory: bool, own_sigma2: bool) -> str:
    """One line: how many candidates from which setting, how they were ranked and decoded, and the timings, all
    read off the result (its effective settings, whether it was guided, what entities it read)."""
    cfg, prompt = result.settings, result.prompt
    ranked = {"consensus": "consensus with the caption bank",
              "cider": f"CIDEr-D against the photo's {cfg.ranking_k} nearest corpus captions"}.get(
        cfg.ranking.rerank, score_name(preset))
    mix = cfg.retrieval.bank_mix
    if reads_memory:
        ranked += (f"; decoded from a memory of its {cfg.retrieval.mix_k} nearest corpus captions and, per "
                   f"subregion, {cfg.retrieval.region_k} more")
        if cfg.entities.entities or prompt:
            ranked += ", with entity prompts" + (" (yours first)" if prompt else "")
    elif mix:
        mean = f"the mean of its {cfg.retrieval.mix_k} nearest corpus captions"
        ranked += ("; decoded from " + mean if mix == 1 else
                   f"; decoded from the photo's feature mixed {mix:g} with {mean}")
    if prompt and cfg.ranking.prompt_weight:
        ranked += f" + {cfg.ranking.prompt_weight:g} x similarity to the prompt"
    if result.guided:
        ranked += (f"; each token mixed {cfg.guidance.guide_weight:g} with the n-grams of its {cfg.guide_k} nearest "
                   "corpus captions (bank guidance)")
    d, t = cfg.decoding, result.timings
    noise = f"σ² {result.sigma2:g}" + (" (the model's)" if own_sigma2 else "")
    regions = f"N_cr {result.n_cr}, " if reads_regions and cfg.regions.use_regions else ""
    info = (f"{len(result.candidates)} distinct candidates from S={d.samples} x beam {d.num_beams}, {noise}, "
            f"{regions}ranked by {ranked}; {t['total_s']:.2f} s (encode {t['encode_s']:.2f}, retrieve "
            f"{t['retrieve_s']:.2f}, generate {t['generate_s']:.2f}, rank {t['rank_s']:.2f})")
    if result.entities is not None:
        info += f"; entities the first sample read: {', '.join(result.entities) or 'none'}"
    ev = result.evidence
    if ev is not None:
        info += (f"; found {ev.summary()}" + (", so it read captions about people" if ev.n_people else "")
                 + f" (detect {t.get('detect_s', 0.0):.2f} s)")
    return info


def figure_image(fig):
    """A matplotlib figure as a PIL image (what the app's image panels show)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
