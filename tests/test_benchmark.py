"""The benchmark driver on tiny checkpoints: trained rows are scored, missing ones name their command."""

import json
import types

import pytest
import torch

from .conftest import make_tiny_checkpoints


@pytest.mark.heavy  # trains nothing but evaluates every row on tiny models: ~4 min on 2 cores
def test_benchmark_scores_what_exists_and_lists_what_is_missing(tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    make_tiny_checkpoints(ck)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(ck))
    monkeypatch.chdir(tmp_path)  # the CLIPRe feature cache goes to ./runs
    from train.benchmark import ROWS, VQA_MODELS, main

    args = ["n=3", "prompt_n=2", "corpus=world:20", f"out={tmp_path / 'bench'}", "vqa_n=2", "gap_n=8", "gap_tsne_n=6",
            "follow_n=3"]
    # A row whose checkpoint is a training run's intermediate export is not scored: it says how far it got.
    from zsc_core.captioner import Captioner

    (ck / "ablations").mkdir()
    Captioner.from_pretrained(str(ck / "tipcap-s4-offline-world.safetensors")).save(
        str(ck / "ablations" / "tipcap-s4-isotropic.safetensors"), extra={"step": 5, "train": {"steps": 10}})
    import train.benchmark as bench

    captioned = []
    real_eval = bench.evaluate_world
    monkeypatch.setattr(bench, "evaluate_world",
                        lambda *a, **k: captioned.append(k.get("captions") is None) or real_eval(*a, **k))
    report = main(args)
    monkeypatch.setattr(bench, "evaluate_world", real_eval)
    rows = {r["name"]: r for r in report["rows"]}
    full = rows[ROWS[0].name]
    assert isinstance(full["scores"]["CIDEr"], float) and "METEOR" in full["scores"]
    assert "scores" in rows["CLS token only (no subregion aggregation)"]
    # The cross-domain row scores the full row's captions against the alt-text: no second captioning pass.
    cross = rows["train captions -> test alt-text"]
    assert cross["captions"] == full["captions"] and len(full["captions"]) == 3
    assert cross["scores"] != full["scores"] and captioned.count(False) == 1
    assert rows["single token (N_cr=1)"]["missing"].startswith("python -m train.train_maccap n_cr=1")
    assert "scores" not in rows["S4, isotropic N(mu, sigma2 I)"]
    assert rows["S4, isotropic N(mu, sigma2 I)"]["missing"].endswith("(in training: step 5 of 10)")
    assert "CLIPRe: nearest corpus caption by CLIP" in rows
    assert report["prompts"]["draws"] == 3 and "mean" in report["prompts"]["refined"]["CIDEr"]
    md = (tmp_path / "bench.md").read_text()
    assert "not trained" in md and "Interactive prompts" in md
    assert json.loads((tmp_path / "bench.json").read_text())["n"] == 3
    follow = report["following"]
    assert follow["n_images"] == 3 and 0 <= follow["followed_bare"] <= 1 and 0 <= follow["followed_phrase"] <= 1
    assert "Prompt following" in md
    # Zero-shot VQA for both shipped stage-1 models, against the question-only baseline.
    assert set(report["vqa"]) == set(VQA_MODELS)
    for v in report["vqa"].values():
        assert v["n_questions"] > 0
        for side in ("with_caption", "question_only"):
            assert 0 <= v[side]["top1"] <= v[side]["top5"] <= v[side]["top10"] <= 1
    # The gap analysis: Table 1 numbers, and both figures written beside the report.
    gap = report["gap"]
    assert gap["table"]["n_pairs"] == 8 and -1 <= gap["table"]["global"]["paired_cos_mean"] <= 1
    assert 0 <= gap["table"]["share_subregion_closer"] <= 1
    assert gap["mappings"] == ["TIPCap S4 mapping (learned from text only)"]
    assert set(gap["table"]["mapped_paired_cos"]) >= {"raw", "TIPCap S4 mapping (learned from text only)"}
    assert (tmp_path / gap["figures"]["tsne"]).stat().st_size > 10_000
    assert (tmp_path / gap["figures"]["histograms"]).stat().st_size > 10_000
    assert "Zero-shot VQA" in md and "Modality gap" in md

    # A second run reuses every score whose checkpoint and settings are unchanged: nothing is evaluated again.

    def no_eval(*a, **k):
        raise AssertionError("re-evaluated an unchanged row")

    monkeypatch.setattr(bench, "evaluate_world", no_eval)
    monkeypatch.setattr(bench, "evaluate_prompts_world", no_eval)
    monkeypatch.setattr(bench, "retrieval_captions", no_eval)
    monkeypatch.setattr(bench, "evaluate_vqa_world", no_eval)
    monkeypatch.setattr(bench, "evaluate_prompt_following", no_eval)
    import zsc_core.analysis

    monkeypatch.setattr(zsc_core.analysis, "gap_report", no_eval)
    again = main(args)
    assert [r.get("scores") for r in again["rows"]] == [r.get("scores") for r in report["rows"]]
    assert again["prompts"] == report["prompts"] and again["vqa"] == report["vqa"] and again["gap"] == report["gap"]
    assert again["following"] == report["following"]
    # Changing the checkpoint's bytes invalidates its rows only.
    main_ck = ck / ROWS[0].checkpoint
    cap = Captioner.from_pretrained(str(main_ck))
    with torch.no_grad():
        next(cap.adaptor.parameters()).add_(0.01)
    cap.save(str(main_ck))
    with pytest.raises(AssertionError, match="re-evaluated"):
        main(args)
    # Interrupted after re-scoring the changed checkpoint's first row: that row is on disk, and the earlier scores
    # of the rows not reached are kept for the next run.
    calls = []

    def one_eval(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return types.SimpleNamespace(scores={"CIDEr": 0.5}, captions={})

    monkeypatch.setattr(bench, "evaluate_world", one_eval)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"][0]["scores"] == {"CIDEr": 0.5}
    kept = {r["name"] for r in saved["earlier_rows"]}
    assert "CLS token only (no subregion aggregation)" in kept and saved["prompts"] == report["prompts"]


def test_photo_report_states_prompt_rates_without_rounding_up_to_the_target(tmp_path):
    """49.5% of 109 photos is 54 photos, one short of the 50% target: the report must not print it as 50%."""
    from train.benchmark_photo import PhotoBenchConfig, write_report

    cfg = PhotoBenchConfig(out=str(tmp_path / "bench"))
    prompts = {"model": "prompts-photo.safetensors", "tried": 109, "n_images": 109, "followed_phrase": 54 / 109,
               "followed_bare": 58 / 109, "rough_CIDEr": 0.408, "refined_CIDEr": 0.625,
               "examples": [{"rough": "A dog", "prompt": "An image contains frisbee.", "refined": "A dog, a frisbee"}]}
    write_report(cfg, {"n_images": 109, "rows": [], "prompts": prompts})
    md = (tmp_path / "bench.md").read_text()
    assert "**49.5% (54 of 109)** of noun-phrase prompts" in md
    assert "**53.2% (58 of 109)** of bare-noun prompts" in md
    assert "50%" not in md
    assert json.loads((tmp_path / "bench.json").read_text())["prompts"]["followed_phrase"] == 54 / 109


def test_photo_rows_named_one_sample_decode_one_greedy_caption():
    """A row named S=1 is one caption per photo whatever its checkpoint's decoding default (the `photo` preset ranks
    every hypothesis of a width-3 beam search, three candidates even at S=1): each such row pins num_beams=1."""
    from train.benchmark_photo import ROWS

    one = [r for r in ROWS if r.overrides.get("samples") == 1]
    assert len(one) >= 5 and all(r.overrides.get("num_beams") == 1 for r in one), [r.name for r in one]
    assert all(r.overrides.get("samples") == 1 for r in ROWS if "S=1" in r.name)


def test_photo_ablation_rows_read_the_checkpoint_their_command_trains(monkeypatch, tmp_path):
    """A photo row with its own checkpoint (the MacCap trained without region noise) loads that file, not its
    preset's, lists the command that trains it while it is missing, and that command is the preset's own run with
    sigma2=0, writing exactly that file."""
    import shlex
    from dataclasses import replace

    from train.benchmark_photo import NO_NOISE, ROWS, Row
    from train.train_maccap import parse
    from zsc_core.presets import PRESETS

    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    base = parse(shlex.split(PRESETS["photo-maccap"].train_command)[3:])
    rows = [r for r in ROWS if r.checkpoint == NO_NOISE]
    assert len(rows) == 2 and {r.overrides["samples"] for r in rows} == {1, 20}
    for r in rows:
        assert r.source() == r.path() == str(tmp_path / NO_NOISE)
        cfg = parse(shlex.split(r.train_command())[3:])
        assert (cfg.adaptor.sigma2, cfg.out) == (0.0, f"checkpoints/{NO_NOISE}") and base.adaptor.sigma2 > 0
        # every other setting (preset, corpus, steps, schedule, seed, validation) is the ablated run's
        same = replace(cfg, adaptor=replace(cfg.adaptor, sigma2=base.adaptor.sigma2), out=base.out,
                       run_dir=base.run_dir, threads=base.threads)
        assert same == base
    plain = Row("Ablation", "x", "photo-maccap", {"samples": 1})
    assert plain.source() == "photo-maccap" and plain.path() == PRESETS["photo-maccap"].checkpoint_path()
    assert plain.train_command() == PRESETS["photo-maccap"].train_command
