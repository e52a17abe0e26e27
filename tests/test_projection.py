"""Caption-bank projection (zsc_core/projection.py): the maths, the bank file, and the captioner's use of it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from zsc_core.captioner import Captioner
from zsc_core.checkpoint import CheckpointError, load_checkpoint, read_metadata
from zsc_core.projection import (
    BankConfig,
    attach_bank,
    dequantize_rows,
    load_bank,
    project,
    quantize_rows,
    save_bank,
)

from .test_captioner import _img, _saved_captioner


def _rows(n=50, d=32, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_int8_rows_round_trip_within_half_a_step():
    x = _rows() * torch.linspace(0.1, 3.0, 50)[:, None]  # rows of very different scales
    codes, scale = quantize_rows(x)
    assert codes.dtype == torch.int8 and codes.abs().max() == 127
    err = (dequantize_rows(codes, scale) - x).abs()
    assert (err <= scale[:, None] / 2 + 1e-7).all()


def test_projection_interpolates_between_the_nearest_row_and_the_bank_mean():
    bank, x = _rows(), _rows(4, seed=1)
    nearest = bank[(x @ bank.T).argmax(-1)]
    assert torch.allclose(project(x, bank, 1e-4), nearest, atol=1e-4)  # tau -> 0: the nearest caption
    mean = F.normalize(bank.mean(0), dim=0).expand(4, -1)
    assert torch.allclose(project(x, bank, 1e4), mean, atol=1e-3)  # tau -> inf: the bank's mean
    mid = project(x, bank, 0.1)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(4))
    w = ((x @ bank.T) / 0.1).softmax(-1)  # the formula itself
    assert torch.allclose(mid, F.normalize(w @ bank, dim=-1), atol=1e-6)


def test_projection_keeps_the_shape_of_region_tokens_and_is_chunk_independent():
    bank, x = _rows(), _rows(24, seed=2).view(2, 12, 32)  # (B, N_cr, D), as MacCap reads
    out = project(x, bank, 0.05)
    assert out.shape == x.shape
    assert torch.allclose(out, project(x, bank, 0.05, chunk=5), atol=1e-6)
    with pytest.raises(ValueError, match="> 0"):
        project(x, bank, 0.0)
    with pytest.raises(ValueError, match="width"):
        project(torch.zeros(1, 16), bank, 0.1)


def test_int8_codes_held_as_bfloat16_project_like_the_float_rows():
    """The loaded bank keeps its int8 codes as bfloat16 (exact) with float32 scales: the projection matches the
    one through the dequantised float32 rows."""
    bank, x = _rows(2000, d=64), _rows(16, d=64, seed=3)
    codes, scale = quantize_rows(bank)
    ref = project(x, dequantize_rows(codes, scale), 0.03)
    got = project(x, codes.to(torch.bfloat16), 0.03, scale=scale)
    assert torch.equal(codes.to(torch.bfloat16).float(), codes.float())
    assert (got - ref).abs().max() < 0.02 and (got * ref).sum(-1).min() > 0.999


def test_bank_file_is_int8_self_describing_and_checks_its_text_encoder(tmp_path):
    feats = _rows()
    path = save_bank(str(tmp_path / "bank.safetensors"), feats, BankConfig("toy", 50, 0.03),
                     {"name": "toy (text)", "text_fingerprint": "abc"})
    ck = load_checkpoint(path, expect_kind="bank")
    assert ck.tensors["codes"].dtype == torch.int8 and ck.config["size"] == 50 and ck.config["tau"] == 0.03
    bank = load_bank(path, "abc")
    assert torch.allclose(bank.feats, feats, atol=1 / 127)
    assert torch.equal(bank.nearest(feats[:7]), torch.arange(7))
    with pytest.raises(CheckpointError, match="text encoder"):
        load_bank(path, "other")
    with pytest.raises(CheckpointError, match="build_bank"):
        load_bank(str(tmp_path / "missing.safetensors"))


def _bank_for(cap, tmp_path, n=40):
    texts = [f"a {c} {s} on a table" for c in ("red", "blue", "green", "big") for s in
             ("dog", "cat", "car", "bus", "man", "photo", "picture", "street", "ball", "cup")][:n]
    return save_bank(str(tmp_path / "bank.safetensors"), cap.clip.encode_text(texts), BankConfig("toy", n, 0.05),
                     {"name": "tiny (text)", "text_fingerprint": cap.clip.text_fingerprint})


def test_attached_bank_is_loaded_used_by_default_and_can_be_switched_off(tmp_path):
    cap, path = _saved_captioner(tmp_path)
    before = {k: v.clone() for k, v in load_checkpoint(path).tensors.items()}
    plain = cap.caption(_img(1), samples=4).to_dict()
    bank_path = _bank_for(cap, tmp_path)
    attach_bank(path, bank_path, 0.05)
    meta = read_metadata(path)
    assert meta["config"]["bank"] == "bank.safetensors" and meta["config"]["caption"]["project_tau"] == 0.05
    assert all(torch.equal(v, before[k]) for k, v in load_checkpoint(path).tensors.items())  # weights untouched
    loaded = Captioner.from_pretrained(path)
    assert loaded.bank is not None and loaded.config.project_tau == 0.05
    # Switched off per call, the captioner is the one without a bank, exactly.
    assert loaded.caption(_img(1), samples=4, project_tau=0.0).to_dict()["candidates"] == plain["candidates"]
    # On, candidates are ranked against the projected image feature: their scores are cosines with it.
    res = loaded.caption(_img(1), samples=4)
    feats = loaded.clip.image_features(loaded.clip.pixels([_img(1)]))
    target = loaded.bank.project(feats.global_feat, 0.05)[0]
    for c in res.candidates:
        assert c.clip_score == pytest.approx(float(loaded.clip.encode_text([c.text])[0] @ target), abs=1e-4)
    attach_bank(path, None)  # detached: back to the plain captioner
    again = Captioner.from_pretrained(path)
    assert again.bank is None and again.caption(_img(1), samples=4).to_dict()["candidates"] == plain["candidates"]


def test_projection_without_a_bank_is_a_clear_error(tmp_path, tiny_clip, tiny_lm):
    from .test_captioner import SMALL

    cap = Captioner.build(tiny_clip, tiny_lm, SMALL)
    with pytest.raises(ValueError, match="caption bank"):
        cap.caption(_img(0), samples=2, project_tau=0.03)


def test_a_bank_from_another_text_encoder_is_refused_at_load(tmp_path):
    cap, path = _saved_captioner(tmp_path)
    bank = save_bank(str(tmp_path / "bank.safetensors"), _rows(10, d=cap.clip.embed_dim), BankConfig("toy", 10),
                     {"name": "other", "text_fingerprint": "not-this-one"})
    attach_bank(path, bank, 0.05)
    with pytest.raises(CheckpointError, match="text encoder"):
        Captioner.from_pretrained(path)


def test_shipping_rebases_the_bank_path_too(tmp_path):
    from train.ship import main as ship

    cap, _ = _saved_captioner(tmp_path)
    bank_path = _bank_for(cap, tmp_path)
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    trained = str(run / "out.safetensors")
    cap.save(trained, dtype=None)
    attach_bank(trained, bank_path, 0.05)
    assert read_metadata(trained)["config"]["bank"] == "../../bank.safetensors"
    shipped = str(tmp_path / "shipped" / "model.safetensors")
    ship([trained, shipped])
    assert read_metadata(shipped)["config"]["bank"] == "../bank.safetensors"
    assert Captioner.from_pretrained(shipped).bank.path.endswith("bank.safetensors")


def test_cli_switches_the_projection_and_says_when_there_is_no_bank(tmp_path):
    from .test_captioner import _cli

    cap, path = _saved_captioner(tmp_path)
    img = tmp_path / "scene.png"
    _img(4).save(img)
    plain = _cli("caption", str(img), "--model", path, "--samples", "3", "--json")
    refused = _cli("caption", str(img), "--model", path, "--project-tau", "0.03")
    assert refused.returncode == 2 and "caption bank" in refused.stderr and "Traceback" not in refused.stderr
    attach_bank(path, _bank_for(cap, tmp_path), 0.05)
    off = _cli("caption", str(img), "--model", path, "--samples", "3", "--project-tau", "0", "--json")
    on = _cli("caption", str(img), "--model", path, "--samples", "3", "--json")
    assert plain.returncode == off.returncode == on.returncode == 0, on.stderr
    cands = [json.loads(r.stdout)["candidates"] for r in (plain, off, on)]
    assert cands[1] == cands[0] and cands[2] != cands[0]  # off: exactly the bankless model; on: ranked anew
