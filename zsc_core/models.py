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


class ComputeThread:
    """One long-lived thread for the app's CPU model work: :meth:`run` calls a function there and waits.

    torch's CPU kernels run OpenMP teams, one per calling thread, and libgomp stops spin-waiting once it manages
    more threads than there are cores (its "throttled" spin). A Gradio handler runs in whichever worker thread is
    free, so with two teams alive (the start-up's and a worker's) every parallel region puts its threads to sleep
    and wakes them: on 2 cores a matrix product took 1.5x as long in a second thread, a caption 1.4x
    (docs/experiments/2026-12-07-under-a-second.md). Here the model work (loading, warm-up, requests) runs in this
    one thread, so only its team exists. The caller's context (contextvars: Gradio's progress tracking) goes with
    the call; a call made from this thread runs inline. :meth:`when_idle` runs warm-up work between requests."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsc-compute")
        self._ident: int | None = None
        self._waiting = 0  # calls of run() queued or running
        self._count_lock = threading.Lock()

    def _enter(self, ctx, fn, args, kwargs):
        self._ident = threading.get_ident()
        return ctx.run(fn, *args, **kwargs)

    def start(self, fn, *args, **kwargs):
        """Queue ``fn`` in the thread and return its Future at once (the app's start-up: the page is served while
        the models load; a request made meanwhile waits behind it, in order)."""
        import contextvars

        return self._pool.submit(self._enter, contextvars.copy_context(), fn, args, kwargs)

    def run(self, fn, *args, **kwargs):
        if threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        with self._count_lock:
            self._waiting += 1
        try:
            return self.start(fn, *args, **kwargs).result()
        finally:
            with self._count_lock:
                self._waiting -= 1

    def when_idle(self, jobs) -> None:
        """Run each of ``jobs`` (callables) in this thread, one at a time, each only while no request waits: a
        request then waits at most for the one job running. Returns at once; a failed job is logged and skipped."""
        import logging
        import time

        def feed():
            for job in jobs:
                while self._waiting:
                    time.sleep(0.05)
                try:
                    future = self.start(job)
                except RuntimeError:  # the pool is shut down (the interpreter exits): nothing left to warm
                    return
                try:
                    future.result()
                except Exception as e:  # only a head start: the request that needs it meets the error itself
                    logging.getLogger(__name__).warning("warm-up step failed: %s: %s", type(e).__name__, e)

        threading.Thread(target=feed, name="zsc-warm-up", daemon=True).start()


class ModelCache:
    """Loads each preset (and its interactive-prompt model) once and keeps it; remembers what failed and why."""

    def __init__(self, device: str = "auto", dtype: str = "auto"):
        self.device = device
        self.dtype = dtype
        self._models: dict[str, Any] = {}
        self.failed: dict[str, str] = {}  # model key -> why it could not be loaded (kept, not retried per request)
        self._lock = threading.Lock()
        self.compute = ComputeThread()  # where the app runs model work (see ComputeThread)

    def usable(self, name: str) -> bool:
        """Whether a preset's files are here and it has not failed to load."""
        return preset_status(name).ready and name not in self.failed

    def preset_choices(self) -> list[tuple[str, str]]:
        """(label, name) for a dropdown: only the presets that can caption here (the Models tab lists the rest)."""
        return [(name, name) for name in PRESETS if self.usable(name)]

    def pick(self, name: str) -> str | None:
        """The preset a page opens on: ``name`` where it can caption here, else the first that can (None: none)."""
        names = [n for _, n in self.preset_choices()]
        return name if name in names else (names[0] if names else None)

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
                clip, lm = self._frozen_models(name, path)
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

    def _frozen_models(self, name: str, path: str | None = None):
        """Already loaded frozen models that this preset names too, each found on its own: one CLIP (or bridge)
        per encoder and one LM in memory for every model on them (photo and offline-world share SmolLM2), where
        the model at ``path`` (default: the preset's) runs its LM in the same dtype (captioner.lm_dtype)."""
        from .captioner import lm_dtype

        p = PRESETS[name]
        want = lm_dtype(path or name, self.device, self.dtype)
        clip = lm = None
        for key, cap in self._models.items():
            q = PRESETS[key.split(":")[0]]
            clip = clip or (cap.clip if q.clip == p.clip else None)
            lm = lm or (cap.lm if q.lm == p.lm and cap.lm.model.dtype == want else None)
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
            # between requests, in the compute thread: the page is served meanwhile
            self.compute.when_idle(self._warm_jobs(cap))
            if prompt_status(name).ready:
                self.captioner(name, prompts=True)
        except UserError as e:
            others = [n for n in PRESETS if n != name and self.usable(n)]
            return f"{e} " + (f"Other models still work: {', '.join(others)}." if others else "")
        return ""

    @staticmethod
    def _warm_jobs(cap) -> list:
        """What the first caption and the first question of each kind would otherwise wait for, as small jobs: the
        caption bank's texts and the tokens its captions use (a restricted head), and the encoded answers of each
        answer type (vqa.warm_jobs)."""
        from . import vqa

        jobs = []
        if cap.has_bank:
            jobs.append(cap.bank.captions)
            if cap.config.decoding.bank_vocab:
                jobs.append(lambda: cap.bank.vocabulary(cap.lm))
        jobs += vqa.warm_jobs(cap)
        return jobs

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
