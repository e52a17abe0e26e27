"""The app on a simulated ZeroGPU (issue #47): the ``spaces`` stub forks every GPU function and refuses model calls
outside them, as the real package refuses CUDA in the main process. The app must still serve every tab, with only
the model's work inside GPU functions, each asking for a duration sized from the request."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from pathlib import Path

from zsc_core.zerogpu import GPU_MAX_S, gpu_seconds

from .conftest import app_client, make_tiny_checkpoints

ROOT = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "space_stub"


def test_the_stub_forks_gpu_functions_and_refuses_models_outside_them(tmp_path):
    script = """
import os, sys
import spaces, torch
lin = torch.nn.Linear(3, 2)
try:
    lin(torch.ones(1, 3)); print("outside: ran")
except spaces.ZeroGPUError:
    print("outside: refused")
@spaces.GPU(duration=lambda n: 3 * n)
def work(n):
    return os.getpid(), tuple(lin(torch.ones(n, 3)).shape)
pid, shape = work(4)
print("inside:", pid != os.getpid(), shape)
@spaces.GPU
def fail():
    raise ValueError("boom")
try:
    fail()
except ValueError as e:
    print("error:", e)
"""
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(STUB), "SPACES_ZERO_GPU": "1", "SPACES_STUB_LOG": str(log)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["outside: refused", "inside: True (4, 2)", "error: boom"], out.stderr[-2000:]
    lines = log.read_text().splitlines()
    assert "decorated work" in lines and any(x.startswith("called work duration=12 ") for x in lines)


def test_gpu_duration_grows_with_the_work_and_is_capped():
    assert gpu_seconds(1) < gpu_seconds(8) < gpu_seconds(20) < gpu_seconds(20, 5)
    assert gpu_seconds(8, prompt=True) > gpu_seconds(8)
    assert gpu_seconds(1, images=100) > gpu_seconds(1)
    assert gpu_seconds(64, 8, prompt=True) == GPU_MAX_S
    assert gpu_seconds(20) <= 20  # the served GPU setting asks for little of a visitor's quota


def test_handlers_keep_their_signature_so_gradio_injects_progress(monkeypatch, tmp_path_factory):
    import gradio as gr

    from .conftest import launched_app

    ck = tmp_path_factory.mktemp("ck")
    make_tiny_checkpoints(ck)
    with launched_app({"ZSC_CHECKPOINTS": str(ck), "ZSC_DEFAULT_PRESET": "offline-world"}):
        app = sys.modules["app"]
        for fn in (app.caption, app.recaption, app.answer, app.gap, app.example):
            progress = inspect.signature(fn).parameters.get("progress")
            assert progress is not None and isinstance(progress.default, gr.Progress), fn.__name__


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_on_simulated_zerogpu_serves_every_tab_with_model_work_in_forked_gpu_functions(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    make_tiny_checkpoints(ck)
    port, log = _free_port(), tmp_path / "spaces.log"
    env = {**os.environ, "PYTHONPATH": f"{STUB}:{ROOT}", "SPACES_ZERO_GPU": "1", "ZSC_DEVICE": "cpu",
           "SPACES_STUB_LOG": str(log), "ZSC_CHECKPOINTS": str(ck), "ZSC_DEFAULT_PRESET": "offline-world",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_EXAMPLES_CACHE": str(tmp_path / "examples")}
    with open(tmp_path / "app.log", "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            from gradio_client import handle_file

            from zsc_core import world

            client = app_client(proc, port, tmp_path / "app.log", timeout=240)
            img = tmp_path / "scene.png"
            world.render(world.make_scene(0, "eval", 1), 64).save(img)
            caption, _, cands, info, *_ = client.predict(handle_file(str(img)), "offline-world", 3, None, None, 1, 0,
                                                        api_name="/caption")
            assert isinstance(caption, str) and cands["data"] and "S=3" in info
            _, _, _, refined, *_ = client.predict(handle_file(str(img)), "An image contains star", "offline-world", 2,
                                            None, None, 1, 0, api_name="/recaption")
            assert isinstance(refined, str)
            answer, *_ = client.predict(handle_file(str(img)), "what shape is it?", "offline-world",
                                        api_name="/answer")
            assert isinstance(answer, str) and answer
            table, _, _ = client.predict("offline-world", "generated scenes", 10, [], "", api_name="/gap")
            assert "centroid distance" in table
        finally:
            proc.terminate()
            proc.wait(30)
    lines = log.read_text().splitlines()
    # only the model's work is decorated; every tab went through it, in a forked worker (the main process may
    # not run a model at all: the stub refuses it, so a CPU-side model call would have failed the request)
    assert {x for x in lines if x.startswith("decorated ")} == {"decorated propose", "decorated answer_image",
                                                                "decorated gap_features"}
    called = [x.split()[1] for x in lines if x.startswith("called ")]
    assert called.count("propose") == 2 and "answer_image" in called and "gap_features" in called
    ran = [x.split() for x in lines if x.startswith("ran ")]
    assert len(ran) == len(called) and all(r[2] != r[3].replace("main", "pid") for r in ran)
    durations = [int(x.split()[2].split("=")[1]) for x in lines if x.startswith("called propose")]
    assert durations == [gpu_seconds(3, 1), gpu_seconds(2, 1, prompt=True)]
