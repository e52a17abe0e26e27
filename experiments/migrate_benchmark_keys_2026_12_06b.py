"""One-off (2026-12-06, issue #45): re-key the photo benchmark's and the memory tuning's cached rows from
(model fingerprint, overrides) to the effective settings (settings.setting_fingerprint), so that moving a default
(the CPU setting becomes the `photo` defaults) re-runs only the rows that relied on it.

    python -m experiments.migrate_benchmark_keys_2026_12_06b

Run once, before any default moves: an entry is re-keyed only when its old key matches the files as they are now
(so it was valid), with the settings those files give it now. Entries that do not match are left for a re-run.
"""

from __future__ import annotations

import json
import subprocess

from zsc_core.presets import PRESETS
from zsc_core.settings import model_fingerprint, setting_fingerprint

OLD = "4837292"  # the commit whose benchmark rows and settings wrote the cached keys


def old_rows() -> list:
    """The photo benchmark's rows as they were at OLD (names and overrides the cached keys were written with)."""
    text = subprocess.run(["git", "show", f"{OLD}:train/benchmark_photo.py"], capture_output=True, text=True,
                          check=True).stdout
    import sys
    import types

    module = types.ModuleType("old_benchmark_photo")
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is built
    exec(compile(text, "old_benchmark_photo.py", "exec"), module.__dict__)
    return module.ROWS


def main() -> None:
    ROWS = old_rows()
    path = "results/benchmark_photo.json"
    with open(path) as f:
        report = json.load(f)
    by_name = {r.name: r for r in ROWS}
    moved = kept = 0
    for entry in report.get("rows", []):
        key, row = entry.get("key"), by_name.get(entry.get("name", ""))
        if not key or row is None:
            continue
        if key[0] != model_fingerprint(row.path()) or key[1] != json.dumps(row.overrides, sort_keys=True):
            kept += 1
            continue
        entry["key"] = [setting_fingerprint(row.path(), **row.overrides), key[2], *key[3:]]
        moved += 1
    photo = PRESETS["photo"].checkpoint_path()
    for name, p in report.items():
        if name.startswith("prompts") and isinstance(p, dict) and p.get("key"):
            k = p["key"]
            samples = p.get("samples", 1)
            if k[1] == model_fingerprint(photo):
                p["key"] = [k[0], setting_fingerprint(photo, samples=samples, num_beams=1), k[2]]
                moved += 1
    v = report.get("vqa")
    if v and v.get("key") and v["key"][0] == model_fingerprint(photo):
        v["key"] = [setting_fingerprint(photo, samples=v["key"][2], num_beams=v["key"][3]), v["key"][1]]
        moved += 1
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{path}: {moved} entries re-keyed, {kept} left (stale already)")

    path = "results/tune_memory_photo.json"
    with open(path) as f:
        tune = json.load(f)
    moved = 0
    for r in tune.get("rows", []):
        over = dict(r["overrides"])
        source = PRESETS[over.pop("model")].checkpoint_path() if "model" in over else tune["model"]
        if r["key"][0] == model_fingerprint(source) and r["key"][1] == json.dumps(over, sort_keys=True):
            r["key"] = [setting_fingerprint(source, **over), r["key"][2], r["key"][3]]
            moved += 1
    with open(path, "w") as f:
        json.dump(tune, f, indent=1)
    print(f"{path}: {moved} rows re-keyed")


if __name__ == "__main__":
    main()
