"""The app's Ask tab: zero-shot VQA on an upload, through the preset's own captioner and answer vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from .models import ModelCache, preset_name
from .requests import check_text, read_image
from .vqa import MAX_QUESTION_CHARS

VQA_SAMPLES = 1  # the caption VQA reads: one greedy sample (the LM reads only the caption; S=20 buys little)
VQA_BEAMS = 1


@dataclass
class AnswerView:
    answer: str
    generated: str  # the LM's free answer before retrieval
    caption: str  # the caption the LM read
    top: list[list[Any]]  # [answer, cosine] rows, best first


class AnswerService:
    """Answers questions about uploads (:meth:`Captioner.answer`: the preset carries its answer vocabulary)."""

    def __init__(self, models: ModelCache):
        self.models = models

    def answer(self, image_source: Any, question: Any, preset: str | None = None) -> AnswerView:
        """Zero-shot VQA on an upload: the checks (CPU), then :meth:`answer_image` (the model's work)."""
        question = check_text(question, "question", MAX_QUESTION_CHARS)
        return self.answer_image(read_image(image_source), question, preset)

    def answer_image(self, image: Image.Image, question: str, preset: str | None = None) -> AnswerView:
        """Zero-shot VQA on a decoded image and a checked question (what a ZeroGPU Space runs on its GPU): the
        candidates of the question's answer type, after a caption decoded fast (one greedy sample)."""
        cap = self.models.captioner(preset_name(preset))
        r = cap.answer(image, question, samples=VQA_SAMPLES, num_beams=VQA_BEAMS, by_type=True)
        return AnswerView(r.answer, r.generated, r.caption or "", [[a, round(sc, 4)] for a, sc in r.ranking[:5]])
