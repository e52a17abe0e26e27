"""Zero-shot VQA (MacCap): caption the image, ask the frozen LM, retrieve the answer with CLIP's text tower.

The LM reads ``"<caption>. Question: <question> Answer:"`` (no image prefix: the caption carries the image) and
writes a short answer; that free text, stripped of answer boilerplate ("The answer is: red" -> "red"), is embedded
with the CLIP text tower and the candidate answer with the highest cosine is returned. The question-only baseline
leaves the caption out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .lm import GenerationCfg

MAX_QUESTION_CHARS = 300
PROTOCOL = "v2: answer boilerplate stripped, 8 new tokens"  # results of another protocol are not comparable
_LEAD = re.compile(r"^(?:.*\banswer(?: is)?\s*[:\-]\s*)?(?:(?:the|a|an|it is|it's)\s+)*", re.IGNORECASE)


def clean_answer(text: str) -> str:
    """The answer itself from what a small chat LM writes: its first line, after any "(The) answer is:", without
    leading articles or trailing punctuation; the raw text when nothing is left."""
    first = text.strip().split("\n")[0]
    core = _LEAD.sub("", first, count=1).strip(" .,:;!\"'")
    return core or text.strip()


@dataclass
class AnswerResult:
    answer: str  # the retrieved candidate answer
    generated: str  # what the LM wrote
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


@torch.no_grad()
def rank_answers(clip, generated: Sequence[str], answers: Sequence[str]) -> list[list[tuple[str, float]]]:
    """For each generated text, the candidate answers by CLIP text cosine, best first."""
    if not answers:
        raise ValueError("no candidate answers to choose from")
    a = clip.encode_text(list(answers))  # (A, D)
    g = clip.encode_text([t or "nothing" for t in generated])  # (N, D)
    sims = g @ a.T  # (N, A)
    order = sims.argsort(dim=1, descending=True)
    return [[(answers[j], float(sims[i, j])) for j in order[i].tolist()] for i in range(len(generated))]


def answer(captioner, image, question: str, answers: Sequence[str] | None = None, use_caption: bool = True,
           samples: int | None = None) -> AnswerResult:
    """Answer one question about one image (see module doc). ``answers`` default to the offline world's."""
    from .world import ANSWER_VOCAB

    if not question or not question.strip():
        raise ValueError("the question is empty")
    caption = captioner.caption(image, samples=samples).caption if use_caption else None
    gen = generate_answers(captioner.lm, [vqa_prompt(question, caption)])[0]
    ranking = rank_answers(captioner.clip, [gen], list(answers or ANSWER_VOCAB))[0]
    return AnswerResult(ranking[0][0], gen, caption, ranking)
