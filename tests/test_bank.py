"""The caption bank and consensus reranking: the maths on hand-computed tensors, the bank file, and the facade."""

import difflib
import json
import os

import pytest
import torch
import torch.nn.functional as F

from zsc_core import world
from zsc_core.bank import BankConfig, CaptionBank, attach_bank, dequantize_rows, load_bank, quantize_rows, save_bank
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import CheckpointError, file_fingerprint, read_metadata, save_checkpoint
from zsc_core.encode import ClipSpec, PreprocessCfg, save_clip
from zsc_core.lm import LMSpec, load_lm
from zsc_core.sampling import consensus_scores, mix_features, rerank
from zsc_core.settings import settings_path, ship
from zsc_core.towers import load_clip

from .test_captioner import SMALL, TINY_CLIP_CFG, make_tiny_clip


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _settings(weights_path: str) -> dict:
    """The inference settings JSON beside an adaptor's weights, as stored."""
    return json.loads(_read(settings_path(weights_path)))


def _img(i=0, size=64):
    return world.render(world.make_scene(0, "eval", i), size)


def test_consensus_is_the_mean_cosine_with_the_neighbours():
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    nb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    # by hand: candidate 0 -> (1 + 0 + 0.8) / 3 = 0.6; candidate 1 -> (0.6 + 0.8 + 0.96) / 3 = 0.78666...
    assert consensus_scores(texts, nb).tolist() == pytest.approx([0.6, 2.36 / 3])


def test_consensus_ranking_overrules_the_clip_score_and_keeps_it_for_display():
    img = torch.tensor([1.0, 0.0])
    feats = F.normalize(torch.tensor([[1.0, 0.1], [0.3, 1.0], [0.3, 1.0]]), dim=-1)
    nb = torch.tensor([[0.0, 1.0], [0.6, 0.8]])  # the neighbours agree with the second text
    by_clip = rerank(["near", "agreed", "agreed"], feats, img)
    by_consensus = rerank(["near", "agreed", "agreed"], feats, img, nb)
    assert [c.text for c in by_clip] == ["near", "agreed"] and by_clip[0].consensus is None
    assert [c.text for c in by_consensus] == ["agreed", "near"]
    top = by_consensus[0]
    assert top.count == 2 and top.score == top.consensus
    assert top.consensus == pytest.approx(float(feats[1] @ nb.mean(0)))
    assert top.clip_score == pytest.approx(float(feats[1] @ img))  # still reported
    # equal consensus: the CLIP score decides (not the alphabet, which would put "a" first)
    tie = rerank(["a", "b"], F.normalize(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), dim=-1), torch.tensor([0.0, 1.0]),
                 torch.tensor([[1.0, 0.0]]))
    assert tie[0].consensus == pytest.approx(tie[1].consensus) and [c.text for c in tie] == ["b", "a"]


def test_int8_rows_round_trip_within_half_a_step():
    x = F.normalize(torch.randn(50, 24, generator=torch.Generator().manual_seed(0)), dim=-1)
    codes, scale = quantize_rows(x)
    assert codes.dtype == torch.int8 and scale.shape == (50,)
    assert (dequantize_rows(codes, scale) - x).abs().max() <= scale.max() / 2 + 1e-7
    assert codes.abs().amax(dim=1).tolist() == [127] * 50  # each row uses the full range


def test_neighbours_are_the_nearest_rows_and_bf16_codes_agree_with_float_rows():
    g = torch.Generator().manual_seed(1)
    rows = F.normalize(torch.randn(200, 16, generator=g), dim=-1)
    x = F.normalize(rows[[3, 77]] + 0.05 * torch.randn(2, 16, generator=g), dim=-1)
    exact = CaptionBank(BankConfig(size=200), "fp", feats=rows)
    codes, scale = quantize_rows(rows)
    packed = CaptionBank(BankConfig(size=200), "fp", codes=codes, scale=scale)
    assert packed.rows.dtype == torch.bfloat16 and len(packed) == 200 and packed.dim == 16
    for bank in (exact, packed):
        nn = bank.neighbours(x, 5)
        assert nn.shape == (2, 5) and nn[:, 0].tolist() == [3, 77]
    assert exact.neighbours(x, 5).tolist() == (x @ rows.T).topk(5).indices.tolist()
    assert (packed.feats(torch.tensor([[3, 4]])) - rows[[3, 4]][None]).abs().max() < 0.01
    with pytest.raises(ValueError, match="between 1 and"):
        exact.neighbours(x, 0)
    with pytest.raises(ValueError, match="width"):
        exact.neighbours(torch.ones(1, 8), 2)


def test_bank_file_is_self_describing_and_refuses_another_text_encoder(tmp_path):
    rows = F.normalize(torch.randn(30, 8), dim=-1)
    path = str(tmp_path / "bank.safetensors")
    save_bank(path, rows, BankConfig("coco", 30, 15), {"name": "enc (text)", "text_fingerprint": "abc"})
    meta = read_metadata(path)
    assert meta["kind"] == "bank" and meta["config"] == {"corpus": "coco", "size": 30, "max_words": 15}
    bank = load_bank(path, "abc")
    assert bank.neighbours(rows[7:8], 1).item() == 7 and load_bank(path) is bank  # read once, shared
    with pytest.raises(CheckpointError, match="fingerprint abc"):
        load_bank(path, "other")
    with pytest.raises(CheckpointError, match="not found"):
        load_bank(str(tmp_path / "none.safetensors"))


def _captioner_with_bank(tmp_path, n_rows=40):
    """A tiny captioner saved next to its CLIP, and a bank embedded by that CLIP's text tower."""
    clip_path = str(tmp_path / "clip.safetensors")
    save_clip(clip_path, make_tiny_clip(0).model, TINY_CLIP_CFG, PreprocessCfg(image_size=32), "tiny-clip")
    clip = load_clip(ClipSpec(checkpoint=clip_path))
    cap = Captioner.build(clip, load_lm(LMSpec("tiny")), SMALL)
    path = str(tmp_path / "adaptor.safetensors")
    cap.save(path, dtype=None)
    texts = [world.make_scene(0, "corpus", i).captions[0] for i in range(n_rows)]
    bank_path = str(tmp_path / "bank.safetensors")
    save_bank(bank_path, clip.encode_text(texts).float(), BankConfig("world", n_rows),
              {"name": "tiny (text)", "text_fingerprint": clip.text_fingerprint})
    return cap, path, bank_path


def test_attached_bank_ranks_by_consensus_and_loads_on_first_use(tmp_path):
    cap, path, bank_path = _captioner_with_bank(tmp_path)
    before = file_fingerprint(path)
    attach_bank(path, bank_path, k=6)
    assert file_fingerprint(path) == before  # the weights file is not touched
    doc = _settings(path)
    assert doc["bank"] == "bank.safetensors"  # relative to the adaptor's folder
    assert doc["ranking"]["rerank"] == "consensus" and doc["retrieval"]["mix_k"] == 6
    loaded = Captioner.from_pretrained(path)
    assert isinstance(loaded._bank, str)  # not read at load time (the app's start-up)
    r = loaded.caption(_img(1), samples=8, max_new_tokens=5)
    assert isinstance(loaded._bank, CaptionBank)
    assert all(c.consensus is not None for c in r.candidates)
    cons = [c.consensus for c in r.candidates]
    assert cons == sorted(cons, reverse=True) and r.caption == r.candidates[0].text
    # the consensus is the mean cosine with the image's 6 nearest bank rows, recomputed here by hand
    img = loaded.clip.image_features(loaded.clip.pixels([_img(1)])).global_feat.float()
    bank = load_bank(bank_path)
    nb = bank.feats(bank.neighbours(img, 6))[0]
    text = loaded.clip.encode_text([r.caption]).float()[0]
    assert r.candidates[0].consensus == pytest.approx(float((nb @ text).mean()), abs=1e-5)
    assert r.to_dict()["candidates"][0]["consensus"] == pytest.approx(r.candidates[0].consensus, abs=1e-6)
    # the same candidates by CLIP score: same texts (same noise), no consensus
    c = loaded.caption(_img(1), samples=8, max_new_tokens=5, rerank="clip")
    assert {x.text for x in c.candidates} == {x.text for x in r.candidates}
    assert all(x.consensus is None for x in c.candidates)
    # saving keeps the bank, relative to the new file; detaching goes back to CLIP ranking
    again = str(tmp_path / "sub" / "again.safetensors")
    loaded.save(again)
    assert _settings(again)["bank"] == "../bank.safetensors"
    attach_bank(path, None)
    assert _settings(path)["bank"] is None
    assert Captioner.from_pretrained(path).caption(_img(1), samples=3, max_new_tokens=4).candidates[0].consensus \
        is None


def test_consensus_without_a_bank_or_an_unknown_ranking_is_a_clear_error(tiny_clip, tiny_lm):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    with pytest.raises(ValueError, match="need a caption bank"):
        cap.caption(_img(0), samples=2, rerank="consensus")
    with pytest.raises(ValueError, match="unknown rerank"):
        cap.caption(_img(0), samples=2, rerank="loudest")


def test_a_bank_of_another_text_encoder_is_refused_when_first_used(tmp_path):
    cap, path, _ = _captioner_with_bank(tmp_path)
    other = str(tmp_path / "other-bank.safetensors")
    save_bank(other, F.normalize(torch.randn(10, cap.clip.embed_dim), dim=-1), BankConfig("x", 10),
              {"name": "another (text)", "text_fingerprint": "0123456789abcdef"})
    attach_bank(path, other, k=3)
    loaded = Captioner.from_pretrained(path)
    with pytest.raises(CheckpointError, match="another text encoder|fingerprint"):
        loaded.caption(_img(0), samples=2)


def test_attach_refuses_a_file_that_is_not_a_bank(tmp_path):
    cap, path, _ = _captioner_with_bank(tmp_path)
    not_bank = str(tmp_path / "x.safetensors")
    save_checkpoint(not_bank, {"w": torch.zeros(1)}, kind="clip", config={})
    with pytest.raises(CheckpointError, match="not a caption bank"):
        attach_bank(path, not_bank)
    with pytest.raises(ValueError, match=">= 1"):
        attach_bank(path, str(tmp_path / "bank.safetensors"), k=0)


def test_shipping_re_bases_the_bank_path_and_refuses_a_missing_bank(tmp_path):
    cap, path, bank_path = _captioner_with_bank(tmp_path)
    attach_bank(path, bank_path, k=4)
    shipped = str(tmp_path / "out" / "deep" / "model.safetensors")
    ship(path, shipped)
    assert _settings(shipped)["bank"] == "../../bank.safetensors"
    assert Captioner.from_pretrained(shipped).caption(_img(2), samples=3, max_new_tokens=4).candidates[0].consensus \
        is not None
    os.remove(bank_path)
    with pytest.raises(CheckpointError, match="caption bank that does not exist"):
        ship(path, str(tmp_path / "other.safetensors"))


def test_cli_rerank_choices_are_the_rerankers():
    from zsc_core.cli import build_parser
    from zsc_core.settings import RERANKERS

    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["caption"]._actions
                  if a.dest == "rerank")
    assert tuple(action.choices) == RERANKERS


def test_consensus_caption_baseline_picks_the_most_agreed_neighbour():
    from zsc_core.bank import consensus_caption

    rows = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.5], [0.8, 0.7], [-1.0, 0.0]]), dim=-1)
    bank = CaptionBank(BankConfig(size=4), "fp", feats=rows)
    # image nearest rows 0, 1, 2 (k=3): row 1 sits between the other two, so it agrees most
    assert consensus_caption(bank, ["a", "b", "c", "d"], F.normalize(torch.tensor([[1.0, 0.2]]), dim=-1), 3) == ["b"]


# -- the prompt term of the ranking (the prompted pass) --------------------------------------------------------

def test_prompt_weight_adds_the_cosine_with_the_prompt_to_the_ranking_score():
    img = torch.tensor([1.0, 0.0])
    feats = F.normalize(torch.tensor([[1.0, 0.2], [0.6, 0.8]]), dim=-1)  # "rough" is nearer the image
    prompt = torch.tensor([0.0, 1.0])  # the prompt says what "named" names
    plain = rerank(["rough", "named"], feats, img, prompt_feat=prompt, prompt_weight=0.0)
    assert [c.text for c in plain] == ["rough", "named"] and plain[0].prompt_score is None
    ranked = rerank(["rough", "named"], feats, img, prompt_feat=prompt, prompt_weight=1.0)
    assert [c.text for c in ranked] == ["named", "rough"]
    # by hand: named 0.6 + 1.0 * 0.8 = 1.4; rough 1/sqrt(1.04) + 0.2/sqrt(1.04) = 1.2/sqrt(1.04) ~ 1.1767
    assert ranked[0].score == pytest.approx(1.4) and ranked[0].prompt_score == pytest.approx(0.8)
    assert ranked[1].score == pytest.approx(1.2 / 1.04 ** 0.5)
    # on top of consensus, not instead of it
    nb = torch.tensor([[1.0, 0.0]])
    both = rerank(["rough", "named"], feats, img, nb, prompt, 0.5)
    assert both[0].score == pytest.approx(both[0].consensus + 0.5 * both[0].prompt_score)


def test_prompted_pass_ranks_with_the_prompt_weight_and_only_there(tiny_clip, tiny_lm):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL, seed=1)
    cap.interactive = True
    prompt = "An image contains red circle."
    plain = cap.caption(_img(3), prompt=prompt, rough="a blue square", samples=10, max_new_tokens=5)
    weighted = cap.caption(_img(3), prompt=prompt, rough="a blue square", samples=10, max_new_tokens=5,
                           prompt_weight=2.0)
    assert {c.text for c in plain.candidates} == {c.text for c in weighted.candidates}  # same samples
    p = cap.clip.encode_text([prompt]).float()[0]
    feats = cap.clip.encode_text([c.text for c in weighted.candidates]).float()
    expected = [c.clip_score + 2.0 * float(f @ p) for c, f in zip(weighted.candidates, feats)]
    assert [c.score for c in weighted.candidates] == pytest.approx(expected, abs=1e-5)
    assert [c.score for c in weighted.candidates] == sorted((c.score for c in weighted.candidates), reverse=True)
    assert all(c.prompt_score is None and c.score == c.clip_score for c in plain.candidates)
    # the weight means nothing without a prompt
    no_prompt = cap.caption(_img(3), samples=10, max_new_tokens=5, prompt_weight=2.0)
    assert all(c.prompt_score is None for c in no_prompt.candidates)


def test_only_adaptors_have_inference_settings(tmp_path):
    from zsc_core import adaptor, settings
    from zsc_core.settings import set_defaults

    # one list of adaptor kinds, the registry in adaptor.py (the settings module keeps no copy)
    assert tuple(adaptor.ADAPTORS) == adaptor.ADAPTOR_KINDS and not hasattr(settings, "ADAPTOR_KINDS")
    not_adaptor = str(tmp_path / "clip.safetensors")
    save_checkpoint(not_adaptor, {"w": torch.zeros(1)}, kind="clip", config={})
    for call in (lambda: set_defaults(not_adaptor, samples=2), lambda: attach_bank(not_adaptor, None)):
        with pytest.raises(CheckpointError, match="not an adaptor checkpoint"):
            call()


def test_changing_a_default_never_rewrites_the_weights_file(tmp_path, capsys):
    """`python -m zsc_core defaults MODEL NAME=VALUE` edits the JSON beside the weights: the weights file keeps its
    bytes (and its mtime), the next load serves the new default, and a bad name or value is refused."""
    from zsc_core.cli import main

    cap, path, _ = _captioner_with_bank(tmp_path)
    before, stamp = file_fingerprint(path), os.stat(path).st_mtime_ns
    json_before = _read(settings_path(path))
    assert main(["defaults", path, "prompt_weight=1.5", "samples=6", "sigma2=none"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ranking"]["prompt_weight"] == 1.5 and shown["decoding"]["samples"] == 6
    assert file_fingerprint(path) == before and os.stat(path).st_mtime_ns == stamp
    changed = [line for line in difflib.unified_diff(json_before.splitlines(), _read(settings_path(path)).splitlines(),
                                                     n=0) if line[:1] in "+-" and line[:3] not in
               ("+++", "---")]
    assert sorted(changed) == sorted(['-    "samples": 20,', '+    "samples": 6,',
                                      '-    "prompt_weight": 0.0', '+    "prompt_weight": 1.5'])  # one line each
    loaded = Captioner.from_pretrained(path)
    assert loaded.config.ranking.prompt_weight == 1.5 and loaded.config.decoding.samples == 6
    for bad in ("loudness=3", "samples=many", "keep_beams=maybe"):  # unknown name, wrong types
        assert main(["defaults", path, bad]) == 2
        assert bad.split("=")[0] in capsys.readouterr().err
    assert file_fingerprint(path) == before and Captioner.from_pretrained(path).config == loaded.config


def test_mix_features_walks_the_arc_from_the_feature_to_the_anchor():
    x, a = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert mix_features(x, a, 0.0).tolist() == [[1.0, 0.0]] and mix_features(x, a, 1.0).tolist() == [[0.0, 1.0]]
    half = 2 ** -0.5  # by hand: normalize(0.5 x + 0.5 a) = (1, 1) / sqrt(2)
    assert mix_features(x, a, 0.5).tolist() == [[pytest.approx(half), pytest.approx(half)]]
    quarter = mix_features(x, a, 0.25)[0]  # normalize(0.75, 0.25)
    assert quarter.tolist() == pytest.approx([0.75 / 0.625 ** 0.5, 0.25 / 0.625 ** 0.5])
    # the anchor broadcasts over region tokens: (B, N, D) with (B, 1, D)
    regions = F.normalize(torch.randn(2, 3, 2), dim=-1)
    assert torch.allclose(mix_features(regions, a[None].expand(2, 1, 2), 1.0), a.expand(2, 3, 2))


def _adaptor_inputs(cap):
    seen = []
    cap.adaptor.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def test_bank_mix_feeds_the_adaptor_the_mean_of_the_nearest_bank_captions(tmp_path):
    cap, path, bank_path = _captioner_with_bank(tmp_path)
    attach_bank(path, bank_path, k=4)
    loaded = Captioner.from_pretrained(path)
    seen = _adaptor_inputs(loaded)
    img = loaded.clip.image_features(loaded.clip.pixels([_img(2)])).global_feat.float()
    bank = load_bank(bank_path)
    anchor = F.normalize(bank.feats(bank.neighbours(img, 4))[0].mean(0), dim=-1)
    full = loaded.caption(_img(2), samples=1, bank_mix=1.0, max_new_tokens=4)
    # MacCap reads N_cr region tokens; at bank_mix=1 (no noise at S=1) every one of them is the anchor
    assert seen[-1].shape == (1, SMALL.n_cr, cap.clip.embed_dim)
    assert torch.allclose(seen[-1][0], anchor.expand(SMALL.n_cr, -1), atol=1e-5)
    loaded.caption(_img(2), samples=1, bank_mix=0.0, max_new_tokens=4)
    plain = seen[-1][0]
    assert not torch.allclose(plain, anchor.expand(SMALL.n_cr, -1), atol=1e-3)  # the image's own regions
    loaded.caption(_img(2), samples=1, bank_mix=0.5, max_new_tokens=4)
    assert torch.allclose(seen[-1][0], mix_features(plain, anchor, 0.5), atol=1e-5)
    # the candidates are still ranked as the checkpoint says: by consensus with the same neighbours
    assert full.candidates[0].consensus is not None
    # mixing with the bank keeps CLIP ranking when asked for it
    assert loaded.caption(_img(2), samples=2, bank_mix=0.5, rerank="clip",
                          max_new_tokens=4).candidates[0].consensus is None


def test_bank_mix_needs_a_bank_and_a_weight_between_0_and_1(tmp_path, tiny_clip, tiny_lm):
    with pytest.raises(ValueError, match="need a caption bank"):
        Captioner.build(tiny_clip, tiny_lm, SMALL).caption(_img(0), samples=1, bank_mix=0.5)
    cap, path, bank_path = _captioner_with_bank(tmp_path)
    attach_bank(path, bank_path, k=2)
    loaded = Captioner.from_pretrained(path)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            loaded.caption(_img(0), samples=1, bank_mix=bad)


def test_cli_bank_mix_reaches_the_captioner_and_bad_values_are_one_line_errors(tmp_path):
    from .test_captioner import _cli

    cap, path, bank_path = _captioner_with_bank(tmp_path)
    img = tmp_path / "scene.png"
    _img(3).save(img)
    no_bank = _cli("caption", str(img), "--model", path, "--samples", "1", "--bank-mix", "0.5")
    assert no_bank.returncode == 2 and "need a caption bank" in no_bank.stderr and "Traceback" not in no_bank.stderr
    attach_bank(path, bank_path, k=3)
    bad = _cli("caption", str(img), "--model", path, "--samples", "1", "--bank-mix", "2")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr and "Traceback" not in bad.stderr
    bad_k = _cli("caption", str(img), "--model", path, "--samples", "1", "--rerank-k", "-2")
    assert bad_k.returncode == 2 and "rerank_k >= 0" in bad_k.stderr and "Traceback" not in bad_k.stderr
    ok = _cli("caption", str(img), "--model", path, "--samples", "2", "--bank-mix", "1", "--rerank-k", "5", "--json")
    assert ok.returncode == 0, ok.stderr
    assert "consensus" in json.loads(ok.stdout.strip().splitlines()[0])["candidates"][0]


def test_build_bank_keeps_a_bank_file_whose_rows_are_unchanged(tmp_path):
    from train.build_bank import same_rows

    rows = F.normalize(torch.randn(12, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    path = str(tmp_path / "bank.safetensors")
    assert not same_rows(path, CaptionBank(BankConfig(size=12), "fp", feats=rows))  # no file yet
    save_bank(path, rows, BankConfig("c", 12), {"name": "enc (text)", "text_fingerprint": "fp"})
    codes, scale = quantize_rows(rows)
    assert same_rows(path, CaptionBank(BankConfig(size=12), "fp", codes=codes, scale=scale))
    assert not same_rows(path, CaptionBank(BankConfig(size=12), "other", codes=codes, scale=scale))
    moved = codes.clone()
    moved[0, 0] += 1
    assert not same_rows(path, CaptionBank(BankConfig(size=12), "fp", codes=moved, scale=scale))


def test_a_later_bank_sweep_keeps_the_previous_setting_unless_most_seeds_prefer_its_best_row():
    from train.build_bank import prevails

    incumbent = {"mix_k": 50, "S_CIDEr": [0.544, 0.573, 0.562, 0.612]}
    # the mix-k sweep of results/bank_photo.md: a higher mean (0.576 vs 0.573) from two seeds of four
    split = {"mix_k": 300, "S_CIDEr": [0.543, 0.569, 0.570, 0.624]}
    assert prevails(split, incumbent) is incumbent
    most = {"mix_k": 300, "S_CIDEr": [0.545, 0.500, 0.563, 0.613]}  # ahead on 3 of 4 (the rule reads no mean)
    assert prevails(most, incumbent) is most
    assert prevails(incumbent, incumbent) is incumbent  # a tie is no win
    with pytest.raises(ValueError):  # rows scored on different numbers of seeds are not compared
        prevails({"S_CIDEr": [0.6, 0.6]}, incumbent)


def test_settings_added_later_change_a_fingerprint_only_when_they_leave_their_defaults(tmp_path):
    """Older benchmark rows stay cached when a new setting appears at its default (train.cache_keys.LATER_FIELDS)."""
    from train.cache_keys import model_fingerprint
    from zsc_core.settings import set_defaults

    _, path, _ = _captioner_with_bank(tmp_path)
    before = model_fingerprint(path)
    set_defaults(path, region_k=20, entities=False)  # the new settings at their defaults: same key
    assert model_fingerprint(path) == before
    set_defaults(path, region_k=7)
    assert model_fingerprint(path) != before
    set_defaults(path, region_k=20, entity_min=2)
    assert model_fingerprint(path) != before
    set_defaults(path, entity_min=4, faces=False, evidence_pool=3000)  # pixel evidence (#53), at its defaults
    assert model_fingerprint(path) == before
    set_defaults(path, faces=True)
    assert model_fingerprint(path) != before


def test_a_run_that_spells_out_its_settings_keeps_its_fingerprint_when_a_default_moves(tmp_path):
    """The benchmark caches a row under its weights and effective settings (train.cache_keys.setting_fingerprint)."""
    from train.cache_keys import setting_fingerprint
    from zsc_core.settings import set_defaults

    _, path, _ = _captioner_with_bank(tmp_path)
    set_defaults(path, samples=20, num_beams=5, keep_beams=True)  # the `photo` defaults before they moved
    spelled = setting_fingerprint(path, samples=20, num_beams=5, keep_beams=True)
    relying = setting_fingerprint(path, samples=20)
    assert spelled == relying
    set_defaults(path, samples=8, num_beams=1, keep_beams=False)  # the CPU setting becomes the defaults
    assert setting_fingerprint(path, samples=20, num_beams=5, keep_beams=True) == spelled
    assert setting_fingerprint(path, samples=20) != relying  # it relied on the moved default: re-run
    # with one beam, keeping "every" hypothesis is the same run
    assert setting_fingerprint(path, num_beams=1, keep_beams=True) == setting_fingerprint(path, num_beams=1)


def test_a_setting_that_changes_only_answers_leaves_every_caption_key_as_it_was(tmp_path):
    """``answering.lm_examples`` changes what the LM reads for a question, never a caption: setting it re-runs no
    cached caption row; a setting that does change answers and is keyed (exist_share) still changes the keys."""
    from train.cache_keys import model_fingerprint, setting_fingerprint
    from zsc_core.settings import set_defaults

    _, path, _ = _captioner_with_bank(tmp_path)
    before = model_fingerprint(path), setting_fingerprint(path, samples=4), setting_fingerprint(path, samples=1)
    set_defaults(path, lm_examples=True)
    assert (model_fingerprint(path), setting_fingerprint(path, samples=4), setting_fingerprint(path, samples=1)) \
        == before
    set_defaults(path, exist_share=0.3)
    assert model_fingerprint(path) != before[0] and setting_fingerprint(path, samples=4) != before[1]


def test_a_noisy_run_is_keyed_under_per_image_noise_and_a_noise_free_one_keeps_its_key(tmp_path):
    """Issue #52: captions that draw noise changed when each image got its own generator, so their cached rows
    re-run; S=1 captions did not change, so theirs stay cached."""
    import hashlib
    import json

    from train.cache_keys import NOISE_PROTOCOL, noise_key, setting_fingerprint
    from zsc_core.checkpoint import file_fingerprint
    from zsc_core.settings import CaptionConfig, read_settings

    _, path, _ = _captioner_with_bank(tmp_path)
    assert noise_key(path, samples=4) == [NOISE_PROTOCOL] and noise_key(path, samples=1) == []
    assert noise_key(path, samples=1, noise_single=True) == [NOISE_PROTOCOL]

    def old_key(**flat):  # the key as it was computed before per-image noise
        s = read_settings(path)
        defaults = CaptionConfig().flat()
        later = {"region_k", "weighting", "temperature", "entities", "entity_k", "entity_min", "max_entities",
                 "guide_weight", "guide_k", "guide_order"}
        since = {"faces", "bodies", "count_people", "evidence_pool", "face_prob", "body_score",  # added later (#53)
                 "crop_weight", "crop_grow",
                 "evidence_answers", "answer_k", "exist_share", "count_faces",  # (#54)
                 "draft_tokens", "bank_vocab",  # (#55)
                 "min_new_tokens",  # (#53, fourth session)
                 "lm_examples"}  # (#54, seventh session)
        eff = {k: v for k, v in s.config.replace(**flat).flat().items()
               if k not in since and (k not in later or v != defaults[k])}
        eff["keep_beams"] = eff["keep_beams"] if eff["num_beams"] > 1 else False
        bank = os.path.relpath(s.bank, os.path.dirname(path)) if s.bank else None
        doc = json.dumps({"bank": bank, **eff}, sort_keys=True)
        return f"{file_fingerprint(path)}:{hashlib.sha256(doc.encode()).hexdigest()[:16]}"

    # (rows of a float32 LM: a bf16 one has its own keys, test_a_row_captioned_with_a_bf16_lm_...)
    assert setting_fingerprint(path, lm_dtype="float32", samples=1) == old_key(samples=1)
    assert setting_fingerprint(path, lm_dtype="float32", samples=4) != old_key(samples=4)


def test_one_setting_is_served_everywhere_and_a_per_device_layer_is_refused(tmp_path):
    """The JSON's defaults are what the app (CPU and GPU), `caption` and `evaluate` serve; `defaults` changes them
    without touching the weights; a settings file with a per-device "served" layer (removed, issue #52) is a clear
    error rather than silently ignored."""
    import json

    from zsc_core.cli import build_parser, main
    from zsc_core.settings import read_settings, settings_path

    _, path, _ = _captioner_with_bank(tmp_path)
    before = file_fingerprint(path)
    assert main(["defaults", path, "samples=8", "num_beams=1"]) == 0
    s = read_settings(path)
    assert (s.config.decoding.samples, s.config.decoding.num_beams) == (8, 1) and file_fingerprint(path) == before
    assert Captioner.from_pretrained(path).effective().decoding.samples == 8
    with pytest.raises(SystemExit):  # no per-device flag any more
        build_parser().parse_args(["defaults", "--device", "cuda", path, "samples=20"])
    with open(settings_path(path)) as f:
        doc = json.load(f)
    doc["served"] = {"cuda": {"samples": 20}}
    with open(settings_path(path), "w") as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match="served"):
        read_settings(path)

def test_a_row_captioned_with_a_bf16_lm_is_cached_apart_from_a_float32_one(tmp_path):
    """A benchmark row's key names the LM's dtype where it is not float32 (train.cache_keys.precision), so a row
    made on a bf16-capable CPU is never read as a float32 one; float32 keys are as they were before the dtype
    entered them."""
    from train.cache_keys import model_fingerprint, precision, setting_fingerprint

    _, path, _ = _captioner_with_bank(tmp_path)
    assert precision("float32") == {} and precision("bfloat16") == {"lm_dtype": "bfloat16"}
    assert setting_fingerprint(path, lm_dtype="float32") != setting_fingerprint(path, lm_dtype="bfloat16")
    assert model_fingerprint(path, "float32") != model_fingerprint(path, "bfloat16")
    auto = "bfloat16" if precision("auto") else "float32"  # as this machine resolves it
    assert setting_fingerprint(path, samples=3) == setting_fingerprint(path, lm_dtype=auto, samples=3)


def test_a_models_lm_dtype_lives_in_its_settings_and_survives_changes_of_the_others(tmp_path, monkeypatch):
    """``lm_dtype`` is a top-level field of NAME.inference.json (settings.InferenceSettings): kept when a default
    changes or a bank is attached, written only where it is not float32, refused when it is not a dtype we serve;
    a bf16 model's rows are keyed as bf16 on a CPU that computes it (its own precision), as float32 elsewhere."""
    import json

    from train.cache_keys import model_fingerprint
    from zsc_core import device
    from zsc_core.bank import attach_bank, recorded_bank
    from zsc_core.settings import read_settings, set_defaults, settings_path

    _, path, bank_path = _captioner_with_bank(tmp_path)
    with open(settings_path(path)) as f:
        doc = json.load(f)
    assert "lm_dtype" not in doc and read_settings(path).lm_dtype == "float32"
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    with open(settings_path(path), "w") as f:
        json.dump({**doc, "lm_dtype": "bfloat16"}, f)
    set_defaults(path, samples=3)
    attach_bank(path, bank_path, k=7)
    s = read_settings(path)
    assert (s.lm_dtype, s.config.decoding.samples, s.config.retrieval.mix_k) == ("bfloat16", 3, 7)
    assert recorded_bank(path) == os.path.abspath(bank_path)
    fp32_key = model_fingerprint(path, "float32")
    assert model_fingerprint(path) == model_fingerprint(path, "bfloat16") != fp32_key
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert model_fingerprint(path) == fp32_key  # float32 here: the float32 rows' key
    with open(settings_path(path), "w") as f:
        json.dump({**doc, "lm_dtype": "int4"}, f)
    with pytest.raises(ValueError, match="lm_dtype 'int4'"):
        read_settings(path)
