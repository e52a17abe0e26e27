"""The offline world: a procedurally generated image-caption world.

No pretrained CLIP can reach the project's machines, so the project brings a world of its own in which the
whole method can be trained and measured. A scene holds 1-4 objects (14 kinds, 9 colours, sizes, positions,
spatial relations) on one of 6 backgrounds, with clutter and jitter. Each scene comes with

* five reference captions in varied phrasings, each naming only a *subset* of the objects (as people do, so
  that subregions matter),
* one terse "alt-text" caption (the web-data style of TIPCap's setting 2),
* question/answer pairs for zero-shot VQA (colour, count, kind, position).

Everything is a pure function of ``(world_seed, split, index)``: the same triple gives the same pixels and
captions on any machine, and distinct splits draw from distinct random streams, so they are disjoint.
Layouts (:func:`make_scene`) are cheap and need no drawing; :func:`render` draws one with Pillow.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------------------
# The world's vocabulary.

KINDS: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "diamond", "cross", "house",
    "tree", "sun", "car", "boat", "fish", "flower", "cloud",
)
PLURALS: dict[str, str] = {k: k + "s" for k in KINDS} | {"cross": "crosses", "fish": "fish"}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 20),
    "purple": (130, 40, 170),
    "pink": (245, 120, 190),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}

# Backgrounds: name -> the phrase used in captions. Their palettes are muted so objects stand out.
BACKGROUNDS: dict[str, str] = {
    "plain": "a plain background",
    "gradient": "a sky",
    "stripes": "a striped background",
    "checker": "a checkered background",
    "grass": "a grassy field",
    "noise": "a speckled background",
}

SPLITS: dict[str, int] = {
    "clip": 0,  # CLIP pretraining pairs
    "corpus": 1,  # caption TEXT corpus for text-only training (its images are never used)
    "paired": 2,  # small paired image-text set (TIPCap setting 1)
    "web": 3,  # "web" pairs with alt-text captions (TIPCap setting 2)
    "unpaired": 4,  # unpaired image pool (TIPCap setting 3)
    "eval": 5,  # held-out evaluation scenes
    "val": 6,  # held-out validation scenes, for model selection during training
}

NUMBER_WORDS = ("zero", "one", "two", "three", "four")
POSITIONS = ("left", "right", "top", "bottom", "middle")
# All answers VQA may ask for; retrieval ranks among these.
ANSWER_VOCAB: tuple[str, ...] = tuple(COLORS) + KINDS + NUMBER_WORDS[1:] + POSITIONS


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene, in unit coordinates (0..1, origin top-left)."""

    kind: str
    color: str
    cx: float  # centre x
    cy: float  # centre y
    r: float  # radius (half the object's extent)
    angle: float  # small rotation jitter, degrees

    @property
    def size_word(self) -> str:
        """'small', 'big' or '' (medium objects get no size word)."""
        return "small" if self.r < 0.11 else ("big" if self.r > 0.16 else "")

    @property
    def horizontal(self) -> str:
        return "left" if self.cx < 0.4 else ("right" if self.cx > 0.6 else "middle")

    @property
    def vertical(self) -> str:
        return "top" if self.cy < 0.4 else ("bottom" if self.cy > 0.6 else "middle")

    @property
    def position_phrase(self) -> str:
        """Where the object is, as people say it: 'on the left', 'at the top right', 'in the middle'."""
        h, v = self.horizontal, self.vertical
        if h == "middle" and v == "middle":
            return "in the middle"
        if v == "middle":
            return f"on the {h}"
        if h == "middle":
            return f"at the {v}"
        return f"at the {v} {h}"

    def noun_phrase(self, with_size: bool = True) -> str:
        words = " ".join(w for w in (self.size_word if with_size else "", self.color, self.kind) if w)
        return ("an " if words[0] in "aeiou" else "a ") + words


@dataclass
class Scene:
    """A generated scene: its layout, captions, alt-text and VQA pairs. Render it with :func:`render`."""

    world_seed: int
    split: str
    index: int
    background: str
    bg_color: tuple[int, int, int]
    objects: list[SceneObject]
    captions: list[str] = field(default_factory=list)
    alt_text: str = ""
    qa: list[dict] = field(default_factory=list)
    render_seed: int = 0  # seeds clutter and texture so rendering is deterministic too

    @property
    def image_id(self) -> int:
        """A COCO-style integer id, unique across splits of one world seed."""
        return SPLITS[self.split] * 10_000_000 + self.index


# ---------------------------------------------------------------------------------------------------------
# Layout and language.


def _rng(world_seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence([world_seed, SPLITS[split], index]))


def _relation(a: SceneObject, b: SceneObject) -> str:
    """The spatial relation of a to b, from their centres."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _caption(rng: np.random.Generator, objs: list[SceneObject], bg: str) -> str:
    """One reference caption naming a random non-empty subset of the objects (bigger ones more often)."""
    n = len(objs)
    weights = np.array([o.r for o in objs]) ** 2
    k = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15])) if n > 1 else 1
    k = min(k, n)
    idx = rng.choice(n, size=k, replace=False, p=weights / weights.sum())
    chosen = [objs[i] for i in idx]
    bgp = BACKGROUNDS[bg]
    use_size = bool(rng.random() < 0.5)
    nps = [o.noun_phrase(use_size) for o in chosen]
    t = int(rng.integers(0, 5))
    if k == 1:
        o, np0 = chosen[0], nps[0]
        text = [
            f"{np0} on {bgp}",
            f"there is {np0} {o.position_phrase}",
            f"a picture of {np0}",
            f"{np0} {o.position_phrase} of the image",
            f"{np0}",
        ][t]
    elif k == 2:
        a, b = chosen
        text = [
            f"{nps[0]} {_relation(a, b)} {nps[1]}",
            f"{nps[0]} and {nps[1]}",
            f"{nps[0]} and {nps[1]} on {bgp}",
            f"{nps[0]} next to {nps[1]}",
            f"a picture of {nps[0]} {_relation(a, b)} {nps[1]}",
        ][t]
    else:
        text = [
            f"{_join(nps)}",
            f"{_join(nps)} on {bgp}",
            f"a picture of {_join(nps)}",
            f"{NUMBER_WORDS[n]} things on {bgp} including {_join(nps)}" if n >= k else _join(nps),
            f"a scene with {_join(nps)}",
        ][t]
    return text


def _alt_text(rng: np.random.Generator, objs: list[SceneObject], bg: str) -> str:
    """A terse web-style caption: keywords, no sentence (TIPCap's web-data setting)."""
    parts = [f"{o.color} {o.kind}" for o in objs]
    order = rng.permutation(len(parts))
    words = ", ".join(parts[i] for i in order)
    style = int(rng.integers(0, 3))
    return [f"{words}, {bg}", f"stock image {words}", f"{words} clipart"][style]


def _questions(objs: list[SceneObject]) -> list[dict]:
    """VQA pairs whose answer is unambiguous in the scene."""
    qa = [{"question": "how many objects are there?", "answer": NUMBER_WORDS[len(objs)], "type": "count"}]
    kinds = [o.kind for o in objs]
    colors = [o.color for o in objs]
    for o in objs:
        if kinds.count(o.kind) == 1:
            qa.append({"question": f"what color is the {o.kind}?", "answer": o.color, "type": "color"})
            pos = o.horizontal if o.horizontal != "middle" else o.vertical
            qa.append({"question": f"where is the {o.kind}?", "answer": pos, "type": "position"})
        if colors.count(o.color) == 1:
            qa.append({"question": f"what is the {o.color} object?", "answer": o.kind, "type": "kind"})
    return qa


def make_scene(world_seed: int, split: str, index: int) -> Scene:
    """The layout, captions and questions of scene ``index`` of ``split``; deterministic, no drawing."""
    rng = _rng(world_seed, split, index)
    n = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    bg = str(rng.choice(list(BACKGROUNDS)))
    bg_color = tuple(int(c) for c in rng.integers(110, 200, size=3))
    objs: list[SceneObject] = []
    tries = 0
    while len(objs) < n and tries < 200:
        tries += 1
        r = float(rng.uniform(0.08, 0.2))
        cx, cy = (float(v) for v in rng.uniform(r, 1 - r, size=2))
        # Keep objects mostly apart so that every named object is visible.
        if any(math.hypot(cx - o.cx, cy - o.cy) < 0.8 * (r + o.r) for o in objs):
            continue
        kind = str(rng.choice(KINDS))
        color = str(rng.choice(list(COLORS)))
        objs.append(SceneObject(kind, color, cx, cy, r, float(rng.uniform(-15, 15))))
    captions: list[str] = []
    for _ in range(30):  # five captions, distinct where the scene allows it
        c = _caption(rng, objs, bg)
        if c not in captions:
            captions.append(c)
        if len(captions) == 5:
            break
    while len(captions) < 5:
        captions.append(captions[len(captions) % max(1, len(captions))])
    return Scene(
        world_seed=world_seed, split=split, index=index, background=bg, bg_color=bg_color,  # type: ignore[arg-type]
        objects=objs, captions=captions, alt_text=_alt_text(rng, objs, bg), qa=_questions(objs),
        render_seed=int(rng.integers(0, 2**31 - 1)),
    )


def iter_scenes(world_seed: int, split: str, n: int, start: int = 0) -> Iterator[Scene]:
    """Scenes ``start .. start+n-1`` of a split."""
    for i in range(start, start + n):
        yield make_scene(world_seed, split, i)


def kinds_named(text: str) -> set[str]:
    """The object kinds a caption names (singular or plural), e.g. {"star", "tree"}."""
    words = set(text.lower().replace(",", " ").replace(".", " ").split())
    return {k for k in KINDS if k in words or PLURALS[k] in words}


def caption_corpus(world_seed: int, n_scenes: int, split: str = "corpus", style: str = "caption") -> list[str]:
    """The text-only training corpus: every reference caption (or the alt-text) of ``n_scenes`` scenes."""
    out: list[str] = []
    for s in iter_scenes(world_seed, split, n_scenes):
        out.extend(s.captions if style == "caption" else [s.alt_text])
    return out


# ---------------------------------------------------------------------------------------------------------
# Rendering.


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _rot(points: list[tuple[float, float]], cx: float, cy: float, deg: float) -> list[tuple[float, float]]:
    a = math.radians(deg)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * ca - (y - cy) * sa, cy + (x - cx) * sa + (y - cy) * ca) for x, y in points]


def _star(cx: float, cy: float, r: float, n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * n):
        rr = r if i % 2 == 0 else r * inner
        a = math.pi * i / n - math.pi / 2
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _draw_object(d: ImageDraw.ImageDraw, o: SceneObject, size: int, rgb: tuple[int, int, int]) -> None:
    cx, cy, r = o.cx * size, o.cy * size, o.r * size
    dark = tuple(max(0, c - 90) for c in rgb)
    brown, white = (110, 70, 30), (250, 250, 250)

    def poly(pts: list[tuple[float, float]], fill=rgb) -> None:
        d.polygon(_rot(pts, cx, cy, o.angle), fill=fill)

    k = o.kind
    if k == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    elif k == "square":
        poly([(cx - r * 0.8, cy - r * 0.8), (cx + r * 0.8, cy - r * 0.8), (cx + r * 0.8, cy + r * 0.8),
              (cx - r * 0.8, cy + r * 0.8)])
    elif k == "triangle":
        poly([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)])
    elif k == "star":
        poly(_star(cx, cy, r))
    elif k == "diamond":
        poly([(cx, cy - r), (cx + r * 0.65, cy), (cx, cy + r), (cx - r * 0.65, cy)])
    elif k == "cross":
        w = r * 0.33
        poly([(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
              (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
              (cx - r, cy - w), (cx - w, cy - w)])
    elif k == "house":
        poly([(cx - r * 0.75, cy - r * 0.1), (cx + r * 0.75, cy - r * 0.1), (cx + r * 0.75, cy + r),
              (cx - r * 0.75, cy + r)])
        poly([(cx - r, cy - r * 0.1), (cx, cy - r), (cx + r, cy - r * 0.1)], fill=dark)
        d.rectangle([cx - r * 0.18, cy + r * 0.4, cx + r * 0.18, cy + r], fill=dark)
    elif k == "tree":
        d.rectangle([cx - r * 0.15, cy + r * 0.1, cx + r * 0.15, cy + r], fill=brown)
        d.ellipse([cx - r * 0.7, cy - r, cx + r * 0.7, cy + r * 0.35], fill=rgb)
    elif k == "sun":
        for i in range(8):
            a = math.pi * i / 4 + math.radians(o.angle)
            d.line([(cx + r * 0.6 * math.cos(a), cy + r * 0.6 * math.sin(a)),
                    (cx + r * math.cos(a), cy + r * math.sin(a))], fill=rgb, width=max(1, int(r * 0.15)))
        d.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=rgb)
    elif k == "car":
        poly([(cx - r, cy - r * 0.05), (cx + r, cy - r * 0.05), (cx + r, cy + r * 0.45), (cx - r, cy + r * 0.45)])
        poly([(cx - r * 0.55, cy - r * 0.05), (cx - r * 0.35, cy - r * 0.5), (cx + r * 0.35, cy - r * 0.5),
              (cx + r * 0.55, cy - r * 0.05)])
        for wx in (-0.55, 0.55):
            d.ellipse([cx + wx * r - r * 0.22, cy + r * 0.3, cx + wx * r + r * 0.22, cy + r * 0.74], fill=(25, 25, 25))
    elif k == "boat":
        poly([(cx - r, cy + r * 0.2), (cx + r, cy + r * 0.2), (cx + r * 0.6, cy + r * 0.65),
              (cx - r * 0.6, cy + r * 0.65)])
        d.line([(cx, cy + r * 0.2), (cx, cy - r)], fill=brown, width=max(1, int(r * 0.1)))
        poly([(cx + r * 0.05, cy - r * 0.9), (cx + r * 0.7, cy + r * 0.1), (cx + r * 0.05, cy + r * 0.1)],
             fill=white if o.color != "white" else (200, 200, 200))
    elif k == "fish":
        d.ellipse([cx - r * 0.75, cy - r * 0.45, cx + r * 0.45, cy + r * 0.45], fill=rgb)
        poly([(cx + r * 0.35, cy), (cx + r, cy - r * 0.45), (cx + r, cy + r * 0.45)])
        d.ellipse([cx - r * 0.5, cy - r * 0.15, cx - r * 0.35, cy], fill=(10, 10, 10))
    elif k == "flower":
        d.line([(cx, cy), (cx, cy + r)], fill=(30, 130, 40), width=max(1, int(r * 0.12)))
        for i in range(5):
            a = 2 * math.pi * i / 5 + math.radians(o.angle)
            px, py = cx + r * 0.4 * math.cos(a), cy - r * 0.25 + r * 0.4 * math.sin(a)
            d.ellipse([px - r * 0.3, py - r * 0.3, px + r * 0.3, py + r * 0.3], fill=rgb)
        d.ellipse([cx - r * 0.18, cy - r * 0.43, cx + r * 0.18, cy - r * 0.07], fill=(250, 210, 40))
    elif k == "cloud":
        for ox, oy, rr in ((-0.45, 0.1, 0.45), (0.0, -0.15, 0.55), (0.45, 0.1, 0.45), (0.0, 0.2, 0.4)):
            d.ellipse([cx + (ox - rr) * r, cy + (oy - rr) * r, cx + (ox + rr) * r, cy + (oy + rr) * r], fill=rgb)
    else:  # pragma: no cover - KINDS and this function are kept in step by a test
        raise ValueError(f"no drawing for kind {k!r}")


def _background(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    base = np.array(scene.bg_color, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = scene.background
    if bg == "plain":
        arr = np.broadcast_to(base, (size, size, 3)).copy()
    elif bg == "gradient":
        sky_top, sky_bottom = np.array([90, 140, 220.0]), np.array([200, 225, 245.0])
        arr = sky_top * (1 - yy[..., None]) + sky_bottom * yy[..., None]
    elif bg == "stripes":
        period = rng.uniform(0.08, 0.2)
        stripe = (np.floor((xx + yy * rng.uniform(-0.5, 0.5)) / period) % 2)[..., None]
        arr = base * (0.8 + 0.25 * stripe)
    elif bg == "checker":
        cell = rng.uniform(0.1, 0.25)
        chk = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
        arr = base * (0.8 + 0.25 * chk)
    elif bg == "grass":
        horizon = rng.uniform(0.35, 0.6)
        sky, grass = np.array([150, 190, 235.0]), np.array([90, 165, 80.0])
        arr = np.where((yy < horizon)[..., None], sky, grass) + rng.normal(0, 6, (size, size, 1))
    elif bg == "noise":
        arr = base + rng.normal(0, 25, (size, size, 1))
    else:  # pragma: no cover
        raise ValueError(f"unknown background {bg!r}")
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(scene: Scene, size: int = 128) -> Image.Image:
    """Draw a scene as an RGB image of ``size`` x ``size`` pixels; deterministic for a given scene and size."""
    rng = np.random.default_rng(scene.render_seed)
    img = _background(scene, size, rng)
    d = ImageDraw.Draw(img)
    # Clutter: faint lines and dots that are not objects, so that the task is not trivially separable.
    for _ in range(int(rng.integers(0, 6))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        col = _jitter(rng, scene.bg_color, 60)
        if rng.random() < 0.5:
            d.line([(x0, y0), (x1, y1)], fill=col, width=max(1, size // 96))
        else:
            rr = size * 0.015
            d.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=col)
    for o in scene.objects:
        _draw_object(d, o, size, _jitter(rng, COLORS[o.color], 18))
    return img


# ---------------------------------------------------------------------------------------------------------
# Writing a split to disk.


def write_split(out_dir: str, world_seed: int, split: str, n: int, size: int = 128, start: int = 0) -> dict:
    """Write ``n`` scenes of a split: images/, references.json (COCO captions format) and vqa.json.

    Returns a small summary dict. The references use COCO's layout (``images`` with ``id``/``file_name``,
    ``annotations`` with ``image_id``/``id``/``caption``), which pycocotools and pycocoevalcap read.
    """
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    images, anns, alt, vqa = [], [], [], []
    for s in iter_scenes(world_seed, split, n, start):
        name = f"{split}_{s.index:06d}.png"
        render(s, size).save(os.path.join(img_dir, name))
        images.append({"id": s.image_id, "file_name": name, "width": size, "height": size})
        for c in s.captions:
            anns.append({"id": len(anns) + 1, "image_id": s.image_id, "caption": c})
        alt.append({"image_id": s.image_id, "caption": s.alt_text})
        for q in s.qa:
            vqa.append({"image_id": s.image_id, "file_name": name, **q})
    refs = {
        "info": {"description": f"zsc offline world, split {split}, seed {world_seed}"},
        "licenses": [],
        "type": "captions",
        "images": images,
        "annotations": anns,
        "alt_text": alt,
        "scenes": [asdict(s) for s in iter_scenes(world_seed, split, n, start)],
    }
    with open(os.path.join(out_dir, "references.json"), "w") as f:
        json.dump(refs, f)
    with open(os.path.join(out_dir, "vqa.json"), "w") as f:
        json.dump({"answers": list(ANSWER_VOCAB), "questions": vqa}, f)
    return {"images": len(images), "captions": len(anns), "questions": len(vqa), "out": out_dir}
