"""The benchmark table on the offline world: every ablation, the baselines, the prompt protocol.

    python -m train.benchmark                 # evaluates what is trained -> results/benchmark.{json,md}
    python -m train.benchmark n=100           # fewer evaluation scenes

Besides the caption table it writes zero-shot VQA accuracy (MacCap and TIPCap S4 against the question-only
baseline) and the modality-gap analysis (MacCap Table 1 numbers; histograms and t-SNE as PNGs beside the report,
with a mapped panel for each shipped TIPCap mapping module, S1's estimated and S4's learned).

Each row names a checkpoint under checkpoints/ and the command that trains it; rows whose checkpoint is missing
are listed with that command instead of a score, so the table says exactly what is left to train. Every row is
trained with the same budget (STEPS x 32 captions). Scores already in the results file are reused when the
checkpoint's bytes, the evaluation settings and the scene count are unchanged (``fresh=true`` re-scores all), so
adding one trained row costs one evaluation.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from train.cache_keys import model_fingerprint, noise_key
from train.common import parse_overrides
from train.loop import RunConfig, corpus_features
from zsc_core import vqa, world
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import file_fingerprint, read_metadata
from zsc_core.evaluation import (
    evaluate_prompt_following,
    evaluate_prompts_world,
    evaluate_vqa_world,
    evaluate_world,
    retrieval_captions,
)
from zsc_core.metrics import caption_metrics
from zsc_core.presets import checkpoints_dir

METRICS = ("bleu", "meteor", "rouge", "cider")
A = "ablations/"
STEPS = 800  # the training budget of every row (the shipped models' too)


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    checkpoint: str  # under checkpoints/
    overrides: dict = field(default_factory=dict)  # CaptionConfig overrides at evaluation
    train: str = ""  # the command that produces the checkpoint
    references: str = "captions"  # "alt": score against alt-text (cross-domain)


def _mac(out, extra=""):
    return f"python -m train.train_maccap {extra} steps={STEPS} eval_n=60 out=checkpoints/{out} " \
           f"run_dir=runs/{os.path.basename(out)[:-12]}".replace("  ", " ")


def _tip(setting, out, extra=""):
    return f"python -m train.train_tipcap setting={setting} {extra} steps={STEPS} eval_n=60 out=checkpoints/{out} " \
           f"run_dir=runs/{os.path.basename(out)[:-12]}".replace("  ", " ")


MAIN = "maccap-offline-world.safetensors"
AUTH = "maccap-authors-offline-world.safetensors"
# Issue #17: the authors' code's inference vs ours, as settings overrides (zsc_core.settings.AUTHORS_INFERENCE).
AUTHORS_INFERENCE = {"samples": 4, "num_beams": 4, "region_weights": "softmax", "cls_candidate": True,
                     "normalize_tokens": True, "noise_on_sum": True, "noise_single": True}
OURS_INFERENCE = {"samples": 20, "num_beams": 1, "region_weights": "renorm", "cls_candidate": False,
                  "normalize_tokens": False, "noise_on_sum": False, "noise_single": False}
AUTHORS_REGIONS = {"region_weights": "softmax", "cls_candidate": True, "normalize_tokens": True}
F = "Fidelity (authors' code)"


def _auth():
    return _mac(AUTH, "style=authors")


FIDELITY_ROWS = [
    Row(F, "authors' adaptor + authors' inference (S=4 x beam 4, double-softmax regions, CLS eligible, noise on "
        "the unnormalised sum)", AUTH, {}, _auth()),
    Row(F, "authors' adaptor + authors' inference, CLS token only (no subregions)", AUTH, {"use_regions": False},
        _auth()),
    Row(F, "authors' adaptor + our inference (S=20, beam 1, renormalised patch rows)", AUTH, OURS_INFERENCE, _auth()),
    Row(F, "authors' adaptor + our inference, CLS token only (no subregions)", AUTH,
        {**OURS_INFERENCE, "use_regions": False}, _auth()),
    Row(F, "our adaptor + authors' inference", MAIN, AUTHORS_INFERENCE, _mac(MAIN)),
    Row(F, "our adaptor + authors' inference, CLS token only (no subregions)", MAIN,
        {**AUTHORS_INFERENCE, "use_regions": False}, _mac(MAIN)),
    Row(F, "our adaptor + ours, but the authors' region weights (double softmax, CLS eligible, normalised tokens)",
        MAIN, AUTHORS_REGIONS, _mac(MAIN)),
    Row(F, "our adaptor + ours, but noise on the unnormalised sum", MAIN, {"noise_on_sum": True}, _mac(MAIN)),
    Row(F, "our adaptor + ours, but S=4 x beam 4", MAIN, {"samples": 4, "num_beams": 4}, _mac(MAIN)),
]
ROWS = [
    Row("MacCap (Table 5)", "full: N_cr=10 noisy tokens, subregions, S=20 + CLIP rerank", MAIN, {}, _mac(MAIN)),
    Row("MacCap (Table 5)", "without multiple sampling (S=1)", MAIN, {"samples": 1}, _mac(MAIN)),
    Row("MacCap (Table 5)", "CLS token only (no subregion aggregation)", MAIN, {"use_regions": False}, _mac(MAIN)),
    Row("MacCap (Table 5)", "single token (N_cr=1)", A + "maccap-single-token.safetensors", {},
        _mac(A + "maccap-single-token.safetensors", "n_cr=1")),
    Row("MacCap (Table 5)", "single token (N_cr=1), one sample (S=1)", A + "maccap-single-token.safetensors",
        {"samples": 1}, _mac(A + "maccap-single-token.safetensors", "n_cr=1")),
    Row("MacCap (Table 5)", "without noise (sigma2=0; S=1, its samples would all be equal)",
        A + "maccap-no-noise.safetensors", {"samples": 1}, _mac(A + "maccap-no-noise.safetensors", "sigma2=0")),
    Row("MacCap (Table 5)", "trained without noise, S=20 sampled with sigma2=0.016 + CLIP rerank",
        A + "maccap-no-noise.safetensors", {"sigma2": 0.016}, _mac(A + "maccap-no-noise.safetensors", "sigma2=0")),
    Row("TIPCap (Table V)", "S4 text only, N(mu, Sigma), reverse mapping", "tipcap-s4-offline-world.safetensors", {},
        _tip("S4", "tipcap-s4-offline-world.safetensors")),
    Row("TIPCap (Table V)", "S4, isotropic N(mu, sigma2 I)", A + "tipcap-s4-isotropic.safetensors", {},
        _tip("S4", A + "tipcap-s4-isotropic.safetensors", "covariance=isotropic")),
    Row("TIPCap (Table V)", "S4, without reverse mapping", A + "tipcap-s4-no-reverse.safetensors", {},
        _tip("S4", A + "tipcap-s4-no-reverse.safetensors", "use_reverse=false")),
    Row("TIPCap (Table V)", "S4, without reverse mapping, one sample (S=1)", A + "tipcap-s4-no-reverse.safetensors",
        {"samples": 1}, _tip("S4", A + "tipcap-s4-no-reverse.safetensors", "use_reverse=false")),
    Row("TIPCap (Table V)", "S1 paired (100 pairs)", A + "tipcap-s1.safetensors", {},
        _tip("S1", A + "tipcap-s1.safetensors")),
    Row("TIPCap (Table V)", "S2 web pairs + correction", A + "tipcap-s2.safetensors", {},
        _tip("S2", A + "tipcap-s2.safetensors")),
    Row("TIPCap (Table V)", "S3 unpaired images", A + "tipcap-s3.safetensors", {},
        _tip("S3", A + "tipcap-s3.safetensors")),
    *[Row("TIPCap (Table V)", f"{name}, one sample (S=1)", ck, {"samples": 1}, _tip(setting, ck))
      for name, setting, ck in [("S4 text only", "S4", "tipcap-s4-offline-world.safetensors"),
                                ("S1 paired", "S1", A + "tipcap-s1.safetensors"),
                                ("S2 web pairs", "S2", A + "tipcap-s2.safetensors"),
                                ("S3 unpaired images", "S3", A + "tipcap-s3.safetensors")]],
    Row("Cross-domain", "train captions -> test alt-text", MAIN, {}, _mac(MAIN), references="alt"),
    Row("Cross-domain", "train alt-text -> test captions", A + "maccap-alt-text.safetensors", {},
        _mac(A + "maccap-alt-text.safetensors", "corpus=world-alt:12000")),
    Row("Upper bound", "same adaptor trained on paired IMAGE features", A + "maccap-upper-bound.safetensors", {},
        _mac(A + "maccap-upper-bound.safetensors", "corpus=world-images:6000")),
    *FIDELITY_ROWS,
]


VQA_MODELS = (MAIN, "tipcap-s4-offline-world.safetensors")
SECTIONS = ("prompts", "following", "vqa", "gap")


@dataclass
class BenchmarkConfig:
    n: int = 100  # held-out evaluation scenes (S=20 costs ~3 s per scene on 2 CPU cores)
    prompt_n: int = 100  # scenes for the prompt protocol
    out: str = "results/benchmark"
    prompts: str = "prompts-offline-world.safetensors"
    prompt_base: str = "tipcap-s4-offline-world.safetensors"  # the stage-1 model writing the rough captions
    corpus: str = "world:12000"  # CLIPRe retrieves from this caption corpus
    fresh: bool = False  # re-score every row even when the results file already has its scores
    vqa_n: int = 100  # scenes (5 questions each) for zero-shot VQA
    gap_n: int = 500  # image-caption pairs for the modality-gap analysis
    gap_tsne_n: int = 300  # of which t-SNE shows this many
    follow_n: int = 60  # scenes for prompt following (a missing object prompted as a noun phrase and a bare noun)
    # Re-run only the rows README.md reports (HEADLINE); any other row whose key moved keeps its earlier scores,
    # marked as measured before per-image noise (train.cache_keys.NOISE_PROTOCOL) until a full run.
    headline_only: bool = False


HEADLINE = {(MAIN, "{}"), ("tipcap-s4-offline-world.safetensors", "{}")}  # (checkpoint, overrides): README's rows
EARLIER = "measured before per-image noise (2026-12-07): its samples depended on the scene's place in a batch of 8"


def _earlier_run(path: str, n: int) -> dict:
    """An earlier report of the benchmark on as many scenes, whose scores can be reused by key."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    return old if old.get("n") == n else {}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(BenchmarkConfig(), sys.argv[1:] if argv is None else argv)
    ck = checkpoints_dir()
    old = {} if cfg.fresh else _earlier_run(cfg.out + ".json", cfg.n)
    cache = {tuple(r["key"]): r["scores"] for r in old.get("rows", []) + old.get("earlier_rows", [])
             if "key" in r and "scores" in r}
    captions_of = {tuple(r["key"]): r["captions"] for r in old.get("rows", []) + old.get("earlier_rows", [])
                   if "key" in r and r.get("captions")}
    written: dict[tuple, dict[int, str]] = {}  # (checkpoint bytes, overrides) -> the captions of the eval scenes
    models: dict = {}

    def load(path: str) -> Captioner:  # one CLIP and one LM shared by every row
        cap = Captioner.from_pretrained(path, clip=models.get("clip"), lm=models.get("lm"))
        models.setdefault("clip", cap.clip)
        models.setdefault("lm", cap.lm)
        return cap

    results, clip_of = [], None
    for row in ROWS:
        path = os.path.join(ck, row.checkpoint)
        entry = {"group": row.group, "name": row.name, "checkpoint": row.checkpoint}
        training = _in_training(path) if os.path.isfile(path) else ""
        if not os.path.isfile(path) or training:
            entry["missing"] = row.train + (f"  (in training: {training})" if training else "")
            results.append(entry)
            continue
        clip_of = clip_of or path
        entry["key"] = [model_fingerprint(path), json.dumps(row.overrides, sort_keys=True), row.references,
                        *noise_key(path, **row.overrides)]
        same = (entry["key"][0], entry["key"][1])  # rows differing only in references share their captions
        earlier = next((r for r in old.get("rows", []) if r.get("name") == row.name and "scores" in r), None)
        if tuple(entry["key"]) in cache:
            entry["scores"] = cache[tuple(entry["key"])]
            entry["captions"] = captions_of.get(tuple(entry["key"]))
            if earlier and earlier.get("key") == entry["key"] and earlier.get("note"):
                entry["note"] = earlier["note"]
        elif cfg.headline_only and earlier and (row.checkpoint, entry["key"][1]) not in HEADLINE:
            entry.update(key=earlier["key"], scores=earlier["scores"], note=EARLIER)
            entry["captions"] = earlier.get("captions")
        else:
            ev = evaluate_world(load(path), cfg.n, "eval", metrics=METRICS, references=row.references,
                                progress=True, captions=written.get(same), **row.overrides)
            entry["scores"], entry["captions"] = ev.scores, {str(k): v for k, v in ev.captions.items()}
        if entry.get("captions"):
            written[same] = {int(k): v for k, v in entry["captions"].items()}
        else:
            entry.pop("captions", None)
        results.append(entry)
        write(cfg, results, {k: old.get(k) for k in SECTIONS}, old)
        print(json.dumps({k: v for k, v in entry.items() if k != "captions"}), flush=True)
    if clip_of:  # CLIPRe: nearest corpus caption, with the CLIP of the first trained row
        key = ["clipre", cfg.corpus, read_metadata(clip_of)["clip"]["fingerprint"]]
        entry = {"group": "Baseline", "name": "CLIPRe: nearest corpus caption by CLIP", "key": key}
        if tuple(key) in cache:
            entry["scores"] = cache[tuple(key)]
        else:
            clip = load(clip_of).clip
            scenes = list(world.iter_scenes(0, "eval", cfg.n))
            caps, feats = corpus_features(RunConfig(corpus=cfg.corpus, run_dir="runs/benchmark"), clip)
            hyps = retrieval_captions(clip, [world.render(s, 128) for s in scenes], caps, feats)
            entry["scores"] = caption_metrics({s.image_id: s.captions for s in scenes},
                                              {s.image_id: h for s, h in zip(scenes, hyps)}, METRICS)
        results.append(entry)
    prompt_path = os.path.join(ck, cfg.prompts)
    sections = {k: old.get(k) for k in SECTIONS}
    if os.path.isfile(prompt_path) and not _in_training(prompt_path):
        base_path = os.path.join(ck, cfg.prompt_base)
        base_path = base_path if os.path.isfile(base_path) else ""
        key = [model_fingerprint(prompt_path), model_fingerprint(base_path) if base_path else "", cfg.prompt_n]
        if (sections["prompts"] or {}).get("key") != key:
            sections["prompts"] = {**evaluate_prompts_world(load(prompt_path), cfg.prompt_n, samples=1,
                                                            metrics=METRICS,
                                                            base=load(base_path) if base_path else None),
                                   "key": key, "rough_from": cfg.prompt_base if base_path else cfg.prompts}
            write(cfg, results, sections, old)
        key = key[:2] + [cfg.follow_n]
        if base_path and (sections["following"] or {}).get("key") != key:
            sections["following"] = {**evaluate_prompt_following(load(prompt_path), load(base_path), cfg.follow_n),
                                     "key": key}
            write(cfg, results, sections, old)
    else:
        sections["prompts"] = sections["following"] = None
    sections["vqa"] = _vqa(cfg, ck, sections["vqa"] or {}, load)
    write(cfg, results, sections, old)
    if clip_of:
        sections["gap"] = _gap(cfg, ck, clip_of, sections["gap"], load)
    report = write(cfg, results, sections, old)
    print(markdown(report))
    return report


def _in_training(path: str) -> str:
    """"step k of N" while the checkpoint is a training run's intermediate export; "" once it is final."""
    extra = read_metadata(path).get("extra") or {}
    if extra.get("finished"):  # the run ended; its export may be an earlier, best-validation step
        return ""
    step, steps = extra.get("step"), (extra.get("train") or {}).get("steps")
    return f"step {step} of {steps}" if isinstance(step, int) and isinstance(steps, int) and step < steps else ""


def _vqa(cfg: BenchmarkConfig, ck: str, old: dict, load) -> dict:
    """Zero-shot VQA (top-1/5/10, with the caption vs the question-only baseline) for each model trained."""
    out = {}
    for name in VQA_MODELS:
        path = os.path.join(ck, name)
        if not os.path.isfile(path):
            continue
        key = [model_fingerprint(path), cfg.vqa_n, vqa.PROTOCOL]
        out[name] = old[name] if (old.get(name) or {}).get("key") == key else \
            {**evaluate_vqa_world(load(path), cfg.vqa_n, progress=True), "key": key}
    return out


GAP_MAPPINGS = {"TIPCap S1 mapping (estimated from 100 pairs)": A + "tipcap-s1.safetensors",
                "TIPCap S4 mapping (learned from text only)": "tipcap-s4-offline-world.safetensors"}


def _gap(cfg: BenchmarkConfig, ck: str, clip_of: str, old: dict | None, load) -> dict:
    """MacCap Table 1 numbers on held-out pairs; histogram and t-SNE figures written beside the report, with a
    t-SNE panel for each shipped TIPCap mapping module (TIPCap Fig. 6)."""
    from zsc_core.analysis import gap_report

    tips = {name: os.path.join(ck, f) for name, f in GAP_MAPPINGS.items()
            if os.path.isfile(os.path.join(ck, f)) and read_metadata(os.path.join(ck, f))["kind"] == "tipcap"}
    key = [read_metadata(clip_of)["clip"]["fingerprint"], {n: file_fingerprint(p) for n, p in tips.items()},
           cfg.gap_n, cfg.gap_tsne_n, 2]  # 2: the table has the mapped centroid distances
    figures = {"histograms": cfg.out + "_gap_histograms.png", "tsne": cfg.out + "_gap_tsne.png"}
    if old and old.get("key") == key and all(os.path.isfile(f) for f in figures.values()):
        return old
    mappings = {}
    for name, path in tips.items():
        m = load(path).adaptor.mapping
        mappings[name] = (m.mu.detach().float(), m.L.detach().float())
    scenes = list(world.iter_scenes(0, "eval", cfg.gap_n))
    rep = gap_report(load(clip_of).clip, [world.render(s, 128) for s in scenes], [s.captions[0] for s in scenes],
                     mapping=mappings or None, tsne_n=cfg.gap_tsne_n)
    rep.histograms.savefig(figures["histograms"], dpi=110)
    rep.tsne.savefig(figures["tsne"], dpi=110)
    return {"table": rep.table, "key": key, "mappings": list(mappings) or ["fitted on these pairs"],
            "figures": {k: os.path.basename(v) for k, v in figures.items()}}


def write(cfg: BenchmarkConfig, results: list[dict], sections: dict, old: dict) -> dict:
    """Write the report so far (after every row: an interrupted run keeps what it scored). Earlier scores of
    rows not reached yet stay in the file, under ``earlier_rows``, for the next run to reuse."""
    for r in results:
        if r.get("captions"):  # the scene's objects decide, whatever references a row is scored against
            r["grounding"] = row_grounding(r["captions"], cfg.n)
    done = {tuple(r["key"]) for r in results if "key" in r}
    earlier = [r for r in old.get("rows", []) + old.get("earlier_rows", [])
               if "key" in r and "scores" in r and tuple(r["key"]) not in done]
    report = {"n": cfg.n, "rows": results, **sections,
              "missing_prompts": None if sections.get("prompts") else "python -m train.train_prompts",
              "earlier_rows": earlier}
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    for ext, text in ((".json", json.dumps(report, indent=2)), (".md", markdown(report))):
        with open(cfg.out + ext + ".tmp", "w") as f:
            f.write(text)
        os.replace(cfg.out + ext + ".tmp", cfg.out + ext)
    return report


GROUNDING_P = 0.01  # the one bar of every shipped adaptor (tests/test_shipped_models.py uses it too)


def rate(fraction: float, n: int) -> str:
    """'49.5% (54 of 109)': one decimal and the count, so that a rate one item short of a target does not
    round up to it."""
    return f"{100 * fraction:.1f}% ({round(fraction * n)} of {n})"


def row_grounding(captions: dict[str, str], n: int) -> dict | None:
    """Grounding of a row's stored captions (see zsc_core.evaluation.grounding): do they name an object kind of
    their own scene more often than of the next scene? ``grounded``: the sign test's p-value is under the bar."""
    from zsc_core.evaluation import grounding

    scenes = {s.image_id: s for s in world.iter_scenes(0, "eval", n)}
    ids = sorted(int(k) for k in captions)
    if not ids or any(i not in scenes for i in ids):
        return None
    g = grounding([world.kinds_named(captions[str(i)]) for i in ids],
                  [{o.kind for o in scenes[i].objects} for i in ids])
    return {"own": g.own, "other": g.other, "own_only": g.own_only, "other_only": g.other_only,
            "p_value": g.p_value, "grounded": g.p_value < GROUNDING_P}


def markdown(report: dict) -> str:
    cols = ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    lines = [f"# Offline-world benchmark ({report['n']} held-out scenes)\n",
             "Regenerate with `python -m train.benchmark`. *Grounded*: the captions name an object of their own "
             f"scene more often than of the next scene, by a one-sided sign test at p < {GROUNDING_P} (own / other "
             "scenes named; the same bar as the shipped-model tests).\n",
             "| group | model | " + " | ".join(cols) + " | grounded |", "| --- | --- |" + " --- |" * (len(cols) + 1)]
    for r in report["rows"]:
        if "scores" in r:
            vals = [f"{r['scores'][c]:.3f}" if isinstance(r["scores"].get(c), float) else "n/a" for c in cols]
        else:
            vals = ["not trained"] + [""] * (len(cols) - 1)
        g = r.get("grounding")
        vals.append(f"{'yes' if g['grounded'] else '**no**'} ({g['own']} / {g['other']}, p={g['p_value']:.2g})"
                    if g else "")
        lines.append(f"| {r['group']} | {r['name']}{' (†)' if r.get('note') else ''} | " + " | ".join(vals) + " |")
    if any(r.get("note") for r in report["rows"]):
        lines.append(f"\n(†) {EARLIER}; `python -m train.benchmark` re-runs it.")
    upper = next((r for r in report["rows"] if r["group"] == "Upper bound" and "scores" in r), None)
    main_row = report["rows"][0]
    if upper and "scores" in main_row:
        lines.append(f"\nText-only CIDEr is {main_row['scores']['CIDEr'] / upper['scores']['CIDEr']:.0%} of the "
                     "paired-image upper bound.")
    missing = [r for r in report["rows"] if "missing" in r]
    if missing:
        lines.append("\nNot trained yet (commands):\n")
        lines += [f"- {r['name']}: `{r['missing']}`" for r in missing]
    if report.get("prompts"):
        p = report["prompts"]
        lines.append(f"\nInteractive prompts ({p['n_images']} scenes, {p['draws']} draws): rough CIDEr "
                     f"{p['rough']['CIDEr']:.3f} -> refined {p['refined']['CIDEr']['mean']:.3f} "
                     f"± {p['refined']['CIDEr']['std']:.3f}")
    if report.get("following"):
        f = report["following"]
        lines.append(f"\nPrompt following ({f['tried']} scenes whose rough caption misses an object): the refined "
                     f"caption names the prompted object for {rate(f['followed_phrase'], f['tried'])} of noun-phrase "
                     f"prompts (\"An image contains a green star.\") and {rate(f['followed_bare'], f['tried'])} of "
                     f"bare-noun prompts "
                     f"(\"An image contains star.\").")
    if report.get("vqa"):
        lines += [f"\n## Zero-shot VQA (MacCap protocol; chance top-1 "
                  f"{next(iter(report['vqa'].values()))['chance_top1']:.3f})\n",
                  "| model | questions | top-1 | top-5 | top-10 | question-only top-1 | top-5 | top-10 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, v in report["vqa"].items():
            w, q = v["with_caption"], v["question_only"]
            lines.append(f"| {name} | {v['n_questions']} | " + " | ".join(
                f"{d[f'top{k}']:.3f}" for d in (w, q) for k in (1, 5, 10)) + " |")
    if report.get("gap"):
        t = report["gap"]["table"]
        g, r = t["global"], t["subregion"]
        lines += [f"\n## Modality gap (MacCap Table 1; {t['n_pairs']} held-out image-caption pairs)\n",
                  "| image feature | mean cos | max cos | min cos |", "| --- | --- | --- | --- |",
                  f"| global (CLS) | {g['paired_cos_mean']:.3f} | {g['paired_cos_max']:.3f} | "
                  f"{g['paired_cos_min']:.3f} |",
                  f"| best subregion | {r['paired_cos_mean']:.3f} | {r['paired_cos_max']:.3f} | "
                  f"{r['paired_cos_min']:.3f} |",
                  f"\nSome subregion is closer to the caption than the global feature for "
                  f"{t['share_subregion_closer']:.0%} of pairs (MacCap reports 33% on COCO). Figures: "
                  f"{report['gap']['figures']['histograms']}, {report['gap']['figures']['tsne']}.",
                  "\nTIPCap Fig. 6 in numbers: the mean cosine between a caption's (mapped) text feature and its "
                  "own image feature (noise lowers it), and the distance between the mean mapped text feature and "
                  "the mean image feature (0 when the mapping moves the text distribution onto the images'):\n",
                  "| text feature | mean cos to its image | centroid distance to the images |", "| --- | --- | --- |"]
        lines += [f"| {name} | {v:.3f} | {t.get('mapped_centroid_distance', {}).get(name, float('nan')):.3f} |"
                  for name, v in t.get("mapped_paired_cos", {}).items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
