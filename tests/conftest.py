"""Shared fixtures: tiny seeded random-init CLIP and LM that build in milliseconds, fully offline."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import pytest
import torch

from zsc_core.encode import ClipEncoder, ClipSpec, PreprocessCfg, build_custom_clip
from zsc_core.lm import LMSpec, load_lm

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_tiny_clip(seed: int = 0) -> ClipEncoder:
    torch.manual_seed(seed)
    return ClipEncoder(build_custom_clip(TINY_CLIP_CFG), PreprocessCfg(image_size=32), 16,
                       ClipSpec(name=f"tiny-clip-{seed}"))


@pytest.fixture(scope="session")
def tiny_clip() -> ClipEncoder:
    return make_tiny_clip(0)


@pytest.fixture(scope="session")
def tiny_lm():
    return load_lm(LMSpec("tiny"))


def make_tiny_bank(clip: ClipEncoder, folder, n_rows: int = 40):
    """A caption bank of ``n_rows`` offline-world corpus captions embedded by ``clip``'s text tower, with its
    captions file, saved in ``folder``; returns (the loaded bank, its texts)."""
    from zsc_core import world
    from zsc_core.bank import BankConfig, load_bank, save_bank, save_bank_captions

    texts = [world.make_scene(0, "corpus", i).captions[0] for i in range(n_rows)]
    path = os.path.join(str(folder), "bank.safetensors")
    save_bank(path, clip.encode_text(texts).float(), BankConfig("world", n_rows),
              {"name": "tiny (text)", "text_fingerprint": clip.text_fingerprint})
    bank = load_bank(path)
    save_bank_captions(path, texts, bank)
    return bank, texts


def make_tiny_checkpoints(ck) -> None:
    """Tiny seeded checkpoints named like the offline-world presets' (CLIP, TIPCap, MacCap, prompt model)."""
    from zsc_core.adaptor import MacCapConfig, TIPCapConfig
    from zsc_core.captioner import Captioner
    from zsc_core.encode import save_clip
    from zsc_core.towers import load_clip

    small = MacCapConfig(d_model=32, n_heads=8, ffn_dim=64, n_queries=4, n_cr=4)
    clip_path = str(ck / "clip-offline-world.safetensors")
    save_clip(clip_path, make_tiny_clip(0).model, TINY_CLIP_CFG, PreprocessCfg(image_size=32), "offline-world-clip")
    clip = load_clip(ClipSpec(checkpoint=clip_path))
    lm = load_lm(LMSpec("tiny"))
    Captioner.build(clip, lm, small).save(str(ck / "maccap-offline-world.safetensors"))
    tip = TIPCapConfig(prefix_len=3, d_model=32, n_layers=1, n_heads=8, ffn_dim=64)
    Captioner.build(clip, lm, tip, seed=2).save(str(ck / "tipcap-s4-offline-world.safetensors"))
    two = Captioner.build(clip, lm, small, seed=1)
    two.interactive = True
    two.save(str(ck / "prompts-offline-world.safetensors"))


def app_client(proc, port: int, log, timeout: float, poll: float = 2.0):
    """A gradio_client Client of the app that ``proc`` (a `python app.py` subprocess writing to ``log``) serves on
    ``port``, once it answers; fails with the app's log if the process ends, or after ``timeout`` seconds."""
    import time

    from gradio_client import Client

    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"the app did not come up in {timeout:.0f} s"
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:
            time.sleep(poll)


@contextlib.contextmanager
def imported_app(env: dict[str, str], loaded: bool = True):
    """app.py imported afresh with ``env`` set (not launched); yields the module, restores ``env`` after. With
    ``loaded`` it yields once the start-up load is over, so no test's own environment changes meet a load still
    running in the background (app.py serves its page while the default loads)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.modules.pop("app", None)
    try:
        module = importlib.import_module("app")
        if loaded:
            module.startup_problem()
        yield module
    finally:
        sys.modules.pop("app", None)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def launched_app(env: dict[str, str]):
    """Import app.py afresh with ``env`` set and launch it on loopback; yields its URL, restores ``env`` after."""
    with imported_app(env) as app:
        try:
            assert app.startup_problem() == ""
            app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            max_file_size=app.MAX_UPLOAD)
            yield app.demo.local_url
        finally:
            app.demo.close()


@contextlib.contextmanager
def tiny_app(tmp_path_factory):
    """Launch app.py on loopback with tiny seeded checkpoints standing in for the offline-world preset
    (maccap + interactive-prompt model, via $ZSC_CHECKPOINTS); yields its URL."""
    ck = tmp_path_factory.mktemp("checkpoints")
    make_tiny_checkpoints(ck)
    # the tiny stand-ins are named like the offline-world preset's checkpoints
    with launched_app({"ZSC_CHECKPOINTS": str(ck), "ZSC_DEFAULT_PRESET": "offline-world"}) as url:
        yield url


@contextlib.contextmanager
def shipped_app(tmp_path_factory):
    """Launch app.py as a user would: the shipped checkpoints, the default preset (photo); yields its URL."""
    cache = str(tmp_path_factory.mktemp("examples-cache"))  # a fresh lazy cache: the example really runs
    with launched_app({"GRADIO_EXAMPLES_CACHE": cache}) as url:
        yield url


def make_tiny_bridge(seed: int = 0, n_classes: int = 10, dim: int = 16, image_size: int = 64):
    """A bridge (zsc_core.bridge) of a tiny random torchvision MobileNetV2 and a tiny random BERT with a
    word-level tokenizer: same code path as the photo preset, built in milliseconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from torchvision.models import mobilenet_v2
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from zsc_core.bridge import BridgeConfig, BridgeEncoder, BridgeModel

    torch.manual_seed(seed)
    cnn = mobilenet_v2(num_classes=n_classes, width_mult=0.25).eval()
    words = "a an the of on in photo picture dog cat car bus red blue sitting table street man with".split()
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")
    text = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=dim, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=64), add_pooling_layer=False).eval()
    protos = torch.nn.functional.normalize(torch.randn(n_classes, dim), dim=-1)
    return BridgeEncoder(BridgeModel(cnn, text, protos), tok, BridgeConfig(image_size=image_size),
                         ClipSpec(name=f"tiny-bridge-{seed}"))


@pytest.fixture(scope="session")
def tiny_bridge():
    return make_tiny_bridge(0)
