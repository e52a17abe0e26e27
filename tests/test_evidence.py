"""Pixel evidence (zsc_core.evidence): detections condition the neighbours that retrieval, guidance and the CIDEr-D
ranking read; a detector that cannot load leaves the captioner working and says why."""

import pytest
import torch
import torch.nn.functional as F

from zsc_core import world
from zsc_core.bank import BankConfig, attach_bank, cider_consensus_caption, load_bank, save_bank, save_bank_captions
from zsc_core.captioner import Captioner
from zsc_core.evidence import (
    Detection,
    Detectors,
    Evidence,
    body_box,
    condition_neighbours,
    crop_query,
    neighbour_index,
    people_box,
    wants,
)
from zsc_core.people import names_person, names_several_people
from zsc_core.settings import set_defaults

from .test_bank import _captioner_with_bank, _img

FACE = Detection("face", (1.0, 1.0, 9.0, 9.0), 0.99)
PERSON = Detection("person", (0.0, 0.0, 20.0, 40.0), 2.0)


def test_words_about_people_and_about_several():
    assert names_person("A man riding a wave") and names_person("Two surfers, on a beach.")
    assert not names_person("A mannequin in a shop window") and not names_person("A plate of food")
    assert names_several_people("Two men playing frisbee") and names_several_people("A group of people at a table")
    assert not names_several_people("A man on a horse") and not names_several_people("Two dogs on a couch")


def test_evidence_says_what_it_found_and_how_many_people_at_least():
    assert Evidence().summary() == "nothing" and Evidence().n_people == 0
    ev = Evidence([FACE, FACE], [PERSON])
    assert ev.summary() == "2 faces, 1 person" and ev.n_people == 2
    assert Evidence([], [PERSON, PERSON, PERSON]).summary() == "3 people"
    assert wants(ev, count_people=False) == (True, False) and wants(ev, count_people=True) == (True, True)
    assert wants(Evidence([FACE]), count_people=True) == (True, False) and wants(Evidence(), True) == (False, False)


def test_people_evidence_takes_the_nearest_captions_that_name_people_and_fills_up_with_the_rest():
    pool = torch.tensor([[5, 3, 8, 1, 0, 7, 2], [5, 3, 8, 1, 0, 7, 2]])  # each image's nearest, nearest first
    person = torch.zeros(9, dtype=torch.bool)
    person[[8, 0, 2]] = True
    several = torch.zeros(9, dtype=torch.bool)
    several[[0]] = True
    out = condition_neighbours(pool, person, several, [(False, False), (True, False)], k=5)
    assert out[0].tolist() == [5, 3, 8, 1, 0]  # nothing found: the 5 nearest, unchanged
    assert out[1].tolist() == [8, 0, 2, 5, 3]  # people first, in order of nearness, then the nearest others
    many = condition_neighbours(pool, person, several, [(True, True)] * 2, k=2)
    assert many.tolist() == [[0, 8]] * 2  # several people first
    with pytest.raises(ValueError, match="cannot give"):
        condition_neighbours(pool, person, several, [(True, False)] * 2, k=8)


def _people_bank(tmp_path, cap):
    """The tiny captioner's bank with every third caption about a man (embedded by its own text tower)."""
    texts = [world.make_scene(0, "corpus", i).captions[0] for i in range(40)]
    texts = [f"A man beside {t[0].lower()}{t[1:]}" if i % 3 == 0 else t for i, t in enumerate(texts)]
    path = str(tmp_path / "bank.safetensors")
    save_bank(path, cap.clip.encode_text(texts).float(), BankConfig("world", len(texts)),
              {"name": "tiny (text)", "text_fingerprint": cap.clip.text_fingerprint})
    save_bank_captions(path, texts, load_bank(path))
    return path, texts


def test_a_detected_face_changes_which_captions_the_captioner_and_the_retrieval_baseline_read(tmp_path):
    from .test_bank import _adaptor_inputs

    cap, path, _ = _captioner_with_bank(tmp_path)
    bank_path, texts = _people_bank(tmp_path, cap)
    attach_bank(path, bank_path, k=3, mix=1.0)
    set_defaults(path, rerank="cider", rerank_k=6, faces=True, evidence_pool=40)
    loaded = Captioner.from_pretrained(path)
    seen = _adaptor_inputs(loaded)
    bank = loaded.bank
    img = loaded.clip.image_features(loaded.clip.pixels([_img(1)])).global_feat.float()
    nearest = bank.neighbours(img, 6)[0].tolist()
    assert not all(names_person(texts[j]) for j in nearest)  # the plain neighbours are not all about people

    plain = loaded.propose(_img(1), evidence=Evidence(), samples=1, max_new_tokens=4)
    assert plain.pending.cider_texts[0] == [texts[j] for j in nearest]
    found = loaded.propose(_img(1), evidence=Evidence([FACE]), samples=1, max_new_tokens=4)
    read = found.pending.cider_texts[0]
    assert len(read) == 6 and all(names_person(t) for t in read)  # a face: the ranking reads captions of people
    people = [j for j in bank.neighbours(img, 40)[0].tolist() if names_person(texts[j])]
    assert read == [texts[j] for j in people[:6]]  # ... the nearest of them, in order
    anchor = F.normalize(bank.feats(torch.tensor(people[:3])).mean(0), dim=-1)  # so does the input mix
    assert torch.allclose(seen[-1][0], anchor.expand_as(seen[-1][0]), atol=1e-5)
    assert found.evidence[0].summary() == "1 face" and loaded.rank(found).evidence.summary() == "1 face"
    # faces switched off: evidence passed in is not read
    off = loaded.propose(_img(1), evidence=Evidence([FACE]), samples=1, max_new_tokens=4, faces=False)
    assert off.pending.cider_texts[0] == plain.pending.cider_texts[0] and off.evidence is None
    # the retrieval baseline with the same evidence reads the same neighbours
    idf = bank.captions().idf
    assert neighbour_index(bank, img, 6, [Evidence([FACE])], pool=40)[0].tolist() == people[:6]
    assert names_person(cider_consensus_caption(bank, texts, img, 6, idf, [Evidence([FACE])], pool=40)[0])


def test_a_faces_body_box_the_box_around_everyone_found_and_the_crop_query():
    assert body_box((40.0, 10.0, 60.0, 30.0), 200, 300, 1.5) == (20, 0, 80, 90)  # 1.5 widths each side, 3 heights down
    assert body_box((0.0, 0.0, 20.0, 20.0), 30, 50, 3.0) == (0, 0, 30, 50)  # clipped to the photo
    ev = Evidence([Detection("face", (40.0, 10.0, 60.0, 30.0), 0.99)], [Detection("person", (100, 50, 150, 250), 2.0)])
    assert people_box(ev, 200, 300, 1.5) == (20, 0, 150, 250)  # a face's body box and a HOG person's own box
    assert people_box(Evidence(), 200, 300, 1.5) is None
    feats = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    crops = 5 * torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
    q = crop_query(feats, crops, [1], 0.3)
    assert torch.allclose(q[[0, 2]], feats[[0, 2]])  # images without people keep their own feature
    assert torch.allclose(q[1], F.normalize(feats[1] + 0.3 * F.normalize(crops[0], dim=-1), dim=-1), atol=1e-6)
    assert torch.allclose(crop_query(feats, crops, [1], 0.0), feats)


def test_the_body_crop_of_a_face_moves_what_the_captioner_and_the_retrieval_baseline_search_with(tmp_path):
    cap, path, _ = _captioner_with_bank(tmp_path)
    bank_path, texts = _people_bank(tmp_path, cap)
    attach_bank(path, bank_path, k=3, mix=1.0)
    set_defaults(path, rerank="cider", rerank_k=6, faces=True, evidence_pool=40, crop_weight=1.0)
    loaded = Captioner.from_pretrained(path)
    im, face = _img(0), Evidence([Detection("face", (0.0, 0.0, 4.0, 4.0), 0.99)])  # a face in the corner
    img = loaded.clip.encode_image(loaded.clip.pixels([im])).float()
    crop = loaded.clip.encode_image(loaded.clip.pixels([im.crop(people_box(face, *im.size, 3.0))])).float()
    q = loaded.query(im, face)
    assert torch.allclose(q, crop_query(img, crop, [0], 1.0), atol=1e-5) and not torch.allclose(q, img, atol=1e-3)
    assert torch.allclose(loaded.query(im, Evidence()), img, atol=1e-6)  # nobody found: the image feature
    assert torch.allclose(loaded.query(im, face, crop_weight=0.0), img, atol=1e-6)  # crops off
    moved = neighbour_index(loaded.bank, q, 6, [face], pool=40)[0].tolist()
    assert moved != neighbour_index(loaded.bank, img, 6, [face], pool=40)[0].tolist()  # the crop changes what is read
    found = loaded.propose(im, evidence=face, samples=1, max_new_tokens=4)
    assert found.pending.cider_texts[0] == [texts[j] for j in moved]  # ... by the captioner, as by the baseline
    assert torch.allclose(found.image_feats, q, atol=1e-5)  # and the app's retrieved caption searches with it


class _Broken(Detectors):
    def _load_faces(self):
        raise ImportError("No module named 'facenet_pytorch'")


def test_a_detector_that_cannot_load_finds_nothing_says_why_and_the_captioner_still_captions(tmp_path):
    d = _Broken()
    assert d.status()["faces"] == "not loaded yet"
    assert d.detect([_img(0)], faces=True, bodies=False) == [Evidence()]
    assert d.status()["faces"].startswith("cannot load (ImportError") and "facenet-pytorch" in d.status()["faces"]
    cap, path, _ = _captioner_with_bank(tmp_path)
    bank_path, _ = _people_bank(tmp_path, cap)
    attach_bank(path, bank_path, k=3, mix=1.0)
    set_defaults(path, rerank="cider", rerank_k=6, faces=True, evidence_pool=40)
    loaded = Captioner.from_pretrained(path)
    loaded.detectors = d
    r = loaded.caption(_img(1), samples=2, max_new_tokens=4)
    assert r.caption and r.evidence == Evidence() and r.timings["detect_s"] >= 0
    assert loaded.caption(_img(1), samples=2, max_new_tokens=4, faces=False).caption  # and without asking


def test_evidence_settings_are_checked():
    from zsc_core.settings import CaptionConfig

    with pytest.raises(ValueError, match="evidence_pool"):
        CaptionConfig().replace(evidence_pool=0).check()
    with pytest.raises(ValueError, match="face_prob"):
        CaptionConfig().replace(face_prob=1.5).check()
    with pytest.raises(ValueError, match="crop_weight"):
        CaptionConfig().replace(crop_weight=-0.1).check()
    with pytest.raises(ValueError, match="crop_grow"):
        CaptionConfig().replace(crop_grow=0.0).check()
    assert CaptionConfig().replace(faces=True).evidence.detects and not CaptionConfig().evidence.detects


def test_the_app_draws_what_was_read_and_says_whether_each_detector_runs():
    from PIL import Image

    from zsc_core import display
    from zsc_core.viz import draw_detections, draw_regions

    im = Image.new("RGB", (400, 300), (128, 128, 128))
    drawn = draw_detections(im, [Detection("face", (100.0, 100.0, 160.0, 170.0), 0.99)], "read: 1 face")
    assert drawn.size == im.size
    assert drawn.getpixel((100, 130)) != (128, 128, 128)  # the box's edge
    assert drawn.getpixel((300, 250)) == (128, 128, 128)  # far from the box and the banner: untouched
    assert drawn.getpixel((2, 2)) != (128, 128, 128)  # the banner
    assert draw_regions(im, [], banner="").getpixel((2, 2)) == (128, 128, 128)
    assert display.regions_banner(read=False, detected=True) == \
        "no face or person found; subregions (CAM saliency): shown, not read"
    assert display.regions_banner(read=True, detected=False) == "subregions (CAM saliency): read by the adaptor"
    md = display.detectors_markdown({"faces": "ready", "bodies": "cannot load (ImportError: cv2)"})
    assert "Faces: MTCNN (facenet-pytorch): ready." in md and "**cannot load (ImportError: cv2)**" in md
    assert "presets caption without it" in md and "no evidence of gender" in md
    assert display.detectors_markdown({}) == ""


def test_the_people_probes_tallies_and_classes():
    """experiments/people_probes.py's helpers: the tallies count found photos among those with and without people,
    and every people class it sums is one of ImageNet's."""
    from experiments.people_probes import PEOPLE_CLASSES, tally
    from zsc_core.bridge import imagenet_categories

    hit, people, none = [True, False, True, True], [True, True, False, False], [False, False, True, False]
    assert tally(hit, people, none) == {"people": [1, 2], "none": [1, 1]}
    assert tally(hit, people, none, [False, True, True, True]) == {"people": [0, 1], "none": [1, 1]}
    assert set(PEOPLE_CLASSES) <= set(imagenet_categories())  # every class named is one of ImageNet's
