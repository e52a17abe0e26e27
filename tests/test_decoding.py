"""How each sample's prefix is decoded: beam hypotheses as candidates (keep_beams) and experiments.tune_decoding."""

import json

import pytest
import torch

from zsc_core import world
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import load_checkpoint
from zsc_core.lm import GenerationCfg
from zsc_core.settings import read_settings

from .test_captioner import SMALL, _img, _saved_captioner


def test_generate_returns_every_beam_hypothesis_row_major_best_first(tiny_lm):
    prefix = torch.randn(3, 4, tiny_lm.hidden_size, generator=torch.Generator().manual_seed(1))
    best = tiny_lm.generate(prefix, cfg=GenerationCfg(max_new_tokens=6, num_beams=3))
    every = tiny_lm.generate(prefix, cfg=GenerationCfg(max_new_tokens=6, num_beams=3, num_return=3))
    assert len(best) == 3 and len(every) == 9
    assert every[0::3] == best  # each row's first hypothesis is the one plain beam search returns
    with pytest.raises(ValueError, match="num_return"):
        tiny_lm.generate(prefix, cfg=GenerationCfg(num_beams=2, num_return=3))


def test_keep_beams_ranks_s_times_b_candidates_from_one_generate_call(tiny_clip, tiny_lm, monkeypatch):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    images = [_img(0), _img(1)]
    best = cap.caption(images, samples=4, num_beams=3, max_new_tokens=5)
    calls = []
    real = tiny_lm.model.generate

    def counting(*a, **kw):
        calls.append((kw["inputs_embeds"].shape[0], kw["num_return_sequences"]))
        return real(*a, **kw)

    monkeypatch.setattr(tiny_lm.model, "generate", counting)
    every = cap.caption(images, samples=4, num_beams=3, keep_beams=True, max_new_tokens=5)
    assert calls == [(2 * 4, 3)]  # one call over B * S prefixes, three hypotheses each
    for b, e in zip(best, every):
        assert sum(c.count for c in b.candidates) == 4 and sum(c.count for c in e.candidates) == 12
        assert {c.text for c in b.candidates} <= {c.text for c in e.candidates}  # same noise, more hypotheses
        scores = [c.clip_score for c in e.candidates]
        assert scores == sorted(scores, reverse=True) and e.caption == e.candidates[0].text
        assert e.candidates[0].clip_score >= b.candidates[0].clip_score  # the best of a superset


def test_decoding_names_parse_and_a_bad_one_fails_before_loading():
    from experiments.tune_decoding import main, parse_decoding

    assert parse_decoding("greedy") == (1, False)
    assert parse_decoding("beam3") == (3, False)
    assert parse_decoding("beam4-all") == (4, True)
    for bad in ("beam", "beam0", "beamx-all", "sample"):
        with pytest.raises(ValueError, match="unknown decoding"):
            parse_decoding(bad)
    with pytest.raises(ValueError, match="unknown decoding"):
        main(["preset=/nonexistent.safetensors", "decodings=greedy,top5"])


def test_tune_decoding_scores_each_decoding_per_seed_and_attaches_the_chosen(tmp_path, monkeypatch):
    from experiments.tune_decoding import main
    from train.build_bank import prevails

    _, path = _saved_captioner(tmp_path)
    data = tmp_path / "data"
    world.write_split(str(data / "coco" / "train-paired"), 0, "eval", 4, size=64)
    monkeypatch.setenv("ZSC_DATA", str(data))
    before = load_checkpoint(path).tensors
    report = main([f"preset={path}", "decodings=greedy,beam2-all", "samples=2", "seeds=0,1", "batch=2",
                   f"report={tmp_path / 'out' / 'dec'}", f"attach={path}"])
    rows = report["rows"]
    assert [r["decoding"] for r in rows] == ["greedy", "beam2-all"]
    assert [r["candidates"] for r in rows] == [2, 4] and [r["keep_beams"] for r in rows] == [False, True]
    for r in rows:
        assert len(r["S_CIDEr"]) == 2 and all(0.0 <= x <= 10.0 for x in r["S_CIDEr"])
        assert r["mean_CIDEr"] == pytest.approx(sum(r["S_CIDEr"]) / 2) and r["s_per_photo"] > 0
    expected = prevails(max(rows, key=lambda r: r["mean_CIDEr"]), rows[0])
    assert report["chosen"] == expected["decoding"]
    assert json.loads((tmp_path / "out" / "dec.json").read_text()) == report
    md = (tmp_path / "out" / "dec.md").read_text()
    assert "| beam2-all" in md and f"| {expected['decoding']} (chosen)" in md
    decoding = read_settings(path).config.decoding  # the JSON beside the weights; the weights untouched
    assert (decoding.num_beams, decoding.keep_beams) == (expected["num_beams"], expected["keep_beams"])
    assert {k: v.tolist() for k, v in load_checkpoint(path).tensors.items()} == \
        {k: v.tolist() for k, v in before.items()}
    loaded = Captioner.from_pretrained(path)
    assert loaded.config.decoding == decoding


def test_cli_ranks_every_beam_hypothesis_and_refuses_a_bad_width(tmp_path):
    from .test_captioner import _cli

    _, path = _saved_captioner(tmp_path)
    img = tmp_path / "scene.png"
    _img(2).save(img)
    every = _cli("caption", str(img), "--model", path, "--samples", "2", "--beams", "2", "--keep-beams", "--json")
    assert every.returncode == 0, every.stderr
    assert sum(c["count"] for c in json.loads(every.stdout)["candidates"]) == 4  # S x B
    best = _cli("caption", str(img), "--model", path, "--samples", "2", "--beams", "2", "--json")
    assert best.returncode == 0 and sum(c["count"] for c in json.loads(best.stdout)["candidates"]) == 2
    bad = _cli("caption", str(img), "--model", path, "--beams", "0")
    assert bad.returncode == 2 and "num_beams must be >= 1" in bad.stderr and "Traceback" not in bad.stderr
