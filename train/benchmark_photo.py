"""The photo benchmark: every photo captioner, ablation and baseline on the held-out real COCO photos.

    python -m train.benchmark_photo                 # -> results/benchmark_photo.{md,json} and two gap figures
    python -m train.benchmark_photo fresh=true      # score every row again

All rows caption ``data/coco/val-dev`` (109 COCO val2017 photos, 5 references each; never trained on, never used
to choose anything) through the :class:`Captioner` facade and score with pycocoevalcap. A row's scores are reused
while its checkpoint bytes and settings are unchanged, and the report is written after every row, so an
interrupted run keeps what it scored. Rows whose checkpoint is not trained yet list the command that trains it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import torch

from train.benchmark import AUTHORS_INFERENCE, OURS_INFERENCE, rate
from train.common import parse_overrides, set_threads
from zsc_core.presets import PRESETS, checkpoints_dir

GREEDY = 1  # the prompt protocol decodes greedily, as the app serves the photo preset


@dataclass
class PhotoBenchConfig:
    """What to score and where to write it."""

    split: str = "val-dev"
    metrics: tuple[str, ...] = ("bleu", "meteor", "rouge", "cider")
    out: str = "results/benchmark_photo"
    fresh: bool = False  # score every row again
    prompts: bool = True  # the interactive-prompt protocol
    # ...at these S: 1 (one noise-free caption per pass) and the served S (the photo preset's defaults), where the
    # prompted candidates are ranked with the prompt model's prompt_weight
    prompt_samples: tuple[int, ...] = (1, 8)  # both decoded greedily (GREEDY), as the app does
    gap: bool = True  # the bridge's modality-gap analysis (Table-1 numbers, histograms, t-SNE)
    vqa: bool = True  # zero-shot VQA on the real VQAv2 questions of train-paired and val-dev, as the app answers
    threads: int = 0
    # Re-run only the rows README.md reports (HEADLINE); any other row whose key moved keeps its earlier scores,
    # marked as measured before per-image noise (train.cache_keys.NOISE_PROTOCOL) until a full run.
    headline_only: bool = False
    # ...and also the rows of these presets whose key moved (a preset whose served settings changed; e.g.
    # rerun_presets=photo-memory after its faces were switched on)
    rerun_presets: tuple[str, ...] = ()


@dataclass
class Row:
    group: str
    name: str
    preset: str  # the preset whose bridge and LM the row runs on, and whose adaptor unless ``checkpoint`` names one
    overrides: dict = field(default_factory=dict)
    checkpoint: str = ""  # an ablation's adaptor, under checkpoints/ (its ``train`` command produces it)
    train: str = ""

    def source(self) -> str:
        """What the row's captioner is loaded from: the ablation's checkpoint path, else the preset's name."""
        return os.path.join(checkpoints_dir(), self.checkpoint) if self.checkpoint else self.preset

    def path(self) -> str:
        return self.source() if self.checkpoint else PRESETS[self.preset].checkpoint_path()

    def train_command(self) -> str:
        return self.train or PRESETS[self.preset].train_command


# Region noise on the bridge (MacCap eq. 2-4): the same MacCap run as `photo-maccap` with sigma2=0.
NO_NOISE = "ablations/maccap-no-noise-photo.safetensors"
NO_NOISE_TRAIN = ("python -m train.train_maccap preset=photo corpus=coco eval_set=coco eval_n=40 steps=400 "
                  f"eval_every=100 sigma2=0 threads=2 out=checkpoints/{NO_NOISE} run_dir=runs/maccap-no-noise-photo")


MEMORY = "region-memory model (`photo-memory`)"
EVIDENCE_BASELINE = "CIDEr-consensus corpus caption of the"  # the retrieval row that reads the served evidence
# The rows README.md reports (docs/figures.py): (preset, overrides) of rows on a preset's own checkpoint.
HEADLINE = (("photo", {}), ("photo", {"guide_weight": 0.0}), ("photo", {"samples": 1, "num_beams": 1}),
            ("photo-memory", {}), ("photo-maccap", {"samples": 20}), ("photo-tipcap-s1", {"samples": 20}),
            ("photo-maccap-authors", {}))
EARLIER = "measured before per-image noise (2026-12-07): its samples depended on the photo's place in a batch of 8"
NO_GUIDE = {"guide_weight": 0.0}  # the rows measured before bank guidance (guidance.py) keep their meaning
ROWS = [
    Row("Captioner", "TIPCap S4 (`photo`), served on CPU and on a GPU: its defaults, S=8 greedy samples decoded from "
        "the nearest bank captions with bank guidance 0.4 (each token mixed with the n-grams of the 300 nearest), "
        "CIDEr-D reranked against them (the app, `caption`, `evaluate`)", "photo", {}),
    Row("Captioner", "TIPCap S4 (`photo`), one guided sample (S=1)", "photo", {"samples": 1, "num_beams": 1}),
    Row("Captioner", "TIPCap S4, text only, decoded from the nearest bank captions, one sample (S=1), no bank "
        "guidance", "photo", {"samples": 1, "num_beams": 1, **NO_GUIDE}),
    Row("Captioner", "MacCap (`photo-maccap`), S=20 + CLIP rerank", "photo-maccap", {"samples": 20}),
    Row("Captioner", "MacCap, one sample (S=1)", "photo-maccap", {"samples": 1, "num_beams": 1}),
    Row("Captioner", "TIPCap S1, N(mu, Sigma) from 80 paired photos (`photo-tipcap-s1`), S=20 + CLIP rerank",
        "photo-tipcap-s1", {"samples": 20}),
    Row("Captioner", "TIPCap S1, one sample (S=1)", "photo-tipcap-s1", {"samples": 1, "num_beams": 1}),
    Row("Captioner", f"{MEMORY}, its defaults: S=8 greedy, query noise sigma2=0.02, bank guidance 0.5, CIDEr-D "
        "reranked", "photo-memory", {}),
    Row("Captioner", f"{MEMORY}, one noise-free sample (S=1), no bank guidance", "photo-memory",
        {"samples": 1, "num_beams": 1, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4 served on CPU without bank guidance (S=8 greedy; the `photo` default before it)",
        "photo", NO_GUIDE),
    Row("Ablation", "TIPCap S4, S=20, each sample a beam search of width 5, all 100 hypotheses CIDEr-D reranked, "
        "no bank guidance (the GPU setting before it)", "photo",
        {"samples": 20, "num_beams": 5, "keep_beams": True, **NO_GUIDE}),
    Row("Ablation", f"{MEMORY}, its defaults without bank guidance", "photo-memory", NO_GUIDE),
    Row("Ablation", "TIPCap S4, S=20 decoded greedily, 20 candidates CIDEr-D ranked (the `photo` default before "
        "beam search with every hypothesis ranked)", "photo", {"samples": 20, "num_beams": 1, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=20, decoded from the nearest bank captions, embedding-consensus rerank (mean "
        "cosine with them)", "photo",
        {"samples": 20, "rerank": "consensus", "num_beams": 5, "keep_beams": True, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=20, decoded from the nearest bank captions, CIDEr-D rerank against only the "
        "ones the input mix averages (rerank_k=0)", "photo",
        {"samples": 20, "rerank_k": 0, "num_beams": 5, "keep_beams": True, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=20, decoded from the mean of the 300 nearest bank captions (mix_k=300; "
        "not chosen, train.build_bank), CIDEr-D rerank against them", "photo",
        {"samples": 20, "mix_k": 300, "num_beams": 5, "keep_beams": True, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=1, decoded from the mean of the 300 nearest bank captions (mix_k=300)",
        "photo", {"samples": 1, "num_beams": 1, "mix_k": 300, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=20 + CIDEr-D rerank, the image feature alone as input (bank_mix=0)", "photo",
        {"samples": 20, "bank_mix": 0.0, "num_beams": 5, "keep_beams": True, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=1, the image feature alone as input (bank_mix=0)", "photo",
        {"samples": 1, "num_beams": 1, "bank_mix": 0.0, **NO_GUIDE}),
    Row("Ablation", "TIPCap S4, S=20 + CLIP rerank, image feature alone (MacCap's ranking; the `photo` preset "
        "before the caption bank)", "photo",
        {"samples": 20, "rerank": "clip", "bank_mix": 0.0, "num_beams": 5, "keep_beams": True, **NO_GUIDE}),
    Row("Ablation", "MacCap without subregions (the global feature as every region token), S=20 + rerank",
        "photo-maccap", {"samples": 20, "use_regions": False}),
    Row("Ablation", "MacCap without subregions, S=1", "photo-maccap",
        {"samples": 1, "num_beams": 1, "use_regions": False}),
    Row("Ablation", "MacCap trained without region noise (sigma2=0), S=1", "photo-maccap",
        {"samples": 1, "num_beams": 1}, NO_NOISE, NO_NOISE_TRAIN),
    Row("Ablation", "MacCap trained without region noise, S=20 sampled with sigma2=0.016 (the noise `photo-maccap` "
        "was trained with) + CLIP rerank", "photo-maccap", {"samples": 20, "sigma2": 0.016}, NO_NOISE, NO_NOISE_TRAIN),
    Row("Ablation", f"{MEMORY}, S=1, subregions off (the global anchor alone)", "photo-memory",
        {"samples": 1, "num_beams": 1, "use_regions": False, **NO_GUIDE}),
    Row("Ablation", f"{MEMORY}, S=1, entity prompts off", "photo-memory",
        {"samples": 1, "num_beams": 1, "entities": False, **NO_GUIDE}),
    Row("Ablation", f"{MEMORY}, S=1, N_cr=1", "photo-memory", {"samples": 1, "num_beams": 1, "n_cr": 1, **NO_GUIDE}),
    Row("Ablation", f"{MEMORY}, S=1, N_cr=5", "photo-memory", {"samples": 1, "num_beams": 1, "n_cr": 5, **NO_GUIDE}),
    Row("Ablation", f"{MEMORY}, S=1, DeCap's softmax weighting of the neighbours (temperature 0.02)", "photo-memory",
        {"samples": 1, "num_beams": 1, "weighting": "softmax", "temperature": 0.02, **NO_GUIDE}),
    Row("Fidelity", "our MacCap adaptor + the authors' inference (S=4 x beam 4, double-softmax regions, CLS "
        "eligible, noise on the unnormalised sum)", "photo-maccap", AUTHORS_INFERENCE),
    Row("Fidelity", "our MacCap adaptor + the authors' inference, without subregions", "photo-maccap",
        {**AUTHORS_INFERENCE, "use_regions": False}),
    Row("Fidelity", "the authors' adaptor + their inference (`photo-maccap-authors`)", "photo-maccap-authors", {}),
    Row("Fidelity", "the authors' adaptor + their inference, without subregions", "photo-maccap-authors",
        {"use_regions": False}),
    Row("Fidelity", "the authors' adaptor + our inference (S=20, beam 1, renormalised patch rows)",
        "photo-maccap-authors", OURS_INFERENCE),
    Row("Fidelity", "the authors' adaptor + our inference, without subregions", "photo-maccap-authors",
        {**OURS_INFERENCE, "use_regions": False}),
]


TIPCAP_S4 = "photo-tipcap-s4" if "photo-tipcap-s4" in PRESETS else "photo"  # the TIPCap S4 photo model's preset


def prompt_key(samples: int) -> str:
    """Where the report keeps the prompt protocol at ``samples``: "prompts" at S=1 (as before), "prompts_S8"..."""
    return "prompts" if samples == 1 else f"prompts_S{samples}"


def photo_grounding(captions: list[str], refs: list[list[str]]) -> dict:
    """The shipped-model rule on real photos: do captions name a noun (spaCy head lemma) of their own photo's
    references more often than of the next photo's? (sign test; see zsc_core.evaluation.grounding)"""
    from train.benchmark import GROUNDING_P
    from zsc_core.evaluation import grounding
    from zsc_core.metrics import distinct_per_100, person_rate
    from zsc_core.prompts import noun_phrases

    g = grounding([{lm for _, lm in noun_phrases(c)} for c in captions],
                  [{lm for r in rs for _, lm in noun_phrases(r)} for rs in refs])
    return {"own": g.own, "other": g.other, "p_value": g.p_value, "grounded": g.p_value < GROUNDING_P,
            "distinct_per_100": distinct_per_100(captions), "person": person_rate(captions, refs)}


def _table_row(name: str, scores: dict, examples: list[str], g: dict | None = None) -> str:
    def f(k):
        v = scores.get(k)
        return f"{v:.3f}" if isinstance(v, float) else "n/a"

    eg = "; ".join(f"“{e}”" for e in examples[:2])
    gr = f"{'yes' if g['grounded'] else '**no**'} ({g['own']} / {g['other']}, p={g['p_value']:.2g})" if g else ""
    distinct = f"{g['distinct_per_100']:.0f}" if g and "distinct_per_100" in g else ""
    person = g.get("person") if g else None
    people = f"{person['named']} / {person['photos']}" if person else ""
    return (f"| {name} | {f('BLEU-4')} | {f('METEOR')} | {f('ROUGE-L')} | {f('CIDEr')} | {gr} | {distinct} | "
            f"{people} | {eg} |\n")


def paired_against_baselines(rows: list[dict], refs: dict[int, list[str]]) -> list[dict]:
    """Is the default photo row's CIDEr above each baseline's by more than the photos' spread? Per-photo CIDEr-D of
    both, and a paired bootstrap of the difference (zsc_core.metrics.paired_bootstrap)."""
    from zsc_core.metrics import paired_bootstrap, per_image_cider

    default = next((r for r in rows if r["group"] == "Captioner" and r.get("captions")), None)
    if default is None:
        return []
    ours = per_image_cider(refs, dict(enumerate(default["captions"])))
    ids = sorted(ours)
    out = []
    for r in rows:
        if r["group"] == "Baseline" and r.get("captions"):
            theirs = per_image_cider(refs, dict(enumerate(r["captions"])))
            out.append({"name": r["name"], **paired_bootstrap([ours[i] for i in ids], [theirs[i] for i in ids])})
    return out


def write_report(cfg: PhotoBenchConfig, report: dict) -> None:
    """Write the JSON and the Markdown report (atomically)."""
    os.makedirs(os.path.dirname(cfg.out) or ".", exist_ok=True)
    with open(cfg.out + ".json.tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(cfg.out + ".json.tmp", cfg.out + ".json")
    md = ["# Photo benchmark: real COCO photos, offline (`python -m train.benchmark_photo`)\n\n",
          f"{report.get('n_images', '?')} held-out COCO val2017 photos (`data/coco/{cfg.split}`), 5 references each, "
          f"pycocoevalcap ({report.get('tokenizer', '?')}). Every captioner was trained on COCO caption TEXT only. "
          "*Grounded*: captions name a noun of their own photo's references more often than of the next photo's "
          "(sign test, p < 0.01; own / other photos).\n\n",
          "*Distinct*: distinct captions per 100 photos. *People*: of the photos whose references mostly (3 of 5) "
          "name a person, how many captions name one.\n\n",
          f"The frozen LM ran in {report.get('lm_dtype', 'float32')} (`device.resolve_dtype`: bf16 on a GPU, float32 "
          "on a CPU) but where a row names another dtype: a model whose settings ask for bf16 (`lm_dtype`) gets it on "
          "a CPU that computes bf16. For the served `photo` decoding the two are at parity over 4 seeds on both choice "
          "sets (`results/speed_parity_photo.md`). One sampling seed (0).\n\n",
          "| row | BLEU-4 | METEOR | ROUGE-L | CIDEr | grounded | distinct | people | first captions |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"]
    for group in ("Captioner", "Ablation", "Fidelity", "Baseline"):
        rows = [r for r in report["rows"] if r["group"] == group]
        if rows:
            md.append(f"| **{group}** | | | | | | | | |\n")
        for r in rows:
            if "scores" in r:
                md.append(_table_row(r["name"] + (f" ({r['lm_dtype']} LM)" if r.get("lm_dtype") else "")
                                     + (" (†)" if r.get("note") else ""), r["scores"],
                                     r.get("examples", []), r.get("grounding")))
            else:
                md.append(f"| {r['name']} | not trained: `{r['todo']}` | | | | | | | |\n")
    if any(r.get("note") for r in report["rows"]):
        md.append(f"\n(†) {EARLIER}; `python -m train.benchmark_photo` re-runs it.\n")
    if report.get("paired"):
        md.append("\n## The default (first row) against each baseline, photo by photo\n\nPer-photo CIDEr-D difference "
                  "(default minus baseline), its 95% paired-bootstrap interval over the photos (10,000 resamples), the "
                  "share of resamples where the default's mean is higher, and the photos each one scores higher on."
                  "\n\n| baseline | CIDEr difference [95% interval] | resamples above | photos won / lost |\n"
                  "| --- | --- | --- | --- |\n")
        for b in report["paired"]:
            md.append(f"| {b['name']} | {b['diff']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}] | "
                      f"{100 * b['p_above']:.1f}% | {b['wins']} / {b['losses']} |\n")
    for name in sorted(k for k in report if k.startswith("prompts")):
        p = report[name]
        s = p.get("samples", 1)
        how = ("one noise-free greedy caption per pass" if s == 1 else
               f"S={s} greedy samples per pass, the app's default on CPU; rough caption ranked by "
               f"{p.get('rough_rerank', 'clip')}, refined candidates by CLIP score + {p.get('prompt_weight', 0):g} x "
               "their text cosine with the prompt")
        md.append(f"\n## Interactive prompts at S={s} (`{p['model']}` refining the `photo` preset's rough caption; "
                  f"{how})\n\n"
                  f"For each photo, the first reference noun that the rough caption does not name is prompted "
                  f"(\"An image contains motorcycle\"); {p['tried']} of {p['n_images']} photos had one. The refined "
                  f"caption names it for **{rate(p['followed_phrase'], p['tried'])}** of noun-phrase prompts and "
                  f"**{rate(p['followed_bare'], p['tried'])}** of bare-noun prompts (the rough caption: 0% by "
                  "construction). "
                  f"CIDEr of the rough captions {p['rough_CIDEr']:.3f}, of the captions refined with the "
                  f"noun-phrase prompt {p['refined_CIDEr']:.3f}.\n\nExamples: "
                  + "; ".join(f"{e['rough']!r} + {e['prompt']!r} -> {e['refined']!r}" for e in p["examples"][:4])
                  + "\n" + (f"\n(†) {p['note']}.\n" if p.get("note") else ""))
    v = report.get("vqa")
    if v and v.get("note"):
        md.append(f"\n(The VQA section below was {v['note']}.)\n")
    if v:
        md.append("\n## Zero-shot VQA on real VQAv2 questions (as the app answers: the served caption, "
                  "VQAv2's 3,128 answers)\n\nVQA accuracy, min(#humans who gave the answer / 3, 1). A sanity figure: "
                  "these sets are far too small for a difference to mean much. *As served*: questions of existence, "
                  "counting and class answered from the evidence (vqa.py), the rest with the caption.\n\n"
                  "| questions | candidates | as served | with the caption | question only |\n"
                  "| --- | --- | --- | --- | --- |\n")
        for r in v["rows"]:
            served = f"{r['as_served']:.3f}" if "as_served" in r else "n/a"
            md.append(f"| {r['split']} ({r['n_questions']}) | {'of the answer type' if r['by_type'] else 'all'} | "
                      f"{served} | {r['with_caption']:.3f} | {r['question_only']:.3f} |\n")
    g = report.get("gap")
    if g:
        t = g["table"]
        md.append("\n## Modality gap of the bridge (MacCap Table 1 numbers, val-dev photos and their first "
                  "caption)\n\n| feature | matched cosine mean (max / min) | image-image | text-text | centroid "
                  "distance |\n| --- | --- | --- | --- | --- |\n")
        for k in ("global", "subregion"):
            x = t[k]
            md.append(f"| {k} | {x['paired_cos_mean']:.3f} ({x['paired_cos_max']:.3f} / {x['paired_cos_min']:.3f}) | "
                      f"{x['image_image_cos']:.3f} | {x['text_text_cos']:.3f} | {x['centroid_distance']:.3f} |\n")
        md.append(f"\nSome subregion is closer to the caption than the global feature for "
                  f"{100 * t['share_subregion_closer']:.1f}% of pairs (MacCap: 33% on COCO with a real CLIP). "
                  f"Distance from the mapped captions' mean to the images' mean: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in t.get("mapped_centroid_distance", {}).items())
                  + f". Figures: `{cfg.out}_gap_histograms.png`, `{cfg.out}_gap_tsne.png`.\n")
    with open(cfg.out + ".md.tmp", "w") as f:
        f.write("".join(md))
    os.replace(cfg.out + ".md.tmp", cfg.out + ".md")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(PhotoBenchConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from train.benchmark import _in_training
    from train.build_bridge import TEMPLATES
    from train.cache_keys import model_fingerprint, precision, setting_fingerprint
    from train.loop import RunConfig, corpus_features
    from zsc_core.bank import captions_path, recorded_bank
    from zsc_core.bridge import imagenet_categories
    from zsc_core.captioner import Captioner, lm_dtype
    from zsc_core.checkpoint import file_fingerprint, read_metadata
    from zsc_core.entities import entities_path
    from zsc_core.evaluation import coco_items, evaluate_prompt_following_coco, retrieval_captions
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics
    from zsc_core.presets import preset_status
    from zsc_core.settings import read_settings

    old, previous_prompts, previous = {}, {}, {}
    if os.path.isfile(cfg.out + ".json") and not cfg.fresh:
        with open(cfg.out + ".json") as f:
            previous = json.load(f)
        old = {tuple(r["key"]): r for r in previous.get("rows", []) if "key" in r}
        previous_prompts = {k: v for k, v in previous.items() if k.startswith("prompts")}
    items = coco_items(cfg.split)
    images = [load_image(p) for p, _ in items]
    refs = {i: caps for i, (_, caps) in enumerate(items)}
    # the frozen LM's dtype here for a float32 model (device.resolve_dtype: bf16 on a GPU, float32 on a CPU); a row
    # whose model asks for bf16 (its lm_dtype) and gets it here names its own
    report: dict = {"split": cfg.split, "n_images": len(items), "rows": [],
                    "lm_dtype": precision().get("lm_dtype", "float32")}
    models: dict[str, Captioner] = {}
    photo_bank = recorded_bank(PRESETS["photo"].checkpoint_path()) if preset_status("photo").ready else ""

    def model(source: str) -> Captioner:
        """A preset's captioner by name, or an ablation's by checkpoint path, sharing one bridge and LM."""
        if source not in models:
            shared = next(iter(models.values()), None)
            same = next((m for m in models.values() if m.lm.model.dtype == lm_dtype(source)), None)
            models[source] = Captioner.from_pretrained(source, clip=shared.clip if shared else None,
                                                       lm=same.lm if same else None)
            if not models[source].has_bank and photo_bank:  # consensus rows of models shipped without a bank
                models[source].bank = photo_bank
        return models[source]

    for row in ROWS:
        entry = {"group": row.group, "name": row.name, "preset": row.preset, "overrides": row.overrides,
                 **({"checkpoint": row.checkpoint} if row.checkpoint else {})}
        ready = preset_status(row.preset).ready and os.path.isfile(row.path())
        partial = _in_training(row.path()) if ready else ""
        if not ready or partial:
            entry["todo"] = row.train_command() + (f" (in training: {partial})" if partial else "")
            report["rows"].append(entry)
            continue
        overrides = dict(row.overrides)
        # cached under the weights and the effective settings: a moved default leaves a row that spells out its
        # settings cached, and re-runs one that relied on it
        key = [setting_fingerprint(row.path(), **overrides), cfg.split]
        served = read_settings(row.path()).config.replace(**overrides)
        memory = read_metadata(row.path())["kind"] == "memory"
        if served.uses_bank or memory:
            key.append(file_fingerprint(photo_bank))  # the row's captions depend on the bank's bytes too
        if served.ranking.rerank == "cider":
            key.append(file_fingerprint(captions_path(photo_bank)))  # and on its texts
        if memory and (served.entities.entities or overrides.get("prompt")):
            key.append(file_fingerprint(entities_path(photo_bank)))  # and on its nouns
        entry["key"] = key
        earlier = next((r for r in previous.get("rows", []) if r.get("name") == row.name and "scores" in r), None)
        headline = (row.preset, row.overrides) in HEADLINE and not row.checkpoint
        if tuple(key) in old:
            entry.update({k: old[tuple(key)][k] for k in ("scores", "captions", "examples", "lm_dtype")
                          if k in old[tuple(key)]})
            if old[tuple(key)].get("note"):
                entry["note"] = old[tuple(key)]["note"]
        elif cfg.headline_only and earlier and not headline and row.preset not in cfg.rerun_presets:
            entry.update({k: earlier[k] for k in ("scores", "captions", "examples")}, key=earlier.get("key"),
                         note=EARLIER)
        else:
            cap = model(row.source())
            if cap.lm.model.dtype != torch.float32:
                entry["lm_dtype"] = str(cap.lm.model.dtype).removeprefix("torch.")
            hyps = {}
            for i in range(0, len(images), 8):
                for j, r in enumerate(cap.caption(images[i:i + 8], **overrides)):
                    hyps[i + j] = r.caption
            entry["scores"] = caption_metrics(refs, hyps, cfg.metrics)
            entry["captions"] = [hyps[i] for i in range(len(images))]
            entry["examples"] = entry["captions"][:3]
        entry["grounding"] = photo_grounding(entry["captions"], [refs[i] for i in range(len(images))])
        report["tokenizer"] = entry["scores"].get("tokenizer")
        report["rows"].append(entry)
        write_report(cfg, report)
        print(json.dumps({k: v for k, v in entry.items() if k not in ("captions", "key")}), flush=True)

    def retrieval_row(name: str, picks: list[str]) -> dict:
        """A baseline row of retrieved captions, one per photo: scored and grounded like the captioners'."""
        return {"group": "Baseline", "name": name, "scores": caption_metrics(refs, dict(enumerate(picks)), cfg.metrics),
                "captions": picks, "examples": picks[:3],
                "grounding": photo_grounding(picks, [refs[i] for i in range(len(images))])}

    # Baselines on the bridge itself: the nearest corpus caption, with the template prototypes and with the shipped
    # (corpus-grounded) ones, and "a photo of a <top-1 class>".
    base = model("photo") if preset_status("photo").ready else None
    if base is not None:
        clip = base.clip
        caps, feats = corpus_features(RunConfig(corpus="coco", run_dir="runs/benchmark-photo"), clip)
        names = imagenet_categories()
        shipped = clip.model.prototypes.clone()
        template = clip.encode_text([TEMPLATES[0].format(n) for n in names])
        logits = torch.cat([clip.class_logits(clip.pixels(images[i:i + 32]))[0] for i in range(0, len(images), 32)])
        for label, E in (("nearest corpus caption, template bridge (\"a photo of a {class}.\")", template),
                         ("nearest corpus caption, corpus-grounded bridge (the shipped one)", shipped)):
            clip.model.prototypes.copy_(E)
            try:
                picks = retrieval_captions(clip, images, caps, feats)
            finally:
                clip.model.prototypes.copy_(shipped)
            report["rows"].append(retrieval_row(label, picks))
        if photo_bank:  # the consensus rankings applied to retrieved captions instead of generated ones
            from zsc_core.bank import cider_consensus_caption, consensus_caption, load_bank

            bank = load_bank(photo_bank, clip.text_fingerprint)
            if len(bank) != len(caps):
                raise SystemExit(f"{photo_bank} holds {len(bank)} captions, the corpus {len(caps)}: rebuild it")
            img = torch.cat([clip.encode_image(clip.pixels(images[i:i + 32])).float()
                             for i in range(0, len(images), 32)])
            # at the input mix's k and at the ranking's own k: more neighbours help retrieval as much as ranking
            for k in sorted({base.config.retrieval.mix_k, base.config.ranking_k}):
                report["rows"].append(retrieval_row(
                    f"consensus corpus caption: of the {k} nearest, the one closest to their mean (the embedding-"
                    "consensus ranking, on retrieved text)", consensus_caption(bank, caps, img, k)))
                report["rows"].append(retrieval_row(
                    f"CIDEr-consensus corpus caption: of the {k} nearest, the one with the highest CIDEr-D against "
                    "the other ones (the CIDEr ranking of the `photo` preset, on retrieved text)",
                    cider_consensus_caption(bank, caps, img, k, bank.captions().idf)))
            v = base.effective().evidence
            if v.detects:  # the retrieval baseline with the evidence the served caption reads (issue #53)
                found = base.detect(images)
                k = base.config.ranking_k
                query = torch.cat([base.query(images[i:i + 32], found[i:i + 32]) for i in range(0, len(images), 32)])
                report["rows"].append(retrieval_row(
                    f"{EVIDENCE_BASELINE} {k} nearest, conditioned on the served pixel evidence (with a face found: "
                    f"the nearest of the {v.evidence_pool:,} nearest that name people)",
                    cider_consensus_caption(bank, caps, query, k, bank.captions().idf, found, v.count_people,
                                            v.evidence_pool)))
        top1 = [f"a photo of a {names[i]}" for i in logits.argmax(1).tolist()]
        report["rows"].append({"group": "Baseline", "name": "\"a photo of a <top-1 ImageNet class>\"",
                               "scores": caption_metrics(refs, dict(enumerate(top1)), cfg.metrics),
                               "captions": top1, "examples": top1[:3]})
        report["paired"] = paired_against_baselines(report["rows"], refs)
        write_report(cfg, report)

    p = PRESETS["photo"]
    # who re-captions with a prompt: the preset's stage-2 model, or the preset itself when it reads prompts as entities
    two_path = p.prompt_checkpoint_path() or p.checkpoint_path()
    ready = cfg.prompts and base is not None and os.path.isfile(two_path) and not _in_training(two_path)
    for samples in cfg.prompt_samples if ready else ():
        name = prompt_key(samples)
        pkey = [model_fingerprint(two_path),
                setting_fingerprint(p.checkpoint_path(), samples=samples, num_beams=GREEDY), cfg.split]
        if (previous_prompts.get(name) or {}).get("key") == pkey:
            report[name] = previous_prompts[name]
            continue
        two = base if base.takes_prompts else Captioner.from_pretrained(two_path, clip=base.clip, lm=base.lm)
        pr = evaluate_prompt_following_coco(two, base, list(zip(images, [refs[i] for i in range(len(images))])),
                                            samples=samples, num_beams=GREEDY)
        for which in ("rough", "refined"):
            pr[f"{which}_CIDEr"] = float(caption_metrics(refs, dict(enumerate(pr[which])), ("cider",))["CIDEr"])
        pr.update(model=os.path.basename(two_path), key=pkey, samples=samples,
                  prompt_weight=two.config.ranking.prompt_weight, rough_rerank=base.config.ranking.rerank)
        report[name] = pr
        write_report(cfg, report)

    if cfg.vqa and base is not None:
        from zsc_core.evaluation import evaluate_vqa_coco
        from zsc_core.vqa import PROTOCOL, answer_vocabulary

        # as the app answers: the LM reads the caption the Caption tab shows (the served setting)
        vkey = [setting_fingerprint(PRESETS["photo"].checkpoint_path()), PROTOCOL]
        if (previous.get("vqa") or {}).get("key") == vkey:
            report["vqa"] = previous["vqa"]
        else:
            answers = answer_vocabulary(PRESETS["photo"].answers)
            report["vqa"] = {"key": vkey, "rows": [
                evaluate_vqa_coco(base, split, answers, by_type=by_type)
                for split in ("train-paired", "val-dev") for by_type in (False, True)]}
        write_report(cfg, report)

    if cfg.gap and base is not None:
        from zsc_core.analysis import gap_report

        mappings = {}
        for name, preset in (("S1 estimated", "photo-tipcap-s1"), ("S4 learned", TIPCAP_S4)):
            if preset in PRESETS and preset_status(preset).ready:
                m = model(preset).adaptor.mapping
                mappings[name] = (m.mu.detach().float().cpu(), m.L.detach().float().cpu())
        rep = gap_report(base.clip, images, [refs[i][0] for i in range(len(images))], mapping=mappings or None,
                         tsne_n=len(images))
        rep.histograms.savefig(cfg.out + "_gap_histograms.png", dpi=100)
        rep.tsne.savefig(cfg.out + "_gap_tsne.png", dpi=100)
        report["gap"] = {"table": rep.table}
        write_report(cfg, report)
    return report


if __name__ == "__main__":
    main()
