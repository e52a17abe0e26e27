"""Issue #56: what a visitor met in an hour with the app, point by point (endpoint tests on the tiny app; the
browser tier checks the page itself in tests/test_browser.py)."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from zsc_core import world

from .conftest import imported_app, make_tiny_checkpoints, tiny_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    with tiny_app(tmp_path_factory) as url:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """app.py imported on the tiny checkpoints (the offline-world stand-ins), not launched."""
    ck = tmp_path_factory.mktemp("app-checkpoints")
    make_tiny_checkpoints(ck)
    with imported_app({"ZSC_CHECKPOINTS": str(ck), "ZSC_DEFAULT_PRESET": "offline-world"}) as module:
        yield module


@pytest.fixture
def tiny_presets(tmp_path, monkeypatch):
    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    return tmp_path


def _upload(tmp_path, im: Image.Image, name: str = "photo.png"):
    from gradio_client import handle_file

    path = tmp_path / name
    im.save(path)
    return handle_file(str(path))


def _scene(i: int, size: int = 128):
    return world.render(world.make_scene(0, "eval", i), size)


SETTINGS = ["offline-world", 3, "", "", 1, 0]


def test_1_a_recaption_refills_the_plain_caption_and_a_caption_clears_the_prompt_boxes(client, tmp_path):
    """The Caption box and the prompt's boxes never show another photo's text: /recaption refills the plain caption
    (the rough one) for the photo it refined; /caption empties the rough and refined boxes of the last prompt."""
    first = client.predict(_upload(tmp_path, _scene(1), "a.png"), *SETTINGS, api_name="/caption")
    plain, retrieved, rough, refined, *_ = client.predict(_upload(tmp_path, _scene(2), "b.png"),
                                                          "An image contains star", *SETTINGS, api_name="/recaption")
    assert plain == rough and refined  # the Caption box is the new photo's, not first[0]
    again = client.predict(_upload(tmp_path, _scene(3), "c.png"), *SETTINGS, api_name="/caption")
    assert again[5:] == ("", "") and isinstance(first[0], str)


def test_1_a_new_upload_clears_every_output_of_the_last_photo(app):
    """The image's upload event empties the caption, retrieved caption, regions, candidates, info, the prompt's
    boxes and the Ask tab's answer (the page test in test_browser.py shows it)."""
    out = app.cleared()
    assert len(out) == 11 and all(v in ("", None) for v in out)
    deps = app.demo.config["dependencies"]
    image_id = app.image._id
    clear = [d for d in deps if [image_id, "input"] in [list(t) for t in d["targets"]]]
    assert clear and len(clear[0]["outputs"]) == 11


def test_2_the_examples_show_the_refinement_the_app_advertises(tiny_presets):
    """The motorcycle-in-fog photo is an example twice: alone, and with "An image contains motorcycle" (its plain
    caption misses the motorcycle; the refined one is what the app is for)."""
    from zsc_core.presets import EXAMPLE_PROMPTS, example_rows

    rows = example_rows()
    prompted = [r for r in rows if r[1]]
    assert [os.path.basename(r[0]) for r in prompted] == list(EXAMPLE_PROMPTS)
    assert prompted[0][1] == "An image contains motorcycle"
    assert any(r[0] == prompted[0][0] and r[1] == "" for r in rows)  # the plain caption too
    assert any(os.path.basename(r[0]) == "flower.jpg" for r in rows)  # a failure that teaches stays


def test_3_an_empty_prompt_says_so(client, tmp_path):
    from gradio_client.exceptions import AppError

    for empty in ("", "   "):
        with pytest.raises(AppError, match="prompt is empty"):
            client.predict(_upload(tmp_path, _scene(1)), empty, *SETTINGS, api_name="/recaption")


def test_4_an_image_with_almost_nothing_to_see_gets_a_warning(client, tmp_path):
    for im in (Image.new("RGB", (1, 1), (120, 20, 20)), Image.new("RGB", (2000, 2000), (250, 250, 250))):
        caption, regions, _, info, *_ = client.predict(_upload(tmp_path, im), *SETTINGS, api_name="/caption")
        assert info.startswith("**Warning:**") and "guess" in info and caption
    _, _, _, info, *_ = client.predict(_upload(tmp_path, _scene(4)), *SETTINGS, api_name="/caption")
    assert "Warning" not in info


def test_4_nothing_to_see_is_judged_by_size_and_flatness():
    from zsc_core.requests import nothing_to_see

    assert nothing_to_see(Image.new("RGB", (1, 1))) and nothing_to_see(Image.new("RGB", (20, 400)))
    assert nothing_to_see(Image.new("L", (800, 600), 7))
    photo = Image.open(os.path.join(os.path.dirname(__file__), "..", "data", "coco", "train-paired", "images",
                                    sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "data", "coco",
                                                                   "train-paired", "images")))[0]))
    assert nothing_to_see(photo) == "" and nothing_to_see(_scene(0)) == ""


def test_5_candidates_that_differ_only_in_case_are_one_and_no_column_repeats_another():
    import torch

    from zsc_core.sampling import rerank

    feats = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.3], [0.0, 1.0]]), dim=-1)
    c = rerank(["A person holding a tennis racket", "a person holding a tennis racket.", "a dog"], feats,
               torch.tensor([1.0, 0.0]))
    assert [x.text for x in c] == ["A person holding a tennis racket", "a dog"] and c[0].count == 2
    from zsc_core.display import candidate_headers, labels

    assert labels("offline-world-maccap").candidate_headers() == ["chosen", "candidate", "CLIP score (ranks)",
                                                                   "count"]
    assert candidate_headers("bridge cosine", "CIDEr-D vs 300 nearest captions (ranks)") == [
        "chosen", "candidate", "bridge cosine", "CIDEr-D vs 300 nearest captions (ranks)", "count"]


def test_6_an_example_click_switches_the_model_box_to_the_model_that_captioned_it(app):
    deps = app.demo.config["dependencies"]
    examples = [d for d in deps if app.preset._id in d["outputs"] and app.out_refined._id in d["outputs"]]
    assert examples, "the examples' outputs include the model box"
    out = app.example(str(world_png()), "", progress=lambda *a, **k: None)
    assert out[-1] == app.SELECTED and isinstance(out[0], str)


def world_png():
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "scene.png")
    _scene(6).save(path)
    return path


def test_7_long_titles_sit_above_the_images_not_over_them():
    """The image toolbar covered the regions label and the gap figures' labels covered their panels' titles: the
    titles are markdown above the images, which show no label."""
    import app

    for component in (app.out_regions, app.gap_hist, app.gap_tsne):
        assert component.show_label is False
    assert app.LABELS.regions in app.regions_title.value


def test_8_the_models_tab_says_what_each_model_is_without_internals():
    from zsc_core.display import status_markdown
    from zsc_core.presets import PHOTO_LIMITS, PRESETS

    text = status_markdown({})
    assert "checkpoints/" not in text and "python -m" not in text and "README" not in text
    assert text.count(PHOTO_LIMITS) == 1 and text.count("**") >= 2 * len(PRESETS)
    assert "as `photo` above" in text


def test_9_the_gap_tab_shows_the_settings_of_the_chosen_data_only(app):
    assert not app.n_scenes.visible and not app.gap_files.visible and not app.gap_caps.visible  # COCO photos
    shown = [u["visible"] for u in app.gap_inputs_shown("generated scenes")]
    assert shown == [True, False, False]
    assert [u["visible"] for u in app.gap_inputs_shown("my images and captions")] == [False, True, True]
    assert [u["visible"] for u in app.gap_inputs_shown("COCO photos")] == [False, False, False]


def test_10_the_offline_world_header_says_it_knows_only_its_shapes():
    from zsc_core.display import labels

    for name in ("offline-world", "offline-world-maccap", "maccap-authors"):
        assert "only the generated world's 14 shapes" in labels(name).header
    assert "generated world" not in labels("photo").header


def test_11_the_ask_tab_reads_the_caption_the_caption_tab_shows(tiny_presets, monkeypatch):
    from zsc_core.models import ModelCache
    from zsc_core.service import CaptionService
    from zsc_core.settings import set_defaults
    from zsc_core.vqa_service import AnswerService

    set_defaults(str(tiny_presets / "tipcap-s4-offline-world.safetensors"), samples=4)
    models = ModelCache()
    service = CaptionService(models)
    answers = AnswerService(models, service.memo)
    image = _scene(7)
    shown = service.caption(image, "offline-world")
    cap = models.captioner("offline-world")
    calls = []
    real = cap.caption
    monkeypatch.setattr(cap, "caption", lambda *a, **k: calls.append(k) or real(*a, **k))
    asked = answers.answer_image(image, "what shape is it?", "offline-world")
    assert asked.caption == shown.caption and calls == []  # read, not decoded again
    other = _scene(8)
    fresh = answers.answer_image(other, "what shape is it?", "offline-world")  # not captioned yet: the served one
    assert fresh.caption == service.caption(other, "offline-world").caption and len(calls) == 1




def test_12_a_recaption_reads_the_caption_the_caption_tab_showed_as_its_rough_caption(tiny_presets, monkeypatch):
    """Caption, then re-caption with a prompt: the rough caption is the one shown (kept with what it read), not
    decoded again, and the refinement is what a service that never showed it writes."""
    from zsc_core.models import ModelCache
    from zsc_core.service import CaptionService
    from zsc_core.settings import set_defaults

    set_defaults(str(tiny_presets / "tipcap-s4-offline-world.safetensors"), samples=4)
    service = CaptionService(ModelCache())
    image, prompt = _scene(7), "An image contains a red circle"
    shown = service.caption(image, "offline-world")
    cap = service.models.captioner("offline-world")
    calls = []
    real = cap.caption
    monkeypatch.setattr(cap, "caption", lambda *a, **k: calls.append(k) or real(*a, **k))
    refined = service.caption(image, "offline-world", prompt=prompt)
    assert calls == [] and refined.rough_caption == shown.caption  # read from what the Caption tab showed
    fresh = CaptionService(service.models).caption(image, "offline-world", prompt=prompt)  # nothing shown before
    assert len(calls) == 1  # it decoded its rough caption
    assert (fresh.caption, fresh.rough_caption, fresh.retrieved) == (refined.caption, refined.rough_caption,
                                                                     refined.retrieved)
    other = service.caption(image, "offline-world", prompt=prompt, seed=3)  # other settings: decoded for them
    assert len(calls) == 2 and other.rough_caption == service.caption(image, "offline-world", seed=3).caption
