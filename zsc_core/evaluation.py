"""Captioning evaluation on scenes of the offline world, through the Captioner facade."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from . import world
from .metrics import caption_metrics


@dataclass
class WorldEval:
    scores: dict[str, Any]  # metric name -> value (or {"unavailable": reason})
    captions: dict[int, str] = field(default_factory=dict)  # image_id -> generated caption
    n_images: int = 0


def evaluate_world(captioner, n: int = 100, split: str = "val", world_seed: int = 0, size: int = 128,
                   batch: int = 8, metrics: Sequence[str] = ("bleu", "cider"), progress: bool = False,
                   **caption_kw: Any) -> WorldEval:
    """Caption ``n`` scenes of ``split`` and score them against their five reference captions."""
    scenes = list(world.iter_scenes(world_seed, split, n))
    refs = {s.image_id: s.captions for s in scenes}
    hyps: dict[int, str] = {}
    chunks = range(0, n, batch)
    if progress:
        import sys

        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"caption {split}", file=sys.stderr, mininterval=5)
    for i in chunks:
        part = scenes[i:i + batch]
        for s, r in zip(part, captioner.caption([world.render(s, size) for s in part], **caption_kw)):
            hyps[s.image_id] = r.caption
    return WorldEval(caption_metrics(refs, hyps, metrics), hyps, n)
