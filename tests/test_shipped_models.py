"""Every trained adaptor shipped in checkpoints/ loads through the facade (with the CLIP and LM it names) and
captions held-out scenes of the offline world with sentences about the world."""

import glob
import os

import pytest

from zsc_core import world
from zsc_core.captioner import ADAPTOR_KINDS, Captioner
from zsc_core.checkpoint import read_metadata
from zsc_core.presets import DEFAULT_PRESET, PRESETS, checkpoints_dir

SHIPPED = sorted(p for p in glob.glob(os.path.join(checkpoints_dir(), "**", "*.safetensors"), recursive=True)
                 if read_metadata(p)["kind"] in ADAPTOR_KINDS)
WORLD_WORDS = set(world.KINDS) | set(world.PLURALS.values()) | set(world.COLORS)


def test_the_default_preset_is_shipped():
    assert os.path.isfile(PRESETS[DEFAULT_PRESET].checkpoint_path())


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, checkpoints_dir()) for p in SHIPPED])
def test_shipped_adaptor_captions_the_world(path):
    assert os.path.getsize(path) < 40 * 2 ** 20  # fp16, trainable weights only
    cap = Captioner.from_pretrained(path)
    scenes = [world.make_scene(0, "eval", i) for i in range(6)]
    results = cap.caption([world.render(s, 128) for s in scenes], samples=4)
    for r in results:
        assert r.caption and r.candidates and r.regions
    # A trained captioner talks about the world: most captions name an object kind or colour of the world...
    named = [bool(WORLD_WORDS & set(r.caption.replace(",", " ").split())) for r in results]
    assert sum(named) >= 5, [r.caption for r in results]
    # ...and some name an object that really is in the scene.
    hits = sum(any(o.kind in r.caption for o in s.objects) for s, r in zip(scenes, results))
    assert hits >= 2, [(r.caption, [o.kind for o in s.objects]) for s, r in zip(scenes, results)]


@pytest.mark.slow
def test_shipped_prompt_model_follows_the_prompt():
    """The default preset's interactive-prompt model: prompting an object of the scene that the rough caption
    (the preset's own, as in the app) left out makes the refined caption name it in most cases."""
    path = PRESETS[DEFAULT_PRESET].prompt_checkpoint_path()
    assert os.path.isfile(path), "the default preset ships an interactive-prompt model"
    base = Captioner.from_pretrained(DEFAULT_PRESET)
    cap = Captioner.from_pretrained(path, clip=base.clip, lm=base.lm)
    assert cap.interactive
    scenes = [s for s in world.iter_scenes(0, "eval", 40) if len({o.kind for o in s.objects}) >= 2][:12]
    followed = 0
    for s in scenes:
        rough = base.caption(world.render(s, 128), samples=1).caption
        missing = [o.kind for o in s.objects if o.kind not in rough] or [s.objects[-1].kind]
        r = cap.caption(world.render(s, 128), prompt=f"An image contains {missing[0]}", rough=rough, samples=1)
        assert r.rough_caption == rough and r.prompt
        followed += missing[0] in r.caption
    assert followed >= len(scenes) // 2, followed
