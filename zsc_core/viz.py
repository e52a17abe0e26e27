"""Pictures for people: subregion boxes drawn over an image."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw


def _canvas(image: Image.Image) -> tuple[Image.Image, float, Image.Image, ImageDraw.ImageDraw]:
    """The image (small ones enlarged so that boxes and labels stay legible), its scale, and an overlay to draw on."""
    im = image.convert("RGB")
    k = 384 / max(im.size) if max(im.size) < 384 else 1.0
    if k != 1.0:
        im = im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.NEAREST)
    overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
    return im, k, overlay, ImageDraw.Draw(overlay)


def _banner(d: ImageDraw.ImageDraw, text: str) -> None:
    """A label across the image's top-left corner, on a dark strip (what the boxes are, and whether they were read)."""
    if text:
        x0, y0, x1, y1 = d.textbbox((4, 3), text)
        d.rectangle([0, 0, x1 + 4, y1 + 3], fill=(0, 0, 0, 170))
        d.text((4, 3), text, fill=(255, 255, 255, 255))


def draw_detections(image: Image.Image, detections: Sequence, banner: str = "") -> Image.Image:
    """The image with the detections the caption read (:class:`zsc_core.evidence.Detection`), each box named by
    its kind ("face", "person"), and ``banner`` across the top."""
    im, k, overlay, d = _canvas(image)
    for det in detections:
        x0, y0, x1, y1 = (v * k for v in det.box)
        colour = (0, 200, 80, 255) if det.kind == "face" else (0, 140, 255, 255)
        d.rectangle([x0, y0, x1, y1], fill=colour[:3] + (50,), outline=colour, width=3)
        d.text((x0 + 2, max(0, y0 - 11)), det.kind, fill=colour)
    _banner(d, banner)
    return Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB")


def draw_regions(image: Image.Image, regions: Sequence, top: int | None = None, banner: str = "") -> Image.Image:
    """The image with its subregion boxes: outline width and opacity follow the CLS attention weight.

    ``regions`` are :class:`zsc_core.captioner.RegionBox` (highest weight first); each box is numbered by
    rank. Small images are enlarged first so that boxes and labels stay legible. ``banner``: a label across the top.
    """
    im, k, overlay, d = _canvas(image)
    regs = list(regions)[:top] if top else list(regions)
    wmax = max((r.weight for r in regs), default=1.0) or 1.0
    for rank, r in enumerate(regs, 1):
        x0, y0, x1, y1 = (v * k for v in r.box)
        a = int(60 + 160 * r.weight / wmax)
        d.rectangle([x0, y0, x1, y1], fill=(255, 60, 0, a // 3), outline=(255, 60, 0, 255),
                    width=max(1, round(3 * r.weight / wmax)))
        d.text((x0 + 2, y0 + 1), str(rank), fill=(255, 255, 255, 255))
    _banner(d, banner)
    return Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB")
