"""Reading user images safely: one function that turns a path or bytes into a clean RGB PIL image.

Every failure is an :class:`ImageError` whose message a person understands (missing file, not an image,
truncated, too large); nothing else escapes. Odd modes are normalised: EXIF rotation is applied, CMYK,
16-bit, palette, grayscale and alpha images become RGB (transparency over white), animated images give their
first frame, and very large images are reduced so that the rest of the pipeline never holds a huge array.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 12_000 * 12_000  # larger images (or decompression bombs claiming to be larger) are refused
WORK_SIDE = 1024  # images are reduced to at most this side for processing; CLIP sees far less anyway


class ImageError(ValueError):
    """An image could not be used; the message says why in plain words."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the actual range instead of clipping.
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype("uint8"), "L").convert("RGB")
    if im.mode == "F":
        return _to_rgb(im.convert("I"))
    return im.convert("RGB")


def load_image(source: str | os.PathLike | bytes | BinaryIO | Image.Image, name: str | None = None) -> Image.Image:
    """A clean RGB image from a path, bytes, a file object or a PIL image; :class:`ImageError` otherwise."""
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the image")
    if isinstance(source, Image.Image):
        im = source
    else:
        if isinstance(source, (str, os.PathLike)):
            if not os.path.exists(source):
                raise ImageError(f"{label}: no such file")
            if os.path.isdir(source):
                raise ImageError(f"{label}: is a folder, not an image")
            if os.path.getsize(source) == 0:
                raise ImageError(f"{label}: the file is empty")
        elif isinstance(source, bytes):
            if not source:
                raise ImageError(f"{label}: the file is empty")
            source = io.BytesIO(source)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
                im = Image.open(source)
        except Image.DecompressionBombError:
            raise ImageError(f"{label}: the image is too large to process (over {MAX_PIXELS:,} pixels)") from None
        except UnidentifiedImageError:
            raise ImageError(f"{label}: not an image file (or a format Pillow cannot read)") from None
        except OSError as e:
            raise ImageError(f"{label}: the image data is damaged or truncated ({e})") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{label}: the image is too large to process ({w}x{h}, over {MAX_PIXELS:,} pixels)")
    if w < 1 or h < 1:
        raise ImageError(f"{label}: the image has no pixels")
    try:
        if getattr(im, "is_animated", False):
            im.seek(0)  # first frame of an animated GIF/WebP/APNG
        if im.format == "JPEG" and max(w, h) > 2 * WORK_SIDE:
            im.draft("RGB", (WORK_SIDE, WORK_SIDE))  # decode big JPEGs at a reduced scale: fast, little memory
        im.load()
        im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{label}: the image data is damaged or truncated ({e})") from None
    if max(im.size) > WORK_SIDE:
        im.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BICUBIC)
    return im
