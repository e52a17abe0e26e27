"""Issue #52: the API, the app and the docs say the same thing. One test per point that contradicted itself."""

from __future__ import annotations

import inspect
import os

import pytest

from zsc_core import world

from .conftest import make_tiny_checkpoints


@pytest.fixture
def tiny_presets(tmp_path, monkeypatch):
    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    return tmp_path


def _scene(i: int = 1):
    return world.render(world.make_scene(0, "eval", i), 64)


def test_one_default_preset_for_the_api_the_cli_and_the_gap_command(tiny_presets, monkeypatch):
    """`Captioner.from_pretrained()` and `gap` without --preset load the default preset, the one presets.py and the
    CLI name (zsc_core.DEFAULT_PRESET, or $ZSC_DEFAULT_PRESET); they said offline-world while the CLI said photo."""
    import zsc_core
    from zsc_core import cli, presets
    from zsc_core.captioner import Captioner

    assert cli.DEFAULT_PRESET is presets.DEFAULT_PRESET is zsc_core.DEFAULT_PRESET == "photo"
    monkeypatch.setenv("ZSC_DEFAULT_PRESET", "offline-world-maccap")
    assert Captioner.from_pretrained().name == "offline-world-maccap"
    assert cli.build_parser().parse_args(["gap", "--out", "x"]).preset is None  # resolved in main, as --model
    out = tiny_presets / "gap"
    assert cli.main(["gap", "--n", "12", "--tsne-n", "10", "--out", str(out)]) == 0  # the default's (tiny) CLIP
    assert (out / "gap_table.json").is_file()


def test_the_service_defaults_to_the_models_own_settings(tiny_presets):
    """A caller that leaves samples, beams and seed out gets the model's JSON, as for sigma2, N_cr and guidance
    (the service used to fix samples=20, num_beams=1, seed=0)."""
    from zsc_core.models import ModelCache
    from zsc_core.service import CaptionService
    from zsc_core.settings import set_defaults

    set_defaults(str(tiny_presets / "maccap-offline-world.safetensors"), samples=3, num_beams=2, seed=5)
    service = CaptionService(ModelCache())
    request = service.caption_request(_scene(), "offline-world-maccap")
    assert request.settings == {}  # nothing set: every setting is the model's own
    view = service.caption(_scene(), "offline-world-maccap")
    assert (view.settings["samples"], view.settings["num_beams"], view.settings["seed"]) == (3, 2, 5)
    assert "S=3 x beam 2" in view.info
    assert service.caption(_scene(), "offline-world-maccap", samples=2).settings["samples"] == 2


def test_a_result_carries_its_effective_settings_and_the_view_reports_them(tiny_clip, tiny_lm):
    """Every "the model's own" value is resolved in one place (CaptionConfig.resolved) and returned on the result;
    the info line reads the result (its settings, whether it was guided) instead of re-deriving them."""
    from zsc_core import display
    from zsc_core.adaptor import MacCapConfig
    from zsc_core.captioner import Captioner

    cap = Captioner.build(tiny_clip, tiny_lm, MacCapConfig(d_model=32, n_heads=8, ffn_dim=64, n_queries=4, n_cr=4))
    r = cap.caption(_scene(), samples=2, max_new_tokens=3)
    s = r.settings
    assert s.decoding.sigma2 == cap.adaptor.noise_sigma2 and s.regions.n_cr == 4
    assert s.ranking.rerank_k == s.retrieval.mix_k and s.guidance.guide_k == s.ranking.rerank_k
    assert (r.sigma2, r.n_cr) == (s.decoding.sigma2, 4) and r.to_dict()["settings"]["n_cr"] == 4
    # the view says "bank guidance" exactly when the result says it was guided
    r.settings = s.replace(guide_weight=0.4)
    r.guided = False
    info = display.caption_info(r, "offline-world-maccap", True, False, own_sigma2=True)
    assert "bank guidance" not in info and "S=2 x beam 1" in info and "σ² 0.016 (the model's)" in info
    r.guided = True
    assert "mixed 0.4 with the n-grams" in display.caption_info(r, "offline-world-maccap", True, False, True)


def test_one_decoding_pass_is_one_dataclass_and_the_services_are_split():
    """The decode step takes one pass (DecodePass), not 13 parameters; loading, display text, VQA and the gap
    analysis each live in their own module, not in one CaptionService."""
    from zsc_core import captioner, display, gap_service, models, service, vqa_service

    assert list(inspect.signature(captioner.Captioner._decode).parameters) == ["self", "p", "look", "clock"]
    for gone in ("labels", "status_markdown", "answer", "answer_image", "gap", "gap_view", "warm_up",
                 "example_images", "check_text", "read_image"):
        assert not hasattr(service.CaptionService, gone), gone
    assert hasattr(models.ModelCache, "warm_all") and hasattr(display, "status_markdown")
    assert hasattr(vqa_service.AnswerService, "answer") and hasattr(gap_service.GapService, "gap")
    assert len(inspect.getsource(service.CaptionService).splitlines()) < 150


def test_the_prompt_flow_is_one_function_for_the_cli_and_the_app(tiny_presets, monkeypatch, capsys):
    """TIPCap's two stages (the preset's rough caption, refined by its prompt model) run in prompts.propose_prompted
    for both the CLI and the app."""
    from zsc_core import cli, prompts
    from zsc_core import service as service_module
    from zsc_core.models import ModelCache

    calls = []
    real = prompts.propose_prompted

    def spy(base, refiner, images, prompt, **settings):
        calls.append((base.name, refiner.interactive, prompt))
        return real(base, refiner, images, prompt, **settings)

    monkeypatch.setattr(prompts, "propose_prompted", spy)
    monkeypatch.setattr(service_module, "propose_prompted", spy)
    path = tiny_presets / "scene.png"
    _scene().save(path)
    assert cli.main(["caption", str(path), "--model", "offline-world", "--samples", "2",
                     "--prompt", "An image contains star"]) == 0
    view = service_module.CaptionService(ModelCache()).caption(_scene(), "offline-world", samples=2,
                                                                prompt="An image contains star")
    assert calls == [("offline-world", True, "An image contains star")] * 2
    assert view.rough_caption and view.caption


def test_stale_names_are_gone():
    import zsc_core
    from zsc_core import cli, encode
    from zsc_core.captioner import TIMINGS

    assert "on open_clip" not in zsc_core.__doc__ and "bridge" in zsc_core.__doc__
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert all(f"python -m zsc_core {c}" in cli.__doc__ for c in commands), commands
    assert not hasattr(encode, "clip_spec_from_checkpoint")
    assert "retrieve_s" in TIMINGS and "rerank_s" not in TIMINGS  # ranking time no longer includes retrieval
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in ("train", "bench"):
        for name in os.listdir(os.path.join(root, folder)):
            if name.endswith(".py"):
                with open(os.path.join(root, folder, name)) as f:
                    assert "from zsc_core.service import" not in f.read(), name
    with open(os.path.join(root, "zsc_core", "bank.py")) as f:
        assert 'config["bank"]' not in f.read()
