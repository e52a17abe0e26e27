"""Text-only MacCap training on tiny models: the loss falls, and a killed run resumes exactly."""

import dataclasses
import os
import shutil

import pytest
import torch

from train.common import RunLogger, parse_overrides
from train.features import cached_text_features, filter_captions, read_corpus
from train.loop import batch_indices
from train.train_maccap import MacCapTrainConfig, adaptor_config, train
from zsc_core import world
from zsc_core.adaptor import MacCapConfig
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import file_fingerprint, load_checkpoint

from .conftest import make_tiny_clip


def _cfg(tmp_path, **kw):
    base = MacCapTrainConfig(corpus="world:40", adaptor=MacCapConfig(n_queries=4, d_model=32, n_heads=8, ffn_dim=64,
                                                                      n_cr=4),
                             batch_size=16, lr=3e-3, warmup=2, steps=40, save_every=5, eval_every=1000, eval_n=0,
                             run_dir=str(tmp_path / "run"), out=str(tmp_path / "run" / "maccap.safetensors"))
    return dataclasses.replace(base, **kw)


def _setup(cfg, tiny_lm):
    clip = make_tiny_clip(0)
    caps, feats = cached_text_features(clip, cfg.corpus, os.path.join(cfg.run_dir, "features.safetensors"))
    return Captioner.build(clip, tiny_lm, adaptor_config(cfg), seed=cfg.seed), caps, feats


def test_loss_falls(tmp_path, tiny_lm):
    cfg = _cfg(tmp_path)
    cap, caps, feats = _setup(cfg, tiny_lm)
    losses = train(cfg, cap, caps, feats, RunLogger(str(tmp_path / "log.txt")))
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, (first, last)  # step-to-step noise is ~0.05
    assert os.path.isfile(cfg.out)  # the final checkpoint is written
    loaded = Captioner.from_pretrained(cfg.out, clip=cap.clip, lm=tiny_lm)
    res = loaded.caption(world.render(world.make_scene(0, "eval", 0), 64), samples=2)
    assert isinstance(res.caption, str) and res.candidates


def test_resume_after_interruption_continues_from_saved_step(tmp_path, tiny_lm, monkeypatch):
    import pytest

    straight_cfg = _cfg(tmp_path / "a", steps=12, save_every=4)
    cap, caps, feats = _setup(straight_cfg, tiny_lm)
    train(straight_cfg, cap, caps, feats, RunLogger(str(tmp_path / "a.log")))
    straight = {k: v.clone() for k, v in cap.adaptor.state_dict().items()}

    # Kill the same run in the middle of step 10: state.pt holds step 8, steps 9 and 10 are lost.
    cfg = _cfg(tmp_path / "b", steps=12, save_every=4)
    cap_b, caps_b, feats_b = _setup(cfg, tiny_lm)
    calls, real = [], tiny_lm.prefix_loss

    def dying(*a, **kw):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(tiny_lm, "prefix_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, cap_b, caps_b, feats_b, RunLogger(str(tmp_path / "b.log")))
    monkeypatch.setattr(tiny_lm, "prefix_loss", real)
    assert torch.load(os.path.join(cfg.run_dir, "state.pt"), weights_only=True)["step"] == 8

    cap_c, _, _ = _setup(cfg, tiny_lm)  # a fresh process: new random adaptor, state comes from disk
    rest = train(cfg, cap_c, caps_b, feats_b, RunLogger(str(tmp_path / "c.log")))
    assert len(rest) == 4  # steps 9-12; the 8 saved steps are not redone
    assert "resumed from" in (tmp_path / "c.log").read_text()
    for k, v in cap_c.adaptor.state_dict().items():
        assert torch.allclose(v, straight[k], atol=1e-6), k


def test_batches_cover_the_corpus_each_epoch():
    rows = torch.cat([batch_indices(50, 10, k, 0) for k in range(5)])
    assert sorted(rows.tolist()) == list(range(50))
    assert not torch.equal(batch_indices(50, 10, 5, 0), batch_indices(50, 10, 0, 0))  # new epoch, new order


def test_feature_cache_filters_and_reuses(tmp_path):
    clip = make_tiny_clip(0)
    assert filter_captions(["a red car", "a red car", " ", "one two three four five six"], 5) == ["a red car"]
    corpus = tmp_path / "c.txt"
    corpus.write_text("a red car\na blue boat next to a green tree\n" + "word " * 20 + "\n")
    assert read_corpus(str(corpus)) == ["a red car", "a blue boat next to a green tree", ("word " * 20).strip()]
    path = str(tmp_path / "f.safetensors")
    caps, feats = cached_text_features(clip, str(corpus), path, max_words=15)
    assert caps == ["a red car", "a blue boat next to a green tree"] and feats.shape == (2, 32)
    mtime = os.stat(path).st_mtime_ns
    caps2, feats2 = cached_text_features(clip, str(corpus), path, max_words=15)
    assert os.stat(path).st_mtime_ns == mtime and caps2 == caps and torch.equal(feats2, feats)
    cached_text_features(make_tiny_clip(3), str(corpus), path, max_words=15)  # another CLIP: rebuilt
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert make_tiny_clip(3).fingerprint in f.metadata()["key"]


def test_overrides_parse_types_and_reject_unknown_fields():
    cfg = parse_overrides(MacCapTrainConfig(), ["steps=7", "sigma2=0.5", "corpus=world:9", "lr=1e-4"])
    assert (cfg.steps, cfg.adaptor.sigma2, cfg.corpus, cfg.lr) == (7, 0.5, "world:9", 1e-4)
    # adaptor fields by name or dotted; the adaptor config is the one the adaptor is built from (no copies)
    cfg = parse_overrides(MacCapTrainConfig(), ["n_cr=1", "adaptor.n_queries=3"])
    assert (cfg.adaptor.n_cr, cfg.adaptor.n_queries) == (1, 3) and adaptor_config(cfg) is cfg.adaptor
    import pytest

    with pytest.raises(SystemExit, match="unknown argument"):
        parse_overrides(MacCapTrainConfig(), ["adaptor.stepz=3"])
    with pytest.raises(SystemExit, match="unknown argument"):
        parse_overrides(MacCapTrainConfig(), ["stepz=3"])
    with pytest.raises(SystemExit, match="bad value"):
        parse_overrides(MacCapTrainConfig(), ["steps=many"])


def _tipcap_cfg(tmp_path, setting, **kw):
    from train.train_tipcap import TIPCapTrainConfig
    from zsc_core.adaptor import TIPCapConfig

    adaptor = TIPCapConfig(setting=setting, prefix_len=3, d_model=32, n_layers=1, n_heads=8, ffn_dim=64)
    for k in [k for k in kw if k in TIPCapConfig.__dataclass_fields__]:  # adaptor fields given by name
        adaptor = dataclasses.replace(adaptor, **{k: kw.pop(k)})
    base = TIPCapTrainConfig(adaptor=adaptor, corpus="world:40", batch_size=16, lr=3e-3, warmup=2, steps=40,
                             save_every=20, eval_every=1000,
                             eval_n=0, n_paired=40, n_web=60, n_unpaired=60, image_size=64,
                             run_dir=str(tmp_path / setting), out=str(tmp_path / setting / "tipcap.safetensors"))
    return dataclasses.replace(base, **kw)



# S4 (text only) stays in the fast tier and covers the trainer; S1-S3 render setting images too (~50 s each).
@pytest.mark.parametrize("setting", ["S1", "S2", "S3", "S4"])
def test_tipcap_settings_train_and_load(tmp_path, tiny_lm, setting):
    from train.train_tipcap import build
    from train.train_tipcap import train as train_tipcap

    cfg = _tipcap_cfg(tmp_path, setting)
    clip = make_tiny_clip(0)
    caps, feats = cached_text_features(clip, cfg.corpus, os.path.join(cfg.run_dir, "f.safetensors"))
    cap, stats = build(cfg, clip, tiny_lm, feats)
    mapping = cap.adaptor.mapping
    assert mapping.mu.requires_grad == (setting in ("S3", "S4"))
    if setting in ("S1", "S2"):  # estimated from that setting's images, then fixed
        assert mapping.mu.abs().sum() > 0 and torch.allclose(mapping.mu.detach(), stats["mu"])
    mu0 = mapping.mu.detach().clone()
    losses = train_tipcap(cfg, cap, stats, caps, feats, RunLogger(str(tmp_path / f"{setting}.log")))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert torch.equal(mapping.mu.detach(), mu0) == (setting in ("S1", "S2"))  # only S3/S4 learn the Gaussian
    loaded = Captioner.from_pretrained(cfg.out, clip=clip, lm=tiny_lm)
    assert loaded.kind == "tipcap" and loaded.adaptor.cfg.setting == setting
    res = loaded.caption(world.render(world.make_scene(0, "eval", 1), 64), samples=3)
    assert res.candidates and len(res.regions) == 10  # subregions are shown for every kind (N_cr = 10)


def test_init_continues_from_an_exported_checkpoint_and_refuses_a_foreign_one(tmp_path, tiny_lm):
    """``init=`` (every trainer, train/loop.py) starts a new run from an export's weights; a checkpoint of another
    kind or adaptor config is refused with a one-line reason before any step."""
    from train.train_tipcap import build
    from train.train_tipcap import train as train_tipcap

    first = _tipcap_cfg(tmp_path, "S4", steps=10)
    clip = make_tiny_clip(0)
    caps, feats = cached_text_features(clip, first.corpus, str(tmp_path / "f.safetensors"))
    cap, stats = build(first, clip, tiny_lm, feats)
    train_tipcap(first, cap, stats, caps, feats, RunLogger(str(tmp_path / "a.log")))
    exported = load_checkpoint(first.out).tensors
    # the export it continues ranks by consensus with a caption bank and has its own defaults, which a fresh
    # build of the same config lacks: the continuation serves as that model (its defaults, its bank)
    from zsc_core.bank import BankConfig, attach_bank, save_bank
    from zsc_core.settings import set_defaults

    bank_path = str(tmp_path / "bank.safetensors")
    save_bank(bank_path, feats[:20].float(), BankConfig("world", 20),
              {"name": "tiny (text)", "text_fingerprint": clip.text_fingerprint})
    attach_bank(first.out, bank_path, k=4, mix=0.5)
    set_defaults(first.out, samples=3)

    # lr 0: the continuation's weights are exactly the ones it started from
    more = _tipcap_cfg(tmp_path, "S4", steps=3, lr=0.0, seed=1, init=first.out, run_dir=str(tmp_path / "more"),
                       out=str(tmp_path / "more" / "tipcap.safetensors"))
    cap2, stats2 = build(more, clip, tiny_lm, feats)
    assert any(not torch.equal(v.half(), exported[k]) for k, v in cap2.adaptor.state_dict().items())
    losses = train_tipcap(more, cap2, stats2, caps, feats, RunLogger(str(tmp_path / "b.log")))
    assert len(losses) == 3
    assert all(torch.equal(v, exported[k]) for k, v in load_checkpoint(more.out).tensors.items())
    assert cap2.config.decoding.samples == 3 and build(more, clip, tiny_lm, feats)[0].config.decoding.samples != 3
    served = Captioner.from_pretrained(more.out, clip=clip, lm=tiny_lm)
    flat = served.config.flat()
    assert (flat["samples"], flat["mix_k"], flat["bank_mix"]) == (3, 4, 0.5)
    assert served.has_bank and len(served.bank) == 20
    # the export names the bytes it started from, and keeps naming them after init= is shipped over (resume)
    started = {"path": first.out, "fingerprint": file_fingerprint(first.out)}
    assert load_checkpoint(more.out).extra["init"] == started
    shutil.copyfile(more.out, first.out)
    cap3, stats3 = build(dataclasses.replace(more, steps=5), clip, tiny_lm, feats)
    assert len(train_tipcap(dataclasses.replace(more, steps=5), cap3, stats3, caps, feats,
                            RunLogger(str(tmp_path / "c.log")))) == 2  # resumed at step 3
    assert file_fingerprint(first.out) != started["fingerprint"]
    assert load_checkpoint(more.out).extra["init"] == started and load_checkpoint(more.out).extra["step"] == 5

    maccap = str(tmp_path / "maccap.safetensors")
    Captioner.build(clip, tiny_lm, MacCapConfig(n_queries=4, d_model=32, n_heads=8, ffn_dim=64, n_cr=4)).save(maccap)
    for init, why, kw in ((maccap, "holds a 'maccap' model", {}),
                          (first.out, "adaptor config differs", {"prefix_len": 4})):
        cfg = _tipcap_cfg(tmp_path, "S4", steps=3, init=init, run_dir=str(tmp_path / "x"),
                          out=str(tmp_path / "x" / "t.safetensors"), **kw)
        wrong, st = build(cfg, clip, tiny_lm, feats)
        with pytest.raises(SystemExit, match=why):
            train_tipcap(cfg, wrong, st, caps, feats, RunLogger(str(tmp_path / "x.log")))
        assert not os.path.exists(cfg.out)


def test_tipcap_inference_skips_the_mapping_module(tiny_lm):
    from zsc_core.adaptor import TIPCapConfig

    cap = Captioner.build(make_tiny_clip(0), tiny_lm, TIPCapConfig(prefix_len=3, d_model=32, n_layers=1, ffn_dim=64))
    x = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    with torch.no_grad():
        cap.adaptor.mapping.mu.fill_(5.0)  # a mapping that would change everything if it were applied
        direct = cap.adaptor.projector(cap.adaptor.reverse(x))
        assert torch.allclose(cap.adaptor(x), direct)


def test_stage2_prompt_training_and_two_pass_inference(tmp_path, tiny_lm):
    from train.train_prompts import main as train_prompts
    from zsc_core.encode import PreprocessCfg, save_clip
    from zsc_core.towers import load_clip

    from .conftest import TINY_CLIP_CFG

    clip_path = str(tmp_path / "clip.safetensors")
    save_clip(clip_path, make_tiny_clip(0).model, TINY_CLIP_CFG, PreprocessCfg(image_size=32), "tiny-clip")
    from zsc_core.encode import ClipSpec

    clip = load_clip(ClipSpec(checkpoint=clip_path))
    cfg = _cfg(tmp_path, steps=20)
    cap = Captioner.build(clip, tiny_lm, adaptor_config(cfg))
    base = str(tmp_path / "stage1.safetensors")
    cap.save(base, dtype=None)
    with pytest.raises(NotImplementedError, match="no interactive-prompt stage"):
        cap.caption(world.render(world.make_scene(0, "eval", 0), 64), prompt="An image contains sun")
    out = str(tmp_path / "p" / "prompts.safetensors")
    train_prompts([f"base={base}", "corpus=world:30", "n_captions=48", "steps=30", "batch_size=16", "lr=3e-3",
                   "warmup=2", "eval_n=0", f"run_dir={tmp_path / 'p'}", f"out={out}", "rough_batch=24"])
    log = (tmp_path / "p" / "train.log").read_text()
    assert "rough captions equal their caption" in log
    import json

    from zsc_core.checkpoint import file_fingerprint

    saved = json.loads((tmp_path / "p" / "rough.json").read_text())
    rough = saved["rough"]
    assert len(rough) == 48 and all(isinstance(r, str) for r in rough)
    # keyed by what produced them: the base checkpoint's bytes, the seed, the corpus and the chosen captions
    assert saved["key"]["base"] == file_fingerprint(base) and saved["key"]["seed"] == 0
    two = Captioner.from_pretrained(out)
    assert two.interactive
    res = two.caption(world.render(world.make_scene(0, "eval", 0), 64), prompt="  An image contains sun  ", samples=3)
    assert res.prompt == "An image contains sun" and isinstance(res.rough_caption, str) and res.candidates
    assert res.to_dict()["rough_caption"] == res.rough_caption
    plain = two.caption(world.render(world.make_scene(0, "eval", 0), 64), samples=3)
    assert plain.rough_caption is None and plain.prompt is None
    long = two.caption(world.render(world.make_scene(0, "eval", 0), 64), prompt="x" * 10_000 + " ünïcödé ✓")
    assert isinstance(long.caption, str)  # cut to the LM's budget, no crash
    # TIPCap's inference: a stage-1 model's rough caption is given; the prompt model only refines it.
    img = world.render(world.make_scene(0, "eval", 1), 64)
    given = cap.caption(img, samples=1).caption + " extra"
    two_stage = two.caption(img, prompt="An image contains sun", rough=given, samples=1)
    assert two_stage.rough_caption == given
    with pytest.raises(ValueError, match="one rough caption per image"):
        two.caption([img, img], prompt="An image contains sun", rough=[given])
    # Continuing a stage-2 model (init=): starts from its weights, keeps base's rough captions, records both.
    more = str(tmp_path / "p2" / "prompts.safetensors")
    (tmp_path / "p2").mkdir()
    # a cache of another base model with the same length is NOT reused (it used to be, keyed by length alone)
    (tmp_path / "p2" / "rough.json").write_text(json.dumps({"key": {**saved["key"], "base": "another"},
                                                            "rough": ["stale"] * 48}))
    # the stage-2 model's own inference defaults (set after training, as the shipped one's are) carry over; the
    # run is built from the stage-1 base, whose defaults it used to export instead
    from zsc_core.settings import read_settings, set_defaults

    set_defaults(out, prompt_weight=0.7, samples=5)
    assert read_settings(base).config.ranking.prompt_weight != 0.7
    train_prompts([f"base={base}", f"init={out}", "corpus=world:30", "n_captions=48", "steps=2", "batch_size=16",
                   "lr=1e-5", "warmup=1", "eval_n=0", f"run_dir={tmp_path / 'p2'}", f"out={more}"])
    again = json.loads((tmp_path / "p2" / "rough.json").read_text())
    assert again == saved  # rebuilt from the base: the same rough captions as the first run's
    cont, first = load_checkpoint(more), load_checkpoint(out)
    assert cont.extra["train"]["init"] == out and cont.extra["train"]["base"] == base
    served = read_settings(more).config
    assert (served.ranking.prompt_weight, served.decoding.samples) == (0.7, 5)
    drift = max((cont.tensors[k].float() - first.tensors[k].float()).abs().max().item() for k in first.tensors)
    fresh = max((cont.tensors[k].float() - load_checkpoint(base).tensors[k].float()).abs().max().item()
                for k in first.tensors)
    assert 0 < drift < fresh  # two small steps from the stage-2 weights, far from the stage-1 start
    with pytest.raises(SystemExit, match=r"an interactive-prompt \(stage-2\) checkpoint was expected"):
        train_prompts([f"base={base}", f"init={base}", "corpus=world:30", "n_captions=48", "steps=1",
                       "batch_size=16", "eval_n=0", f"run_dir={tmp_path / 'p2'}", f"out={more}"])


def test_export_keeps_the_best_validation_step_and_the_last(tmp_path, tiny_lm, monkeypatch):
    """`out` holds the best validation step, run_dir/last.safetensors the last, each saying which it is; the run's
    end marks `out` finished (so the benchmark scores it although its step is earlier than the last)."""
    import train.loop as loop
    from train.benchmark import _in_training

    scores = iter([0.5, 0.9, 0.4])  # validation CIDEr at steps 4, 8, 12: the best is step 8
    monkeypatch.setattr(loop, "validate", lambda cfg, cap: ({"CIDEr": next(scores)}, []))
    cfg = _cfg(tmp_path, steps=12, eval_every=4, eval_n=1, keep_evals=False)
    cap, caps, feats = _setup(cfg, tiny_lm)
    train(cfg, cap, caps, feats, RunLogger(str(tmp_path / "log.txt")))
    best, last = load_checkpoint(cfg.out), load_checkpoint(os.path.join(cfg.run_dir, "last.safetensors"))
    assert best.extra["step"] == 8 and best.extra["selected"].startswith("best validation CIDEr")
    assert best.extra["finished"] and best.extra["run_steps"] == 12
    assert last.extra["step"] == 12 and last.extra["selected"] == "last"
    assert _in_training(cfg.out) == ""
    assert any((best.tensors[k].float() - last.tensors[k].float()).abs().max() > 0 for k in best.tensors)


def test_a_run_killed_during_validation_validates_that_step_on_resume(tmp_path, tiny_lm, monkeypatch):
    """state.pt is written before a step's validation; a kill in between used to lose that validation and its
    export for good (the resumed run started after it). Now the resumed run validates and exports it first."""
    import train.loop as loop

    seen = []

    def killed_at_8(cfg, cap):
        seen.append(1)
        if len(seen) == 2:  # the second validation: step 8 of 8
            raise KeyboardInterrupt("killed")
        return {"CIDEr": 0.1 * len(seen)}, []

    monkeypatch.setattr(loop, "validate", killed_at_8)
    cfg = _cfg(tmp_path, steps=8, save_every=4, eval_every=4, eval_n=1, keep_evals=False)
    cap, caps, feats = _setup(cfg, tiny_lm)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, cap, caps, feats, RunLogger(str(tmp_path / "a.log")))
    assert torch.load(os.path.join(cfg.run_dir, "state.pt"), weights_only=True)["step"] == 8
    assert load_checkpoint(cfg.out).extra["step"] == 4 and "finished" not in load_checkpoint(cfg.out).extra

    cap2, _, _ = _setup(cfg, tiny_lm)
    assert train(cfg, cap2, caps, feats, RunLogger(str(tmp_path / "b.log"))) == []  # no step is redone
    assert len(seen) == 3  # step 8 validated (CIDEr 0.3, the best) on resume
    out = load_checkpoint(cfg.out)
    assert out.extra["step"] == 8 and out.extra["val"] == {"CIDEr": pytest.approx(0.3)} and out.extra["finished"]
    assert "validating it now" in (tmp_path / "b.log").read_text()
    # resuming a finished run again validates nothing more
    _setup(cfg, tiny_lm)
    train(cfg, cap2, caps, feats, RunLogger(str(tmp_path / "c.log")))
    assert len(seen) == 3
