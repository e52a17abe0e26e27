"""The shipped offline-world CLIP: it loads by preset and understands the world it was trained on."""

import pytest
import torch

from zsc_core import world
from zsc_core.presets import PRESETS
from zsc_core.towers import load_clip


def _clip():
    return load_clip(PRESETS["offline-world"].clip_spec())


def test_shipped_clip_is_small_and_self_describing():
    import os

    from zsc_core.checkpoint import read_metadata

    path = PRESETS["offline-world"].clip_spec().checkpoint
    assert os.path.getsize(path) < 25 * 2 ** 20  # fp16, a few MB
    meta = read_metadata(path)
    assert meta["kind"] == "clip" and meta["config"]["name"] == "offline-world-clip"
    assert meta["config"]["preprocess"]["image_size"] == meta["config"]["open_clip"]["vision_cfg"]["image_size"]


def test_ranks_the_right_caption_first_for_fixed_scenes():
    clip = _clip()
    scenes = [world.make_scene(0, "eval", i) for i in (0, 1, 2, 3, 5, 8)]
    img = clip.encode_image(clip.pixels([world.render(s, 128) for s in scenes]))
    # The caption naming the most objects of each scene, so that it identifies the scene among the others.
    caps = [max(s.captions, key=lambda c: sum(o.kind in c for o in s.objects)) for s in scenes]
    sim = img @ clip.encode_text(caps).T
    assert (sim.argmax(1) == torch.arange(len(scenes))).float().mean().item() >= 5 / 6
    assert (sim.argmax(0) == torch.arange(len(scenes))).float().mean().item() >= 5 / 6


def test_knows_colours_and_kinds():
    clip = _clip()
    scenes = []
    i = 0
    while len(scenes) < 40:
        s = world.make_scene(0, "eval", 5000 + i)
        i += 1
        if len(s.objects) == 1:
            scenes.append(s)
    img = clip.encode_image(clip.pixels([world.render(s, 128) for s in scenes]))
    colors = list(world.COLORS)
    hits = 0
    for j, s in enumerate(scenes):
        t = clip.encode_text([f"a {c} {s.objects[0].kind}" for c in colors])
        hits += colors[int((img[j] @ t.T).argmax())] == s.objects[0].color
    assert hits / len(scenes) > 0.6  # chance is 1/9


@pytest.mark.heavy  # t-SNE over hundreds of scenes: ~1 min
def test_gap_cli_writes_table_and_figures(tmp_path):
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "zsc_core", "gap", "--n", "40", "--tsne-n", "30", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    table = json.loads((tmp_path / "gap_table.json").read_text())
    assert table["n_pairs"] == 40 and 0 <= table["share_subregion_closer"] <= 1
    # The gap is visible: matched pairs are far from identical, and the two modalities' centroids apart.
    assert table["global"]["paired_cos_mean"] < 0.9 and table["global"]["centroid_distance"] > 0.1
    for f in ("gap_histograms.png", "gap_tsne.png"):
        assert (tmp_path / f).stat().st_size > 10_000
