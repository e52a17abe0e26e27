"""Zero-shot VQA retrieval and the evaluation CLI, on tiny models."""

import json
import os
import subprocess
import sys

import pytest
import torch

from zsc_core import vqa, world
from zsc_core.captioner import Captioner

from .test_captioner import SMALL, _saved_captioner


class _FakeClip:
    """A text tower that embeds by keyword, so that the retrieval step can be checked by hand."""

    text_fingerprint = "keywords"  # every tower names its text encoder (answer embeddings are cached by it)

    def encode_text(self, texts):
        keys = ["red", "blue", "car", "boat"]
        v = torch.tensor([[float(k in t) for k in keys] + [0.1] for t in texts])
        return torch.nn.functional.normalize(v, dim=-1)


def test_retrieval_picks_the_planted_answer():
    ranks = vqa.rank_answers(_FakeClip(), ["it is red", "a boat, surely"], ["red", "blue", "car", "boat"])
    assert ranks[0][0][0] == "red" and ranks[1][0][0] == "boat"
    assert [a for a, _ in ranks[0]][:1] == ["red"] and len(ranks[0]) == 4
    with pytest.raises(ValueError):
        vqa.rank_answers(_FakeClip(), ["x"], [])


@pytest.mark.parametrize("said,answer", [
    ("The answer is: red", "red"), ("red The answer is: red", "red"), ("It is a star.", "star"),
    ("Answer: two\nQuestion: how many?", "two"), ("blue", "blue"), ("A", "A"), ("  ", ""),
])
def test_clean_answer_keeps_the_answer_itself(said, answer):
    assert vqa.clean_answer(said) == answer


def test_vqa_prompt_format():
    assert vqa.vqa_prompt(" what color is the car? ", "a red car") == \
        "a red car. Question: what color is the car? Answer:"
    assert vqa.vqa_prompt("how many?", None) == "Question: how many? Answer:"
    shown = vqa.vqa_prompt("how many?", "two cats", examples=True)
    assert shown == vqa.ANSWER_EXAMPLES + "two cats. Question: how many? Answer:"
    assert shown.count("Answer: ") == 5 and vqa.ANSWER_EXAMPLES.endswith("\n")  # each example on its own line
    # a yes / no question reads none: after them the LM says no to every one
    assert vqa.vqa_prompt("Is it raining?", "a street", examples=True) == "a street. Question: Is it raining? Answer:"


def test_answer_through_the_facade(tiny_clip, tiny_lm):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    cap.answers = "world"  # a built captioner has no preset: say which vocabulary it answers from
    img = world.render(world.make_scene(0, "eval", 0), 64)
    r = cap.answer(img, "what color is the car?", samples=2)
    assert r.answer in world.ANSWER_VOCAB and r.caption is not None and len(r.ranking) == len(world.ANSWER_VOCAB)
    base = cap.answer(img, "what color is the car?", use_caption=False)
    assert base.caption is None
    with pytest.raises(ValueError, match="empty"):
        cap.answer(img, "   ")


def test_a_loaded_model_answers_from_its_presets_vocabulary(tmp_path, monkeypatch):
    """Issue #52: `Captioner.answer` with no answers given retrieves from the model's own vocabulary: the offline
    world's words for its presets (by name or by path), VQAv2's for the photo presets and any other tower."""
    from zsc_core.presets import PRESETS, answer_vocabulary_of

    from .conftest import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    by_name = Captioner.from_pretrained("offline-world")
    by_path = Captioner.from_pretrained(str(tmp_path / "maccap-offline-world.safetensors"))
    assert by_name.answers == by_path.answers == "world"
    img = world.render(world.make_scene(0, "eval", 0), 64)
    assert len(by_name.answer(img, "what color is the car?", samples=1).ranking) == len(world.ANSWER_VOCAB)
    assert all(answer_vocabulary_of(n, PRESETS[n].clip.name) == "vqav2" for n in PRESETS if n.startswith("photo"))
    assert answer_vocabulary_of("/some/adaptor.safetensors", "ViT-B-16/laion") == "vqav2"


def test_vqa_world_evaluation(tiny_clip, tiny_lm):
    from zsc_core.evaluation import evaluate_vqa_world

    out = evaluate_vqa_world(Captioner.build(tiny_clip, tiny_lm, SMALL), n=4, samples=1)
    assert out["n_questions"] > 4
    for name in ("with_caption", "question_only"):
        assert 0 <= out[name]["top1"] <= out[name]["top5"] <= out[name]["top10"] <= 1


def test_evaluate_cli_on_three_scenes_with_a_broken_image(tmp_path):
    _, model = _saved_captioner(tmp_path)
    data = tmp_path / "w"
    world.write_split(str(data), 0, "eval", 3, size=64)
    (data / "images" / "eval_000001.png").write_bytes(b"broken")
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, "-m", "zsc_core", "evaluate", "--model", model, "--images",
                        str(data / "images"), "--references", str(data / "references.json"), "--samples", "2",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n_images"] == 3 and summary["n_failed"] == 1
    assert "eval_000001.png" in r.stderr and "Traceback" not in r.stderr
    full = json.loads(out.read_text())
    assert full["n_captioned"] == 2 and len(full["images"]) == 2
    m = full["metrics"]
    assert {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"} <= set(m)
    assert isinstance(m["CIDEr"], float) and (isinstance(m["SPICE"], float) or "unavailable" in m["SPICE"])
    missing = subprocess.run([sys.executable, "-m", "zsc_core", "evaluate", "--model", model, "--images",
                              str(tmp_path / "nope"), "--references", str(data / "references.json")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_evaluate_cli_takes_the_folder_world_writes_and_fails_when_too_little_is_captioned(tmp_path):
    """As README suggests: `world --out D` then `evaluate --images D` (images sit in D/images). An evaluation
    that captioned under half of its images exits non-zero with a one-line reason instead of "metrics": {}."""
    _, model = _saved_captioner(tmp_path)
    data = tmp_path / "w"
    world.write_split(str(data), 0, "eval", 3, size=64)
    run = [sys.executable, "-m", "zsc_core", "evaluate", "--model", model, "--samples", "1", "--images", str(data)]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["n_captioned"] == 3 and isinstance(summary["metrics"]["CIDEr"], float)
    assert summary["metrics"]["tokenizer"] and summary["metrics"]["scorers"]["cider"] == "ran"
    for name in ("eval_000000.png", "eval_000001.png"):
        (data / "images" / name).write_bytes(b"broken")
    bad = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "captioned 1 of 3 images" in bad.stderr and "Traceback" not in bad.stderr
    # A model that cannot load (a checkpoint of another format) is one line and exit 2, no traceback.
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    load = subprocess.run([sys.executable, "-m", "zsc_core", "evaluate", "--model", str(junk), "--images",
                           str(data)], capture_output=True, text=True, timeout=300)
    assert load.returncode == 2 and load.stderr.startswith("error: ") and "Traceback" not in load.stderr
    assert len(load.stderr.strip().splitlines()) == 1


def test_cli_default_preset_is_the_registrys():
    from zsc_core import cli, presets

    assert cli.DEFAULT_PRESET == presets.DEFAULT_PRESET


class _Said:
    """A stand-in captioner: writes a fixed caption, or (when prompts are followed) the prompted words."""

    def __init__(self, caption, follows=False):
        self.text, self.follows, self.calls = caption, follows, []

    def caption(self, image, prompt=None, rough=None, samples=None):
        import types

        self.calls.append((prompt, rough))
        text = f"{rough} and {prompt.removeprefix('An image contains ')}" if self.follows and prompt else self.text
        return types.SimpleNamespace(caption=text)


def test_prompt_following_counts_prompted_objects_that_appear():
    from zsc_core.evaluation import evaluate_prompt_following

    base = _Said("a plain background")  # names no object, so every scene is tried
    good = evaluate_prompt_following(_Said("", follows=True), base, n=6)
    assert good["tried"] == 6 and good["followed_phrase"] == good["followed_bare"] == 1.0
    deaf = _Said("a plain background", follows=False)
    assert evaluate_prompt_following(deaf, base, n=6)["followed_bare"] == 0.0
    # Prompts ask for an object of the scene, and the rough caption is the base's.
    asked = [p for p, _ in deaf.calls]
    kinds = {o.kind for s in world.iter_scenes(0, "eval", 6) for o in s.objects}
    assert all(world.kinds_named(p) <= kinds and len(world.kinds_named(p)) == 1 for p in asked)
    assert {r for _, r in deaf.calls} == {"a plain background"}


def test_evaluate_without_flags_scores_the_held_out_photos_at_the_models_served_cpu_setting(tmp_path):
    """`evaluate --model M` alone: the val-dev folder under $ZSC_DATA, the model's defaults (what the app serves on
    CPU), each photo captioned alone as the app does, so every caption is the app's caption of that photo."""
    from zsc_core.images import load_image
    from zsc_core.settings import set_defaults

    _, model = _saved_captioner(tmp_path)
    set_defaults(model, samples=3)
    data = tmp_path / "data"
    world.write_split(str(data / "coco" / "val-dev"), 0, "eval", 3, size=64)
    out = tmp_path / "results.json"
    env = {**os.environ, "ZSC_DATA": str(data)}
    r = subprocess.run([sys.executable, "-m", "zsc_core", "evaluate", "--model", model, "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    full = json.loads(out.read_text())
    assert full["n_captioned"] == 3
    cap = Captioner.from_pretrained(model)
    for im in full["images"]:
        alone = cap.caption(load_image(str(data / "coco" / "val-dev" / "images" / im["file_name"])))
        assert im["caption"] == alone.caption and len(im["candidates"]) == len(alone.candidates)
