"""The app's Modality-gap tab: MacCap's Table-1 numbers, histograms and t-SNE of a preset's image-text tower."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from .display import figure_image
from .images import load_image
from .models import ModelCache, UserError, preset_name
from .requests import read_image

MAX_GAP_IMAGES = 64
MAX_COCO_GAP = 109  # every val-dev photo
SOURCES = ("COCO photos", "generated scenes", "my images and captions")


@dataclass
class GapView:
    markdown: str  # Table-1 numbers
    histograms: Image.Image
    tsne: Image.Image
    table: dict


class GapService:
    """The modality-gap analysis of the held-out photos, generated scenes, or the user's images and captions."""

    def __init__(self, models: ModelCache):
        self.models = models

    def gap(self, preset: str | None = None, source: str = "generated scenes", n: int = 200,
            files: list | None = None, captions: str = "") -> GapView:
        """The three steps below in one call."""
        images, texts = self.gap_inputs(source, n, files, captions)
        return self.gap_view(self.gap_features(preset, images, texts))

    @staticmethod
    def gap_inputs(source: str = "generated scenes", n: int = 200, files: list | None = None,
                   captions: str = "") -> tuple[list[Image.Image], list[str]]:
        """Step 1 (CPU): the images and one caption each, read and checked."""
        from . import world

        if source not in SOURCES:
            raise UserError(f"Unknown data {source!r}; choose one of {', '.join(SOURCES)}.")
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
        return [read_image(f if isinstance(f, dict) else getattr(f, "name", f)) for f in files], texts

    def gap_features(self, preset: str | None, images: list[Image.Image], texts: list[str]):
        """Step 2 (the encoder's work, on a ZeroGPU Space's GPU): CPU tensors (global, subregion, caption)."""
        from .analysis import gap_features

        return gap_features(self.models.captioner(preset_name(preset)).clip, images, texts)

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
        return GapView(md, figure_image(rep.histograms), figure_image(rep.tsne), t)
