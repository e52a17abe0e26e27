"""Zero-shot VQA on real photos: VQAv2's answers, the question's answer type, VQA accuracy; and what the app's
labels say about each preset."""

import pytest

from zsc_core import vqa
from zsc_core.presets import PRESETS


@pytest.mark.parametrize("question, kind", [
    ("Is it raining?", "yes/no"), ("Would a vegetarian eat this?", "yes/no"), ("does the man ski", "yes/no"),
    ("How many people are there?", "number"), ("What is the man riding?", "other"),
    ("Island or city?", "other"),  # "is" must open the question, not merely begin a word
])
def test_answer_type_follows_the_question_opening(question, kind):
    assert vqa.answer_type(question) == kind


def test_typed_candidates_keep_the_answers_of_the_question_type():
    answers = ["yes", "no", "2", "three", "red", "surfing"]
    assert vqa.typed_candidates("Is it red?", answers) == ["yes", "no"]
    assert vqa.typed_candidates("How many dogs?", answers) == ["2", "three"]
    assert vqa.typed_candidates("What color is it?", answers) == ["2", "three", "red", "surfing"]
    assert vqa.typed_candidates("Is it red?", ["red", "blue"]) == ["red", "blue"]  # none of the type: all of them


def test_vqa_accuracy_is_min_of_matching_humans_over_three_after_normalisation():
    humans = ["microwave and food", "microwave", "Microwave.", "microwave oven", "the microwave"] + ["oven"] * 5
    assert vqa.normalize_answer("The Microwave.") == "microwave"
    assert vqa.normalize_answer("Two dogs!") == "2 dogs" and vqa.normalize_answer("3.5") == "3.5"
    assert vqa.vqa_accuracy("microwave", humans) == 1.0  # 3 humans (after normalisation): min(3 / 3, 1)
    assert vqa.vqa_accuracy("oven", humans[:6]) == pytest.approx(1 / 3)
    assert vqa.vqa_accuracy("fridge", humans) == 0.0


def test_the_vqav2_vocabulary_is_shipped_with_its_provenance():
    answers = vqa.answer_vocabulary("vqav2")
    assert len(answers) == 3128 and len(set(answers)) == 3128
    assert {"yes", "no", "2", "zebra", "bathroom", "skateboarding"} <= set(answers)
    assert vqa.answer_vocabulary("world") == tuple(__import__("zsc_core.world", fromlist=["x"]).ANSWER_VOCAB)
    with pytest.raises(ValueError, match="unknown answer vocabulary"):
        vqa.answer_vocabulary("imagenet")
    assert PRESETS["photo"].answers == "vqav2" and PRESETS["offline-world"].answers == "world"


def test_answers_are_encoded_once_per_text_tower(tiny_clip, monkeypatch, tmp_path):
    monkeypatch.setenv("ZSC_CACHE_DIR", str(tmp_path))  # an empty user cache (a long list is kept there)
    vqa._ENCODED.clear()
    vqa._ROWS.clear()
    calls = []
    real = tiny_clip.encode_text

    def counting(texts):
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(tiny_clip, "encode_text", counting)
    answers = tuple(f"answer {i}" for i in range(600))
    first = vqa.rank_answers(tiny_clip, ["answer 7"], answers)
    second = vqa.rank_answers(tiny_clip, ["answer 8"], answers)
    assert calls == [512, 88, 1, 1]  # the 600 answers in two chunks, once; then only the generated texts
    assert first[0][0][0] in answers and len(second[0]) == 600
    vqa._ENCODED.clear()  # a new process: the list is read from the user cache, not encoded
    vqa._ROWS.clear()
    assert vqa.rank_answers(tiny_clip, ["answer 8"], answers) == second and calls == [512, 88, 1, 1, 1]


def test_labels_say_what_each_preset_is():
    from zsc_core.display import labels

    photo = labels("photo")
    assert "bridge" in photo.header and "CLIP" not in photo.header and "MobileNetV2" in photo.header
    assert "CAM saliency" in photo.regions and "CLS attention" not in photo.regions
    assert "shown, not read" in photo.regions and not photo.reads_regions  # TIPCap reads the global feature
    assert photo.score == "bridge cosine" and photo.ranking.startswith("CIDEr-D vs 300 nearest captions")
    assert photo.has_bank and not photo.offline_world
    world = labels("offline-world-maccap")
    assert "CLIP" in world.header and "CLS attention" in world.regions and world.reads_regions
    assert world.candidate_headers() == ["chosen", "candidate", "CLIP score (ranks)", "count"]
    assert world.offline_world and not world.has_bank
