"""README.md is for users: at most 15 KB, its figures generated from results/*.json (docs/figures.py), and the
commands it shows run."""

import os
import re
import runpy
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _readme() -> str:
    with open(README) as f:
        return f.read()


def _figures():
    return runpy.run_path(os.path.join(ROOT, "docs", "figures.py"))


def _blocks(lang: str) -> list[str]:
    """The README's fenced code blocks of a language, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", _readme(), re.S)


def _cli_lines() -> list[str]:
    """Every `python -m zsc_core ...` line of the README's Use section, comments cut."""
    use = _readme().split("## Use", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", use, re.S)
             for line in block.splitlines()]
    return [line for line in lines if line.startswith(".venv/bin/python -m zsc_core")]


def test_readme_is_for_users_and_short():
    text = _readme()
    assert len(text.encode()) <= 15 * 1024
    for section in ("## Set up and test", "## Use", "## Models", "## Results", "## How it works", "## Data",
                    "## Citations"):
        assert section in text
    assert "Karpathy" in text and "MacCap" in text and "TIPCap" in text and "DeCap" in text


def test_readme_figures_are_the_ones_the_results_give():
    """Every generated block is what docs/figures.py renders from results/*.json now (python docs/figures.py
    rewrites them); a block with a name the script does not know is an error, not a silent pass."""
    figures = _figures()
    text = _readme()
    names = re.findall(r"<!-- figures:(\w+) -->", text)
    assert set(names) == set(figures["BLOCKS"]), names
    assert figures["render"](text) == text, "stale figures in README.md: run `python docs/figures.py`"
    with pytest.raises(KeyError, match="unknown figures block"):
        figures["render"]("<!-- figures:nope -->\nx\n<!-- /figures:nope -->")


def test_figures_are_rendered_from_the_results_files():
    """A changed results file changes the rendered table (the figure is read, not written down)."""
    figures = _figures()
    table = figures["models_table"]()
    assert "| `photo` (default) |" in table and table.count("\n") >= 8
    mod = figures["_photo_row"]({"rows": [{"preset": "photo", "overrides": {"samples": 20},
                                           "scores": {"CIDEr": 0.123456}}]}, "photo", {"samples": 20})
    assert figures["_f"](figures["_cider"](mod)) == "0.123"


@pytest.mark.smoke
def test_readme_setup_and_test_commands_are_what_ci_runs():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    setup, test = _blocks("bash")[0].splitlines()[0], _blocks("bash")[1].strip()
    for step in setup.split(" && "):
        assert step in ci, step
    assert test in ci


@pytest.mark.smoke
@pytest.mark.parametrize("line", [x for x in _cli_lines() if " evaluate " not in x])
def test_readme_cli_commands_run(line, tmp_path):
    argv = [sys.executable] + shlex.split(line)[1:]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


@pytest.mark.heavy
@pytest.mark.parametrize("line", [x for x in _cli_lines() if " evaluate " in x])
def test_readme_evaluate_command_runs(line):
    argv = [sys.executable] + shlex.split(line)[1:]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CIDEr" in r.stdout


@pytest.mark.smoke
def test_readme_python_example_runs(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(_blocks("python")[0], "README.md", "exec"), {})
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0] and out[1]


def test_every_doc_states_the_served_setting_from_the_settings_json(tmp_path, monkeypatch):
    """Issue #52: the sentences that state what is served are generated from the JSON the app, `caption` and
    `evaluate` read (docs/figures.py's served block) in README.md and every doc that states it; the per-device
    setting nobody serves is gone from them; a moved default moves the sentence."""
    import shutil

    figures = _figures()
    assert figures["main"](["--check"]) == 0, "stale figures: run `python docs/figures.py`"
    for name in figures["DOCS"]:
        with open(os.path.join(ROOT, name)) as f:
            text = f.read()
        assert "<!-- figures:served -->" in text, name
        for stale in ("served.cuda", "served[\"cuda\"]", "--device cuda", "what the app serves on a GPU",
                      "20 samples of 5 beams", "APP_BEAMS"):
            assert stale not in text, (name, stale)
    from zsc_core.presets import PRESETS
    from zsc_core.settings import read_settings, set_defaults

    path = PRESETS["photo"].checkpoint_path()
    for f in (os.path.basename(path), os.path.basename(path).replace(".safetensors", ".inference.json")):
        shutil.copy(os.path.join(os.path.dirname(path), f), tmp_path / f)
    monkeypatch.setenv("ZSC_CHECKPOINTS", str(tmp_path))
    cfg = read_settings(str(tmp_path / os.path.basename(path))).config
    assert f"{cfg.decoding.samples} greedy samples" in figures["served_paragraph"]()
    set_defaults(str(tmp_path / os.path.basename(path)), samples=cfg.decoding.samples + 3)
    assert f"{cfg.decoding.samples + 3} greedy samples" in figures["served_paragraph"]()


def test_the_model_card_says_what_the_project_is_for_and_whose_terms_apply():
    """Issue #52: a LICENSE file; intended and out-of-scope use; where gendered words come from; the licence and
    provenance of every shipped weight and data set; one Python version, the one pyproject allows from."""
    import tomllib

    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert f.read().startswith("MIT License")
    text = _readme()
    for must in ("**Intended use.**", "**Out of\nscope:**", "**People and gendered words.**", "## Data, licences and "
                 "provenance", "MobileNetV2 ImageNet weights", "all-MiniLM-L6-v2", "SmolLM2-135M-Instruct (GGUF)",
                 "COCO caption texts", "Flickr30k", "VQAv2", "BSD-3-Clause", "Apache-2.0", "CC BY 4.0"):
        assert must in text, must
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["requires-python"] == ">=3.11" and project["license"] == {"text": "MIT"}
    assert "Python 3.11 (the Space runs 3.12)" in text and "3.10" not in text
    assert "open_clip" not in project["description"]
