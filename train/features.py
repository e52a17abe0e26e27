"""The one feature-caching step every trainer shares: encode a caption corpus with the CLIP text tower once.

    python -m train.features corpus=world:12000 out=runs/features/world.safetensors

Corpora: ``world:N`` (reference captions of N scenes of the offline world's text-only ``corpus`` split),
``world-alt:N`` (their terse alt-texts, the other caption style), ``coco`` (the 86k real COCO captions shipped in
``data/coco/``, text only, leak-free against the photo sets), ``flickr30k`` (10k Flickr30k captions), a ``.txt``
file (one caption a line), a ``.jsonl[.gz]`` file (``caption`` per line) or a COCO-format ``.json``
(``annotations[].caption``). ``world-images:N`` is the upper-bound corpus: the same
captions paired with their scenes' IMAGE features (from the ``paired``-style ``clip`` split), so that an adaptor
trained on it shows what paired data would give. Captions longer than ``max_words`` are dropped (papers:
<= 15 words). The cache records the CLIP's fingerprint, and a cache made with another CLIP is rebuilt.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from train.common import parse_overrides
from zsc_core import world
from zsc_core.encode import ClipEncoder

NAMED_CORPORA = {"coco": ("coco", "captions_corpus.jsonl.gz"), "flickr30k": ("flickr30k", "captions.jsonl.gz")}


def read_corpus(corpus: str, world_seed: int = 0) -> list[str]:
    """The captions a corpus spec names (see module doc)."""
    if corpus.startswith("world:") or corpus.startswith("world-alt:"):
        kind, n = corpus.split(":", 1)
        return world.caption_corpus(world_seed, int(n), "corpus", "caption" if kind == "world" else "alt")
    if corpus in NAMED_CORPORA:  # shipped in data/ ($ZSC_DATA), see data/README.md
        from zsc_core.presets import data_dir

        corpus = os.path.join(data_dir(), *NAMED_CORPORA[corpus])
    if corpus.endswith((".jsonl", ".jsonl.gz")):
        import gzip

        with (gzip.open if corpus.endswith(".gz") else open)(corpus, "rt") as f:
            return [json.loads(line)["caption"].strip() for line in f if line.strip()]
    if not os.path.isfile(corpus):
        raise FileNotFoundError(f"corpus {corpus!r} is neither world:N, world-alt:N nor a file")
    if corpus.endswith(".json"):
        with open(corpus) as f:
            return [a["caption"] for a in json.load(f)["annotations"]]
    with open(corpus) as f:
        return [line.strip() for line in f if line.strip()]


def filter_captions(captions: list[str], max_words: int) -> list[str]:
    """Drop captions longer than ``max_words`` words, and exact duplicates (order kept)."""
    return list(dict.fromkeys(c.strip() for c in captions if 0 < len(c.split()) <= max_words))


def cached_text_features(clip: ClipEncoder, corpus: str, path: str, max_words: int = 15, world_seed: int = 0,
                         batch_size: int = 512) -> tuple[list[str], torch.Tensor]:
    """(captions, features (N, D) float32 L2-normalised), from ``path`` when it matches, else encoded and saved."""
    key = {"corpus": corpus, "max_words": max_words, "world_seed": world_seed, "clip": clip.text_fingerprint}
    if os.path.isfile(path):
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if json.loads(meta.get("key", "{}")) == key:
                return json.loads(meta["captions"]), f.get_tensor("features").float()
    if corpus.startswith("world-images:"):
        captions, features = _image_caption_features(clip, int(corpus.split(":", 1)[1]), world_seed, max_words)
    else:
        captions = filter_captions(read_corpus(corpus, world_seed), max_words)
        features = _encode(clip, captions, batch_size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({"features": features.half()}, path + ".tmp",
              metadata={"key": json.dumps(key), "captions": json.dumps(captions)})
    os.replace(path + ".tmp", path)
    return captions, features.half().float()  # what a later cache hit returns, exactly


def _encode(clip: ClipEncoder, captions: list[str], batch_size: int) -> torch.Tensor:
    """Encode in batches of similar length (little padding), rows returned in the captions' order."""
    from tqdm.auto import tqdm

    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    feats = []
    for i in tqdm(range(0, len(order), batch_size), desc="text features", file=sys.stderr, mininterval=5):
        feats.append(clip.encode_text([captions[j] for j in order[i:i + batch_size]]).float().cpu())
    if not feats:
        return torch.empty(0, clip.embed_dim)
    out = torch.empty(len(captions), feats[0].shape[1])
    out[torch.tensor(order)] = torch.cat(feats)
    return out


@torch.no_grad()
def _image_caption_features(clip: ClipEncoder, n: int, world_seed: int, max_words: int, batch: int = 200
                            ) -> tuple[list[str], torch.Tensor]:
    """(captions, image features): each of n scenes' image feature once per short caption of that scene."""
    captions, rows = [], []
    for i in range(0, n, batch):
        scenes = list(world.iter_scenes(world_seed, "clip", min(batch, n - i), start=i))
        img = clip.encode_image(clip.pixels([world.render(s, 128) for s in scenes])).float().cpu()
        for s, f in zip(scenes, img):
            for c in dict.fromkeys(s.captions):
                if len(c.split()) <= max_words:
                    captions.append(c)
                    rows.append(f)
    return captions, torch.stack(rows)


@dataclass
class FeaturesConfig:
    """Build a feature cache by hand (the trainers call :func:`cached_text_features` themselves)."""

    preset: str = "offline-world"  # whose CLIP encodes the captions
    corpus: str = "world:12000"
    max_words: int = 15
    out: str = "runs/features/world.safetensors"


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(FeaturesConfig(), sys.argv[1:] if argv is None else argv)
    from zsc_core.presets import PRESETS
    from zsc_core.towers import load_clip

    clip = load_clip(PRESETS[cfg.preset].clip_spec())
    caps, feats = cached_text_features(clip, cfg.corpus, cfg.out, cfg.max_words)
    print(f"{len(caps)} captions -> {tuple(feats.shape)} at {cfg.out}")
    return cfg.out


if __name__ == "__main__":
    main()
