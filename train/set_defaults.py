"""Set a shipped adaptor's default inference settings (CaptionConfig fields), metadata only.

    python -m train.set_defaults checkpoints/prompts-photo.safetensors prompt_weight=1.0

The weights are rewritten bit for bit; the settings are what ``Captioner.from_pretrained`` (the app, the CLI, the
benchmarks) then uses unless a call overrides them. Values are checked against the CaptionConfig field types.
"""

from __future__ import annotations

import dataclasses
import sys

from train.common import parse_overrides


def main(argv: list[str] | None = None) -> dict:
    from zsc_core.captioner import CaptionConfig
    from zsc_core.checkpoint import read_metadata, set_caption_defaults

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or "=" in argv[0]:
        raise SystemExit("usage: python -m train.set_defaults CHECKPOINT field=value [field=value ...]")
    path, settings = argv[0], argv[1:]
    current = CaptionConfig(**read_metadata(path)["config"].get("caption", {}))
    new = parse_overrides(current, settings)
    changed = {k: v for k, v in dataclasses.asdict(new).items() if k in {a.partition("=")[0] for a in settings}}
    set_caption_defaults(path, **changed)
    print(f"{path}: {changed}")
    return changed


if __name__ == "__main__":
    main()
