"""Ship a trained checkpoint: copy it into checkpoints/ with the CLIP path it records re-based on its new folder.

    python -m train.ship runs/prompts-photo-cont3/out.safetensors checkpoints/prompts-photo.safetensors

A plain ``cp`` keeps the path relative to the run folder (``../../checkpoints/bridge-photo.safetensors``), which
points nowhere from ``checkpoints/`` (tests/test_shipped_models.py refuses such a file).
"""

from __future__ import annotations

import sys

from zsc_core.checkpoint import copy_checkpoint, read_metadata


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m train.ship SRC.safetensors DST.safetensors")
    dst = copy_checkpoint(*argv)
    clip = (read_metadata(dst).get("clip") or {}).get("spec", {}).get("checkpoint")
    print(f"{argv[0]} -> {dst} (CLIP: {clip})")


if __name__ == "__main__":
    main()
