"""Pictures for people: subregion boxes drawn over an image."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw


def draw_regions(image: Image.Image, regions: Sequence, top: int | None = None) -> Image.Image:
    """The image with its subregion boxes: outline width and opacity follow the CLS attention weight.

    ``regions`` are :class:`zsc_core.captioner.RegionBox` (highest weight first); each box is numbered by
    rank. Small images are enlarged first so that boxes and labels stay legible.
    """
    im = image.convert("RGB")
    if max(im.size) < 384:
        k = 384 / max(im.size)
        im = im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.NEAREST)
    else:
        k = 1.0
    overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    regs = list(regions)[:top] if top else list(regions)
    wmax = max((r.weight for r in regs), default=1.0) or 1.0
    for rank, r in enumerate(regs, 1):
        x0, y0, x1, y1 = (v * k for v in r.box)
        a = int(60 + 160 * r.weight / wmax)
        d.rectangle([x0, y0, x1, y1], fill=(255, 60, 0, a // 3), outline=(255, 60, 0, 255),
                    width=max(1, round(3 * r.weight / wmax)))
        d.text((x0 + 2, y0 + 1), str(rank), fill=(255, 255, 255, 255))
    return Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB")
