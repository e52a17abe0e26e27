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
