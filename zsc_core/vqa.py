"""Zero-shot VQA (MacCap): caption the image, ask the frozen LM, retrieve the answer with CLIP's text tower.

The LM reads ``"<caption>. Question: <question> Answer:"`` (no image prefix: the caption carries the image) and
writes a short answer; that free text, stripped of answer boilerplate ("The answer is: red" -> "red"), is embedded
with the CLIP text tower and the candidate answer with the highest cosine is returned. The question-only baseline
leaves the caption out.

Candidate answers come from a vocabulary named by the preset (:func:`answer_vocabulary`): VQAv2's 3,128 answers for
real photos, the offline world's own for its scenes. With ``by_type`` the candidates follow the question's answer
type, as VQA's own answer types split them: a yes/no question ("Is it raining?") is answered yes or no, a "how
many" question by a number, any other question by neither.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from .lm import GenerationCfg

MAX_QUESTION_CHARS = 300
VOCABULARIES = ("world", "vqav2")  # world.ANSWER_VOCAB; data/vqa/vqav2_answers.json
# VQAv2's yes/no questions open with an auxiliary verb; "how many" asks for a number.
_YES_NO = re.compile(r"^\s*(is|are|was|were|do|does|did|can|could|will|would|should|has|have|had)\b", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*how many\b", re.IGNORECASE)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PROTOCOL = "v2: answer boilerplate stripped, 8 new tokens"  # results of another protocol are not comparable
_LEAD = re.compile(r"^(?:.*\banswer(?: is)?\s*[:\-]\s*)?(?:(?:the|a|an|it is|it's)\s+)*", re.IGNORECASE)


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
    return keep or list(answers)


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
    generated: str  # what the LM wrote (cleaned: the free-text answer)
    caption: str | None  # the caption the LM read (None for the question-only baseline)
    ranking: list[tuple[str, float]]  # candidate answers by cosine, best first


def vqa_prompt(question: str, caption: str | None) -> str:
    q = question.strip()[:MAX_QUESTION_CHARS]
    return f"{caption.strip()}. Question: {q} Answer:" if caption else f"Question: {q} Answer:"


@torch.no_grad()
def generate_answers(lm, prompts: Sequence[str], max_new_tokens: int = 8) -> list[str]:
    """One batched generate over text-only prompts (an empty prefix); the answers cleaned (:func:`clean_answer`)."""
    prefix = torch.zeros(len(prompts), 0, lm.hidden_size, dtype=lm.model.dtype, device=lm.device)
    ids = [x[-200:] for x in lm.encode(list(prompts))]  # keep the end: the question and "Answer:"
    return [clean_answer(t) for t in lm.generate(prefix, prompts=ids, cfg=GenerationCfg(max_new_tokens=max_new_tokens))]


_ENCODED: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}  # (text tower, answers) -> (A, D), encoded once


@torch.no_grad()
def _encoded_answers(clip, answers: tuple[str, ...]) -> torch.Tensor:
    key = (clip.text_fingerprint, answers)
    if key not in _ENCODED:  # 3,128 VQAv2 answers take about a second to encode on CPU: once per tower
        if len(_ENCODED) >= 8:
            _ENCODED.clear()
        _ENCODED[key] = torch.cat([clip.encode_text(list(answers[i:i + 512])) for i in range(0, len(answers), 512)])
    return _ENCODED[key]


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
           **caption_kw) -> AnswerResult:
    """Answer one question about one image (see module doc). ``answers`` default to the captioner's own vocabulary
    (``captioner.answers``: a preset's, VQAv2's for real photos);
    ``by_type`` keeps the candidates of the question's answer type; ``caption``: the image's caption when it is
    already known (the app's Caption tab wrote it), else one is decoded, at the model's served setting changed by
    ``samples`` and ``caption_kw`` (e.g. num_beams)."""
    if not question or not question.strip():
        raise ValueError("the question is empty")
    if not use_caption:
        caption = None
    elif caption is None:
        caption = captioner.caption(image, samples=samples, **caption_kw).caption
    gen = generate_answers(captioner.lm, [vqa_prompt(question, caption)])[0]
    candidates = list(answers or answer_vocabulary(captioner.answers))
    if by_type:
        candidates = typed_candidates(question, candidates)
    ranking = rank_answers(captioner.clip, [gen], candidates)[0]
    return AnswerResult(ranking[0][0], gen, caption, ranking)
