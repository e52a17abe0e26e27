"""Encoded candidate answers, shipped beside the checkpoints, so that a machine's first question does not wait.

    python -m train.build_answers                 # photo -> checkpoints/answers/*.safetensors
    python -m train.build_answers presets=photo,offline-world

The Ask tab's LM route ranks its answer by the text cosine with each candidate answer of the question's type:
VQAv2's 3,128 answers for real photos, ~3 s of MiniLM on 2 cores. The app encodes them between requests at start-up
(vqa.warm_jobs) and keeps them in the user cache; on a new machine a question asked before that ends waited for
them (2.98 s, results/app_latency_no_answer_cache.json). This writes each answer type's list, as the app reads it,
into ``checkpoints/answers/`` (vqa.answers_dirs), named by a hash of the text tower and the list: a file is only
ever read by the tower and the answers it was made for, and a stale one is simply not found.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from train.common import parse_overrides, set_threads


@dataclass
class AnswersConfig:
    presets: tuple[str, ...] = ("photo",)
    threads: int = 0


def main(argv: list[str] | None = None) -> list[str]:
    cfg = parse_overrides(AnswersConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from zsc_core import vqa
    from zsc_core.captioner import Captioner
    from zsc_core.presets import checkpoints_dir

    folder = os.path.join(checkpoints_dir(), "answers")
    written = []
    for name in cfg.presets:
        cap = Captioner.from_pretrained(name, dtype="float32")  # only its text tower is used
        for q in vqa.WARM_QUESTIONS:
            lst = vqa.answer_candidates(cap, q)
            if len(lst) < vqa.KEEP_ANSWERS:  # encoded in milliseconds when asked, never read from a file
                print(f"{name}: {len(lst)} answers of {vqa.answer_type(q)!r}: too few to keep", flush=True)
                continue
            written.append(vqa.save_answers(cap.clip, lst, folder))
            print(f"{name}: {len(lst)} answers of {vqa.answer_type(q)!r} -> {written[-1]}", flush=True)
    return written


if __name__ == "__main__":
    main()
