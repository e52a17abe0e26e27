"""Zero-shot VQA (MacCap): caption the image, ask the frozen LM, retrieve the answer with CLIP's text tower.

The LM reads ``"<caption>. Question: <question> Answer:"`` (no image prefix: the caption carries the image), after
answered examples where the model's ``answering.lm_examples`` says so (:data:`ANSWER_EXAMPLES`), and
writes a short answer; that free text, stripped of answer boilerplate ("The answer is: red" -> "red"), is embedded
with the CLIP text tower and the candidate answer with the highest cosine is returned. The question-only baseline
leaves the caption out.

Candidate answers come from a vocabulary named by the preset (:func:`answer_vocabulary`): VQAv2's 3,128 answers for
real photos, the offline world's own for its scenes. With ``by_type`` the candidates follow the question's answer
type, as VQA's own answer types split them: a yes/no question ("Is it raining?") is answered yes or no, a "how
many" question by a number, any other question by neither. An answer of uncertainty ("confused", "unsure",
"cannot tell") never answers a question about a photo.

Where the settings say so (``evidence_answers``, issue #54) a question the photo's evidence can answer is routed
to it instead of the 135M LM (:func:`parse_question`): the photo's ``answer_k`` nearest bank captions, conditioned
on its detections (evidence.py), and the detections themselves.

- "Is there a giraffe in the image?": yes when a face was found and the object is a person, or when at least
  ``exist_share`` of the nearest captions name it (objects.py: COCO's categories in caption words);
- "How many giraffes are there?": the number the nearest captions that name the object agree on ("two giraffes");
  with ``count_faces``, the faces or people detected for people;
- "What animal is this?", "What is the person riding?", "What room is this?": the candidate of that class the
  nearest captions name most;
- "What color is the bus?": the colour the nearest captions that colour the object give most ("a red double decker
  bus"); the LM where none does;
- anything else: the LM, as before.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from .lm import GenerationCfg
from .specs import MAX_QUESTION_CHARS

VOCABULARIES = ("world", "vqav2")  # world.ANSWER_VOCAB; data/vqa/vqav2_answers.json
# VQAv2's yes/no questions open with an auxiliary verb; "how many" asks for a number.
_YES_NO = re.compile(r"^\s*(is|are|was|were|do|does|did|can|could|will|would|should|has|have|had)\b", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*how many\b", re.IGNORECASE)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# results of another protocol are not comparable
PROTOCOL = "v3: answer boilerplate stripped, 8 new tokens; as served, evidence routes"
_LEAD = re.compile(r"^(?:.*\banswer(?: is)?\s*[:\-]\s*)?(?:(?:the|a|an|it is|it's)\s+)*", re.IGNORECASE)


# Answers that say nothing about a photo: never the answer to a question about one.
UNCERTAIN = frozenset({"confused", "unsure", "cannot tell", "not sure", "unclear", "unknown", "i dont know",
                       "i don't know", "no idea", "not possible", "am", "maybe", "nothing", "idk", "dont know",
                       "can't tell", "cant tell", "not clear", "none", "not applicable"})


def clean_answer(text: str) -> str:
    """The answer itself from what a small chat LM writes: its first line, after any "(The) answer is:", without
    leading articles or trailing punctuation; the raw text when nothing is left."""
    first = text.strip().split("\n")[0]
    core = _LEAD.sub("", first, count=1).strip(" .,:;!\"'")
    return core or text.strip()


def answer_type(question: str) -> str:
    """"yes/no", "number" or "other", from how the question opens."""
    if _YES_NO.match(question):
        return "yes/no"
    return "number" if _NUMBER.match(question) else "other"


def typed_candidates(question: str, answers: Sequence[str]) -> list[str]:
    """The candidate answers of the question's type (:func:`answer_type`); all of them when none is of that type."""
    kind = answer_type(question)
    if kind == "yes/no":
        keep = [a for a in answers if a in ("yes", "no")]
    elif kind == "number":
        keep = [a for a in answers if a.isdigit() or a in NUMBER_WORDS]
    else:
        keep = [a for a in answers if a not in ("yes", "no")]
    keep = [a for a in keep if a not in UNCERTAIN]
    return keep or [a for a in answers if a not in UNCERTAIN] or list(answers)


_ARTICLES = {"a", "an", "the"}
_DIGITS = {w: str(i) for i, w in enumerate(NUMBER_WORDS)}


def normalize_answer(text: str) -> str:
    """VQA's answer normalisation, in short: lower case, punctuation dropped (a decimal point kept), articles
    dropped, number words as digits ("Two dogs." -> "2 dogs")."""
    text = re.sub(r"(?<!\d)\.|\.(?!\d)|[^\w\s.]", " ", text.lower().replace("'", ""))
    return " ".join(_DIGITS.get(w, w) for w in text.split() if w not in _ARTICLES)


def vqa_accuracy(predicted: str, human_answers: Sequence[str]) -> float:
    """VQA accuracy: min(#humans who gave the predicted answer / 3, 1), answers normalised alike."""
    p = normalize_answer(predicted)
    return min(sum(normalize_answer(h) == p for h in human_answers) / 3, 1.0)


@lru_cache(maxsize=4)
def _vqav2_answers(path: str) -> tuple[str, ...]:
    with open(path) as f:
        answers = json.load(f)
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a for a in answers):
        raise ValueError(f"{path}: expected a JSON list of answer strings")
    return tuple(answers)


def answer_vocabulary(name: str) -> tuple[str, ...]:
    """The candidate answers a preset retrieves from: "world" (the offline world's) or "vqav2" (VQAv2's 3,128,
    from data/vqa/vqav2_answers.json under ``$ZSC_DATA``)."""
    if name == "world":
        from .world import ANSWER_VOCAB

        return tuple(ANSWER_VOCAB)
    if name == "vqav2":
        from .presets import data_dir

        return _vqav2_answers(os.path.join(data_dir(), "vqa", "vqav2_answers.json"))
    raise ValueError(f"unknown answer vocabulary {name!r}; known: {VOCABULARIES}")


@dataclass
class AnswerResult:
    answer: str  # the retrieved candidate answer
    generated: str  # what the LM wrote (cleaned: the free-text answer); "" where the evidence answered
    caption: str | None  # the caption the LM read (None for the question-only baseline)
    ranking: list[tuple[str, float]]  # candidate answers by cosine (or by evidence share), best first
    evidence: str = ""  # what the answer was read from, in words ("41 of the 300 nearest captions name ...")
    route: str = "lm"  # "exists", "count", "class" (answered from the evidence) or "lm"
    seen: Seen | None = None  # the photo's evidence, where it was read (kept by the app for the next question)


# -- questions the evidence answers -------------------------------------------------------------------------------
_EXISTS = re.compile(r"^\s*(?:is|are)\s+there\s+(?:a|an|any|some|the)?\s*(?P<obj>.+?)"
                     r"(?:\s+(?:in|on|at)\s+(?:the|this)\s+(?:image|picture|photo|photograph|scene|pic))?\s*\??\s*$",
                     re.IGNORECASE)
_COUNT = re.compile(r"^\s*how\s+many\s+(?P<obj>.+?)(?:\s+(?:are|is|can|do|does|were|was|in|on)\b.*)?\s*\??\s*$",
                    re.IGNORECASE)
# "What <class> ...?" questions whose answer is one of a few caption words: the class's candidates
CLASSES: dict[str, tuple[str, ...]] = {
    "animal": ("dog", "cat", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "bird"),
    "riding": ("bike", "horse", "skateboard", "surfboard", "motorcycle", "elephant", "skis", "snowboard", "bus",
               "train", "scooter", "wave", "boat"),
    "room": ("kitchen", "bathroom", "bedroom", "living room", "office", "dining room"),
    "sport": ("tennis", "baseball", "soccer", "frisbee", "skiing", "surfing", "skateboarding", "snowboarding",
              "football", "kite flying"),
    "vehicle": ("car", "bus", "train", "truck", "motorcycle", "bike", "airplane", "boat"),
    "food": ("pizza", "sandwich", "cake", "donut", "hot dog", "broccoli", "banana", "salad", "apple", "orange"),
}
_CLASS_Q = [(re.compile(r"^\s*what\s+(?:kind\s+of\s+|type\s+of\s+)?animals?\b", re.I), "animal"),
            (re.compile(r"^\s*what\b.*\briding\b", re.I), "riding"),
            (re.compile(r"^\s*what\s+(?:kind\s+of\s+|type\s+of\s+)?room\b", re.I), "room"),
            (re.compile(r"^\s*what\s+(?:kind\s+of\s+|type\s+of\s+)?sport\b", re.I), "sport"),
            (re.compile(r"^\s*what\s+(?:kind\s+of\s+|type\s+of\s+)?vehicle\b", re.I), "vehicle"),
            (re.compile(r"^\s*what\s+(?:kind\s+of\s+|type\s+of\s+)?food\b", re.I), "food")]
# "What color is the <object>?": the colours VQAv2's answers use most, as caption words ("grey" counts as gray)
COLORS = ("white", "black", "red", "blue", "green", "yellow", "brown", "gray", "orange", "pink", "purple", "silver",
          "tan", "beige", "gold")
COLOR_WORDS = {c: c for c in COLORS} | {"grey": "gray"}
_COLOR_Q = re.compile(r"^\s*what\s+colou?rs?\s+(?:is|are|was|were)\s+(?:the|this|that|these|those|his|her|its|their)?"
                      r"\s*(?P<obj>.+?)\s*\??\s*$", re.IGNORECASE)
_SPORT_WORDS = {"skiing": ("ski", "skis", "skiing", "skier", "skiers"), "surfing": ("surf", "surfer", "surfing",
                "surfboard"), "skateboarding": ("skateboard", "skateboarder", "skateboarding"),
                "snowboarding": ("snowboard", "snowboarder", "snowboarding"), "kite flying": ("kite", "kites")}


@dataclass
class Question:
    """What kind of question it is for the evidence: "exists", "count", "class", "color" or "lm" (the LM answers)."""

    kind: str
    target: str = ""  # the COCO category (exists, count) or the class (class)


def parse_question(question: str) -> Question:
    """How the evidence can answer a question (see the module doc)."""
    from .objects import category_of

    m = _EXISTS.match(question)
    if m:
        return Question("exists", category_of(m.group("obj")))
    m = _COUNT.match(question)
    if m:
        return Question("count", category_of(m.group("obj")))
    m = _COLOR_Q.match(question)
    obj = re.sub(r"^.*'s\s+", "", m.group("obj")) if m else ""  # "the man's shirt": the shirt
    if m and obj.lower() not in ("it", "this", "that", "they", "these", "those"):
        return Question("color", category_of(obj))
    for pattern, cls in _CLASS_Q:
        if pattern.match(question):
            return Question("class", cls)
    return Question("lm")


@dataclass
class Seen:
    """What the evidence of one photo is: its nearest bank captions (conditioned on its detections) and those."""

    texts: list[str]
    found: Any  # evidence.Evidence


def look(captioner, image) -> Seen:
    """The photo's ``answer_k`` nearest bank captions, conditioned on its detections as its caption's are."""
    from .evidence import neighbour_index

    cfg = captioner.effective()
    found = captioner.detect(image)
    feats = captioner.query([image], [found])  # the search the caption's neighbours came from
    v = cfg.evidence
    index = neighbour_index(captioner.bank, feats, cfg.answering.answer_k, [found] if v.detects else None,
                            v.count_people, v.evidence_pool)
    return Seen(captioner.bank.texts(index)[0], found)


def seen_from(captioner, result) -> Seen | None:
    """The photo's evidence as its caption (a :class:`captioner.CaptionResult`) already found it: the nearest bank
    captions its ranking read and its detections, where they are what :func:`look` would find (the same evidence
    settings, at least ``answer_k`` captions); else None."""
    from .evidence import Evidence

    cfg = captioner.effective()
    k = cfg.answering.answer_k
    if result.neighbours is None or len(result.neighbours) < k or result.settings.evidence != cfg.evidence:
        return None
    return Seen(list(result.neighbours[:k]), result.evidence if result.evidence is not None else Evidence())


def answer_exists(seen: Seen, category: str, min_share: float) -> tuple[str, str]:
    """("yes" | "no", the evidence in words) for "Is there a <category>?"."""
    from .objects import names

    n = sum(names(t, category) for t in seen.texts)
    found = seen.found
    people = found.n_people if found is not None else 0
    said = (f"{n} of the {len(seen.texts)} nearest captions name {_a(category)}; "
            f"{found.summary() if found is not None else 'no detector'} found")
    yes = n >= max(1, min_share * len(seen.texts)) or (category == "person" and people > 0)
    return ("yes" if yes else "no"), said


def _a(category: str) -> str:
    return ("an " if category[:1] in "aeiou" else "a ") + category


_NUMBER_OF = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1, "one": 1, "pair": 2, "couple": 2}


def _names_of(category: str) -> str:
    """A regex alternation of the words that name a category in captions (COCO's, else the word), plurals too."""
    from .objects import CATEGORIES, forms

    return "|".join(re.escape(f) for f in forms(CATEGORIES.get(category, (category,))))


@lru_cache(maxsize=256)
def _count_pattern(category: str) -> re.Pattern:
    return re.compile(r"\b(\w+)\s+(?:of\s+)?(?:\w+\s+)?(?:" + _names_of(category) + r")\b")


def count_in(text: str, category: str) -> int | None:
    """How many of a category a caption says there are ("two giraffes" 2, "a pair of skis" 2, "a dog" 1; one
    adjective may stand between), or None where it names none with a count."""
    m = _count_pattern(category).search(text.lower())
    return _NUMBER_OF.get(m.group(1)) if m else None


def answer_count(seen: Seen, category: str, count_faces: bool = False, min_share: float | None = None
                 ) -> tuple[str, str]:
    """(a number as digits, the evidence in words) for "How many <category> are there?": with ``count_faces`` the
    people detected, else (and for anything else) the number the nearest captions naming the object agree on
    ("two giraffes": 2; "a giraffe": 1). Counting faces overcounts (faces in the background; results/vqa_photo.md),
    so the served setting counts from the captions, which are captions about people where a face was found.
    With ``min_share`` (the existence route's ``exist_share``), "0" where that route would say there is none: a
    photo of a bear is not counted "1 person" from the few neighbours that happen to count people."""
    from collections import Counter

    from .objects import plural

    found = seen.found
    if count_faces and category == "person" and found is not None and found.n_people:
        return str(found.n_people), f"{found.summary()} found"
    if min_share is not None:
        there, said = answer_exists(seen, category, min_share)
        if there == "no":
            return "0", said
    votes: Counter[int] = Counter(n for n in (count_in(t, category) for t in seen.texts) if n is not None)
    things = "people" if category == "person" else plural(category)
    if not votes:
        return "1", f"none of the {len(seen.texts)} nearest captions counts {things}"
    n, k = max(votes.items(), key=lambda x: (x[1], -x[0]))
    return str(n), f"{k} of the nearest captions that count {things} say {n}"


@lru_cache(maxsize=256)
def _color_pattern(category: str) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(COLOR_WORDS) + r")\s+(?:[a-z]+\s+){0,2}?(?:" + _names_of(category) + r")\b")


def color_in(text: str, category: str) -> str | None:
    """The colour a caption gives the object ("A red double decker bus": red; up to two words may stand between),
    or None where it gives none."""
    m = _color_pattern(category).search(text.lower())
    return COLOR_WORDS[m.group(1)] if m else None


_ANY_COLOR = re.compile(r"\b(" + "|".join(COLOR_WORDS) + r")\b")


def answer_color(seen: Seen, category: str, vocabulary: set[str] | None = None, anywhere: bool = False
                 ) -> tuple[str | None, str, list[tuple[str, float]]]:
    """(the colour the nearest captions that colour the object give most (of those in ``vocabulary``), or None when
    none does; the evidence in words; every colour by its share of those captions). With ``anywhere``, where none
    colours the object, the colour the nearest captions name most, whatever they colour ("a white bathroom" for the
    wall)."""
    from collections import Counter

    def ok(c):
        return c is not None and (vocabulary is None or c in vocabulary)

    votes = Counter(c for c in (color_in(t, category) for t in seen.texts) if ok(c))
    what = f"that colour the {category}"
    if not votes and anywhere:
        votes = Counter(c for t in seen.texts for c in {COLOR_WORDS[w] for w in _ANY_COLOR.findall(t.lower())}
                        if ok(c))
        what = f"that name a colour (none colours the {category})"
    if not votes:
        return None, f"none of the {len(seen.texts)} nearest captions gives {_a(category)} a colour", []
    n = sum(votes.values())
    best, k = votes.most_common(1)[0]
    return best, f"{k} of the {n} nearest captions {what} say {best}", [(c, v / n) for c, v in votes.most_common()]


def answer_class(seen: Seen, cls: str, vocabulary: set[str] | None = None
                 ) -> tuple[str | None, str, list[tuple[str, float]]]:
    """(the candidate of ``cls`` (of those in ``vocabulary``) the nearest captions name most, or None when they name
    none; the evidence in words; every candidate by share)."""
    from .objects import CATEGORIES, mention_pattern

    low = [t.lower() for t in seen.texts]
    counts = {}
    for c in CLASSES[cls]:
        if vocabulary is None or c in vocabulary:
            pattern = mention_pattern(_SPORT_WORDS.get(c) or CATEGORIES.get(c) or (c,))
            counts[c] = sum(bool(pattern.search(t)) for t in low)
    ranked = sorted(counts.items(), key=lambda x: -x[1])
    best, n = ranked[0] if ranked else ("", 0)
    if n == 0:
        return None, f"none of the {len(seen.texts)} nearest captions names a {cls}", []
    return best, f"{n} of the {len(seen.texts)} nearest captions name {best}", [(c, k / len(seen.texts))
                                                                                  for c, k in ranked]


# Five answered examples (a colour, yes, a count, no, an activity), none a COCO object: without them SmolLM2 often
# starts a new "A:" line instead of answering (docs/experiments/2026-12-07-vqa-from-evidence.md)
ANSWER_EXAMPLES = ("A dog sleeping on a green couch. Question: What color is the couch? Answer: green\n"
                   "A woman holding an umbrella in the rain. Question: Is it raining? Answer: yes\n"
                   "Two men standing in a kitchen. Question: How many people are there? Answer: 2\n"
                   "A cat on a bed next to a laptop. Question: Is the cat asleep? Answer: no\n"
                   "A boy riding a skateboard down a street. Question: What is the boy doing? Answer: skateboarding\n")


def vqa_prompt(question: str, caption: str | None, examples: bool = False) -> str:
    """What the LM reads: the caption (if any) and the question; with ``examples``, after :data:`ANSWER_EXAMPLES`
    where the question is not a yes / no one (after them SmolLM2 answers "no" to every yes / no question)."""
    q = question.strip()[:MAX_QUESTION_CHARS]
    text = f"{caption.strip()}. Question: {q} Answer:" if caption else f"Question: {q} Answer:"
    return ANSWER_EXAMPLES + text if examples and answer_type(q) != "yes/no" else text


@torch.no_grad()
def generate_answers(lm, prompts: Sequence[str], max_new_tokens: int = 8) -> list[str]:
    """One batched generate over text-only prompts (an empty prefix); the answers cleaned (:func:`clean_answer`)."""
    prefix = torch.zeros(len(prompts), 0, lm.hidden_size, dtype=lm.model.dtype, device=lm.device)
    ids = [x[-200:] for x in lm.encode(list(prompts))]  # keep the end: the question and "Answer:"
    return [clean_answer(t) for t in lm.generate(prefix, prompts=ids, cfg=GenerationCfg(max_new_tokens=max_new_tokens))]


_ENCODED: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}  # (text tower, answers) -> (A, D), encoded once
_ROWS: dict[str, dict[str, torch.Tensor]] = {}  # text tower -> answer -> its encoding (D,), each encoded once


@torch.no_grad()
def _encode_each(clip, answers: Sequence[str], chunk: int = 512) -> None:
    """Encode the answers not yet encoded by this text tower (in chunks: the rows do not depend on them, up to
    float rounding)."""
    rows = _ROWS.setdefault(clip.text_fingerprint, {})
    if len(rows) > 50_000:  # answer lists given by callers: keep the memory bounded (VQAv2's are 3k)
        rows.clear()
    todo = [a for a in dict.fromkeys(answers) if a not in rows]
    for i in range(0, len(todo), chunk):
        rows.update(zip(todo[i:i + chunk], clip.encode_text(todo[i:i + chunk])))


def answers_file_name(clip, answers: Sequence[str]) -> str:
    """The file name of the encodings of ``answers`` by this text tower: a hash of both, so a file can only be read
    by the tower and the list it was made for."""
    import hashlib

    h = hashlib.sha256(clip.text_fingerprint.encode())
    for a in answers:
        h.update(a.encode() + b"\n")
    return h.hexdigest()[:16] + ".safetensors"


def answers_dirs() -> list[str]:
    """Where encoded answer lists are read from: the user cache (lm.cache_dir(), written on first use), then
    ``answers/`` in the checkpoints folder (shipped: ``python -m train.build_answers``), so that a machine's first
    question does not wait seconds for them."""
    from .lm import cache_dir
    from .presets import checkpoints_dir

    return [os.path.join(cache_dir(), "answers"), os.path.join(checkpoints_dir(), "answers")]


ANSWERS_KIND = "answers"  # checkpoint kind of a file of encoded answers (checkpoint.py's metadata)
# Lists this long are kept on disk (they take ~0.1 s or more to encode on 2 cores); a caller's shorter lists are
# encoded when asked, so that no number of them fills the user cache.
KEEP_ANSWERS = 64


def _kept_files(clip, answers: tuple[str, ...]) -> list[str]:
    """The files that may hold this list's encodings (:func:`answers_dirs`), first found first; none for a list
    too short to keep."""
    if len(answers) < KEEP_ANSWERS:
        return []
    name = answers_file_name(clip, answers)
    return [p for p in (os.path.join(d, name) for d in answers_dirs()) if os.path.isfile(p)]


def _read_answers(clip, answers: tuple[str, ...]) -> torch.Tensor | None:
    """The kept (A, D) encodings of ``answers`` by this text tower, or None (absent, unreadable, or made by another
    tower or for other answers: encode again)."""
    from .checkpoint import load_checkpoint

    for path in _kept_files(clip, answers):
        try:
            ck = load_checkpoint(path, expect_kind=ANSWERS_KIND)
        except Exception:  # truncated, not a safetensors file, another kind
            continue
        t = ck.tensors.get("answers")
        if (t is not None and t.ndim == 2 and t.shape[0] == len(answers) and ck.config.get("answers") == list(answers)
                and (ck.clip or {}).get("text_fingerprint") == clip.text_fingerprint):
            return t.float()
    return None


def _write_answers(clip, answers: tuple[str, ...], t: torch.Tensor, folder: str) -> str:
    """Write the encodings ``t`` of ``answers`` (self-describing: the answers and the tower's fingerprint)."""
    from .checkpoint import save_checkpoint

    os.makedirs(folder, exist_ok=True)
    return save_checkpoint(os.path.join(folder, answers_file_name(clip, answers)), {"answers": t},
                           kind=ANSWERS_KIND, config={"answers": list(answers)},
                           clip={"text_fingerprint": clip.text_fingerprint}, dtype=torch.float16)


def _encode_list(clip, answers: tuple[str, ...]) -> torch.Tensor:
    """The encodings of ``answers``, rounded through fp16 as they are kept on disk (half the bytes; a cosine moves
    by ~1e-4), so that an answer list read from a file and one just encoded rank alike."""
    _encode_each(clip, answers)
    rows = _ROWS[clip.text_fingerprint]
    return torch.stack([rows[a] for a in answers]).half().float()


def save_answers(clip, answers: Sequence[str], folder: str) -> str:
    """Encode ``answers`` with this text tower and write them into ``folder``; returns the file's path."""
    answers = tuple(answers)
    return _write_answers(clip, answers, _encode_list(clip, answers), folder)


def _encoded_answers(clip, answers: tuple[str, ...]) -> torch.Tensor:
    """The (A, D) encodings of ``answers`` by this text tower: in memory, else read (:func:`answers_dirs`), else
    encoded (3,128 VQAv2 answers take ~3 s on 2 cores) and kept in the user cache."""
    key = (clip.text_fingerprint, answers)
    if key not in _ENCODED:
        if len(_ENCODED) >= 8:
            _ENCODED.clear()
        t = _read_answers(clip, answers)
        if t is None:
            t = _encode_list(clip, answers)
            if len(answers) >= KEEP_ANSWERS:
                try:
                    _write_answers(clip, answers, t, answers_dirs()[0])
                except OSError:  # a read-only cache: encode again next time
                    pass
        _ENCODED[key] = t
    return _ENCODED[key]


WARM_QUESTIONS = ("Is it?", "How many?", "What is it?")  # one of each answer type: yes/no, number, other
WARM_CHUNK = 128  # answers a warm-up job encodes: a request arriving meanwhile waits ~0.1 s, not seconds


def answer_candidates(captioner, question: str, answers: Sequence[str] | None = None,
                      by_type: bool = True) -> list[str]:
    """The answers the LM route retrieves from: ``answers`` (default: the captioner's vocabulary) without answers
    of uncertainty, of the question's answer type with ``by_type``. :func:`answer` ranks them; :func:`warm_jobs`
    encodes the same lists ahead."""
    candidates = [a for a in (answers or answer_vocabulary(captioner.answers)) if a not in UNCERTAIN]
    return typed_candidates(question, candidates) if by_type else candidates


def warm_jobs(captioner, answers: Sequence[str] | None = None, questions: Sequence[str] = WARM_QUESTIONS,
              chunk: int = WARM_CHUNK) -> list:
    """Encode the candidate answers of each answer type once (what the first question of each type would wait
    for: the ~3k VQAv2 answers take seconds on 2 cores), as small jobs (callables) for a server to run between
    requests: each encodes ``chunk`` of the answers, then one per answer type puts its list together."""
    lists = [tuple(answer_candidates(captioner, q, answers)) for q in questions]
    # a kept list loads in milliseconds (read once, by its job): only the others are encoded, in chunks
    todo = [lst for lst in lists if not _kept_files(captioner.clip, lst)]
    every = list(dict.fromkeys(a for lst in todo for a in lst))
    jobs = [lambda part=every[i:i + chunk]: _encode_each(captioner.clip, part, chunk)
            for i in range(0, len(every), chunk)]
    return jobs + [lambda lst=lst: _encoded_answers(captioner.clip, lst) for lst in lists]


@torch.no_grad()
def rank_answers(clip, generated: Sequence[str], answers: Sequence[str]) -> list[list[tuple[str, float]]]:
    """For each generated text, the candidate answers by CLIP text cosine, best first."""
    if not answers:
        raise ValueError("no candidate answers to choose from")
    answers = tuple(answers)
    a = _encoded_answers(clip, answers)  # (A, D)
    g = clip.encode_text([t or "nothing" for t in generated])  # (N, D)
    sims = g @ a.to(g.device, g.dtype).T  # (N, A)
    order = sims.argsort(dim=1, descending=True)
    return [[(answers[j], float(sims[i, j])) for j in order[i].tolist()] for i in range(len(generated))]


def answer(captioner, image, question: str, answers: Sequence[str] | None = None, use_caption: bool = True,
           samples: int | None = None, by_type: bool = False, caption: str | None = None,
           evidence_answers: bool | None = None, seen: Seen | None = None, **caption_kw) -> AnswerResult:
    """Answer one question about one image (see module doc). ``answers`` default to the captioner's own vocabulary
    (``captioner.answers``: a preset's, VQAv2's for real photos);
    ``by_type`` keeps the candidates of the question's answer type; ``caption``: the image's caption when it is
    already known (the app's Caption tab wrote it), else one is decoded, at the model's served setting changed by
    ``samples`` and ``caption_kw`` (e.g. num_beams).

    ``evidence_answers`` (None: the model's setting) routes the questions the evidence answers to it
    (:func:`parse_question`); ``seen``: the photo's evidence when it is already known (:func:`look`)."""
    if not question or not question.strip():
        raise ValueError("the question is empty")
    cfg = captioner.effective()
    route = cfg.answering.evidence_answers if evidence_answers is None else evidence_answers
    q = parse_question(question) if route and captioner.has_bank else Question("lm")
    if q.kind != "lm":
        seen = seen or look(captioner, image)
        if q.kind == "exists":
            a, said = answer_exists(seen, q.target, cfg.answering.exist_share)
            return AnswerResult(a, "", None, [(a, 1.0)], said, "exists", seen)
        if q.kind == "count":
            a, said = answer_count(seen, q.target, cfg.answering.count_faces, cfg.answering.exist_share)
            return AnswerResult(a, "", None, [(a, 1.0)], said, "count", seen)
        vocab = set(answers or answer_vocabulary(captioner.answers))
        if q.kind == "color":
            best, said, ranked = answer_color(seen, q.target, vocab)
        else:
            best, said, ranked = answer_class(seen, q.target, vocab)
        if best is not None:
            return AnswerResult(best, "", None, ranked, said, q.kind, seen)
    if not use_caption:
        caption = None
    elif caption is None:
        caption = captioner.caption(image, samples=samples, **caption_kw).caption
    gen = generate_answers(captioner.lm, [vqa_prompt(question, caption, cfg.answering.lm_examples)])[0]
    candidates = answer_candidates(captioner, question, answers, by_type)
    ranking = rank_answers(captioner.clip, [gen], candidates)[0]
    return AnswerResult(ranking[0][0], gen, caption, ranking, "the language model read the caption" if caption
                        else "the language model read the question alone", "lm")
