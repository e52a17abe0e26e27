"""Pixel evidence beyond ImageNet's classes: faces and whole people, and the bank captions they make eligible.

The `photo` bridge sees an image as MobileNetV2's softmax over ImageNet's 1,000 classes, which has no person class,
no counts and few places; the captioner reads the image only through which bank captions are nearest it. This
module adds what the pixels say about people, from detectors whose weights install from PyPI:

- faces: MTCNN (Zhang et al., 2016) from ``facenet-pytorch`` (its wheel ships the P/R/O-Net weights; installed with
  ``--no-deps``: its pins are old);
- whole people: OpenCV's built-in HOG + linear SVM pedestrian detector (Dalal and Triggs, 2005), ``opencv-python-
  headless``.

Both load on first use and never download. A detector that cannot load (package missing, weights unreadable)
reports why in :meth:`Detectors.status` and finds nothing: the preset keeps captioning as it did without it.

The evidence then shapes what is read (:func:`condition_neighbours`): with people detected, the photo's nearest
bank captions are taken from its ``pool`` nearest that name people (Knight / IFCap's retrieval, conditioned on the
detections), so the input anchor, the bank guidance and the CIDEr-D ranking all read captions about people. With
two or more people detected (and ``count_people``), captions that name several people come first. Nothing here
guesses gender: a face is no evidence of it; the caption's wording of people is the neighbours' (docs/method.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


@dataclass
class Detection:
    """One detected face or person: its box in the image's pixels (x0, y0, x1, y1) and the detector's score."""

    kind: str  # "face" or "person"
    box: tuple[float, float, float, float]
    score: float


@dataclass
class Evidence:
    """What the detectors found in one image."""

    faces: list[Detection] = field(default_factory=list)
    people: list[Detection] = field(default_factory=list)  # whole bodies (HOG)

    @property
    def detections(self) -> list[Detection]:
        return self.faces + self.people

    @property
    def n_people(self) -> int:
        """How many people the evidence shows at least: the larger of the face and body counts."""
        return max(len(self.faces), len(self.people))

    def summary(self) -> str:
        """"2 faces, 1 person", or "nothing" (what the app's labels and the Ask tab say was read)."""
        f, p = len(self.faces), len(self.people)
        parts = ([f"{f} face{'s' if f != 1 else ''}"] if f else []) + \
            ([f"{p} {'person' if p == 1 else 'people'}"] if p else [])
        return ", ".join(parts) or "nothing"

    def to_dict(self) -> dict:
        return {"faces": [[round(v, 1) for v in d.box] + [round(d.score, 3)] for d in self.faces],
                "people": [[round(v, 1) for v in d.box] + [round(d.score, 3)] for d in self.people]}


def wants(ev: Evidence, count_people: bool) -> tuple[bool, bool]:
    """(people, several): whether the evidence asks for captions that name people, and for several of them."""
    n = ev.n_people
    return n >= 1, count_people and n >= 2


def condition_neighbours(pool: torch.Tensor, person: torch.Tensor, several: torch.Tensor,
                         asks: Sequence[tuple[bool, bool]], k: int) -> torch.Tensor:
    """Each image's k neighbours, conditioned on its evidence.

    ``pool`` (B, P): each image's P nearest bank rows, nearest first; ``person`` / ``several`` (N,) bool: whether
    each bank row names a person / several people; ``asks``: per image, (people, several) from :func:`wants`.
    An image that asks for nothing keeps its k nearest. One that asks for people takes, in order of nearness, the
    pool's rows that name people (that name several, first, when it asks for several), then fills up with the
    nearest others, so it always gets k rows. Returns (B, k) indices."""
    if pool.shape[1] < k:
        raise ValueError(f"a pool of {pool.shape[1]} neighbours cannot give {k}")
    if len(asks) != pool.shape[0]:
        raise ValueError(f"{len(asks)} evidence entries for {pool.shape[0]} images")
    out = []
    for row, (people, many) in zip(pool, asks):
        if not people:
            out.append(row[:k])
            continue
        p = person[row]
        tiers = [p & several[row], p & ~several[row]] if many else [p]
        chosen = torch.cat([row[t] for t in tiers] + [row[~p]])  # stable: each tier in order of nearness
        out.append(chosen[:k])
    return torch.stack(out)


def body_box(face: tuple[float, float, float, float], width: int, height: int, grow: float
             ) -> tuple[int, int, int, int]:
    """A person's likely extent from their face box, in pixels of a ``width`` x ``height`` image: ``grow`` face
    widths each side of the face's centre, half a face height above it, ``2 grow`` face heights below it."""
    x0, y0, x1, y1 = face
    w, h, cx = x1 - x0, y1 - y0, (x0 + x1) / 2
    return (round(max(0.0, cx - grow * w)), round(max(0.0, y0 - 0.5 * h)), round(min(width, cx + grow * w)),
            round(min(height, y1 + 2 * grow * h)))


def people_box(ev: Evidence, width: int, height: int, grow: float) -> tuple[int, int, int, int] | None:
    """The box around every person the evidence found (each face's :func:`body_box`, each HOG person's own box),
    or None where it found nobody or the box is empty: the crop whose class evidence says what people hold, ride
    or stand on."""
    boxes = [body_box(d.box, width, height, grow) for d in ev.faces] + \
        [tuple(round(v) for v in d.box) for d in ev.people]
    if not boxes:
        return None
    box = (max(0, min(b[0] for b in boxes)), max(0, min(b[1] for b in boxes)),
           min(width, max(b[2] for b in boxes)), min(height, max(b[3] for b in boxes)))
    return box if box[2] > box[0] and box[3] > box[1] else None


def crop_query(feats: torch.Tensor, crops: torch.Tensor, rows: Sequence[int], weight: float) -> torch.Tensor:
    """Retrieval queries (B, D): each image's feature, and for the images ``rows`` (one per row of ``crops``,
    (len(rows), D), their people's crop features) norm(norm(feature) + weight * norm(crop))."""
    import torch.nn.functional as F

    q = F.normalize(feats.float(), dim=-1)
    if not len(rows) or not weight:
        return q
    q = q.clone()
    idx = torch.as_tensor(list(rows), dtype=torch.long, device=q.device)
    q[idx] = F.normalize(q[idx] + weight * F.normalize(crops.float().to(q.device), dim=-1), dim=-1)
    return q


@dataclass
class DetectorConfig:
    """How the detectors run; their thresholds are settings (``settings.EvidenceConfig``), passed per call."""

    min_face: int = 12  # smallest face side MTCNN looks for, in pixels
    face_side: int = 512  # images are reduced to at most this side for MTCNN
    body_side: int = 640  # ... and for HOG (COCO's photos: 640; more finds more false people, docs/experiments)


class Detectors:
    """MTCNN faces and HOG people, loaded on first use, shared by the threads of one process.

    ``status()`` says for each detector "ready", "not loaded yet", or why it cannot run; a detector that cannot
    run finds nothing."""

    def __init__(self, cfg: DetectorConfig | None = None):
        self.cfg = cfg or DetectorConfig()
        self._loaded: dict[str, Any] = {}  # "faces" / "bodies" -> the loaded detector
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------------------------------
    def _load_faces(self):
        from facenet_pytorch import MTCNN  # weights inside the wheel (facenet_pytorch/data/*.pt)

        return MTCNN(keep_all=True, device="cpu", min_face_size=self.cfg.min_face, post_process=False)

    def _load_bodies(self):
        import cv2

        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        return hog

    def _get(self, which: str):
        with self._lock:
            if which in self._errors:
                return None
            if which not in self._loaded:
                try:
                    self._loaded[which] = getattr(self, f"_load_{which}")()
                except Exception as e:  # any failure leaves the captioner working without it
                    pkg = "facenet-pytorch==2.6.0 (--no-deps)" if which == "faces" else "opencv-python-headless<5"
                    self._errors[which] = f"cannot load ({type(e).__name__}: {e}); install {pkg}"
                    return None
            return self._loaded[which]

    def warm(self, faces: bool = True, bodies: bool = True) -> dict[str, str]:
        """Load the detectors asked for now (the app's start-up), and return :meth:`status`."""
        for which, asked in (("faces", faces), ("bodies", bodies)):
            if asked:
                self._get(which)
        return self.status()

    def status(self) -> dict[str, str]:
        """Per detector: "ready", "not loaded yet" or the reason it cannot run."""
        return {w: self._errors.get(w) or ("ready" if w in self._loaded else "not loaded yet")
                for w in ("faces", "bodies")}

    # -- detection --------------------------------------------------------------------------------------------
    @staticmethod
    def _small(im: Image.Image, side: int) -> tuple[Image.Image, float]:
        s = min(1.0, side / max(im.size))
        if s < 1.0:
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
        return im.convert("RGB"), s

    def faces(self, im: Image.Image, min_prob: float = 0.9) -> list[Detection]:
        """MTCNN's faces of probability >= ``min_prob``, boxes in ``im``'s pixels."""
        mtcnn = self._get("faces")
        if mtcnn is None:
            return []
        small, s = self._small(im, self.cfg.face_side)
        if min(small.size) < self.cfg.min_face:
            return []
        with torch.inference_mode():
            boxes, probs = mtcnn.detect(small)
        if boxes is None:
            return []
        return [Detection("face", tuple(float(v) / s for v in b), float(p))
                for b, p in zip(boxes, probs) if p is not None and p >= min_prob]

    def bodies(self, im: Image.Image, min_score: float = 1.5) -> list[Detection]:
        """HOG's people of SVM margin >= ``min_score``, boxes in ``im``'s pixels."""
        hog = self._get("bodies")
        if hog is None:
            return []
        import numpy as np

        small, s = self._small(im, self.cfg.body_side)
        if min(small.size) < 128:  # the detector's window is 64 x 128
            return []
        rects, weights = hog.detectMultiScale(np.asarray(small)[:, :, ::-1].copy(), winStride=(8, 8),
                                              padding=(8, 8), scale=1.05)
        return [Detection("person", (x / s, y / s, (x + w) / s, (y + h) / s), float(sc))
                for (x, y, w, h), sc in zip(rects, np.asarray(weights).reshape(-1)) if sc >= min_score]

    def detect(self, images: Sequence[Image.Image], faces: bool = True, bodies: bool = True, face_prob: float = 0.9,
               body_score: float = 1.5) -> list[Evidence]:
        """The evidence of each image from the detectors asked for, at these thresholds."""
        return [Evidence(self.faces(im, face_prob) if faces else [], self.bodies(im, body_score) if bodies else [])
                for im in images]


_SHARED: Detectors | None = None
_SHARED_LOCK = threading.Lock()


def shared_detectors() -> Detectors:
    """The process's one :class:`Detectors` (the captioners of a process share the loaded detectors)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Detectors()
        return _SHARED


def neighbour_index(bank, feats: torch.Tensor, k: int, evidence: Sequence[Evidence] | None,
                    count_people: bool = False, pool: int = 3000) -> torch.Tensor:
    """Indices (B, k) of each image's k neighbours in ``bank`` (a :class:`zsc_core.bank.CaptionBank`) for its
    features (B, D), conditioned on its evidence (:func:`condition_neighbours`; None or nothing found: the k
    nearest). What the captioner's retrieval, guidance and ranking read, and the evidence-conditioned retrieval
    baseline."""
    asks = [wants(e, count_people) for e in evidence] if evidence is not None else []
    if not any(people for people, _ in asks):
        return bank.neighbours(feats, k)
    person, several = bank.people()
    return condition_neighbours(bank.neighbours(feats, min(len(bank), max(k, pool))), person, several, asks, k)
