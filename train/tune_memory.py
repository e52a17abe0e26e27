"""Choose the photo models' served settings on train-paired, with 4 sampling seeds, against retrieval (issue #45).

    python -m train.tune_memory                       # -> results/tune_memory_photo.{json,md}
    python -m train.tune_memory gpu=true              # also S=20 candidates (slow on CPU; not run on 2026-12-06)
    python -m train.tune_memory study=guidance        # bank-guided decoding -> results/tune_guidance_photo.{json,md}

A study is a list of rows: ``memory`` (the region-memory model's settings and ablations) or ``guidance`` (bank-
guided decoding, guidance.py, on the `photo` model and the memory model).

Every row captions the 80 train-paired photos (never val-dev) through the Captioner facade. Rows with S > 1 run
once per sampling seed (0-3); S=1 rows are noise-free and run once. The baselines: the CIDEr-consensus caption of
the 300 nearest bank captions (the retrieval baseline the issue's target names) and the `photo` model at its CPU
setting before bank guidance (guide_weight pinned to 0, so the row keeps its meaning as the defaults move). A
row's captions are cached under the model's fingerprint, its settings and the seed, and the report is written after
every row, so a rerun scores only what changed.

The served CPU setting is the candidate with the highest mean CIDEr among those within the CPU latency budget
(3 s a photo, bench/photo_latency.py); the served GPU setting the highest among the CPU and GPU rows (a GPU serves
the CPU setting where nothing slower scores higher). The report says whether each beats retrieval on every seed.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from train.common import parse_overrides, set_threads

RETRIEVAL_K = 300


@dataclass
class TuneConfig:
    study: str = "memory"  # which rows: "memory" or "guidance" (STUDIES)
    model: str = ""  # the model the rows run; "": the study's
    split: str = "train-paired"
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    gpu: bool = False  # also the GPU candidates (S=20)
    groups: tuple[str, ...] = ()  # only these row groups (baseline, cpu, ablation, gpu); empty: all
    out: str = ""  # "": results/tune_{study}_photo
    batch: int = 8
    threads: int = 0
    # Only the rows of these names, separated by ";" (a rerun of chosen rows, e.g. under per-image noise); the report
    # then holds only them and makes no choice: the study's full report keeps it.
    only: str = ""


# Rows that mean "before bank guidance" pin guide_weight=0: they must not follow `photo`'s defaults, which now guide.
BASELINE = ("baseline", "`photo` (TIPCap S4) at its CPU setting before bank guidance, S=8 greedy",
            {"model": "photo", "samples": 8, "num_beams": 1, "guide_weight": 0.0})


def rows(cfg: TuneConfig) -> list[tuple[str, str, dict]]:
    """(group, name, overrides) of every row of the study; ``"model": NAME`` in the overrides runs that preset."""
    return STUDIES[cfg.study][1](cfg)


def memory_rows(cfg: TuneConfig) -> list[tuple[str, str, dict]]:
    out = [
        BASELINE,
        ("cpu", "memory, S=8 greedy, query noise sigma2=0.08 (its training noise)", {"samples": 8, "sigma2": 0.08}),
        ("cpu", "memory, S=8 greedy, query noise sigma2=0.02", {"samples": 8, "sigma2": 0.02}),
        ("ablation", "memory, S=1 (noise-free)", {"samples": 1}),
        ("ablation", "memory, S=1, regions off (global anchor only)", {"samples": 1, "use_regions": False}),
        ("ablation", "memory, S=1, entities off", {"samples": 1, "entities": False}),
        ("ablation", "memory, S=1, regions and entities off", {"samples": 1, "use_regions": False,
                                                               "entities": False}),
        ("ablation", "memory, S=1, N_cr=1", {"samples": 1, "n_cr": 1}),
        ("ablation", "memory, S=1, N_cr=5", {"samples": 1, "n_cr": 5}),
        ("ablation", "memory, S=1, DeCap softmax weighting, temperature 0.02", {"samples": 1, "weighting": "softmax",
                                                                               "temperature": 0.02}),
        ("ablation", "memory, S=1, DeCap softmax weighting, temperature 0.1", {"samples": 1, "weighting": "softmax",
                                                                              "temperature": 0.1}),
    ]
    if cfg.gpu:
        out += [("gpu", "memory, S=20 greedy, sigma2=0.02", {"samples": 20, "sigma2": 0.02}),
                ("gpu", "memory, S=20 greedy, sigma2=0.08", {"samples": 20, "sigma2": 0.08})]
    return out


def guidance_rows(cfg: TuneConfig) -> list[tuple[str, str, dict]]:
    g = {"samples": 8, "num_beams": 1}
    out = [BASELINE]
    out += [("cpu", f"`photo`, S=8 greedy, bank guidance weight {w}", {**g, "guide_weight": w})
            for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
    out += [("cpu", f"`photo`, S=8 greedy, bank guidance weight 0.5 from the {k} nearest (guide_k={k})",
             {**g, "guide_weight": 0.5, "guide_k": k}) for k in (50, 1000)]
    out += [("cpu", "`photo`, S=12 greedy, bank guidance weight 0.5", {**g, "samples": 12, "guide_weight": 0.5})]
    out += [("ablation", "`photo`, S=1, no guidance", {"samples": 1, "guide_weight": 0.0}),
            ("ablation", "`photo`, S=1, bank guidance weight 0.4", {"samples": 1, "guide_weight": 0.4}),
            ("ablation", "`photo`, S=1, bank guidance weight 0.5", {"samples": 1, "guide_weight": 0.5}),
            ("ablation", "memory model, S=8 greedy, bank guidance weight 0.5",
             {"model": "photo-memory", "samples": 8, "guide_weight": 0.5})]
    if cfg.gpu:
        out += [("gpu", "`photo`, S=20 greedy, bank guidance weight 0.5", {"samples": 20, "num_beams": 1,
                                                                          "guide_weight": 0.5})]
    return out


# study -> (its default model, its rows)
STUDIES = {"memory": ("runs/memory-photo/out.safetensors", memory_rows),
           "guidance": ("checkpoints/tipcap-s4-photo.safetensors", guidance_rows)}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(TuneConfig(), sys.argv[1:] if argv is None else argv)
    if cfg.study not in STUDIES:
        raise SystemExit(f"unknown study {cfg.study!r}; known: {sorted(STUDIES)}")
    cfg.model = cfg.model or STUDIES[cfg.study][0]
    cfg.out = cfg.out or f"results/tune_{cfg.study}_photo"
    set_threads(cfg.threads)
    from train.cache_keys import setting_fingerprint
    from zsc_core.bank import cider_consensus_caption
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics, distinct_per_100, person_rate
    from zsc_core.presets import PRESETS

    items = coco_items(cfg.split)
    images = [load_image(p) for p, _ in items]
    refs = {i: caps for i, (_, caps) in enumerate(items)}
    report: dict = {"split": cfg.split, "n_images": len(items), "model": cfg.model, "rows": []}
    previous = {}  # runs already scored, by (setting fingerprint, seed, split): this report's, then other studies'
    for path in [cfg.out + ".json"] + [f"results/tune_{s}_photo.json" for s in STUDIES]:
        if os.path.isfile(path):
            with open(path) as f:
                for r in json.load(f).get("rows", []):
                    if "key" in r:
                        previous.setdefault(tuple(r["key"]), r)
    models: dict[str, Captioner] = {}

    def model(source: str) -> Captioner:
        if source not in models:
            shared = next(iter(models.values()), None)
            models[source] = Captioner.from_pretrained(source, clip=shared.clip if shared else None,
                                                       lm=shared.lm if shared else None)
        return models[source]

    def scored(captions: list[str]) -> float:
        return float(caption_metrics(refs, dict(enumerate(captions)), ("cider",))["CIDEr"])

    def save() -> None:
        os.makedirs(os.path.dirname(cfg.out) or ".", exist_ok=True)
        with open(cfg.out + ".json.tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(cfg.out + ".json.tmp", cfg.out + ".json")
        write_markdown(cfg, report)

    base = model(cfg.model)
    bank = base.bank
    captions = bank.captions()
    feats = base.clip.encode_image(base.clip.pixels(images)).float()
    picks = cider_consensus_caption(bank, captions.captions, feats, RETRIEVAL_K, captions.idf)
    report["retrieval"] = {"name": f"CIDEr-consensus caption of the {RETRIEVAL_K} nearest bank captions",
                           "CIDEr": scored(picks), "captions": picks, "distinct_per_100": distinct_per_100(picks),
                           "person": person_rate(picks, [refs[i] for i in range(len(items))])}
    save()
    for group, name, overrides in rows(cfg):
        if cfg.only and name not in cfg.only.split(";"):
            continue
        if cfg.groups and group not in cfg.groups:  # not run this time: its earlier rows stay in the report
            report["rows"] += [{**r} for r in previous.values() if r.get("name") == name]
            continue
        over = dict(overrides)
        source = PRESETS[over.pop("model")].checkpoint_path() if "model" in over else cfg.model
        seeds = cfg.seeds if over.get("samples", 1) > 1 else (0,)
        runs = []
        for seed in seeds:
            key = [setting_fingerprint(source, **over), seed, cfg.split]
            if tuple(key) in previous:
                runs.append({k: previous[tuple(key)][k] for k in ("key", "seed", "CIDEr", "captions")})
                continue
            cap = model(source)
            caps = []
            for i in range(0, len(images), cfg.batch):
                caps += [r.caption for r in cap.caption(images[i:i + cfg.batch], seed=seed, **over)]
            runs.append({"key": key, "seed": seed, "CIDEr": scored(caps), "captions": caps})
            print(json.dumps({"row": name, "seed": seed, "CIDEr": round(runs[-1]["CIDEr"], 4)}), flush=True)
        for r in runs:
            report["rows"].append({"group": group, "name": name, "overrides": overrides, **r})
        save()
    for group in () if cfg.only else ("cpu", "gpu"):  # the choice: the highest mean over the seeds
        candidates = [s for s in summary(report) if s["group"] in ("cpu", group)]
        if candidates:
            best = max(candidates, key=lambda s: s["mean"])
            report[f"served_{group}"], report[f"served_{group}_overrides"] = best["name"], best["overrides"]
    save()
    return report


def summary(report: dict) -> list[dict]:
    from zsc_core.metrics import distinct_per_100

    """Per named row: the CIDEr of each seed, their mean, and whether every seed beats retrieval."""
    base = report["retrieval"]["CIDEr"]
    out: dict[str, dict] = {}
    for r in report["rows"]:
        s = out.setdefault(r["name"], {"group": r["group"], "name": r["name"], "overrides": r["overrides"],
                                       "seeds": {}, "captions": r["captions"]})
        s["seeds"][r["seed"]] = r["CIDEr"]
    for s in out.values():
        v = list(s["seeds"].values())
        s.update(mean=sum(v) / len(v), min=min(v), beats_retrieval_every_seed=all(x > base for x in v),
                 distinct_per_100=distinct_per_100(s["captions"]))
    return list(out.values())


def write_markdown(cfg: TuneConfig, report: dict) -> None:
    ret = report["retrieval"]
    md = [f"# Photo settings, study `{cfg.study}`, on {report['split']} ({report['n_images']} photos; "
          f"`python -m train.tune_memory study={cfg.study}`)\n\n",
          f"Model `{report['model']}`. CIDEr (pycocoevalcap) per sampling seed. Retrieval baseline, "
          f"{ret['name']}: **{ret['CIDEr']:.3f}** (distinct per 100 photos {ret['distinct_per_100']:.0f}).\n\n",
          "| group | row | CIDEr per seed | mean | beats retrieval on every seed | distinct / 100 (seed 0) |\n",
          "| --- | --- | --- | --- | --- | --- |\n"]
    for s in summary(report):
        seeds = ", ".join(f"{v:.3f}" for _, v in sorted(s["seeds"].items()))
        md.append(f"| {s['group']} | {s['name']} | {seeds} | {s['mean']:.3f} | "
                  f"{'yes' if s['beats_retrieval_every_seed'] else 'no'} | {s['distinct_per_100']:.0f} |\n")
    for group in ("cpu", "gpu"):
        if report.get(f"served_{group}"):
            md.append(f"\nChosen for {group.upper()} (highest mean): {report[f'served_{group}']}.\n")
    with open(cfg.out + ".md.tmp", "w") as f:
        f.write("".join(md))
    os.replace(cfg.out + ".md.tmp", cfg.out + ".md")


if __name__ == "__main__":
    main()
