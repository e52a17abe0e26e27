"""The facade end to end on tiny models: batched sampling, reranking, checkpoints, the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

from zsc_core import world
from zsc_core.adaptor import MacCapAdaptor, MacCapConfig
from zsc_core.captioner import TIMINGS, Captioner
from zsc_core.checkpoint import CheckpointError, build_and_load, load_checkpoint, read_metadata, save_checkpoint
from zsc_core.encode import ClipSpec, PreprocessCfg, save_clip
from zsc_core.sampling import rerank
from zsc_core.towers import load_clip

from .conftest import TINY_CLIP_CFG, make_tiny_clip

SMALL = MacCapConfig(d_model=32, n_heads=8, ffn_dim=64, n_queries=4, n_cr=4)


def _img(i=0, size=64):
    return world.render(world.make_scene(0, "eval", i), size)


def test_adaptor_shapes():
    ad = MacCapAdaptor(MacCapConfig(clip_dim=24, lm_dim=40, n_queries=6, d_model=32, n_heads=8, ffn_dim=64))
    out = ad(torch.randn(3, 10, 24))
    assert out.shape == (3, 6, 40)
    out.sum().backward()
    assert ad.queries.grad is not None and ad.in_proj.weight.grad is not None


def test_rerank_orders_by_clip_score_and_merges_duplicates():
    img = torch.tensor([1.0, 0.0])
    feats = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.2], [1.0, 1.0], [1.0, 0.2]]), dim=-1)
    c = rerank(["far", "near", "mid", "near"], feats, img)
    assert [x.text for x in c] == ["near", "mid", "far"]
    assert c[0].count == 2 and c[0].clip_score == pytest.approx(1 / (1.04 ** 0.5), rel=1e-5)
    assert rerank(["", "a"], feats[:2], img)[0].text == "a"  # empty candidates drop out


def test_s_samples_decode_in_one_generate_call(tiny_clip, tiny_lm, monkeypatch):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    calls = []
    real = tiny_lm.model.generate

    def counting(*a, **kw):
        calls.append(kw["inputs_embeds"].shape)
        return real(*a, **kw)

    monkeypatch.setattr(tiny_lm.model, "generate", counting)
    res = cap.caption([_img(0), _img(1)], samples=7, max_new_tokens=5)
    assert len(calls) == 1 and calls[0][0] == 2 * 7  # one call, B * S rows
    for r in res:
        assert 1 <= len(r.candidates) <= 7 and sum(c.count for c in r.candidates) <= 7
        scores = [c.clip_score for c in r.candidates]
        assert scores == sorted(scores, reverse=True) and r.caption == r.candidates[0].text
        assert len(r.regions) == 4 and all(0 <= x0 < x1 <= 64 for (x0, _, x1, _), _w in
                                          ((g.box, g.weight) for g in r.regions))
        assert set(r.timings) == set(TIMINGS) and all(v >= 0 for v in r.timings.values())


def test_noise_makes_samples_differ_and_seed_reproduces(tiny_clip, tiny_lm):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    a = cap.caption(_img(2), samples=12, seed=3, max_new_tokens=6)
    b = cap.caption(_img(2), samples=12, seed=3, max_new_tokens=6)
    assert a.to_dict()["candidates"] == b.to_dict()["candidates"]
    # The noise makes the 12 samples differ: several distinct candidates, and with sigma2 = 0 the same 12 copies
    # give one candidate seen 12 times.
    assert len(a.candidates) >= 3, a.candidates
    still = cap.caption(_img(2), samples=12, seed=3, max_new_tokens=6, sigma2=0.0)
    assert [c.count for c in still.candidates] == [12]
    # each result says the noise and N_cr it used: the adaptor's own unless the call set them
    assert (a.sigma2, a.n_cr) == (cap.adaptor.cfg.sigma2, cap.adaptor.n_regions) and a.sigma2 > 0
    assert still.sigma2 == 0.0 and cap.caption(_img(2), samples=2, max_new_tokens=2, n_cr=3).n_cr == 3
    c = cap.caption(_img(2), samples=12, seed=4, max_new_tokens=6)
    assert [x.text for x in c.candidates] != [x.text for x in a.candidates]  # another seed, other samples
    one = cap.caption(_img(2), samples=1, max_new_tokens=6)
    assert len(one.candidates) == 1
    assert not cap.adaptor.training  # a built adaptor is put in eval mode for captioning...
    cap.adaptor.train()
    cap.caption(_img(2), samples=1, max_new_tokens=3)
    assert cap.adaptor.training  # ...and its training mode is restored afterwards


def _batch_and_singles(cap, images, **kw):
    """What the adaptor read and what came out, for one batched call and for each image alone (issue #52: a
    photo's caption is a function of the photo, the settings and the seed)."""
    seen = []
    hook = cap.adaptor.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        batch = cap.caption(images, **kw)
        singles = [cap.caption(im, **kw) for im in images]
    finally:
        hook.remove()
    return seen[0], torch.cat(seen[1:]), batch, singles


def _ranked(results):
    """Each result's candidates in ranked order with their counts (scores agree to float rounding: a batched
    text encoding pads differently)."""
    return [[(c.text, c.count) for c in r.candidates] for r in results]


@pytest.mark.parametrize("adaptor", ["maccap", "tipcap"])
def test_a_caption_does_not_depend_on_the_other_photos_in_its_batch(tiny_clip, tiny_lm, adaptor):
    from zsc_core.adaptor import TIPCapConfig

    cfg = SMALL if adaptor == "maccap" else TIPCapConfig(prefix_len=3, d_model=32, n_layers=1, n_heads=8, ffn_dim=64)
    cap = Captioner.build(tiny_clip, tiny_lm, cfg, seed=3)
    images = [_img(i) for i in range(4)]
    x_batch, x_single, batch, singles = _batch_and_singles(cap, images, samples=5, max_new_tokens=4, seed=7)
    assert x_batch.shape[0] == 4 * 5
    # the same noisy inputs, row for row, whether the photo came alone or third in a batch of four...
    assert torch.allclose(x_batch, x_single, atol=1e-6)
    # ...and each image's copies differ from the next image's: the noise is drawn, not shared by accident
    assert not torch.allclose(x_batch[:5], x_batch[5:10])
    assert _ranked(batch) == _ranked(singles)


def test_cls_only_ablation_uses_the_global_feature(tiny_clip, tiny_lm):
    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    feats = tiny_clip.image_features(tiny_clip.pixels([_img(0)]))
    mem, _ = cap.region_memory(feats, cap.effective(use_regions=False))
    assert torch.allclose(mem, feats.global_feat[:, None].expand(-1, 4, -1))
    mem2, sub = cap.region_memory(feats, cap.effective())
    assert torch.allclose(mem2, sub.feats)


def _saved_captioner(tmp_path, clip_seed=0):
    clip_path = str(tmp_path / "clip.safetensors")
    save_clip(clip_path, make_tiny_clip(clip_seed).model, TINY_CLIP_CFG, PreprocessCfg(image_size=32), "tiny-clip")
    clip = load_clip(ClipSpec(checkpoint=clip_path))
    from zsc_core.lm import LMSpec, load_lm

    cap = Captioner.build(clip, load_lm(LMSpec("tiny")), SMALL)
    path = str(tmp_path / "adaptor.safetensors")
    cap.save(path, extra={"step": 3}, dtype=None)
    return cap, path


def test_a_checkpoint_shipped_from_a_run_folder_still_finds_its_clip(tmp_path):
    """`python -m zsc_core ship` re-bases the recorded CLIP path on the new folder (a plain copy out of runs/x/
    points nowhere)."""
    from zsc_core.settings import ship as ship_model

    def ship(argv):
        return ship_model(*argv)

    cap, path = _saved_captioner(tmp_path)
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    trained = str(run / "out.safetensors")
    cap.save(trained, dtype=None)
    assert read_metadata(trained)["clip"]["spec"]["checkpoint"] == "../../clip.safetensors"
    shipped = str(tmp_path / "shipped" / "model.safetensors")
    ship([trained, shipped])
    assert read_metadata(shipped)["clip"]["spec"]["checkpoint"] == "../clip.safetensors"
    assert {k: v.tolist() for k, v in load_checkpoint(shipped).tensors.items()} == \
        {k: v.tolist() for k, v in load_checkpoint(trained).tensors.items()}
    assert Captioner.from_pretrained(shipped, dtype="float32").caption(_img(1), samples=4).to_dict()["candidates"] == \
        cap.caption(_img(1), samples=4).to_dict()["candidates"]
    os.remove(str(tmp_path / "clip.safetensors"))  # a source whose CLIP is gone is refused, not shipped broken
    with pytest.raises(CheckpointError, match="does not exist"):
        ship([trained, str(tmp_path / "other.safetensors")])


def test_checkpoint_round_trip_is_self_describing(tmp_path):
    cap, path = _saved_captioner(tmp_path)
    meta = read_metadata(path)
    assert meta["kind"] == "maccap" and meta["config"]["adaptor"]["n_queries"] == 4
    assert meta["clip"]["spec"]["checkpoint"] == "clip.safetensors"  # relative: the folder can move
    assert meta["lm"]["spec"]["source"] == "tiny" and meta["extra"] == {"step": 3}
    ck = load_checkpoint(path)
    assert set(ck.tensors) == set(cap.adaptor.state_dict())  # only trainable weights, no CLIP or LM
    loaded = Captioner.from_pretrained(path, dtype="float32")  # as `cap` was built (auto may be bf16 on a CPU)
    assert loaded.caption(_img(1), samples=4).to_dict()["candidates"] == \
        cap.caption(_img(1), samples=4).to_dict()["candidates"]


def test_build_and_load_adopts_weights_without_touching_torch_globals():
    init_fns = {n: getattr(torch.nn.init, n) for n in dir(torch.nn.init) if n.endswith("_")}
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    state = {k: v.half() for k, v in ref.state_dict().items()}  # as a checkpoint stores them
    m = build_and_load(lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)), state, "t")
    assert {n: getattr(torch.nn.init, n) for n in init_fns} == init_fns  # nothing patched process-wide
    for k, v in m.state_dict().items():
        assert v.dtype == torch.float32 and not v.is_meta and torch.equal(v, state[k].float())

    class WithMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("mask", torch.ones(2), persistent=False)

    lin_state = {"lin." + k: v for k, v in torch.nn.Linear(2, 2).state_dict().items()}
    with pytest.raises(CheckpointError, match="no value for"):
        build_and_load(WithMask, lin_state, "t")  # a non-persistent buffer must be made, never left on meta
    made = build_and_load(WithMask, lin_state, "t", buffers={"mask": lambda: torch.full((2,), 3.0)})
    assert torch.equal(made.mask, torch.full((2,), 3.0))


def test_loaded_clip_has_the_causal_mask_of_a_fresh_one(tmp_path):
    _, path = _saved_captioner(tmp_path)
    clip = load_clip(ClipSpec(checkpoint=str(tmp_path / "clip.safetensors")))
    fresh = make_tiny_clip(0)
    assert torch.equal(clip.model.attn_mask, fresh.model.attn_mask)
    texts = ["a red star", "two blue circles on grass"]
    assert torch.allclose(clip.encode_text(texts), fresh.encode_text(texts), atol=2e-3)  # fp16 round trip


def test_a_missing_weight_is_an_error_not_uninitialised_memory(tmp_path):
    _, path = _saved_captioner(tmp_path)
    ck = load_checkpoint(path)
    tensors = dict(ck.tensors)
    tensors.pop(sorted(tensors)[0])
    cut = str(tmp_path / "cut.safetensors")
    save_checkpoint(cut, tensors, kind=ck.kind, config=ck.config, clip=ck.clip, lm=ck.lm)
    with pytest.raises(CheckpointError, match="do not fit"):
        Captioner.from_pretrained(cut)
    clip_ck = load_checkpoint(str(tmp_path / "clip.safetensors"))
    clip_tensors = {k: v for k, v in clip_ck.tensors.items() if "proj" not in k}
    save_checkpoint(str(tmp_path / "clip_cut.safetensors"), clip_tensors, kind="clip", config=clip_ck.config)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_clip(ClipSpec(checkpoint=str(tmp_path / "clip_cut.safetensors")))


def test_loading_against_another_clip_is_a_clear_error(tmp_path):
    _, path = _saved_captioner(tmp_path)
    other = make_tiny_clip(5)
    with pytest.raises(CheckpointError) as e:
        Captioner.from_pretrained(path, clip=other)
    msg = str(e.value)
    assert "tiny-clip" in msg and "tiny-clip-5" in msg and "CLIP" in msg


def test_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_metadata(str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(str(tmp_path / "missing.safetensors"))
    p = str(tmp_path / "clip_kind.safetensors")
    save_checkpoint(p, {"w": torch.ones(1)}, kind="clip", config={})
    with pytest.raises(CheckpointError, match="holds a 'clip' model"):
        load_checkpoint(p, expect_kind="maccap")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "zsc_core", *args], capture_output=True, text=True, timeout=300)


def test_cli_json_and_error_path(tmp_path):
    _, path = _saved_captioner(tmp_path)
    img = tmp_path / "scene.png"
    _img(4).save(img)
    ok = _cli("caption", str(img), "--model", path, "--samples", "3", "--json")
    assert ok.returncode == 0, ok.stderr
    rec = json.loads(ok.stdout.strip().splitlines()[0])
    assert set(rec) >= {"caption", "candidates", "regions", "timings"}
    assert rec["candidates"] and {"text", "clip_score"} <= set(rec["candidates"][0])
    assert rec["regions"] and len(rec["regions"][0]["box"]) == 4
    missing = _cli("caption", str(tmp_path / "nope.png"), "--model", path)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.png'}: no such file"]
    junk = tmp_path / "junk.jpg"
    junk.write_text("this is not a jpeg")
    bad = _cli("caption", str(junk), "--model", path)
    assert bad.returncode != 0 and "not an image" in bad.stderr and "Traceback" not in bad.stderr
    unknown = _cli("caption", str(img), "--model", "no-such-model")
    assert unknown.returncode != 0 and "neither a preset" in unknown.stderr


def test_cli_world(tmp_path):
    r = _cli("world", "--split", "eval", "--n", "3", "--seed", "0", "--size", "64", "--out", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == 3
    refs = json.loads((tmp_path / "w" / "references.json").read_text())
    assert len(refs["images"]) == 3 and len(refs["annotations"]) == 15


def test_bfloat16_loads_and_captions_like_float32(tmp_path):
    """The reduced-precision path (what "auto" picks on a CUDA GPU), on CPU: a checkpoint trained at fp32 loads
    with a bf16 LM (fingerprints are of the stored weights), the adaptor stays fp32 (autocast does the mixing), and
    bf16 captions the same way."""
    cap, path = _saved_captioner(tmp_path)
    bf = Captioner.from_pretrained(path, dtype="bfloat16")
    assert bf.lm.model.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf.adaptor.parameters())
    fp = Captioner.from_pretrained(path, dtype="float32")
    a = fp.caption(_img(1), samples=4, max_new_tokens=5)
    b = bf.caption(_img(1), samples=4, max_new_tokens=5)
    assert b.caption and len(b.candidates) >= 1 and len(b.regions) == len(a.regions)
    assert [r.box for r in a.regions] == [r.box for r in b.regions]  # the CLIP side does not depend on the LM dtype


def test_training_runs_with_a_bfloat16_lm(tmp_path, tiny_clip):
    """Training used to fail at step 0 with a bf16 LM (fp32 adaptor, hand casts); one autocast policy fixes it."""
    from train.common import RunLogger
    from train.features import cached_text_features
    from train.train_maccap import MacCapTrainConfig, train
    from zsc_core.lm import LMSpec, load_lm

    lm = load_lm(LMSpec("tiny"), dtype=torch.bfloat16)
    cfg = MacCapTrainConfig(corpus="world:20", adaptor=SMALL, batch_size=8, steps=3, warmup=1, eval_n=0,
                            save_every=100, eval_every=100, run_dir=str(tmp_path / "r"),
                            out=str(tmp_path / "r" / "m.safetensors"))
    caps, feats = cached_text_features(tiny_clip, cfg.corpus, str(tmp_path / "f.safetensors"))
    cap = Captioner.build(tiny_clip, lm, SMALL)
    losses = train(cfg, cap, caps, feats, RunLogger(str(tmp_path / "r" / "log.txt")))
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in cap.adaptor.parameters())


def test_cli_dtype_flag(tmp_path):
    import json
    import subprocess
    import sys

    _, path = _saved_captioner(tmp_path)
    img = tmp_path / "scene.png"
    _img(0).save(img)
    for dtype in ("float32", "bfloat16"):
        r = subprocess.run([sys.executable, "-m", "zsc_core", "caption", str(img), "--model", path, "--samples", "2",
                            "--dtype", dtype, "--json"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["caption"] is not None
    bad = subprocess.run([sys.executable, "-m", "zsc_core", "caption", str(img), "--model", path, "--dtype", "fp8"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
