"""COCO's 80 object categories as caption words (torch-free): which object a caption or a question names.

COCO captions name objects in their own words ("a kitten", "a fridge", "two bikes"), so each category lists the
words and phrases that name it; plurals are matched too. Existence probes (POPE's protocol, Li et al., EMNLP 2023),
counting probes and the evidence a question is answered from (vqa.py) all read these lists.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .people import PERSON_WORDS

# category -> the words and phrases that name it in a caption (singular; plurals are derived)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "person": tuple(sorted(PERSON_WORDS)),
    "bicycle": ("bicycle", "bike"), "car": ("car",), "motorcycle": ("motorcycle", "motorbike", "motor bike"),
    "airplane": ("airplane", "plane", "jet", "aircraft", "airliner"), "bus": ("bus",), "train": ("train",),
    "truck": ("truck",), "boat": ("boat", "ship", "sailboat", "canoe", "kayak"),
    "traffic light": ("traffic light", "stop light"), "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",), "parking meter": ("parking meter",), "bench": ("bench",), "bird": ("bird",),
    "cat": ("cat", "kitten"), "dog": ("dog", "puppy"), "horse": ("horse", "pony"), "sheep": ("sheep", "lamb"),
    "cow": ("cow", "cattle", "bull", "calf"), "elephant": ("elephant",), "bear": ("bear",), "zebra": ("zebra",),
    "giraffe": ("giraffe",), "backpack": ("backpack",), "umbrella": ("umbrella",), "handbag": ("handbag", "purse"),
    "tie": ("tie", "necktie"), "suitcase": ("suitcase", "luggage"), "frisbee": ("frisbee",), "skis": ("ski", "skis"),
    "snowboard": ("snowboard",), "sports ball": ("ball", "soccer ball", "tennis ball"), "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"), "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard",), "surfboard": ("surfboard", "surf board"),
    "tennis racket": ("tennis racket", "racket", "racquet"), "bottle": ("bottle",),
    "wine glass": ("wine glass", "glass of wine"), "cup": ("cup", "mug"), "fork": ("fork",), "knife": ("knife",),
    "spoon": ("spoon",), "bowl": ("bowl",), "banana": ("banana",), "apple": ("apple",), "sandwich": ("sandwich",),
    "orange": ("orange",), "broccoli": ("broccoli",), "carrot": ("carrot",), "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",), "donut": ("donut", "doughnut"), "cake": ("cake",), "chair": ("chair",),
    "couch": ("couch", "sofa"), "potted plant": ("potted plant", "plant", "houseplant"), "bed": ("bed",),
    "dining table": ("dining table", "table"), "toilet": ("toilet",), "tv": ("tv", "television"),
    "laptop": ("laptop",), "mouse": ("mouse",), "remote": ("remote", "remote control", "controller"),
    "keyboard": ("keyboard",), "cell phone": ("cell phone", "cellphone", "phone", "smartphone"),
    "microwave": ("microwave",), "oven": ("oven", "stove"), "toaster": ("toaster",), "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"), "book": ("book",), "clock": ("clock",), "vase": ("vase",),
    "scissors": ("scissors",), "teddy bear": ("teddy bear", "stuffed bear", "stuffed animal"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer"), "toothbrush": ("toothbrush",),
}
_IRREGULAR = {"knife": "knives", "sheep": "sheep", "mouse": "mice", "calf": "calves", "bus": "buses",
              "glass of wine": "glasses of wine", "scissors": "scissors", "skis": "skis", "cattle": "cattle",
              "luggage": "luggage", "broccoli": "broccoli"}


def plural(word: str) -> str:
    """The plural of a category word ("bus" -> "buses", "knife" -> "knives", "bench" -> "benches")."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    head, _, last = word.rpartition(" ")
    if last in PERSON_WORDS:
        return word  # person words list their plurals themselves
    if last.endswith(("s", "sh", "ch", "x")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def forms(words: tuple[str, ...]) -> list[str]:
    """The words and their plurals, longest first (so that a regex alternation tries "hot dogs" before "dog")."""
    return sorted({f for w in words for f in (w, plural(w))}, key=len, reverse=True)


@lru_cache(maxsize=512)
def mention_pattern(words: tuple[str, ...]) -> re.Pattern:
    """A regex that finds any of the words, or their plurals, as whole words in lower-case text."""
    return re.compile(r"\b(?:" + "|".join(re.escape(f) for f in forms(words)) + r")\b")


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern]:
    return {cat: mention_pattern(words) for cat, words in CATEGORIES.items()}


def _spans(low: str) -> list[tuple[int, int, str]]:
    """Every category mention in a lower-case text, longest first, none overlapping a longer one ("hot dog" is a
    hot dog, not a dog; "motor bike" a motorcycle, not a bicycle)."""
    found = sorted(((m.start(), m.end(), cat) for cat, p in _patterns().items() for m in p.finditer(low)),
                   key=lambda x: x[0] - x[1])
    kept: list[tuple[int, int, str]] = []
    for a, b, cat in found:
        if all(b <= x or a >= y for x, y, _ in kept):
            kept.append((a, b, cat))
    return kept


@lru_cache(maxsize=65536)
def named_categories(text: str) -> frozenset[str]:
    """The COCO categories a text names ("Two kittens on a sofa" -> {"cat", "couch"}); cached: a photo's nearest
    captions are read again for each question about it."""
    return frozenset(cat for _, _, cat in _spans(text.lower()))


def names(text: str, category: str) -> bool:
    """Whether a text names a category (or, for a word that is no category, the word or its plural)."""
    if category in CATEGORIES:
        return category in named_categories(text)
    return bool(mention_pattern((category,)).search(text.lower()))


def category_of(phrase: str) -> str:
    """The COCO category a phrase from a question names ("kittens" -> "cat", "people" -> "person"; the longest
    mention wins); the phrase's last word, singular, when it names none."""
    low = phrase.lower().strip(" ?.!")
    spans = _spans(low)
    if spans:
        return spans[0][2]
    last = low.split()[-1] if low.split() else low
    return last[:-1] if last.endswith("s") and not last.endswith("ss") else last
