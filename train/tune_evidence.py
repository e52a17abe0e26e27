"""Pixel evidence on real photos (issue #53): which detectors shape the `photo` caption, chosen on 189 photos.

    python -m train.tune_evidence                 # -> results/tune_evidence_photo.{json,md}

Both choice sets, each reported on its own: train-paired (80 COCO train2017 photos) and val-dev (109 val2017
photos). Rows: the CIDEr-consensus retrieval caption of the 300 nearest bank captions, plain and conditioned on each
evidence source (evidence.neighbour_index); the `photo` model at its served decoding (S=8 greedy, guidance), plain
and with each evidence source, over 4 sampling seeds. Per row: CIDEr, BLEU-4, a person named on photos whose
references name people (>= 3 of 5) and on photos none name, counts right where >= 3 references agree on a number,
grounding, distinct captions per 100 photos; per split a paired bootstrap of each captioner row (its 4 seeds
averaged per photo) against the best retrieval row.

The detectors run once per photo and are cached with their scores (the thresholds are settings). A caption is a
function of its photo, its settings and its seed (gap.per_image), and a photo on which no detector fires reads the
same neighbours with or without evidence, so an evidence row decodes only the photos its detectors fire on and
takes the plain row's caption for the others. Runs are cached by setting fingerprint, seed and split; the report is
written after every run.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from train.common import parse_overrides, save_report, set_threads

RETRIEVAL_K = 300
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SOURCES = {  # row name -> the evidence settings it reads
    "plain": {"faces": False, "bodies": False},
    "faces": {"faces": True, "bodies": False},
    "bodies (HOG)": {"faces": False, "bodies": True},
    "faces + bodies": {"faces": True, "bodies": True},
    "faces + counted": {"faces": True, "bodies": False, "count_people": True},
    # the body crop of the people found moves the query (experiments/people_probes.py chose grow 3, weight 0.3)
    "faces + body crops": {"faces": True, "bodies": False, "crop_weight": 0.3},
    # the served evidence at other guidance weights (chosen on train-paired alone before #53; these decode every photo)
    "faces + guidance 0.5": {"faces": True, "bodies": False, "guide_weight": 0.5},
    "faces + guidance 0.6": {"faces": True, "bodies": False, "guide_weight": 0.6},
    "faces + 12 samples": {"faces": True, "bodies": False, "samples": 12},  # more candidates, at a latency cost
    # longer candidates: no sentence end before N tokens (the served captions ran ~1.5 tokens shorter than the
    # retrieved ones and ~2 shorter than the references)
    "faces + at least 9 tokens": {"faces": True, "bodies": False, "min_new_tokens": 9},
    "faces + at least 11 tokens": {"faces": True, "bodies": False, "min_new_tokens": 11},
}
# a source of these alone changes only the neighbours of the photos its detectors fire on
EVIDENCE_KEYS = {"faces", "bodies", "count_people", "crop_weight"}


def reads_evidence_only(source: str) -> bool:
    """Whether a source changes only what is read (a retrieval row too; its decoding differs only where a detector
    fires), not how it is decoded."""
    return set(SOURCES[source]) <= EVIDENCE_KEYS


@dataclass
class EvidenceTuneConfig:
    preset: str = "photo"  # the photo model whose served decoding reads the evidence (photo-memory: out= another file)
    splits: tuple[str, ...] = ("train-paired", "val-dev")
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    sources: tuple[str, ...] = tuple(n for n in SOURCES if reads_evidence_only(n))
    out: str = "results/tune_evidence_photo"
    batch: int = 8
    threads: int = 0
    decode: bool = True  # false: the retrieval rows and the detectors only


def agreed_count(refs: list[str]) -> str | None:
    """The number word (two..ten) that at least 3 of the references use, if one is."""
    from collections import Counter

    c = Counter(w for r in refs for w in dict.fromkeys(x.strip(".,").lower() for x in r.split()) if w in NUMBERS)
    n, k = (c.most_common(1) or [(None, 0)])[0]
    return n if k >= 3 else None


def row_metrics(captions: list[str], refs: list[list[str]]) -> dict:
    from train.benchmark_photo import photo_grounding
    from zsc_core.metrics import caption_metrics
    from zsc_core.people import names_person

    s = caption_metrics(dict(enumerate(refs)), dict(enumerate(captions)), ("bleu", "cider"))
    people = [i for i, r in enumerate(refs) if sum(names_person(x) for x in r) >= 3]
    none = [i for i, r in enumerate(refs) if not any(names_person(x) for x in r)]
    counted = [(i, agreed_count(r)) for i, r in enumerate(refs) if agreed_count(r)]
    g = photo_grounding(captions, refs)
    return {"CIDEr": float(s["CIDEr"]), "BLEU-4": float(s["BLEU-4"]),
            "person_named": [sum(names_person(captions[i]) for i in people), len(people)],
            "person_named_without": [sum(names_person(captions[i]) for i in none), len(none)],
            "counts_right": [sum(n in captions[i].lower().split() for i, n in counted), len(counted)],
            "grounded": [g["own"], g["other"], g["p_value"]], "distinct_per_100": g["distinct_per_100"]}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(EvidenceTuneConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from tqdm import tqdm

    from train.cache_keys import setting_fingerprint
    from zsc_core.bank import cider_consensus_caption
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.evidence import Detection, Evidence, shared_detectors, wants
    from zsc_core.images import load_image
    from zsc_core.metrics import paired_bootstrap, per_image_cider
    from zsc_core.presets import PRESETS

    path = PRESETS[cfg.preset].checkpoint_path()
    cap = Captioner.from_pretrained(cfg.preset)
    bank = cap.bank
    texts = bank.captions()
    report: dict = {"model": os.path.basename(path), "splits": {}}
    if os.path.isfile(cfg.out + ".json"):
        with open(cfg.out + ".json") as f:
            report = json.load(f)
    runs: dict[str, dict] = report.setdefault("runs", {})  # key -> {"captions": [...]}
    for earlier in ("results/tune_guidance_photo_per_image.json",):  # served runs already captioned (same keys)
        if os.path.isfile(earlier):
            with open(earlier) as f:
                for r in json.load(f).get("rows", []):
                    runs.setdefault(json.dumps(r["key"]), {"captions": r["captions"]})

    def save() -> None:
        save_report(cfg.out, report, markdown(report))

    det = shared_detectors()
    for split in cfg.splits:
        items = coco_items(split)
        images = [load_image(p) for p, _ in items]
        refs = [caps for _, caps in items]
        sp = report["splits"].setdefault(split, {"n_images": len(items), "rows": {}})
        if "detections" not in sp:  # every face of p >= 0.5 and every HOG person of margin >= 0, with its score
            found = []
            for im in tqdm(images, desc=f"detect {split}"):
                e = det.detect([im], True, True, 0.5, 0.0)[0]
                found.append(e.to_dict())
            sp["detections"] = found
            save()

        def evidence(over: dict, detections: list[dict]) -> list[Evidence]:
            fp, bs = cap.config.evidence.face_prob, cap.config.evidence.body_score
            return [Evidence([Detection("face", tuple(f[:4]), f[4]) for f in d["faces"] if over.get("faces")
                              and f[4] >= over.get("face_prob", fp)],
                             [Detection("person", tuple(b[:4]), b[4]) for b in d["people"] if over.get("bodies")
                              and b[4] >= over.get("body_score", bs)])
                    for d in detections]

        feats = cap.clip.encode_image(cap.clip.pixels(images)).float()
        rows = sp["rows"]
        for name in filter(reads_evidence_only, cfg.sources):  # retrieval rows read evidence only
            over = SOURCES[name]
            ev = evidence(over, sp["detections"])
            query = cap.query(images, ev, **over) if over.get("crop_weight") else feats
            picks = cider_consensus_caption(bank, texts.captions, query, RETRIEVAL_K, texts.idf,
                                            ev if name != "plain" else None, over.get("count_people", False))
            rows[f"retrieval, {name}"] = {"kind": "retrieval", "source": name, "captions": picks,
                                          "fires": sum(wants(e, False)[0] for e in ev),
                                          "metrics": row_metrics(picks, refs)}
            save()
        if not cfg.decode:
            continue
        served = cap.config.flat()
        base = {"samples": served["samples"], "num_beams": served["num_beams"], "guide_weight": served["guide_weight"]}
        for name in cfg.sources:
            over = {**base, **SOURCES[name]}
            ev = evidence(over, sp["detections"])
            fires = [i for i, e in enumerate(ev) if wants(e, False)[0]]
            for seed in cfg.seeds:
                key = json.dumps([setting_fingerprint(path, **over), seed, split])
                if key not in runs:
                    plain = runs.get(json.dumps([setting_fingerprint(path, **base, **SOURCES["plain"]), seed, split]))
                    # a source that decodes otherwise may change every photo's caption
                    todo = fires if reads_evidence_only(name) and name != "plain" and plain is not None \
                        else range(len(images))
                    caps = list(plain["captions"]) if plain is not None else [""] * len(images)
                    todo = list(todo)
                    for i in tqdm(range(0, len(todo), cfg.batch), desc=f"{split} {name} seed {seed}"):
                        idx = todo[i:i + cfg.batch]
                        for j, r in zip(idx, cap.caption([images[j] for j in idx], evidence=[ev[j] for j in idx],
                                                         seed=seed, **over)):
                            caps[j] = r.caption
                    runs[key] = {"captions": caps}
                caps = runs[key]["captions"]
                row = rows[f"`{cfg.preset}` served decoding, {name}, seed {seed}"] = {
                    "kind": "captioner", "source": name, "seed": seed, "captions": caps, "fires": len(fires),
                    "metrics": row_metrics(caps, refs)}
                print(json.dumps({"split": split, "row": name, "seed": seed,
                                  "CIDEr": round(row["metrics"]["CIDEr"], 4)}), flush=True)
                save()
        # paired: each captioner source (its seeds averaged per photo) against the best retrieval row
        ref_map = dict(enumerate(refs))
        best = max((r for r in rows.values() if r["kind"] == "retrieval"), key=lambda r: r["metrics"]["CIDEr"])
        theirs = per_image_cider(ref_map, dict(enumerate(best["captions"])))
        sp["paired"] = {"against": f"retrieval, {best['source']}", "rows": {}}
        for name in cfg.sources:
            seeds = [r for r in rows.values() if r["kind"] == "captioner" and r["source"] == name]
            if not seeds:
                continue
            per = [per_image_cider(ref_map, dict(enumerate(r["captions"]))) for r in seeds]
            ours = [sum(p[i] for p in per) / len(per) for i in range(len(images))]
            sp["paired"]["rows"][name] = paired_bootstrap(ours, [theirs[i] for i in range(len(images))])
        save()
    return report


def markdown(report: dict) -> str:
    md = ["# Pixel evidence on real photos (`python -m train.tune_evidence`)\n\n",
          f"Model `{report['model']}` at its served decoding (S=8 greedy, bank guidance). Retrieval: the CIDEr-"
          f"consensus caption of the {RETRIEVAL_K} nearest bank captions. Evidence: MTCNN faces (p >= 0.9) and "
          "OpenCV HOG people (margin >= 1.5); with a person found, the neighbours are the nearest of the 3,000 "
          "nearest that name people. *People*: a person named on photos whose references name people (>= 3 of 5); "
          "*without*: on photos none of whose references names one. *Counts*: the agreed number word (>= 3 "
          "references) named. *Fires*: photos on which the evidence found a person.\n\n"]
    for split, sp in report["splits"].items():
        md.append(f"## {split} ({sp['n_images']} photos)\n\n| row | fires | CIDEr | BLEU-4 | people | without | "
                  "counts | grounded (own / other) | distinct |\n| --- | --- | --- | --- | --- | --- | --- | --- | "
                  "--- |\n")
        for name, r in sp["rows"].items():
            m = r["metrics"]
            md.append(f"| {name} | {r['fires']} | {m['CIDEr']:.3f} | {m['BLEU-4']:.3f} | {m['person_named'][0]} / "
                      f"{m['person_named'][1]} | {m['person_named_without'][0]} / {m['person_named_without'][1]} | "
                      f"{m['counts_right'][0]} / {m['counts_right'][1]} | {m['grounded'][0]} / {m['grounded'][1]} | "
                      f"{m['distinct_per_100']:.0f} |\n")
        p = sp.get("paired")
        if p:
            md.append(f"\nCaptioner rows (4 seeds averaged per photo) minus {p['against']}, per-photo CIDEr-D, "
                      "95% paired bootstrap:\n\n| evidence | difference [95%] | photos won / lost |\n| --- | --- | --- "
                      "|\n")
            for name, b in p["rows"].items():
                md.append(f"| {name} | {b['diff']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}] | {b['wins']} / "
                          f"{b['losses']} |\n")
        md.append("\n")
    return "".join(md)


if __name__ == "__main__":
    main()
