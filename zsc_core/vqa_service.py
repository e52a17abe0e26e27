"""The app's Ask tab: zero-shot VQA on an upload, through the preset's own captioner and answer vocabulary, reading
the caption the Caption tab shows (the served setting; remembered, not decoded twice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from .models import ModelCache, preset_name
from .requests import check_text, read_image
from .specs import MAX_QUESTION_CHARS


@dataclass
class AnswerView:
    answer: str
    how: str  # how it was answered: the evidence it read, or what the LM wrote before retrieval
    caption: str  # the caption the LM read ("" where the evidence answered without it)
    top: list[list[Any]]  # [answer, cosine or share] rows, best first
    route: str = "lm"  # vqa.AnswerResult.route


class AnswerService:
    """Answers questions about uploads (:meth:`Captioner.answer`: the preset carries its answer vocabulary). The LM
    reads the caption the Caption tab shows for the photo at the served setting: from ``memo`` (service.CaptionMemo)
    when the Caption tab already wrote it, else decoded here, as ``Captioner.answer`` does by default."""

    def __init__(self, models: ModelCache, memo=None):
        from .service import CaptionMemo

        self.models = models
        self.memo = memo or CaptionMemo()

    def answer(self, image_source: Any, question: Any, preset: str | None = None) -> AnswerView:
        """Zero-shot VQA on an upload: the checks (CPU), then :meth:`answer_image` (the model's work)."""
        question = check_text(question, "question", MAX_QUESTION_CHARS)
        return self.answer_image(read_image(image_source), question, preset)

    def answer_image(self, image: Image.Image, question: str, preset: str | None = None) -> AnswerView:
        """Zero-shot VQA on a decoded image and a checked question (what a ZeroGPU Space runs on its GPU), from the
        candidates of the question's answer type."""
        name = preset_name(preset)
        cap = self.models.captioner(name)
        served = cap.effective().flat()
        memo = self.memo.entry(image, name, served)
        known = memo.get("caption")
        # the evidence answers what it can without a caption, from the Caption tab's lookup where it made one (or
        # this tab's, from an earlier question); otherwise the LM reads the Caption tab's caption
        r = cap.answer(image, question, by_type=True, caption=known, seen=memo.get("seen"))
        if r.seen is not None and memo.get("seen") is None:
            self.memo.put(image, name, served, seen=r.seen)
        if r.route == "lm":
            if known is None and r.caption:
                self.memo.put(image, name, served, r.caption)
            how = f"The language model wrote “{r.generated}” after reading the caption; the nearest answer was taken."
        else:
            how = f"From the evidence: {r.evidence}."
        return AnswerView(r.answer, how, r.caption or "", [[a, round(sc, 4)] for a, sc in r.ranking[:5]], r.route)
