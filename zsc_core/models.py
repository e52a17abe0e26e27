"""The app's models: each preset loaded once (thread-safe), sharing frozen encoders and LMs, with what failed.

What a request-handling service (service.py, vqa_service.py, gap_service.py) asks for a preset's captioner; no
display text and no request checks here.
"""

from __future__ import annotations

import threading
from typing import Any

from .presets import PRESETS, default_preset, preset_status, prompt_status


class UserError(ValueError):
    """Something the user can fix; the message is shown as is."""


def preset_name(name: str | None) -> str:
    """A preset's name as a request gives it (None: the default); a UserError for one that is not a preset."""
    name = name or default_preset()
    if name not in PRESETS:
        raise UserError(f"Unknown model {name!r}; choose one of {', '.join(PRESETS)}.")
    return name


class ModelCache:
    """Loads each preset (and its interactive-prompt model) once and keeps it; remembers what failed and why."""

    def __init__(self, device: str = "auto", dtype: str = "auto"):
        self.device = device
        self.dtype = dtype
        self._models: dict[str, Any] = {}
        self.failed: dict[str, str] = {}  # model key -> why it could not be loaded (kept, not retried per request)
        self._lock = threading.Lock()

    def usable(self, name: str) -> bool:
        """Whether a preset's files are here and it has not failed to load."""
        return preset_status(name).ready and name not in self.failed

    def preset_choices(self) -> list[tuple[str, str]]:
        """(label, name) for a dropdown: only the presets that can caption here (the Models tab lists the rest)."""
        return [(name, name) for name in PRESETS if self.usable(name)]

    def captioner(self, name: str | None, prompts: bool = False):
        """The preset's captioner (``prompts``: its interactive-prompt model), loaded once and kept."""
        name = preset_name(name)
        key = f"{name}:prompts" if prompts else name
        what = "interactive-prompt model" if prompts else "model"
        with self._lock:
            if key in self.failed:
                raise UserError(f"The {name} {what} could not be loaded: {self.failed[key]}")
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
                    self.failed[key] = f"{type(e).__name__}: {e}"
                    raise UserError(f"The {name} {what} could not be loaded: {self.failed[key]}") from None
            return self._models[key]

    def refiner(self, name: str | None):
        """Who re-captions with a prompt: the preset itself when it reads prompts as entities, else its
        interactive-prompt (stage-2) model."""
        base = self.captioner(name)
        return base if base.takes_prompts else self.captioner(name, prompts=True)

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
            cap = self.captioner(name)
            v = cap.config.evidence
            if v.detects:  # the detectors it reads load now, so the Models tab says whether they run here
                from .evidence import shared_detectors

                shared_detectors().warm(v.faces, v.bodies)
            # in the background: the page is served meanwhile (a request that comes first does this work itself)
            threading.Thread(target=self._warm_reads, args=(cap,), name=f"warm-{name}", daemon=True).start()
            if prompt_status(name).ready:
                self.captioner(name, prompts=True)
        except UserError as e:
            others = [n for n in PRESETS if n != name and self.usable(n)]
            return f"{e} " + (f"Other models still work: {', '.join(others)}." if others else "")
        return ""

    @staticmethod
    def _warm_reads(cap) -> None:
        """What the first caption and the first question of each kind would otherwise wait for: the caption bank's
        texts and the tokens its captions use (a restricted head), and the encoded answers (vqa.warm)."""
        import logging

        from . import vqa

        try:
            if cap.has_bank:
                cap.bank.captions()
                if cap.config.decoding.bank_vocab:
                    cap.bank.vocabulary(cap.lm)
            vqa.warm(cap)
        except Exception as e:  # only a head start: the request that needs it will meet the error and say it
            logging.getLogger(__name__).warning("warming %s up failed: %s: %s", cap.name, type(e).__name__, e)

    def detector_status(self) -> dict[str, str]:
        """Each pixel-evidence detector a loaded preset reads, and whether it runs here (evidence.Detectors)."""
        from .evidence import shared_detectors

        asked = {w for cap in self._models.values() for w in ("faces", "bodies")
                 if getattr(cap.config.evidence, w)}
        return {w: st for w, st in shared_detectors().status().items() if w in asked}

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
                        self.failed[key] = f"{type(e).__name__}: {e}"
