"""Where the frozen models come from, what each adaptor kind reads, and what a request may hold: plain data, no
torch.

The app builds and serves its page from these (the presets, their labels, the request limits) while the model
loads in the background; nothing here imports torch, so the page does not wait for it
(docs/experiments/2026-12-07-cold-start-and-memory.md). ``encode`` and ``lm`` re-export the specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SMOLLM2 = "smollm2-135m"
MAX_PROMPT_CHARS = 300  # longer prompts are cut: the LM context is short and the prompt names a few objects
MAX_QUESTION_CHARS = 300
# adaptor kind -> whether it reads the N_cr subregion tokens (the app shows N_cr as a setting of those only); the
# adaptor classes take their ``reads_regions`` from here
READS_REGIONS = {"maccap": True, "tipcap": False, "memory": True}


@dataclass
class ClipSpec:
    """Where a CLIP comes from. Exactly one of ``arch`` and ``checkpoint`` is set."""

    name: str = ""  # display name, used in messages and recorded in adaptor checkpoints
    arch: str | None = None  # open_clip architecture, e.g. "ViT-B-32"
    pretrained: str | None = None  # open_clip pretrained tag, e.g. "openai" (downloads where the Hub is reachable)
    weights: str | None = None  # local weights for ``arch``: safetensors, or a torch file read with weights_only
    checkpoint: str | None = None  # a zsc "clip" checkpoint with its own custom config (offline world)

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.checkpoint:
            return self.checkpoint
        return f"{self.arch}/{self.pretrained or self.weights or 'random'}"


@dataclass
class LMSpec:
    """Where the frozen language model comes from."""

    source: str = SMOLLM2  # "smollm2-135m", a Hub id, a local directory, or "tiny"
    revision: str | None = None  # Hub revision, for Hub ids
    tiny: dict[str, Any] = field(default_factory=dict)  # overrides of the tiny Llama config (tests)

    def display_name(self) -> str:
        return self.source if not self.revision else f"{self.source}@{self.revision}"
