"""Words about people in captions (torch-free): what the person metric counts and what pixel evidence asks for.

ImageNet has no person class, so the `photo` bridge cannot see one; whether a caption names a person, and several
people, is read from its words. The metric (``zsc_core.metrics.person_rate``) and the evidence conditioning
(``zsc_core.evidence``) read the same lists, so what is measured is what is conditioned on.
"""

from __future__ import annotations

# Words that name a person in COCO captions.
PERSON_WORDS = frozenset(
    "man men woman women person people boy boys girl girls child children kid kids guy guys lady ladies player "
    "players skier skiers surfer surfers skateboarder skateboarders snowboarder snowboarders rider riders couple "
    "family crowd baby babies adult adults teenager teenagers".split())
# Words that say there are several ("two men", "a group of people", "a crowd"): what a count of >= 2 prefers.
SEVERAL_WORDS = frozenset(
    "men women people boys girls children kids guys ladies players skiers surfers skateboarders snowboarders "
    "riders couple family crowd group team babies adults teenagers two three four five several many".split())


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:'\"").lower() for w in text.split()]


def names_person(text: str) -> bool:
    """Whether a caption names a person (a word of :data:`PERSON_WORDS`)."""
    return any(w in PERSON_WORDS for w in _words(text))


def names_several_people(text: str) -> bool:
    """Whether a caption names people and says there are several of them (a plural or a number word)."""
    words = _words(text)
    return any(w in PERSON_WORDS for w in words) and any(w in SEVERAL_WORDS for w in words)
