"""The registry of presets: named captioners and where their weights live.

Weights are found through ``$ZSC_CHECKPOINTS`` (default: the repository's ``checkpoints/``), never the working
directory. A preset names its adaptor checkpoint, the CLIP and LM it is built on, and the command that trains
it, so that the app can say what is missing and what to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import DEFAULT_PRESET
from .specs import SMOLLM2, ClipSpec, LMSpec


def data_dir() -> str:
    """$ZSC_DATA, else the ``data/`` folder beside the zsc_core package (COCO photos and captions, see its README)."""
    return os.environ.get("ZSC_DATA") or str(Path(__file__).resolve().parent.parent / "data")


EXAMPLE_PHOTOS = ("000000165518.jpg", "000000377575.jpg", "000000160012.jpg", "000000482585.jpg")  # coco/val-dev
# The example that shows the app's refinement: the motorcycle in the fog, which the plain caption misses.
EXAMPLE_PROMPTS = {"000000165518.jpg": "An image contains motorcycle"}


def example_images() -> list[str]:
    """Real photos for the app's examples: a few held-out COCO photos (data/coco/val-dev) and scikit-learn's two
    packaged photos (written once to a temp folder)."""
    import tempfile

    d = os.path.join(data_dir(), "coco", "val-dev", "images")
    paths = [os.path.join(d, f) for f in EXAMPLE_PHOTOS if os.path.isfile(os.path.join(d, f))]
    tmp = os.path.join(tempfile.gettempdir(), "zsc-examples")
    os.makedirs(tmp, exist_ok=True)
    for name in ("china.jpg", "flower.jpg"):
        p = os.path.join(tmp, name)
        if not os.path.exists(p):  # scikit-learn is imported only the first time (it costs ~0.5 s)
            from PIL import Image
            from sklearn.datasets import load_sample_image

            Image.fromarray(load_sample_image(name)).save(p)
        paths.append(p)
    return paths


def example_rows() -> list[list[str]]:
    """The app's examples as [image, prompt] rows: each photo alone, and the motorcycle in the fog a second time
    with the prompt that refines its caption (EXAMPLE_PROMPTS)."""
    rows = [[p, ""] for p in example_images()]
    for p in example_images():
        if os.path.basename(p) in EXAMPLE_PROMPTS:
            rows.insert(1, [p, EXAMPLE_PROMPTS[os.path.basename(p)]])
    return rows


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
    trained_on: str = ""  # what the adaptor read in training (shown on the app's Models tab)
    limits: str = ""  # what it cannot know (shown on the Models tab)
    answers: str = "world"  # the answer vocabulary zero-shot VQA retrieves from (vqa.answer_vocabulary)

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
PHOTO_BRIDGE = ClipSpec(name="mobilenet_v2+minilm", checkpoint="bridge-photo.safetensors")
PHOTO_PROMPTS = "prompts-photo.safetensors"
PHOTO_PROMPTS_CMD = ("python -m train.train_prompts preset=photo corpus=coco "
                     "base=checkpoints/tipcap-s4-photo.safetensors out=checkpoints/prompts-photo.safetensors "
                     "run_dir=runs/prompts-photo")

PHOTO_TRAINED_ON = "83k real COCO captions (text only, no image), never the evaluation photos"
PHOTO_LIMITS = ("the image side only knows ImageNet's 1,000 classes: there is no person, man, woman or child class "
                "(where the face detector runs, a face found makes the caption read captions about people; people "
                "whose faces it misses are guessed) and few scene words (no 'kitchen', 'street' or 'beach' as such), "
                "so places are guessed from the objects around them; counts, colours and relations are guesses of "
                "the language model; "
                "the default model decodes from the COCO captions nearest the photo, so an unusual photo gets a "
                "caption of the typical COCO scene with the same objects")
WORLD_TRAINED_ON = "captions of procedurally generated scenes (text only)"
WORLD_LIMITS = "only the offline world's 14 shapes, 9 colours and 6 backgrounds: real photos come out as shapes"



def _photo_preset(name: str, checkpoint: str, trainer: str, description: str, trained_on: str = PHOTO_TRAINED_ON,
                  prompts: bool = True) -> Preset:
    """A preset on the photo bridge and SmolLM2, re-captioned by the photo prompt model (``prompts``; a model that
    reads prompts as entities needs none)."""
    module, _, args = trainer.partition(" ")
    return Preset(name=name, description=description, checkpoint=checkpoint, clip=PHOTO_BRIDGE, lm=LMSpec(SMOLLM2),
                  needs_hub=False,
                  train_command=f"python -m {module} preset=photo corpus=coco {args} eval_set=coco eval_n=40 "
                                f"out=checkpoints/{checkpoint} run_dir=runs/{checkpoint.removesuffix('.safetensors')}"
                                .replace("  ", " "),
                  prompt_checkpoint=PHOTO_PROMPTS if prompts else "",
                  prompt_train_command=PHOTO_PROMPTS_CMD if prompts else "", trained_on=trained_on,
                  limits=PHOTO_LIMITS, answers="vqav2")


PRESETS: dict[str, Preset] = {
    "photo": _photo_preset(
        "photo", "tipcap-s4-photo.safetensors", "train.train_tipcap setting=S4",
        "Real photos, offline (default): TIPCap S4 trained on 83k COCO caption texts, on a CLIP-shaped bridge of an "
        "ImageNet MobileNetV2 and the all-MiniLM-L6-v2 sentence encoder + SmolLM2-135M; it decodes from the mean "
        "of the 50 corpus captions nearest the photo (a caption bank of that same text) and ranks its sampled "
        "captions by CIDEr-D against the 300 nearest"),
    "photo-memory": _photo_preset(
        "photo-memory", "memory-photo.safetensors", "train.train_memory sigma2=0.08 steps=500 eval_every=100",
        "Real photos, offline (experimental, not the default: it does not beat it on train-paired): a region-memory "
        "adaptor on the same bridge, COCO caption text and LM; it reads the corpus captions nearest the photo and "
        "nearest each of its subregions, retrieved the same way in training, and the nouns they share as an entity "
        "prompt; a typed prompt's nouns join the entities", prompts=False),
    "photo-maccap": _photo_preset(
        "photo-maccap", "maccap-photo.safetensors", "train.train_maccap steps=400 eval_every=100",
        "Real photos, offline: MacCap (region noise, subregions of the CNN's class activation maps) on the same "
        "bridge, COCO caption text and LM"),
    "photo-tipcap-s1": _photo_preset(
        "photo-tipcap-s1", "tipcap-s1-photo.safetensors", "train.train_tipcap setting=S1 steps=400 eval_every=200",
        "Real photos, offline: TIPCap S1, N(mu, Sigma) estimated from 80 paired COCO train photos, trained on the "
        "COCO caption text", trained_on=PHOTO_TRAINED_ON + "; its Gaussian was estimated from 80 paired COCO photos"),
    "photo-maccap-authors": _photo_preset(
        "photo-maccap-authors", "maccap-authors-photo.safetensors",
        "train.train_maccap style=authors steps=400 eval_every=100",
        "Real photos, offline: MacCap as the authors' public code runs it, on the same bridge, COCO caption text "
        "and LM"),
    "offline-world": Preset(
        name="offline-world",
        description="Offline world, TIPCap S4 (text only): the small CLIP pretrained on generated scenes + "
                    "SmolLM2-135M (the lab: the default before real photos)",
        checkpoint="tipcap-s4-offline-world.safetensors",
        clip=OFFLINE_CLIP,
        lm=LMSpec(SMOLLM2),
        needs_hub=False,
        train_command="python -m train.train_tipcap setting=S4",
        prompt_checkpoint="prompts-offline-world.safetensors",
        prompt_train_command="python -m train.train_prompts base=checkpoints/tipcap-s4-offline-world.safetensors",
        trained_on=WORLD_TRAINED_ON,
        limits=WORLD_LIMITS,
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
        trained_on=WORLD_TRAINED_ON,
        limits=WORLD_LIMITS,
    ),
    "maccap-authors": Preset(
        name="maccap-authors",
        description="Offline world, MacCap as the authors' public code runs it (32 queries, post-norm ReLU decoder, "
                    "double-softmax subregions with the CLS token eligible, noise on the unnormalised sum, S=4 x "
                    "beam 4): the fidelity reference (docs/fidelity.md in the project)",
        checkpoint="maccap-authors-offline-world.safetensors",
        clip=OFFLINE_CLIP,
        lm=LMSpec(SMOLLM2),
        needs_hub=False,
        train_command="python -m train.train_maccap style=authors steps=800 eval_n=60 "
                      "out=checkpoints/maccap-authors-offline-world.safetensors "
                      "run_dir=runs/maccap-authors-offline-world",
        prompt_checkpoint="prompts-offline-world.safetensors",
        prompt_train_command="python -m train.train_prompts base=checkpoints/tipcap-s4-offline-world.safetensors",
        trained_on=WORLD_TRAINED_ON,
        limits=WORLD_LIMITS,
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
        trained_on="COCO captions (text only), once trained where the Hub is reachable",
        limits="needs the Hugging Face Hub for ViT-B-32 and GPT-2, and a GPU to train in reasonable time",
        answers="vqav2",
    ),
}
def default_preset() -> str:
    """$ZSC_DEFAULT_PRESET where set (a deployment or a test picks another preset), else :data:`DEFAULT_PRESET`."""
    name = os.environ.get("ZSC_DEFAULT_PRESET") or DEFAULT_PRESET
    if name not in PRESETS:
        raise ValueError(f"ZSC_DEFAULT_PRESET={name!r} is not a preset ({', '.join(PRESETS)})")
    return name


def answer_vocabulary_of(name_or_path: str, clip_name: str) -> str:
    """The answer vocabulary zero-shot VQA retrieves from (vqa.answer_vocabulary): a preset's own; for a checkpoint
    path, that of the presets on the same image-text tower (the offline world's CLIP answers from its world's
    words); VQAv2's for any other tower (real photos)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path].answers
    return next((p.answers for p in PRESETS.values() if p.clip.name == clip_name), "vqav2")


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
        how = "python -m train.build_bridge" if p.clip == PHOTO_BRIDGE else "python -m train.pretrain_clip"
        return PresetStatus(name, False, f"the CLIP checkpoint {p.clip_spec().checkpoint} is missing; "
                                         f"build it with `{how}`")
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
