"""One-off (run once on 2026-12-06): move each shipped adaptor's inference defaults out of its weights file.

    python -m experiments.migrate_settings_2026_12_06

Until then the defaults (``config["caption"]``, flat names) and the caption bank (``config["bank"]``) lived in the
safetensors metadata and were patched in place, which re-committed a 15 MB blob for each changed default. This
writes them, unchanged in value, to ``NAME.inference.json`` beside each weights file (zsc_core/settings.py), which
the loader reads from now on; the weights files are left byte for byte as they were (their stale metadata block is
no longer read). It also re-keys the cached benchmark rows: a row was keyed by the weights file's sha256, and is now
keyed by ``model_fingerprint`` (weights + settings). The captions were made with exactly these weights and these
settings, so re-keying them is sound; the one renamed setting (consensus_k -> mix_k) is renamed in the stored
overrides too. Idempotent.
"""

from __future__ import annotations

import glob
import json
import os

from zsc_core.checkpoint import file_fingerprint, read_metadata
from zsc_core.settings import (
    RENAMED,
    CaptionConfig,
    InferenceSettings,
    model_fingerprint,
    settings_path,
    write_settings,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def migrate_checkpoints() -> dict[str, str]:
    """Write the JSON beside every adaptor; returns old key (weights sha) -> new key (model_fingerprint)."""
    keys = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "checkpoints", "**", "*.safetensors"), recursive=True)):
        meta = read_metadata(path)
        if meta["kind"] not in ("maccap", "tipcap"):
            continue
        if not os.path.isfile(settings_path(path)):
            cfg = CaptionConfig.from_flat(meta["config"].get("caption") or {})
            bank = meta["config"].get("bank")
            bank = os.path.normpath(os.path.join(os.path.dirname(path), bank)) if bank else ""
            write_settings(path, InferenceSettings(cfg, bank))
        keys[file_fingerprint(path)] = model_fingerprint(path)
    return keys


def rename_overrides(text: str) -> str:
    """Old flat setting names in a JSON-encoded overrides dict -> new ones."""
    d = json.loads(text)
    return json.dumps({RENAMED.get(k, k): v for k, v in d.items()}, sort_keys=True)


def rekey(obj, keys: dict[str, str]):
    """Every "key" list in a benchmark report: weights shas -> model fingerprints, overrides renamed."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "key" and isinstance(v, list):
                v = [keys.get(x, x) if isinstance(x, str) else x for x in v]
                v = [rename_overrides(x) if isinstance(x, str) and x.startswith("{") else x for x in v]
            elif k == "overrides" and isinstance(v, dict):
                v = {RENAMED.get(a, a): b for a, b in v.items()}
            else:
                v = rekey(v, keys)
            out[k] = v
        return out
    if isinstance(obj, list):
        return [rekey(x, keys) for x in obj]
    return obj


def main() -> None:
    keys = migrate_checkpoints()
    for name, indent in (("benchmark", 2), ("benchmark_photo", 1)):  # each as its driver writes it
        path = os.path.join(ROOT, "results", name + ".json")
        with open(path) as f:
            report = json.load(f)
        with open(path, "w") as f:
            json.dump(rekey(report, keys), f, indent=indent)
        print(f"{path}: re-keyed")


if __name__ == "__main__":
    main()
