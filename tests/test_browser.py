"""The app in a real browser: headless Chromium (Debian's) driven by Playwright.

Uploads a photo, captions it, checks the regions image and the candidates table, re-captions with a prompt,
and opens the modality-gap tab. Screenshots are written to artifacts/ (ZSC_ARTIFACTS) for a person to look at.
"""

import contextlib
import os
import shutil

import pytest

from .conftest import tiny_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed "
                                 "(apt-get install chromium; .ci/run installs it)")]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@contextlib.contextmanager
def browser_page(app, height: int = 1100, timeout_ms: int = 60_000):
    """A headless Chromium page on the app that the context manager ``app`` launches (tiny_app, shipped_app)."""
    from playwright.sync_api import sync_playwright

    with app as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": height})
        pg.set_default_timeout(timeout_ms)
        pg.goto(url)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with browser_page(tiny_app(tmp_path_factory)) as pg:
        yield pg


def _shot(page, name):
    d = os.environ.get("ZSC_ARTIFACTS", os.path.join(os.path.dirname(os.path.dirname(__file__)), "artifacts"))
    os.makedirs(d, exist_ok=True)
    page.screenshot(path=os.path.join(d, name), full_page=True)


def _textbox(page, label):
    return page.get_by_label(label, exact=True)


def test_caption_prompt_and_gap_in_a_browser(page, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photo = tmp_path / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(photo)
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_role("button", name="Caption", exact=True).click()
    caption = _textbox(page, "Caption")
    page.wait_for_function("el => el.value.length > 0", arg=caption.element_handle())
    assert caption.input_value()
    page.locator("#regions img").first.wait_for(state="visible")
    from playwright.sync_api import expect

    expect(page.locator("#candidates")).to_contain_text(caption.input_value())  # the chosen candidate is listed
    expect(page.locator("#candidates")).to_contain_text("✔")
    _shot(page, "browser_caption.png")

    _textbox(page, "Prompt").fill("An image contains motorcycle")
    page.get_by_role("button", name="Re-caption with the prompt").click()
    refined = _textbox(page, "Refined caption (with the prompt)")
    page.wait_for_function("el => el.value.length > 0", arg=refined.element_handle())
    assert _textbox(page, "Rough caption (first pass)").input_value()
    _shot(page, "browser_prompt.png")

    page.get_by_role("tab", name="Modality gap").click()
    page.get_by_role("button", name="Analyse").click()
    page.locator("#gap-hist img").first.wait_for(state="visible", timeout=120_000)
    expect(page.locator("#gap-table")).to_contain_text("subregion")
    _shot(page, "browser_gap.png")


def test_a_broken_upload_shows_a_message_in_the_browser(page, tmp_path):
    """A broken upload gets a message, and the info line of the caption before it is cleared (it described a
    caption that is no longer the one asked for)."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Caption").click()
    good = tmp_path / "good.png"
    from zsc_core import world

    world.render(world.make_scene(0, "eval", 5), 128).save(good)
    page.locator("input[type=file]").first.set_input_files(str(good))
    page.get_by_role("button", name="Caption", exact=True).click()
    expect(page.locator("#info")).to_contain_text("distinct candidates from")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image at all")
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.get_by_role("button", name="Caption", exact=True).click()
    page.get_by_text("not an image").first.wait_for(state="visible")
    assert "Traceback" not in page.content()
    expect(page.locator("#info")).not_to_contain_text("distinct candidates from")
    _shot(page, "browser_error.png")


def test_opening_the_sampling_settings_keeps_the_models_own_noise(page, tmp_path):
    """Opening "Sampling settings" and changing only the beam size must leave noise and N_cr to the model: blank
    fields (a number field once rendered a blank as 0 and sent it, so every sample was noise-free and S samples
    collapsed to one or two captions)."""
    from PIL import Image
    from playwright.sync_api import expect
    from sklearn.datasets import load_sample_image

    photo = tmp_path / "flower.jpg"
    Image.fromarray(load_sample_image("flower.jpg")).save(photo)
    page.get_by_role("tab", name="Caption").click()
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_text("Sampling settings").click()
    beams = page.get_by_label("number input for Beam size per sample")
    beams.fill("2")
    beams.press("Enter")
    assert _textbox(page, "Inference noise σ² (blank: the model's own)").input_value() == ""
    # the default offline-world model (TIPCap) reads the whole-image feature: N_cr is not one of its settings
    expect(_textbox(page, "Subregions N_cr (blank: the model's own)")).to_be_hidden()
    page.get_by_role("button", name="Caption", exact=True).click()
    info = page.get_by_text("distinct candidates from")
    expect(info).to_contain_text("x beam 2", timeout=60_000)  # the new caption: as long as the page's other waits
    expect(info).to_contain_text("(the model's)")
    expect(info).not_to_contain_text(" 0 (the model's)")
    _shot(page, "browser_settings.png")


def test_a_new_upload_clears_the_last_photos_results_in_the_browser(page, tmp_path):
    """Issue #56: after a caption and a re-caption of one photo, uploading another empties every box that
    described the first (the caption, the prompt's two boxes, the info line), and the gap tab shows only the
    settings of the chosen data."""
    from playwright.sync_api import expect

    from zsc_core import world

    page.get_by_role("tab", name="Caption").click()
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    world.render(world.make_scene(0, "eval", 11), 128).save(first)
    world.render(world.make_scene(0, "eval", 12), 128).save(second)
    page.locator("input[type=file]").first.set_input_files(str(first))
    page.get_by_role("button", name="Caption", exact=True).click()
    caption = _textbox(page, "Caption")
    page.wait_for_function("el => el.value.length > 0", arg=caption.element_handle())
    _textbox(page, "Prompt").fill("An image contains star")
    page.get_by_role("button", name="Re-caption with the prompt").click()
    refined = _textbox(page, "Refined caption (with the prompt)")
    page.wait_for_function("el => el.value.length > 0", arg=refined.element_handle())
    page.locator("input[type=file]").first.set_input_files(str(second))
    page.wait_for_function("el => el.value.length === 0", arg=caption.element_handle())
    for box in ("Caption", "Rough caption (first pass)", "Refined caption (with the prompt)"):
        assert _textbox(page, box).input_value() == "", box
    expect(page.locator("#info")).not_to_contain_text("distinct candidates from")
    _shot(page, "browser_new_upload.png")
    page.get_by_role("tab", name="Modality gap").click()
    expect(page.get_by_label("Their captions, one per line, in order")).to_be_hidden()
    page.get_by_text("my images and captions").click()
    expect(page.get_by_label("Their captions, one per line, in order")).to_be_visible()
    page.get_by_test_id("COCO photos-radio-label").click()
    expect(page.get_by_label("Their captions, one per line, in order")).to_be_hidden()
