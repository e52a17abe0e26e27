"""Quality parity of the faster decoding (issue #55): drafts and a bank-vocabulary head against the fp32 path.

    python -m train.speed_parity                  # -> results/speed_parity_photo.{json,md}
    python -m train.speed_parity draft_tokens=2   # another number of guesses

The `photo` model at its served decoding (S=8 greedy, bank guidance, faces), on both choice sets (train-paired, 80
photos; val-dev, 109), each reported on its own, 4 sampling seeds. Rows:

* *before*: ``transformers``' ``generate``, one token a pass over the LM, full head (what served before #55);
* *drafts only*: ``draft_tokens`` guesses a pass, full head. Its captions should be *before*'s (the guesses are
  checked against greedy decoding); the run counts the photos where they are not;
* *drafts + bank vocabulary*: the same with the head restricted to the bank's tokens (decode.py);
* *drafts + bank vocabulary, bf16 LM*: the same with the frozen LM in bfloat16 (the dtype the GPU path runs; on a
  CPU with bf16 instructions, half the LM's bytes a pass). Paired against *drafts + bank vocabulary* (fp32).

Per row and seed: CIDEr, BLEU-4 and the photos whose caption differs from *before*'s; per split a paired bootstrap
of each row (seeds averaged per photo) against *before*, and the captions of the first photos side by side. Runs
are cached by setting fingerprint, seed and split (*before*'s served runs are read from
``results/tune_evidence_photo.json`` when they are there); the report is written after every run.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from train.common import parse_overrides, save_report, set_threads

EARLIER = "results/tune_evidence_photo.json"


@dataclass
class SpeedParityConfig:
    splits: tuple[str, ...] = ("train-paired", "val-dev")
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    draft_tokens: int = 3
    drafts_only_seeds: tuple[int, ...] = (0,)  # the exactness check: seeds run with drafts and the full head
    out: str = "results/speed_parity_photo"
    batch: int = 8
    threads: int = 0
    side_by_side: int = 8  # photos per split whose captions are listed
    bf16: bool = True  # also the bf16-LM row


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(SpeedParityConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from tqdm import tqdm

    from train.cache_keys import setting_fingerprint
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics, paired_bootstrap
    from zsc_core.presets import PRESETS

    path = PRESETS["photo"].checkpoint_path()
    cap = Captioner.from_pretrained("photo", dtype="float32")  # the rows' float32 LM, on a GPU too
    caps_by_dtype = {"float32": cap}
    served = cap.config.flat()
    base = {k: served[k] for k in ("samples", "num_beams", "guide_weight", "faces", "bodies")}
    rows_def = {"before": {**base, "draft_tokens": 0, "bank_vocab": False},
                "drafts only": {**base, "draft_tokens": cfg.draft_tokens, "bank_vocab": False},
                "drafts + bank vocabulary": {**base, "draft_tokens": cfg.draft_tokens, "bank_vocab": True}}
    dtypes = {name: "float32" for name in rows_def}
    if cfg.bf16:
        rows_def["drafts + bank vocabulary, bf16 LM"] = rows_def["drafts + bank vocabulary"]
        dtypes["drafts + bank vocabulary, bf16 LM"] = "bfloat16"

    def run_key(name: str, seed: int, split: str) -> str:
        """A run's cache key: its setting and LM dtype, seed, split."""
        return json.dumps([setting_fingerprint(path, lm_dtype=dtypes[name], **rows_def[name]), seed, split])
    report: dict = {"model": os.path.basename(path), "draft_tokens": cfg.draft_tokens, "splits": {}}
    if os.path.isfile(cfg.out + ".json"):
        with open(cfg.out + ".json") as f:
            report = json.load(f)
        report["draft_tokens"] = cfg.draft_tokens
    runs: dict[str, dict] = report.setdefault("runs", {})
    if os.path.isfile(EARLIER):  # the served runs before #55: tune_evidence's "faces" rows
        with open(EARLIER) as f:
            earlier = json.load(f)["splits"]
        for split, sp in earlier.items():
            for seed in cfg.seeds:
                row = sp["rows"].get(f"`photo` served decoding, faces, seed {seed}")
                if row and split in cfg.splits:
                    key = run_key("before", seed, split)
                    runs.setdefault(key, {"captions": row["captions"], "from": EARLIER})

    def save() -> None:
        save_report(cfg.out, report, markdown(report))

    for split in cfg.splits:
        items = coco_items(split)
        images = [load_image(p) for p, _ in items]
        refs = [caps for _, caps in items]
        sp = report["splits"].setdefault(split, {"n_images": len(items), "rows": {}})
        for name, over in rows_def.items():
            seeds = cfg.drafts_only_seeds if name == "drafts only" else cfg.seeds
            for seed in seeds:
                # "before" has tune_evidence's key: settings at their defaults are not in a key
                key = run_key(name, seed, split)
                if key not in runs:
                    if dtypes[name] not in caps_by_dtype:
                        caps_by_dtype[dtypes[name]] = Captioner.from_pretrained("photo", dtype=dtypes[name])
                    model, caps = caps_by_dtype[dtypes[name]], []
                    for i in tqdm(range(0, len(images), cfg.batch), desc=f"{split} {name} seed {seed}"):
                        caps += [r.caption for r in model.caption(images[i:i + cfg.batch], seed=seed, **over)]
                    runs[key] = {"captions": caps}
                caps = runs[key]["captions"]
                before = runs[run_key("before", seed, split)]["captions"]
                m = caption_metrics(dict(enumerate(refs)), dict(enumerate(caps)), ("bleu", "cider"))
                sp["rows"][f"{name}, seed {seed}"] = {
                    "row": name, "seed": seed, "captions": caps, "CIDEr": m["CIDEr"], "BLEU-4": m["BLEU-4"],
                    "differ": sum(a != b for a, b in zip(caps, before))}
                print(json.dumps({"split": split, "row": name, "seed": seed, "CIDEr": round(m["CIDEr"], 4),
                                  "differ": sp["rows"][f"{name}, seed {seed}"]["differ"]}), flush=True)
                save()
        theirs = averaged(sp["rows"], "before", refs, cfg.seeds)
        served = averaged(sp["rows"], "drafts + bank vocabulary", refs, cfg.seeds)
        sp["paired"] = {"drafts + bank vocabulary": paired_bootstrap(served, theirs)}
        if cfg.bf16:
            sp["paired_bf16"] = paired_bootstrap(averaged(sp["rows"], "drafts + bank vocabulary, bf16 LM", refs,
                                                          cfg.seeds), served)
        sp["side_by_side"] = [
            {"photo": os.path.basename(items[i][0]),
             **{name: sp["rows"][f"{name}, seed 0"]["captions"][i] for name in rows_def}}
            for i in range(min(cfg.side_by_side, len(images)))]
        save()
    return report


def averaged(rows: dict, name: str, refs: list[list[str]], seeds) -> list[float]:
    """Each photo's CIDEr-D under row ``name``, averaged over its seeds."""
    from zsc_core.metrics import per_image_cider

    ref_map = dict(enumerate(refs))
    per = [per_image_cider(ref_map, dict(enumerate(r["captions"]))) for r in rows.values()
           if r["row"] == name and r["seed"] in seeds]
    return [sum(p[i] for p in per) / len(per) for i in range(len(refs))]


def markdown(report: dict) -> str:
    md = ["# Faster decoding, same captions? (`python -m train.speed_parity`)\n\n",
          f"Model `{report['model']}` at its served decoding (S=8 greedy, bank guidance, faces). *before*: "
          "`transformers`' `generate`, one token a pass, the full head. *drafts*: "
          f"{report['draft_tokens']} guesses a pass from each row's n-gram table, kept where greedy decoding "
          "agrees (decode.py). *bank vocabulary*: the head scores only the tokens the bank's captions use. "
          "*Differ*: photos whose caption is not *before*'s at the same seed.\n\n"]
    for split, sp in report["splits"].items():
        md.append(f"## {split} ({sp['n_images']} photos)\n\n| row | seed | CIDEr | BLEU-4 | differ |\n"
                  "| --- | --- | --- | --- | --- |\n")
        for r in sp["rows"].values():
            md.append(f"| {r['row']} | {r['seed']} | {r['CIDEr']:.3f} | {r['BLEU-4']:.3f} | {r['differ']} |\n")
        for name, b in sp.get("paired", {}).items():
            md.append(f"\n{name} minus before (seeds averaged per photo, per-photo CIDEr-D, 95% paired bootstrap): "
                      f"{b['diff']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}], photos won / lost {b['wins']} / "
                      f"{b['losses']}\n")
        if sp.get("paired_bf16"):
            b = sp["paired_bf16"]
            md.append(f"\nbf16 LM minus fp32 LM (both drafts + bank vocabulary; same bootstrap): {b['diff']:+.4f} "
                      f"[{b['low']:+.4f}, {b['high']:+.4f}], photos won / lost {b['wins']} / {b['losses']}\n")
        if sp.get("side_by_side"):
            names = [k for k in sp["side_by_side"][0] if k != "photo"]
            md.append("\nSeed 0, side by side:\n\n| photo | " + " | ".join(names) + " |\n| --- |"
                      + " --- |" * len(names) + "\n")
            for r in sp["side_by_side"]:
                md.append(f"| {r['photo']} | " + " | ".join(r[n] for n in names) + " |\n")
        md.append("\n")
    return "".join(md)


if __name__ == "__main__":
    main()
