"""The Gradio app in process: every named endpoint through gradio_client, and bad input that must not hurt it.

Tiny seeded models stand in for the presets ($ZSC_CHECKPOINTS points at a folder of tiny checkpoints named like
the real ones), so these tests exercise the real app code in seconds.
"""

import io
import os

import pytest
from PIL import Image

from zsc_core import world

from .conftest import tiny_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    with tiny_app(tmp_path_factory) as url:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    from gradio_client import handle_file

    return handle_file(str(p))


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


SETTINGS = ["offline-world", 5, "0.016", "4", 1, 0]  # noise and N_cr are text boxes (blank: the model's)


def test_caption_endpoint(client, tmp_path):
    img = _file(tmp_path, "scene.png", _png(world.render(world.make_scene(0, "eval", 2), 128)))
    cap, regions, cands, info, retrieved, rough, refined = client.predict(img, *SETTINGS, api_name="/caption")
    assert isinstance(cap, str) and retrieved == ""  # no caption bank: no retrieved human caption
    assert rough == refined == ""  # a plain caption clears the last prompt's boxes
    assert os.path.isfile(regions) and Image.open(regions).size[0] >= 384  # small images are enlarged
    rows = cands["data"]
    assert rows and rows[0][0] == "✔" and rows[0][1] == cap
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)  # offline-world: CLIP ranking
    # no caption bank: the CLIP score ranks them, one column (it was shown twice, issue #56)
    assert cands["headers"] == ["chosen", "candidate", "CLIP score (ranks)", "count"] and len(rows[0]) == 4
    assert "S=5 x beam 1" in info and "ranked by CLIP score" in info
    assert "σ² 0.016," in info and "the model's" not in info  # the settings it was given
    assert "N_cr" not in info  # TIPCap reads the whole-image feature: N_cr is not one of its settings
    mac_info = client.predict(img, "offline-world-maccap", 5, "0.016", "4", 1, 0, api_name="/caption")[3]
    assert "N_cr 4," in mac_info  # MacCap reads the subregions: the info line says how many
    # Blank noise and N_cr (the UI's defaults, also as spaces or None) mean the model's own settings.
    for blank in ("", "  ", None):
        cap2, _, cands2, info2, *_ = client.predict(img, "offline-world", 3, blank, blank, 2, 0,
                                                    api_name="/caption")
        assert isinstance(cap2, str) and cands2["data"] and "S=3 x beam 2" in info2
        assert "(the model's)" in info2 and " 0 (the model's)" not in info2, info2


def test_gap_on_the_coco_photos(client):
    table, hist, tsne = client.predict("offline-world", "COCO photos", 10, None, "", api_name="/gap")
    assert "subregion" in table and "109 pairs" in table and os.path.isfile(hist) and os.path.isfile(tsne)


def test_recaption_answer_and_gap_endpoints(client, tmp_path):
    img = _file(tmp_path, "scene.png", _png(world.render(world.make_scene(0, "eval", 3), 128)))
    plain, retrieved, rough, refined, regions, cands, info = client.predict(
        img, "An image contains motorcycle", *SETTINGS, api_name="/recaption")
    assert isinstance(rough, str) and isinstance(refined, str) and cands["data"]
    assert plain == rough and retrieved == ""  # this photo's plain caption refilled (issue #56)
    ans, generated, caption, top = client.predict(img, "what color is the car?", "offline-world", api_name="/answer")
    assert ans in world.ANSWER_VOCAB and len(top["data"]) == 5 and top["data"][0][0] == ans
    table, hist, tsne = client.predict("offline-world", "generated scenes", 10, None, "", api_name="/gap")
    assert "subregion" in table and os.path.isfile(hist) and os.path.isfile(tsne)
    scene, refs = client.predict(0, api_name="/random_scene")
    assert os.path.isfile(scene) and len(refs.splitlines()) == 5


def _big_png_bytes() -> bytes:
    im = Image.new("RGB", (10000, 10000), (200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


BAD_UPLOADS = [
    ("truncated.jpg", lambda: _jpeg(world.render(world.make_scene(0, "eval", 0), 256))[:400], "damaged or truncated"),
    ("notes.jpg", lambda: b"just some text, not a picture", "not an image"),
    ("empty.png", lambda: b"", "empty|Please upload"),
]


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("name,make,needle", BAD_UPLOADS)
def test_bad_uploads_give_clear_messages_and_the_app_keeps_serving(client, tmp_path, name, make, needle):
    import re

    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        client.predict(_file(tmp_path, name, make()), *SETTINGS, api_name="/caption")
    assert re.search(needle, str(e.value)), str(e.value)
    assert "Traceback" not in str(e.value)
    ok = _file(tmp_path, "ok.png", _png(world.render(world.make_scene(0, "eval", 5), 64)))
    assert isinstance(client.predict(ok, *SETTINGS, api_name="/caption")[0], str)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "P", "L"])
def test_odd_image_modes_caption(client, tmp_path, mode):
    import numpy as np

    base = world.render(world.make_scene(0, "eval", 6), 96)
    if mode == "I;16":
        im = Image.fromarray((np.asarray(base.convert("L")).astype("uint16") * 250), "I;16")
    else:
        im = base.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
    out = client.predict(_file(tmp_path, "odd." + ("tif" if mode in ("CMYK", "I;16") else "png"), buf.getvalue()),
                         *SETTINGS, api_name="/caption")
    assert isinstance(out[0], str) and out[2]["data"] and out[2]["data"][0][1] == out[0]  # captioned, not refused


def test_huge_tiny_and_animated_images(client, tmp_path):
    for name, data in (("one.png", _png(Image.new("RGB", (1, 1), (9, 9, 9)))), ("huge.png", _big_png_bytes())):
        assert isinstance(client.predict(_file(tmp_path, name, data), *SETTINGS, api_name="/caption")[0], str)
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], loop=0)
    assert isinstance(client.predict(_file(tmp_path, "anim.gif", buf.getvalue()), *SETTINGS,
                                     api_name="/caption")[0], str)


def test_text_inputs_are_checked(client, tmp_path):
    from gradio_client.exceptions import AppError

    img = _file(tmp_path, "s.png", _png(world.render(world.make_scene(0, "eval", 7), 64)))
    with pytest.raises(AppError, match="under 300"):
        client.predict(img, "x" * 10_000, *SETTINGS, api_name="/recaption")
    out = client.predict(img, "Ein Bild enthält ein Motorrad 🏍️ 東京", *SETTINGS, api_name="/recaption")
    assert isinstance(out[1], str)
    with pytest.raises(AppError, match="Please type a question"):
        client.predict(img, "   ", "offline-world", api_name="/answer")
    with pytest.raises(AppError, match="Please upload an image"):
        client.predict(None, "what color is the car?", "offline-world", api_name="/answer")
    with pytest.raises(AppError, match="Please upload an image"):
        client.predict(None, *SETTINGS, api_name="/caption")
    with pytest.raises(AppError, match="at least 3 images"):
        client.predict("offline-world", "my images and captions", 10, [], "", api_name="/gap")
    with pytest.raises(AppError, match="not available"):
        client.predict(img, "real-photo", 5, "0.016", "4", 1, 0, api_name="/caption")
    with pytest.raises(AppError, match="sigma² a number"):
        client.predict(img, "offline-world", 5, "a little", "", 1, 0, api_name="/caption")
    with pytest.raises(AppError, match="between 0 and 1"):
        client.predict(img, "offline-world", 5, "2", "", 1, 0, api_name="/caption")
    with pytest.raises(AppError, match="N_cr must be between 1 and 49"):
        client.predict(img, "offline-world", 5, "", "0", 1, 0, api_name="/caption")


def test_presets_on_the_same_frozen_models_share_them(tmp_path, monkeypatch):
    """Switching between the offline-world presets (and their prompt model) loads one CLIP and one LM in all."""
    from zsc_core.models import ModelCache

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    s = ModelCache()
    tip, mac = s.captioner("offline-world"), s.captioner("offline-world-maccap")
    prompts = s.captioner("offline-world-maccap", prompts=True)
    assert (tip.kind, mac.kind, prompts.interactive) == ("tipcap", "maccap", True)
    assert tip.clip is mac.clip is prompts.clip and tip.lm is mac.lm is prompts.lm
    assert s.captioner("offline-world") is tip  # loaded once
    # A preset on another encoder but the same LM reuses the LM alone.
    from zsc_core.presets import PRESETS

    assert s._frozen_models("real-photo") == (None, None)  # other CLIP, other LM
    same_lm = next(n for n, p in PRESETS.items() if p.clip != PRESETS["offline-world"].clip
                   and p.lm == PRESETS["offline-world"].lm)
    assert s._frozen_models(same_lm) == (None, tip.lm)


def test_an_lm_is_shared_only_between_models_that_run_it_in_the_same_dtype(tmp_path, monkeypatch):
    """A model whose settings ask for a bf16 LM (lm_dtype) gets its own copy on a CPU that computes bf16; the
    float32 models still share one; without bf16 hardware every model shares the float32 LM."""
    import json

    import torch

    from zsc_core import device
    from zsc_core.models import ModelCache
    from zsc_core.presets import PRESETS
    from zsc_core.settings import set_defaults, settings_path

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    path = PRESETS["offline-world"].checkpoint_path()
    set_defaults(path, samples=2)  # writes the JSON
    with open(settings_path(path)) as f:
        doc = json.load(f)
    with open(settings_path(path), "w") as f:
        json.dump({**doc, "lm_dtype": "bfloat16"}, f)
    for bf16_cpu, tip_dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device, "cpu_has_bf16", lambda flag=bf16_cpu: flag)
        s = ModelCache(device="cpu")
        mac, tip = s.captioner("offline-world-maccap"), s.captioner("offline-world")
        prompts = s.captioner("offline-world-maccap", prompts=True)
        assert tip.lm.model.dtype == tip_dtype and mac.lm.model.dtype == prompts.lm.model.dtype == torch.float32
        assert mac.lm is prompts.lm and (tip.lm is mac.lm) == (not bf16_cpu) and tip.clip is mac.clip


def test_a_preset_that_cannot_load_is_reported_and_the_others_keep_serving(tmp_path, monkeypatch):
    """A checkpoint that fails to load (here: trained against another LM) must not kill the app at start-up:
    warm-up says what is wrong, the dropdown drops that preset, the Models tab says why, the rest still caption."""
    from zsc_core.checkpoint import load_checkpoint, save_checkpoint
    from zsc_core.display import status_markdown
    from zsc_core.models import ModelCache
    from zsc_core.service import CaptionService, UserError

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    path = str(tmp_path / "tipcap-s4-offline-world.safetensors")
    ck = load_checkpoint(path)
    save_checkpoint(path, ck.tensors, kind=ck.kind, config=ck.config, clip=ck.clip,
                    lm={**ck.lm, "fingerprint": "0123456789abcdef"})  # "trained against another LM"
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    models = ModelCache()
    s = CaptionService(models)
    problem = models.warm_up("offline-world")
    assert "could not be loaded" in problem and "language model" in problem
    assert "offline-world-maccap" in problem  # ...and which models still work
    names = [n for _, n in models.preset_choices()]
    assert "offline-world" not in names and "offline-world-maccap" in names and "real-photo" not in names
    assert "Failed to load" in status_markdown(models.failed)
    img = world.render(world.make_scene(0, "eval", 1), 64)
    assert s.caption(img, "offline-world-maccap", samples=2).caption is not None
    with pytest.raises(UserError, match="could not be loaded"):
        s.caption(img, "offline-world", samples=2)


def test_the_guidance_weight_is_checked_and_ignored_by_a_model_without_a_caption_bank(tmp_path, monkeypatch):
    """The app's bank-guidance slider: a weight outside [0, 1) is a clear message; for a model without a caption
    bank (its slider is hidden) the weight it still sends changes nothing, rather than failing the request."""
    from zsc_core.service import CaptionService, UserError

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    s = CaptionService()
    img = world.render(world.make_scene(0, "eval", 1), 64)
    for bad in (1.0, -0.1, "much"):
        with pytest.raises(UserError, match="guidance weight"):
            s.caption_request(img, "offline-world", 2, guide_weight=bad)
    assert not s.captioner("offline-world").has_bank
    plain = s.caption(img, "offline-world", samples=2)
    assert s.caption(img, "offline-world", samples=2, guide_weight=0.4).caption == plain.caption
    assert "bank guidance" not in plain.info


def test_app_starts_and_says_why_when_its_default_cannot_load(tmp_path, monkeypatch):
    import importlib
    import sys

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    (tmp_path / "tipcap-s4-offline-world.safetensors").write_bytes(b"broken")
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("ZSC_DEFAULT_PRESET", "offline-world")
    sys.modules.pop("app", None)
    try:
        app = importlib.import_module("app")  # would raise if warm-up let the error escape
        problem = app.startup_problem()
        assert "could not be loaded" in problem and "not a safetensors file" in problem
        assert app.opening_preset() == "offline-world-maccap"  # the model box opens on a preset that works
        note, box, models_tab = app.opened()  # what the page shows once loaded
        assert note["visible"] and problem in note["value"]
        assert box["value"] == "offline-world-maccap" and "offline-world" not in [n for _, n in box["choices"]]
        assert "**offline-world**" in models_tab and "Failed to load here" in models_tab
    finally:
        sys.modules.pop("app", None)


def test_the_page_is_built_while_the_default_loads_and_a_request_waits_for_it(tmp_path, monkeypatch):
    """Start-up does not wait for the weights: app.py is imported (its page built) while the default model is still
    loading in the compute thread; a caption asked meanwhile waits behind the load, then is served."""
    import threading

    from zsc_core.models import ModelCache

    from .conftest import imported_app, make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    release, loading = threading.Event(), threading.Event()
    warm_up = ModelCache.warm_up

    def slow_warm_up(self, name=None):
        loading.set()
        assert release.wait(60)
        return warm_up(self, name)

    monkeypatch.setattr(ModelCache, "warm_up", slow_warm_up)
    with imported_app({"ZSC_CHECKPOINTS": str(tmp_path), "ZSC_DEFAULT_PRESET": "offline-world"}, loaded=False) as app:
        assert loading.wait(60) and not app.STARTUP.done()  # the page exists, the model does not yet
        img = world.render(world.make_scene(0, "eval", 1), 64)
        done, said = [], []
        asker = threading.Thread(target=lambda: done.append(app.caption(  # progress passed as Gradio passes it
            img, "offline-world", 2, None, None, 1, 0, None, lambda *a, desc="": said.append(desc))))
        asker.start()
        asker.join(0.5)
        assert not done  # queued behind the load, and its progress bar says why
        assert said == ["loading the model (the server has just started)"]
        release.set()
        asker.join(120)
        assert app.startup_problem() == "" and done and done[0][0]


def test_the_page_is_built_without_importing_torch(tmp_path):
    """What the page is built from (the presets, their labels and settings, the request limits) needs no torch: in a
    fresh process whose model load never starts, app.py builds its page and torch is not imported. torch, the
    towers and the LM are imported by the load, in the compute thread, while the page is already served."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from concurrent.futures import Future\n"
        "import zsc_core.models as m\n"
        "m.ComputeThread.start = lambda self, fn, *a, **k: Future()  # the load never starts\n"
        "import app\n"
        "assert app.LABELS.header and app.SERVED is not None and app.CHOICES, 'the page was not built'\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["False", "False"]


def test_zerogpu_decorator_wraps_the_gpu_handlers_only(tmp_path, monkeypatch):
    """With a `spaces` module importable (a stub of ZeroGPU's), app.py wraps only the model's work in spaces.GPU
    (captioning, VQA, the gap tab's encoding); the handler still captions, and the sliders start at the setting the
    model serves on this device (its defaults, on CPU)."""
    import importlib
    import sys
    from pathlib import Path

    from zsc_core import world

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    log = tmp_path / "spaces.log"
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("ZSC_DEFAULT_PRESET", "offline-world")
    monkeypatch.setenv("SPACES_STUB_LOG", str(log))
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "space_stub"))
    for m in ("app", "spaces"):
        sys.modules.pop(m, None)
    try:
        app = importlib.import_module("app")
        assert app.spaces is not None and not app.ZERO_GPU  # SPACES_ZERO_GPU unset: models stay where they are
        served = app.service.captioner("offline-world").config.decoding  # its defaults: what it serves on CPU
        assert (served.samples, served.num_beams) == (app.DEFAULT_SAMPLES, app.DEFAULT_BEAMS)
        decorated = {line.split()[1] for line in log.read_text().splitlines() if line.startswith("decorated")}
        assert decorated == {"propose", "answer_image", "gap_features"}
        path = tmp_path / "scene.png"
        world.render(world.make_scene(0, "eval", 1), 64).save(path)
        out = app.caption(str(path), "offline-world", 2, None, None, 1, 0, progress=lambda *a, **k: None)
        assert isinstance(out[0], str) and "called propose" in log.read_text()
    finally:
        for m in ("app", "spaces"):
            sys.modules.pop(m, None)
