"""VQA from evidence (issue #54): which questions the evidence answers, and the answers it reads off hand-written
neighbours and detections; uncertainty never answers a question about a photo."""

import pytest

from zsc_core.evidence import Detection, Evidence
from zsc_core.objects import category_of, named_categories, names, plural
from zsc_core.vqa import (
    UNCERTAIN,
    Question,
    Seen,
    answer_class,
    answer_color,
    answer_count,
    answer_exists,
    color_in,
    count_in,
    parse_question,
    typed_candidates,
)

FACE = Detection("face", (0.0, 0.0, 10.0, 10.0), 0.99)


@pytest.mark.parametrize("question, parsed", [
    ("Is there a giraffe in the image?", Question("exists", "giraffe")),
    ("Are there any people in this photo?", Question("exists", "person")),
    ("is there a hot dog", Question("exists", "hot dog")),  # not a dog
    ("Is there a motor bike in the picture?", Question("exists", "motorcycle")),
    ("How many people are there?", Question("count", "person")),
    ("How many kittens are on the couch?", Question("count", "cat")),
    ("What animal is this?", Question("class", "animal")),
    ("What kind of animal is shown?", Question("class", "animal")),
    ("What is the person riding?", Question("class", "riding")),
    ("What room is this?", Question("class", "room")),
    ("Is it raining?", Question("lm")),
    ("What color is the bus?", Question("color", "bus")),
    ("What colour are the giraffes?", Question("color", "giraffe")),
    ("What color is the man's shirt?", Question("color", "shirt")),  # the shirt, not the man
    ("What color is it?", Question("lm")),  # nothing named: the LM reads the caption
])
def test_questions_the_evidence_can_answer_are_recognised(question, parsed):
    assert parse_question(question) == parsed


def test_captions_name_categories_in_their_own_words_longest_mention_first():
    assert named_categories("Two kittens on a sofa next to a cell phone") == {"cat", "couch", "cell phone"}
    assert named_categories("A man riding a motor bike") == {"person", "motorcycle"}  # not a bicycle
    assert names("Three giraffes by a tree", "giraffe") and not names("A zebra by a tree", "giraffe")
    assert names("Two scooters", "scooter") and category_of("teddy bears") == "teddy bear"
    assert (plural("bus"), plural("knife"), plural("bench"), plural("sheep")) == ("buses", "knives", "benches",
                                                                                   "sheep")


def test_existence_is_the_share_of_the_nearest_captions_or_a_face_for_people():
    texts = ["A giraffe by a tree", "Two giraffes eating", "A zebra in a field"] + ["A field of grass"] * 97
    seen = Seen(texts, Evidence())
    assert answer_exists(seen, "giraffe", 0.01)[0] == "yes"  # 2 of 100 >= 1%
    assert answer_exists(seen, "giraffe", 0.05)[0] == "no"  # 2 of 100 < 5%
    a, said = answer_exists(seen, "person", 0.01)
    assert a == "no" and said.startswith("0 of the 100 nearest captions name a person") and "nothing found" in said
    assert answer_exists(Seen(texts, Evidence([FACE])), "person", 0.01)[0] == "yes"  # a face is a person
    assert answer_exists(Seen(texts, Evidence([FACE])), "dog", 0.01)[0] == "no"  # ... not a dog


def test_counting_reads_the_detections_for_people_else_the_count_the_captions_agree_on():
    texts = ["Two giraffes by a tree", "two tall giraffes eating", "A giraffe in a field", "A man"]
    assert count_in("a pair of skis", "skis") == 2 and count_in("dogs running", "dog") is None
    assert answer_count(Seen(texts, Evidence()), "giraffe")[0] == "2"
    assert answer_count(Seen(texts, Evidence([FACE] * 3)), "person", count_faces=True) == ("3", "3 faces found")
    assert answer_count(Seen(texts, Evidence([FACE] * 3)), "person") == (  # the captions' count: "A man"
        "1", "1 of the nearest captions that count people say 1")
    assert answer_count(Seen(texts, Evidence()), "person", count_faces=True)[0] == "1"  # no face: the captions
    assert answer_count(Seen(["A field"], Evidence()), "zebra")[0] == "1"  # nothing counted: the most common answer


def test_a_count_is_zero_where_the_existence_route_finds_none():
    """With the existence route's share (the served answer() passes exist_share), a bear photo whose 300 nearest
    captions include 5 that count "a man" is not "1 person": 5 of 300 is under 2%, and no face was found. A face,
    or enough captions, keeps the count."""
    bears = ["A brown bear in a field"] * 295 + ["A man and a bear"] * 5
    a, said = answer_count(Seen(bears, Evidence()), "person", min_share=0.02)
    assert a == "0" and said.startswith("5 of the 300 nearest captions name a person") and "nothing found" in said
    assert answer_count(Seen(bears, Evidence()), "person")[0] == "1"  # without the share: the captions' count
    assert answer_count(Seen(bears, Evidence([FACE])), "person", min_share=0.02)[0] == "1"  # a face: someone there
    assert answer_count(Seen(bears, Evidence()), "person", min_share=0.01)[0] == "1"  # 5 of 300 >= 1%
    assert answer_count(Seen(bears, Evidence()), "bear", min_share=0.02)[0] == "1"


def test_colour_questions_take_the_colour_the_nearest_captions_give_the_object_most():
    """'What color is the bus?' (issue #54's LM route answered a brown bear 'red'): the colour the nearest captions
    put before the object, up to two words between; grey is gray; None (the LM) where no caption colours it."""
    assert color_in("A red double decker bus on a street", "bus") == "red"
    assert color_in("a grey cat on a bed", "cat") == "gray" and color_in("A bus that is red", "bus") is None
    texts = ["A large brown bear in a field", "Two brown bears", "A black bear by a tree", "A bear eating grass",
             "A white polar bear"]
    best, said, ranked = answer_color(Seen(texts, Evidence()), "bear")
    assert best == "brown" and said == "2 of the 4 nearest captions that colour the bear say brown"
    assert ranked == [("brown", 0.5), ("black", 0.25), ("white", 0.25)]
    assert answer_color(Seen(texts, Evidence()), "bear", {"black", "white"})[0] == "black"  # the vocabulary's
    assert answer_color(Seen(texts, Evidence()), "bus")[0] is None


def test_class_questions_take_the_candidate_the_nearest_captions_name_most():
    texts = ["A giraffe standing by a tree", "Giraffes eating leaves", "A zebra and a giraffe", "A bird on a branch"]
    best, said, ranked = answer_class(Seen(texts, Evidence()), "animal")
    assert best == "giraffe" and said == "3 of the 4 nearest captions name giraffe" and ranked[0] == ("giraffe", 0.75)
    best, _, _ = answer_class(Seen(["A man riding a bike down a street", "A bicycle parked"], Evidence()), "riding")
    assert best == "bike"
    assert answer_class(Seen(["A plate of food"], Evidence()), "animal")[0] is None  # no evidence: the LM answers


def test_uncertainty_never_answers_a_question_about_a_photo():
    answers = ["confused", "unsure", "cannot tell", "giraffe", "yes", "no", "2"]
    assert typed_candidates("What animal is this?", answers) == ["giraffe", "2"]
    assert {"confused", "unsure", "cannot tell"} <= UNCERTAIN


def test_the_facade_routes_evidence_questions_and_falls_back_to_the_lm(tmp_path):
    from zsc_core.bank import attach_bank
    from zsc_core.captioner import Captioner
    from zsc_core.settings import set_defaults

    from .test_bank import _captioner_with_bank, _img
    from .test_evidence import _people_bank

    cap, path, _ = _captioner_with_bank(tmp_path)
    bank_path, texts = _people_bank(tmp_path, cap)
    attach_bank(path, bank_path, k=3)
    set_defaults(path, evidence_answers=True, answer_k=10, exist_share=0.05, rerank="cider")
    loaded = Captioner.from_pretrained(path)
    r = loaded.answer(_img(1), "Is there a person in the image?", answers=["yes", "no", "red"])
    assert r.route == "exists" and r.answer in ("yes", "no") and "of the 10 nearest captions" in r.evidence
    assert r.generated == ""  # the LM was not asked
    lm = loaded.answer(_img(1), "What color is it?", answers=["red", "blue", "confused"], caption="a red square")
    assert lm.route == "lm" and lm.answer in ("red", "blue") and lm.generated
    for q in ("What is this?", "Why?"):  # whatever the LM writes, an answer of uncertainty is not a candidate
        assert loaded.answer(_img(1), q, answers=["confused", "unsure", "cannot tell", "red"],
                             caption="a square").answer == "red"
    off = loaded.answer(_img(1), "Is there a person in the image?", answers=["yes", "no"], caption="a red square",
                        evidence_answers=False)
    assert off.route == "lm"


def test_a_caption_s_lookup_is_the_evidence_its_questions_read(tmp_path, monkeypatch):
    """Issue #55: the Caption tab's lookup (nearest captions, detections) is what the Ask tab's evidence reads, so a
    captioned photo is not encoded, detected and searched again for a question."""
    from zsc_core import vqa
    from zsc_core.bank import attach_bank
    from zsc_core.captioner import Captioner
    from zsc_core.service import CaptionMemo
    from zsc_core.settings import set_defaults

    from .test_bank import _captioner_with_bank, _img
    from .test_evidence import _people_bank

    cap, path, _ = _captioner_with_bank(tmp_path)
    bank_path, _ = _people_bank(tmp_path, cap)
    attach_bank(path, bank_path, k=3)
    set_defaults(path, evidence_answers=True, answer_k=10, exist_share=0.05, rerank="cider", rerank_k=10)
    loaded = Captioner.from_pretrained(path)
    r = loaded.caption(_img(1), samples=2, max_new_tokens=4)
    seen = vqa.seen_from(loaded, r)
    looked = vqa.look(loaded, _img(1))
    assert seen is not None and seen.texts == looked.texts and len(seen.texts) == 10
    assert seen.found.summary() == looked.found.summary()
    monkeypatch.setattr(vqa, "look", lambda *a: pytest.fail("looked up again"))
    asked = loaded.answer(_img(1), "Is there a person in the image?", answers=["yes", "no"], seen=seen)
    assert asked.route == "exists" and asked.seen is seen
    # a caption that read fewer neighbours than the questions read is not their evidence
    short = loaded.caption(_img(1), samples=2, max_new_tokens=4, rerank_k=5)
    assert vqa.seen_from(loaded, short) is None
    memo = CaptionMemo()
    memo.put(_img(1), "p", {"samples": 2}, "a caption")
    memo.put(_img(1), "p", {"samples": 2}, seen=seen)  # kept beside the caption, not instead of it
    assert memo.get(_img(1), "p", {"samples": 2}) == "a caption" and memo.seen(_img(1), "p", {"samples": 2}) is seen
    assert memo.seen(_img(2), "p", {"samples": 2}) is None


def test_the_answer_warm_up_runs_as_small_jobs_that_encode_what_the_answers_read(tmp_path, monkeypatch):
    """vqa.warm_jobs: each job encodes at most ``chunk`` answers (a request arriving meanwhile waits for one small
    job, models.ComputeThread.when_idle); after them each answer type's list is ready, and it holds the encodings
    a cold question would make (the same rows, whatever the chunks). The lists are kept in the user cache: a fresh
    process encodes nothing, and a damaged file is encoded again."""
    import torch

    from zsc_core import vqa
    from zsc_core.captioner import Captioner

    from .test_bank import _captioner_with_bank

    monkeypatch.setenv("ZSC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(vqa, "KEEP_ANSWERS", 2)  # these lists are short: keep them (VQAv2's are 100 and 3,115)
    cap, path, _ = _captioner_with_bank(tmp_path)
    loaded = Captioner.from_pretrained(path)
    answers = ["yes", "no", "1", "2", "3", "red", "blue", "dog", "cat", "table", "kitchen"]
    vqa._ENCODED.clear()
    vqa._ROWS.clear()
    sizes = []
    encode = loaded.clip.encode_text
    loaded.clip.encode_text = lambda texts, *a, **k: (sizes.append(len(texts)), encode(texts, *a, **k))[1]
    jobs = vqa.warm_jobs(loaded, answers, chunk=3)
    for job in jobs:
        job()
    loaded.clip.encode_text = encode
    assert sizes and max(sizes) <= 3 and sum(sizes) == len(answers)  # each answer encoded once, 3 at a time
    for q in vqa.WARM_QUESTIONS:
        lst = tuple(vqa.answer_candidates(loaded, q, answers))
        assert (loaded.clip.text_fingerprint, lst) in vqa._ENCODED  # ready before the first question
        torch.testing.assert_close(vqa._ENCODED[(loaded.clip.text_fingerprint, lst)], encode(list(lst)),
                                   atol=2e-3, rtol=0)  # kept at fp16
    first = dict(vqa._ENCODED)
    vqa._ENCODED.clear()  # a fresh process on the same machine
    vqa._ROWS.clear()
    sizes.clear()
    loaded.clip.encode_text = lambda texts, *a, **k: (sizes.append(len(texts)), encode(texts, *a, **k))[1]
    jobs = vqa.warm_jobs(loaded, answers, chunk=3)
    assert len(jobs) == len(vqa.WARM_QUESTIONS)  # nothing to encode: one load per answer type
    for job in jobs:
        job()
    assert sizes == [] and all(torch.equal(first[k], vqa._ENCODED[k]) for k in first)
    files = sorted((tmp_path / "cache" / "answers").iterdir())
    assert len(files) == len(vqa.WARM_QUESTIONS)
    files[0].write_bytes(b"not a tensor file")
    vqa._ENCODED.clear()
    for job in vqa.warm_jobs(loaded, answers, chunk=3):
        job()
    loaded.clip.encode_text = encode
    assert 0 < sum(sizes) < len(answers)  # the damaged list alone, encoded again
    assert all(torch.equal(first[k], vqa._ENCODED[k]) for k in first)  # encoded again: the same fp16 rows
    monkeypatch.setattr(vqa, "KEEP_ANSWERS", 64)
    vqa._ENCODED.clear()
    vqa.rank_answers(loaded.clip, ["a dog"], ["puppy", "kitten", "car"])  # a caller's short list: not kept
    assert len(list((tmp_path / "cache" / "answers").iterdir())) == len(vqa.WARM_QUESTIONS)


def test_answers_shipped_beside_the_checkpoints_are_read_and_only_by_their_tower(tmp_path, monkeypatch):
    """train.build_answers writes each answer type's encoded list into checkpoints/answers/; a machine with an empty
    user cache then encodes nothing for its first question. A file read for another list (here: renamed onto
    another list's name) is refused by what it records, and that list is encoded again."""
    import shutil

    import torch

    from train.build_answers import main as build
    from zsc_core import vqa
    from zsc_core.captioner import Captioner

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("ZSC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(vqa, "KEEP_ANSWERS", 2)  # the offline world's lists are short
    written = build(["presets=offline-world"])
    lists = [tuple(vqa.answer_candidates(Captioner.from_pretrained("offline-world"), q)) for q in vqa.WARM_QUESTIONS]
    assert len(written) == sum(len(lst) >= 2 for lst in lists) == len(vqa.WARM_QUESTIONS)
    assert all(p.startswith(str(tmp_path / "answers")) for p in written)
    vqa._ENCODED.clear()
    vqa._ROWS.clear()
    cap = Captioner.from_pretrained("offline-world", device="cpu")
    sizes = []
    encode = cap.clip.encode_text
    cap.clip.encode_text = lambda texts, *a, **k: (sizes.append(len(texts)), encode(texts, *a, **k))[1]
    jobs = vqa.warm_jobs(cap)
    assert len(jobs) == len(vqa.WARM_QUESTIONS)
    for job in jobs:
        job()
    assert sizes == [] and not (tmp_path / "cache" / "answers").exists()  # read, not encoded nor copied
    lists = [tuple(vqa.answer_candidates(cap, q)) for q in vqa.WARM_QUESTIONS]
    other = max(lists, key=len)
    torch.testing.assert_close(vqa._ENCODED[(cap.clip.text_fingerprint, other)], encode(list(other)), atol=2e-3,
                               rtol=0)  # kept at fp16
    small = next(lst for lst in lists if lst != other)
    shutil.copy(tmp_path / "answers" / vqa.answers_file_name(cap.clip, small),
                tmp_path / "answers" / vqa.answers_file_name(cap.clip, other))
    vqa._ENCODED.clear()
    for job in vqa.warm_jobs(cap):
        job()
    assert sum(sizes) == len(other)  # refused (it records other answers), encoded again, kept in the user cache
    assert (tmp_path / "cache" / "answers" / vqa.answers_file_name(cap.clip, other)).is_file()
