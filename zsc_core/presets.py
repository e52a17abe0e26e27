"""The registry of presets: named captioners and where their weights live.

Weights are found through ``$ZSC_CHECKPOINTS`` (default: the repository's ``checkpoints/``), never the working
directory. A preset names its adaptor checkpoint, the CLIP and LM it is built on, and the command that trains
it, so that the app can say what is missing and what to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .encode import ClipSpec
from .lm import SMOLLM2, LMSpec


def checkpoints_dir() -> str:
    """$ZSC_CHECKPOINTS, else the ``checkpoints/`` folder beside the zsc_core package."""
    return os.environ.get("ZSC_CHECKPOINTS") or str(Path(__file__).resolve().parent.parent / "checkpoints")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    checkpoint: str  # adaptor checkpoint file in checkpoints_dir()
    clip: ClipSpec  # the frozen CLIP (its checkpoint path relative to checkpoints_dir())
    lm: LMSpec  # the frozen language model
    needs_hub: bool  # True where the weights come from the Hugging Face Hub
    train_command: str  # what produces ``checkpoint``
    prompt_checkpoint: str = ""  # the stage-2 interactive-prompt model built on the same CLIP and LM
    prompt_train_command: str = ""

    def checkpoint_path(self) -> str:
        return os.path.join(checkpoints_dir(), self.checkpoint)

    def prompt_checkpoint_path(self) -> str:
        return os.path.join(checkpoints_dir(), self.prompt_checkpoint) if self.prompt_checkpoint else ""

    def clip_spec(self) -> ClipSpec:
        """The CLIP spec with its checkpoint path made absolute."""
        if self.clip.checkpoint:
            return ClipSpec(name=self.clip.name, checkpoint=os.path.join(checkpoints_dir(), self.clip.checkpoint))
        return self.clip


OFFLINE_CLIP = ClipSpec(name="offline-world-clip", checkpoint="clip-offline-world.safetensors")

PRESETS: dict[str, Preset] = {
    "offline-world": Preset(
        name="offline-world",
        description="Offline world, TIPCap S4 (text only): the small CLIP pretrained on generated scenes + "
                    "SmolLM2-135M (default)",
        checkpoint="tipcap-s4-offline-world.safetensors",
        clip=OFFLINE_CLIP,
        lm=LMSpec(SMOLLM2),
        needs_hub=False,
        train_command="python -m train.train_tipcap setting=S4",
        prompt_checkpoint="prompts-offline-world.safetensors",
        prompt_train_command="python -m train.train_prompts base=checkpoints/tipcap-s4-offline-world.safetensors",
    ),
    "offline-world-maccap": Preset(
        name="offline-world-maccap",
        description="Offline world, MacCap (text only): the same CLIP and LM, region-noise adaptor",
        checkpoint="maccap-offline-world.safetensors",
        clip=OFFLINE_CLIP,
        lm=LMSpec(SMOLLM2),
        needs_hub=False,
        train_command="python -m train.train_maccap",
        prompt_checkpoint="prompts-offline-world.safetensors",  # the same stage-2 model re-captions for both
        prompt_train_command="python -m train.train_prompts base=checkpoints/tipcap-s4-offline-world.safetensors",
    ),
    "real-photo": Preset(
        name="real-photo",
        description="Real photos: open_clip ViT-B-32 (openai) + GPT-2, trained on COCO captions (needs the Hub)",
        checkpoint="maccap-real-photo.safetensors",
        clip=ClipSpec(name="ViT-B-32/openai", arch="ViT-B-32", pretrained="openai"),
        lm=LMSpec("gpt2"),
        needs_hub=True,
        train_command="python -m train.train_maccap preset=real-photo corpus=captions_train2017.json eval_n=0 "
                      "out=checkpoints/maccap-real-photo.safetensors run_dir=runs/maccap-real",
    ),
}
DEFAULT_PRESET = "offline-world"


@dataclass
class PresetStatus:
    name: str
    ready: bool
    reason: str  # why it is not ready and what to run; empty when ready


def preset_status(name: str) -> PresetStatus:
    """Whether a preset can be loaded here, and if not, why and what to run. Reads no weights."""
    p = PRESETS[name]
    if not os.path.isfile(p.checkpoint_path()):
        return PresetStatus(name, False, f"no trained adaptor at {p.checkpoint_path()}; train it with "
                                         f"`{p.train_command}`")
    if p.clip.checkpoint and not os.path.isfile(p.clip_spec().checkpoint or ""):
        return PresetStatus(name, False, f"the CLIP checkpoint {p.clip_spec().checkpoint} is missing; "
                                         "pretrain it with `python -m train.pretrain_clip`")
    if p.needs_hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return PresetStatus(name, False, "needs the Hugging Face Hub for the CLIP and LM weights, and "
                                         "HF_HUB_OFFLINE is set")
    return PresetStatus(name, True, "")


def prompt_status(name: str) -> PresetStatus:
    """Whether the preset's interactive-prompt model can be loaded here."""
    p = PRESETS[name]
    base = preset_status(name)
    if not p.prompt_checkpoint:
        return PresetStatus(name, False, "this preset has no interactive-prompt model")
    if not os.path.isfile(p.prompt_checkpoint_path()):
        return PresetStatus(name, False, f"no prompt model at {p.prompt_checkpoint_path()}; train it with "
                                         f"`{p.prompt_train_command}`")
    return base if base.reason.startswith("needs the Hugging Face Hub") else PresetStatus(name, True, "")


def resolve(name_or_path: str) -> str:
    """A checkpoint path from a preset name or a path; a clear error for neither."""
    if name_or_path in PRESETS:
        st = preset_status(name_or_path)
        if not os.path.isfile(PRESETS[name_or_path].checkpoint_path()):
            raise FileNotFoundError(f"preset {name_or_path!r} is not available: {st.reason}")
        return PRESETS[name_or_path].checkpoint_path()
    if os.path.isfile(name_or_path):
        return name_or_path
    raise FileNotFoundError(f"{name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint file")
