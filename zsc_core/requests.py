"""Checking what a person sends: uploads decoded safely, texts cleaned and bounded, settings in range."""

from __future__ import annotations

from typing import Any

from PIL import Image

from .images import ImageError, load_image
from .models import UserError


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


def nothing_to_see(image: Image.Image) -> str:
    """A warning for an image with almost nothing to see (a few pixels, or one flat colour), whose caption can only
    be a guess of the caption bank's typical scene; "" for anything else."""
    from PIL import ImageStat

    w, h = image.size
    if min(w, h) < 32:
        return (f"This image is {w}x{h} pixels: there is almost nothing to see, so the caption below is a guess, "
                "not a description.")
    small = image.convert("L")
    small.thumbnail((256, 256))
    if max(ImageStat.Stat(small).stddev) < 4.0:
        return ("This image is almost one flat colour: there is nothing to see, so the caption below is a guess, "
                "not a description.")
    return ""


def check_text(text: Any, what: str, limit: int, required: bool = True) -> str:
    """A text box's content on one line, at most ``limit`` characters; a UserError when required and empty."""
    text = "" if text is None else str(text)
    text = " ".join(text.split())  # newlines and runs of spaces from a pasted text
    if not text:
        if required:
            raise UserError(f"Please type a {what}.")
        return ""
    if len(text) > limit:
        raise UserError(f"The {what} is {len(text):,} characters long; please keep it under {limit}.")
    return text


def blank_is_none(value: Any) -> Any:
    """A settings field left blank (None, or a text box holding only spaces) means the model's own value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


# The app's bounds of each setting a request may change: (name, lowest, highest, type).
BOUNDS = (("samples", 1, 64, int), ("num_beams", 1, 8, int), ("n_cr", 1, 49, int), ("seed", 0, 2 ** 31 - 1, int),
          ("sigma2", 0.0, 1.0, float), ("guide_weight", 0.0, 0.999, float))
MESSAGES = {"samples": "Samples must be between 1 and 64.", "num_beams": "Beams must be between 1 and 8.",
            "n_cr": "N_cr must be between 1 and 49.", "seed": "The seed must be a whole number from 0.",
            "sigma2": "Noise σ² must be between 0 and 1.",
            "guide_weight": "The bank guidance weight must be at least 0 and below 1."}


def check_settings(**given: Any) -> dict[str, Any]:
    """The settings a request sets, typed and in range; a blank one (None, "") is the model's own (left out)."""
    out: dict[str, Any] = {}
    for name, lo, hi, kind in BOUNDS:
        value = blank_is_none(given.get(name))
        if value is None:
            continue
        try:
            number = float(value)
            if kind is int and number != int(number):
                raise ValueError
            value = kind(number)
        except (TypeError, ValueError):
            raise UserError("Samples, N_cr, beams and seed must be whole numbers, sigma² a number, the guidance "
                            "weight a number.") from None
        if not lo <= value <= hi:
            raise UserError(MESSAGES[name])
        out[name] = value
    return out
