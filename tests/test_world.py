"""The offline world: determinism, disjoint splits, truthful captions, COCO-format output."""

import json
import re

import numpy as np
import pytest

from zsc_core import world


def test_same_seed_same_pixels_and_captions():
    a = world.make_scene(3, "eval", 17)
    b = world.make_scene(3, "eval", 17)
    assert a.captions == b.captions and a.alt_text == b.alt_text and a.qa == b.qa
    assert np.array_equal(np.asarray(world.render(a, 96)), np.asarray(world.render(b, 96)))


def test_different_seed_or_index_differs():
    base = world.make_scene(0, "eval", 0)
    assert world.make_scene(1, "eval", 0).objects != base.objects
    assert world.make_scene(0, "eval", 1).objects != base.objects


def test_splits_are_disjoint():
    seen = {}
    for split in world.SPLITS:
        for s in world.iter_scenes(0, split, 300):
            key = tuple((o.kind, o.color, round(o.cx, 6), round(o.cy, 6)) for o in s.objects)
            assert key not in seen, f"{split} scene {s.index} repeats {seen[key]}"
            seen[key] = (split, s.index)
    ids = [s.image_id for split in world.SPLITS for s in world.iter_scenes(0, split, 50)]
    assert len(ids) == len(set(ids))


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="unknown split"):
        world.make_scene(0, "nope", 0)


def _mentions(caption: str) -> list[tuple[str | None, str]]:
    """(colour or None, kind) for every kind word in a caption, with the colour word right before it."""
    words = caption.replace(",", " ").split()
    out = []
    for i, w in enumerate(words):
        kind = next((k for k in world.KINDS if w in (k, world.PLURALS[k])), None)
        if kind:
            prev = words[i - 1] if i else ""
            out.append((prev if prev in world.COLORS else None, kind))
    return out


def test_captions_mention_only_objects_in_the_scene():
    for s in world.iter_scenes(0, "corpus", 400):
        present = {(o.color, o.kind) for o in s.objects}
        assert len(s.captions) == 5 and all(s.captions)
        for c in s.captions + [s.alt_text]:
            m = _mentions(c)
            assert m, f"caption names no object: {c!r}"
            for color, kind in m:
                assert kind in {k for _, k in present}, (c, present)
                if color is not None:
                    assert (color, kind) in present, (c, present)


def test_captions_describe_only_part_of_busy_scenes():
    # Subregions matter only if captions often leave objects out.
    partial = total = 0
    for s in world.iter_scenes(0, "corpus", 300):
        if len(s.objects) >= 3:
            for c in s.captions:
                total += 1
                partial += len(_mentions(c)) < len(s.objects)
    assert total > 100 and partial / total > 0.5


def test_world_has_the_promised_variety():
    assert len(world.KINDS) >= 12 and len(world.COLORS) >= 8 and len(world.BACKGROUNDS) >= 5
    scenes = list(world.iter_scenes(0, "clip", 2000))
    assert {o.kind for s in scenes for o in s.objects} == set(world.KINDS)
    assert {s.background for s in scenes} == set(world.BACKGROUNDS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    rel = [c for s in scenes for c in s.captions if re.search(r"left of|right of|above|below", c)]
    assert len(rel) > 100


def test_every_kind_renders_in_its_colour():
    for kind in world.KINDS:
        obj = world.SceneObject(kind, "red", 0.5, 0.5, 0.3, 0.0)
        s = world.Scene(0, "eval", 0, "plain", (150, 150, 150), [obj])
        a = np.asarray(world.render(s, 64)).astype(int)
        red = (a[..., 0] > 180) & (a[..., 1] < 80) & (a[..., 2] < 80)
        assert red.sum() > 20, kind


def test_vqa_answers_are_true():
    for s in world.iter_scenes(0, "eval", 200):
        for q in s.qa:
            assert q["answer"] in world.ANSWER_VOCAB
            if q["type"] == "count":
                assert q["answer"] == world.NUMBER_WORDS[len(s.objects)]
            if q["type"] == "color":
                kind = q["question"].split()[-1].rstrip("?")
                assert q["answer"] in {o.color for o in s.objects if o.kind == kind}


def test_write_split_is_coco_format(tmp_path):
    from pycocoevalcap.eval import COCOEvalCap
    from pycocotools.coco import COCO

    out = tmp_path / "eval"
    summary = world.write_split(str(out), 0, "eval", 4, size=64)
    assert summary == {"images": 4, "captions": 20, "questions": summary["questions"], "out": str(out)}
    assert len(list((out / "images").iterdir())) == 4
    coco = COCO(str(out / "references.json"))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 20
    # pycocoevalcap accepts the file: results built from the references themselves load and align.
    res = coco.loadRes([{"image_id": a["image_id"], "caption": a["caption"]}
                        for a in coco.dataset["annotations"][::5]])
    ev = COCOEvalCap(coco, res)
    assert sorted(ev.params["image_id"]) == sorted(coco.getImgIds())
    vqa = json.loads((out / "vqa.json").read_text())
    assert vqa["questions"] and set(vqa["answers"]) == set(world.ANSWER_VOCAB)


def test_kinds_named_finds_singulars_and_plurals():
    assert world.kinds_named("Two red crosses, a fish and a big sun.") == {"cross", "fish", "sun"}
    assert world.kinds_named("a starry sky above trees") == {"tree"}  # whole words only
