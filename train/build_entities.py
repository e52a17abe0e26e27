"""Head nouns and noun phrases of every caption-bank row (spaCy), for entity prompts and region anchors.

    python -m train.build_entities        # the photo bank -> checkpoints/bank-coco-photo.entities.json.gz
    python -m train.build_entities bank=/tmp/b.safetensors phrases_out=/tmp/p.json.gz

Writes the bank's entities file (``zsc_core.entities``: each row's head-noun lemmas, shipped beside the bank and
read at inference) and, for training, each row's noun phrases (``phrases_out``, not shipped). About 90 s for 83k
captions on 2 cores.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass

from tqdm import tqdm

from train.common import parse_overrides, set_threads


@dataclass
class EntitiesConfig:
    bank: str = "checkpoints/bank-coco-photo.safetensors"
    phrases_out: str = "runs/features/coco-phrases.json.gz"  # row -> [[phrase, head lemma], ...] (training)
    batch_size: int = 256
    threads: int = 0


def row_phrases(captions: list[str], batch_size: int = 256) -> list[list[list[str]]]:
    """spaCy's noun phrases (phrase, head lemma) of every caption, as :func:`zsc_core.prompts.noun_phrases`."""
    from zsc_core.prompts import NON_OBJECTS, nlp

    out = []
    for doc in tqdm(nlp().pipe(captions, batch_size=batch_size), total=len(captions), desc="noun phrases",
                    mininterval=10):
        row = []
        for chunk in doc.noun_chunks:
            lemma = (chunk.root.lemma_ or chunk.root.text).lower()
            if lemma in NON_OBJECTS or chunk.root.pos_ == "PRON":
                continue
            row.append([" ".join(t.text for t in chunk if t.dep_ != "det" and t.pos_ != "NUM").lower(), lemma])
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> str:
    cfg = parse_overrides(EntitiesConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from zsc_core.bank import load_bank
    from zsc_core.entities import save_entities

    bank = load_bank(cfg.bank)
    captions = bank.captions().captions
    phrases = row_phrases(captions, cfg.batch_size)
    path = save_entities(cfg.bank, [list(dict.fromkeys(lemma for _, lemma in row)) for row in phrases],
                         bank.rows_fingerprint())
    if cfg.phrases_out:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.phrases_out)), exist_ok=True)
        with gzip.open(cfg.phrases_out, "wt", encoding="utf-8") as f:
            json.dump({"rows_fingerprint": bank.rows_fingerprint(), "phrases": phrases}, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return path


if __name__ == "__main__":
    main()
