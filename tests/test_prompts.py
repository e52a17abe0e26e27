"""Prompt construction from captions with spaCy."""

import random

from zsc_core import prompts


def test_noun_phrases_skip_positions_and_articles():
    np_ = prompts.noun_phrases("a big red car to the left of a small green tree on a grassy field")
    assert np_ == [("big red car", "car"), ("small green tree", "tree"), ("grassy field", "field")]
    assert prompts.noun_phrases("two blue boats in the middle of the image") == [("blue boats", "boat")]


def test_missing_phrases_compare_head_lemmas():
    ref = "a red car next to two green trees and a yellow sun"
    rough = "a blue car near a tree"
    assert prompts.missing_phrases(ref, rough) == ["yellow sun"]  # car and tree(s) are already there
    assert prompts.missing_phrases(ref, ref) == []
    assert prompts.missing_phrases("two green trees and a yellow sun", "a car", heads=True) == ["tree", "sun"]


def test_prompt_and_stage2_format():
    assert prompts.make_prompt(["motorcycle"]) == "An image contains motorcycle."
    assert prompts.make_prompt(["red car", "sun"]) == "An image contains red car, sun."
    assert prompts.make_prompt([]) == ""
    assert prompts.stage2_text("a car", "An image contains sun.") == \
        "Reference: a car Prompt: An image contains sun. Prediction:"


def test_training_prompt_blanks_when_equal_or_by_chance():
    rng = random.Random(0)
    ref, rough = "a red car and a sun", "a red car"
    assert prompts.training_prompt(ref, ref, rng) == prompts.stage2_text("", "")
    texts = [prompts.training_prompt(ref, rough, random.Random(i)) for i in range(400)]
    blank = sum(t == prompts.stage2_text("", "") for t in texts) / len(texts)
    assert 0.05 < blank < 0.16  # p = 0.1
    full = [t for t in texts if t != prompts.stage2_text("", "")]
    assert set(full) == {"Reference: a red car Prompt: An image contains sun. Prediction:"}


def test_training_prompt_mixes_bare_nouns_and_phrases():
    ref, rough = "a red car and a yellow sun", "a red car"
    texts = [prompts.training_prompt(ref, rough, random.Random(i), p_blank=0.0, p_bare=0.5) for i in range(400)]
    bare = sum(t == "Reference: a red car Prompt: An image contains sun. Prediction:" for t in texts) / len(texts)
    phrase = sum(t == "Reference: a red car Prompt: An image contains yellow sun. Prediction:" for t in texts)
    assert 0.4 < bare < 0.6 and phrase / len(texts) == 1 - bare


def test_photo_prompt_protocol_prompts_the_first_missing_noun_and_passes_settings_to_both_passes():
    """evaluate_prompt_following_coco with stand-in captioners: the first reference noun the rough caption lacks is
    prompted (as a phrase, then bare), a refined caption that names it counts as followed, a photo whose rough
    caption names every noun is skipped, and the decoding overrides reach the rough and the refined pass alike."""
    from types import SimpleNamespace

    from zsc_core.evaluation import evaluate_prompt_following_coco

    calls = []

    class Stub:
        def __init__(self, answer):
            self.answer = answer

        def caption(self, image, **kw):
            calls.append(kw)
            return SimpleNamespace(caption=self.answer(image, kw))

    base = Stub(lambda image, kw: "a dog on a sofa")
    two = Stub(lambda image, kw: f"a dog on a sofa next to a {kw['prompt'].split()[-1].rstrip('.')}"
               if image == "follows" else "a dog on a sofa")
    items = [("follows", ["a red motorcycle near a dog"]), ("ignores", ["a cat and a dog"]),
             ("complete", ["the dog on the sofa"])]
    res = evaluate_prompt_following_coco(two, base, items, samples=8, num_beams=1)
    assert res["tried"] == 2 and res["followed_phrase"] == res["followed_bare"] == 0.5
    assert res["rough"] == ["a dog on a sofa"] * 3
    assert res["refined"] == ["a dog on a sofa next to a motorcycle", "a dog on a sofa", "a dog on a sofa"]
    prompted = [kw["prompt"] for kw in calls if "prompt" in kw]
    assert prompted == ["An image contains red motorcycle.", "An image contains motorcycle.",
                        "An image contains cat.", "An image contains cat."]
    assert len(calls) == 3 + 4 and all(kw["samples"] == 8 and kw["num_beams"] == 1 for kw in calls)
