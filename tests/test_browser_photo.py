"""The shipped app (the default `photo` preset, real weights) in headless Chromium: every panel says what produced
it. The labels follow the preset, an example captions on click, the nearest human-written caption stands beside
the generated one, and the VQA tab answers a photo from VQAv2's answers."""

import os

import pytest

from .conftest import shipped_app
from .test_browser import CHROMIUM, _shot, _textbox, browser_page

pytestmark = [pytest.mark.browser, pytest.mark.smoke,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with browser_page(shipped_app(tmp_path_factory), height=1300, timeout_ms=120_000) as pg:
        yield pg


def test_clicking_an_example_shows_its_caption_and_the_nearest_human_caption(page):
    from playwright.sync_api import expect

    page.locator("#examples tbody tr").first.click()
    caption = _textbox(page, "Caption")
    page.wait_for_function("el => el.value.length > 0", arg=caption.element_handle())
    retrieved = page.locator("#retrieved textarea")
    page.wait_for_function("el => el.value.length > 0", arg=retrieved.element_handle())
    assert retrieved.input_value() != caption.input_value()
    expect(page.locator("#candidates")).to_contain_text("bridge cosine")
    expect(page.locator("#candidates")).to_contain_text("CIDEr-D vs 300 nearest captions")
    expect(page.locator("#info")).not_to_contain_text("N_cr")  # the photo model does not read subregions
    _shot(page, "browser_photo_example.png")


def test_the_labels_follow_the_preset(page):
    from playwright.sync_api import expect

    header = page.locator("#model-header")
    expect(header).to_contain_text("bridge")
    expect(header).not_to_contain_text("CLIP")
    expect(page.get_by_text("numbered by CAM saliency")).to_be_visible()
    scene = page.get_by_role("button", name="Random offline-world scene (for the offline-world models)")
    expect(scene).to_be_hidden()
    page.get_by_label("Model (the Models tab says what each knows)").click()
    page.get_by_role("option", name="offline-world-maccap").click()
    expect(header).to_contain_text("CLIP")
    expect(page.get_by_text("numbered by CLS attention")).to_be_visible()
    expect(scene).to_be_visible()
    expect(page.locator("#retrieved")).to_be_hidden()  # no caption bank: nothing retrieved to show
    _shot(page, "browser_labels_offline.png")
    page.get_by_label("Model (the Models tab says what each knows)").click()
    page.get_by_role("option", name="photo", exact=True).click()
    expect(header).to_contain_text("bridge")


def test_the_vqa_tab_answers_a_photo_from_vqav2s_answers(page):
    from playwright.sync_api import expect

    from zsc_core.vqa import answer_vocabulary

    page.get_by_role("tab", name="Caption").click()
    page.locator("#examples tbody tr").first.click()  # an image, and its caption
    caption = _textbox(page, "Caption")
    page.wait_for_function("el => el.value.length > 0", arg=caption.element_handle())
    page.get_by_role("tab", name="Ask (VQA)").click()
    _textbox(page, "Question").fill("What animal is this?")
    page.get_by_role("button", name="Answer", exact=True).click()
    answer = _textbox(page, "Answer")
    page.wait_for_function("el => el.value.length > 0", arg=answer.element_handle())
    assert answer.input_value() in set(answer_vocabulary("vqav2"))
    assert answer.input_value() not in ("yes", "no")  # not a yes/no question
    read = _textbox(page, "The caption it read")
    how = _textbox(page, "How it answered").input_value()
    if how.startswith("From the evidence"):  # answered from the nearest captions: no caption was read, none shown
        expect(read).to_be_hidden()
    else:  # the LM read the Caption tab's caption
        assert read.input_value() == caption.input_value()
    _shot(page, "browser_photo_vqa.png")
    # not a question the evidence answers: the LM reads the caption
    assert _ask(page, "Is it raining?").startswith("The language model wrote")
    expect(read).to_be_visible()
    assert read.input_value() == caption.input_value()  # the Caption tab's caption
    # existence: the evidence answers, no caption is read
    assert _ask(page, "Is there a giraffe?").startswith("From the evidence")
    expect(read).to_be_hidden()


def _ask(page, question: str) -> str:
    """Ask the Ask tab a question; once its answer shows (the "How it answered" box changes: a click while a
    question is pending is dropped), what that box says."""
    how = _textbox(page, "How it answered")
    before = how.input_value()
    _textbox(page, "Question").fill(question)
    page.get_by_role("button", name="Answer", exact=True).click()
    page.wait_for_function("([el, old]) => el.value !== old", arg=[how.element_handle(), before])
    return how.input_value()


def test_the_answer_api_retrieves_from_vqav2s_answers_on_a_photo(page):
    """The same app through gradio_client: /answer on a val-dev photo (the first example)."""
    from gradio_client import Client, handle_file

    from zsc_core.presets import EXAMPLE_PHOTOS, data_dir
    from zsc_core.vqa import answer_vocabulary

    photo = os.path.join(data_dir(), "coco", "val-dev", "images", EXAMPLE_PHOTOS[0])
    client = Client(page.url, verbose=False)
    answer, generated, caption, top = client.predict(handle_file(photo), "Is it raining?", "photo",
                                                     api_name="/answer")
    assert answer in ("yes", "no") and caption and {row[0] for row in top["data"]} == {"yes", "no"}
    answer, _, _, top = client.predict(handle_file(photo), "What is the man riding?", "photo", api_name="/answer")
    vocab = set(answer_vocabulary("vqav2"))
    assert answer in vocab and answer not in ("yes", "no") and all(row[0] in vocab for row in top["data"])
