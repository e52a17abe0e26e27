"""What the app needs from the core, in display-ready form: presets loaded once, safe image reading,
captions with their regions drawn and candidates tabulated. No UI code here, and no model code in app.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .images import ImageError, load_image
from .presets import DEFAULT_PRESET, PRESETS, preset_status
from .viz import draw_regions

MAX_PROMPT_CHARS = 300


class UserError(ValueError):
    """Something the user can fix; the message is shown as is."""


@dataclass
class CaptionView:
    caption: str
    regions_image: Image.Image
    candidates: list[list[Any]]  # rows: [chosen mark, text, clip score, count]
    info: str  # timings and settings, one line


class CaptionService:
    """Loads each preset once (thread-safe) and captions user images through the Captioner facade."""

    def __init__(self, device: str = "auto"):
        self.device = device
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def preset_choices(self) -> list[tuple[str, str]]:
        """(label, name) for a dropdown: each preset with its status."""
        out = []
        for name in PRESETS:
            st = preset_status(name)
            out.append((f"{name} ({'ready' if st.ready else 'not available'})", name))
        return out

    def status_markdown(self) -> str:
        lines = []
        for name, p in PRESETS.items():
            st = preset_status(name)
            lines.append(f"- **{name}**: {p.description}. " + ("Ready." if st.ready else f"Not available: {st.reason}."))
        return "\n".join(lines)

    def captioner(self, name: str | None):
        name = name or DEFAULT_PRESET
        if name not in PRESETS:
            raise UserError(f"Unknown model {name!r}; choose one of {', '.join(PRESETS)}.")
        with self._lock:
            if name not in self._models:
                st = preset_status(name)
                if not st.ready:
                    raise UserError(f"The {name} model is not available here: {st.reason}.")
                from .captioner import Captioner

                self._models[name] = Captioner.from_pretrained(name, device=self.device)
            return self._models[name]

    @staticmethod
    def read_image(source: Any) -> Image.Image:
        if source is None or (isinstance(source, str) and not source.strip()):
            raise UserError("Please upload an image first.")
        try:
            return load_image(source, name="The uploaded file")
        except ImageError as e:
            raise UserError(str(e)) from None

    def caption(self, image_source: Any, preset: str | None = None, samples: int = 20, sigma2: float | None = None,
                n_cr: int | None = None, num_beams: int = 1, seed: int = 0) -> CaptionView:
        image = self.read_image(image_source)
        cap = self.captioner(preset)
        try:
            samples, num_beams, seed = int(samples), int(num_beams), int(seed)
            n_cr = int(n_cr) if n_cr else None
            sigma2 = float(sigma2) if sigma2 is not None else None
        except (TypeError, ValueError):
            raise UserError("Samples, N_cr, beams and seed must be whole numbers, sigma² a number.") from None
        if not 1 <= samples <= 64:
            raise UserError("Samples must be between 1 and 64.")
        if sigma2 is not None and not 0 <= sigma2 <= 1:
            raise UserError("Noise σ² must be between 0 and 1.")
        if not 1 <= num_beams <= 8:
            raise UserError("Beams must be between 1 and 8.")
        r = cap.caption(image, samples=samples, sigma2=sigma2, n_cr=n_cr, num_beams=num_beams, seed=seed)
        rows = [["✔" if i == 0 else "", c.text, round(c.clip_score, 4), c.count] for i, c in enumerate(r.candidates)]
        info = (f"{len(r.candidates)} distinct candidates from S={samples}; "
                f"{r.timings['total_s']:.2f} s (encode {r.timings['encode_s']:.2f}, "
                f"generate {r.timings['generate_s']:.2f}, rerank {r.timings['rerank_s']:.2f})")
        return CaptionView(r.caption, draw_regions(image, r.regions), rows, info)
