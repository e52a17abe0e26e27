"""The figures in README.md, generated from results/*.json and the files in checkpoints/, so they cannot drift.

    python docs/figures.py            # rewrite the generated blocks of README.md in place
    python docs/figures.py --check    # exit 1 if a block differs from what the results say (tests/test_docs.py)

A generated block sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``; everything outside the
markers is hand-written. Each figure names the report it comes from. A figure that does not exist yet is "—".
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # zsc_core, for the settings JSON the served paragraph states
DOCS = ("README.md", "docs/method.md", "docs/usage.md", "docs/training.md")


def _json(name: str) -> dict:
    path = os.path.join(ROOT, "results", name)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _mb(*names: str) -> float:
    return sum(os.path.getsize(os.path.join(ROOT, "checkpoints", n)) for n in names) / 1e6


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _photo_row(report: dict, preset: str, overrides: dict) -> dict:
    """A photo-benchmark row by its preset and overrides (the settings it was captioned with)."""
    return next((r for r in report.get("rows", []) if r.get("preset") == preset and r.get("overrides") == overrides
                 and "scores" in r), {})


def _world_row(report: dict, checkpoint: str, overrides: str = "{}") -> dict:
    return next((r for r in report.get("rows", []) if r.get("checkpoint") == checkpoint
                 and (r.get("key") or [None, None])[1] == overrides and "scores" in r), {})


NOISE_PROTOCOL = "noise drawn per image"  # train.cache_keys.NOISE_PROTOCOL (a key without it: before 2026-12-07)


def _before(row: dict) -> str:
    """"; before per-image noise" for a sampled row measured before each image drew its own noise, else ""."""
    return "; before per-image noise" if row and NOISE_PROTOCOL not in (row.get("key") or []) else ""


def _cider(row: dict) -> float | None:
    return (row.get("scores") or {}).get("CIDEr")


SERVED = "served (defaults)"  # bench/photo_latency.py's name of the served setting
OLD_SERVED = "served on CPU (defaults)"  # ...in reports written before 2026-12-07


def _served_latency(lat: dict) -> dict:
    return lat.get(SERVED) or lat.get(OLD_SERVED) or {}


def _latency(lat: dict) -> float | None:
    return _served_latency(lat).get("median_s")


def _setting(lat: dict) -> str:
    """The served setting in words, from the latency report's record of it: "S=8 greedy, bank guidance 0.4"."""
    s = _served_latency(lat).get("settings") or {}
    if not s:
        return "—"
    beams = "greedy" if s["num_beams"] == 1 else f"beam {s['num_beams']}" + (", all kept" if s["keep_beams"] else "")
    guide = f", bank guidance {s['guide_weight']:g}" if s.get("guide_weight") else ""
    return f"S={s['samples']} {beams}{guide}"


RANKINGS = {"cider": "CIDEr-D", "consensus": "embedding consensus", "clip": "image similarity"}


def served_paragraph() -> str:
    """The sentence that states what the default preset serves: from its settings JSON (what the app, `caption`
    and `evaluate` read) and the latency report, never typed by hand."""
    from zsc_core.presets import PRESETS
    from zsc_core.settings import read_settings

    cfg = read_settings(PRESETS["photo"].checkpoint_path()).config
    d, g, r = cfg.decoding, cfg.guidance, cfg.ranking
    decode = f"{d.samples} greedy samples" if d.num_beams == 1 else f"{d.samples} samples of {d.num_beams} beams"
    guide = f", each token mixed {g.guide_weight:g} with the n-grams of the {cfg.guide_k} nearest captions" \
        if g.guide_weight else ""
    lat = _json("photo_latency.json")
    v = cfg.evidence
    found = " and ".join(w for w, on in (("a face (MTCNN)", v.faces), ("a person (HOG)", v.bodies)) if on)
    evidence = (f"; with {found} found, the nearest are those of the {v.evidence_pool:,} nearest that name people"
                + (", several people first where two or more are found" if v.count_people else "")) if found else ""
    fast = [w for w, on in ((f"{d.draft_tokens} n-gram guesses checked per LM pass", d.draft_tokens and g.guide_weight),
                            ("a bank-vocabulary head", d.bank_vocab)) if on]
    fast_s = f"; {' and '.join(fast)}, `zsc_core/decode.py`" if fast else ""
    fp32 = (lat.get("served, fp32 LM") or {}).get("median_s")
    bf16 = (lat.get("served, bf16 LM (opt-in)") or {}).get("median_s")
    dtype = (f", the LM in bf16 where the CPU computes it; {_f(fp32, 2)} s in float32 on other CPUs" if fp32 and
             lat.get("lm_dtype") == "bfloat16" else
             f"; {_f(bf16, 2)} s with the LM in bf16 (`ZSC_DTYPE=bfloat16`, on a CPU with bf16)" if bf16 else "")
    return (f"**Served setting** (`checkpoints/tipcap-s4-photo.inference.json`, the same on CPU and GPU): {decode}"
            f"{guide}, ranked by {RANKINGS[r.rerank]} against the {cfg.ranking_k} nearest{evidence}; "
            f"{_f(_latency(lat), 2)} s a photo (median, 2 CPU cores{dtype}; `bench/photo_latency.py`{fast_s}). The "
            "app, `caption` and `evaluate` without flags, and the benchmark's headline row all use it.")


def models_table() -> str:
    """One row per preset: what it is made of, what it read, CIDEr at each served setting, CPU latency, size."""
    photo, world = _json("benchmark_photo.json"), _json("benchmark.json")
    lat, mem_lat = _json("photo_latency.json"), _json("photo_latency_memory.json")
    cpu = _photo_row(photo, "photo", {})
    mem = _photo_row(photo, "photo-memory", {})
    bridge, smol = "MobileNetV2 x MiniLM bridge", "SmolLM2-135M"
    tip = _world_row(world, "tipcap-s4-offline-world.safetensors")
    mac = _world_row(world, "maccap-offline-world.safetensors")
    coco, world_text = "83k COCO captions", "generated-scene captions"
    rows = [
        ("`photo` (default)", bridge, smol, coco + " (TIPCap S4)", f"{_f(_cider(cpu))} (served: {_setting(lat)})",
         f"{_f(_latency(lat), 2)} s",
         _mb("tipcap-s4-photo.safetensors", "bank-coco-photo.safetensors", "bank-coco-photo.captions.json.gz",
             "bridge-photo.safetensors")),
        ("`photo-memory`", bridge, smol, coco + " (region memory, retrieval-matched inputs, entity prompts)",
         f"{_f(_cider(mem))} ({_setting(mem_lat)})", f"{_f(_latency(mem_lat), 2)} s",
         _mb("memory-photo.safetensors", "bank-coco-photo.entities.json.gz")),
        ("`photo-maccap`", bridge, smol, coco + " (MacCap)",
         f"{_f(_cider(_photo_row(photo, 'photo-maccap', {'samples': 20})))} (S=20, CLIP rerank)", "—",
         _mb("maccap-photo.safetensors")),
        ("`photo-tipcap-s1`", bridge, smol, coco + " + 80 paired photos' Gaussian",
         f"{_f(_cider(_photo_row(photo, 'photo-tipcap-s1', {'samples': 20})))} (S=20, CLIP rerank)", "—",
         _mb("tipcap-s1-photo.safetensors")),
        ("`photo-maccap-authors`", bridge, smol, coco + " (MacCap, authors' code)",
         f"{_f(_cider(_photo_row(photo, 'photo-maccap-authors', {})))} (S=4 x beam 4)", "—",
         _mb("maccap-authors-photo.safetensors")),
        ("`offline-world`", "small CLIP pretrained here", smol, world_text + " (TIPCap S4)",
         f"held-out scenes: {_f(_cider(tip))} (S=20{_before(tip)})", "—",
         _mb("tipcap-s4-offline-world.safetensors", "clip-offline-world.safetensors")),
        ("`offline-world-maccap`", "small CLIP pretrained here", smol, world_text + " (MacCap)",
         f"held-out scenes: {_f(_cider(mac))} (S=20{_before(mac)})", "—",
         _mb("maccap-offline-world.safetensors")),
        ("`real-photo`", "open_clip ViT-B-32 `openai`", "GPT-2", "COCO captions, once trained on a GPU", "not trained",
         "—", 0.0),
    ]
    out = ["| preset | image-text encoder | LM | trained on (text only) | val-dev CIDEr | CPU latency / photo | "
           "files (MB) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, enc, lm, text, cider, latency, size in rows:
        out.append(f"| {name} | {enc} | {lm} | {text} | {cider} | {latency} | {size:.1f} |" if size else
                   f"| {name} | {enc} | {lm} | {text} | {cider} | {latency} | — |")
    return "\n".join(out)


def _train_paired(tune: dict, name: str) -> str:
    """A tuning row's CIDEr per seed on train-paired against the retrieval baseline's."""
    runs = sorted((r for r in tune.get("rows", []) if r["name"] == name), key=lambda r: r["seed"])
    if not runs or "retrieval" not in tune:
        return "—"
    base = tune["retrieval"]["CIDEr"]
    ahead = sum(r["CIDEr"] > base for r in runs)
    return ", ".join(f"{r['CIDEr']:.3f}" for r in runs) + f" (ahead of retrieval on {ahead} of {len(runs)} seeds)"


def _seed_mean(rows: dict, source: str) -> str:
    """The mean CIDEr over the seeds of a tune_evidence captioner row."""
    seeds = [r["metrics"]["CIDEr"] for k, r in rows.items() if k.startswith(f"`photo` served decoding, {source}, seed")]
    return _f(sum(seeds) / len(seeds)) if seeds else "—"


def _retrieval(rows: dict, source: str) -> str:
    return _f((rows.get(f"retrieval, {source}") or {}).get("metrics", {}).get("CIDEr"))


def _people(rows: dict, source: str) -> str:
    """Photos whose references name people on which the caption (seed 0) names one, of those photos."""
    r = rows.get(f"`photo` served decoding, {source}, seed 0") or rows.get(f"retrieval, {source}") or {}
    m = r.get("metrics", {}).get("person_named")
    return f"{m[0]}/{m[1]}" if m else "—"


def _evidence_rows() -> list[tuple[str, str, str]]:
    """Pixel evidence (issue #53) and VQA from evidence (issue #54): the served choice against its baselines on
    both choice sets, from tune_evidence_photo.json and vqa_photo.json."""
    from zsc_core.presets import PRESETS
    from zsc_core.settings import read_settings

    ev, vqa = _json("tune_evidence_photo.json"), _json("vqa_photo.json")
    cfg = read_settings(PRESETS["photo"].checkpoint_path()).config
    v = cfg.evidence
    source = {(False, False, False): "plain", (True, False, False): "faces", (False, True, False): "bodies (HOG)",
              (True, True, False): "faces + bodies", (True, False, True): "faces + counted"}.get(
        (v.faces, v.bodies, v.count_people), "plain")
    out = []
    if ev.get("splits"):
        parts = []
        for split, sp in ev["splits"].items():
            rows = sp["rows"]
            parts.append(f"{split} {_seed_mean(rows, source)} vs {_seed_mean(rows, 'plain')} (retrieval "
                         f"{_retrieval(rows, source)} vs {_retrieval(rows, 'plain')}), person named "
                         f"{_people(rows, source)} vs {_people(rows, 'plain')}")
        out.append((f"`{source}` read (served) vs not: mean CIDEr of 4 seeds", "; ".join(parts),
                    "results/tune_evidence_photo.md"))
    if vqa.get("splits"):
        share = cfg.answering.exist_share
        parts = []
        for split, sp in vqa["splits"].items():
            r = sp["rows"].get(f"evidence, with faces, exist_share {share:g}", {}).get("existence")
            before = sp["rows"].get("served caption + LM (the Ask tab before #54)", {}).get("existence")
            if r and before:
                parts.append(f"{split} " + "/".join(_f(r[k]) for k in ("random", "popular", "adversarial"))
                             + " (" + "/".join(_f(before[k]) for k in ("random", "popular", "adversarial")) + ")")
        out.append(("VQA existence probes, random/popular/adversarial, from evidence (the Ask tab before)",
                    "; ".join(parts), "results/vqa_photo.md"))
    return out


def results_table() -> str:
    """The headline results, each linked to its full report."""
    photo, world = _json("benchmark_photo.json"), _json("benchmark.json")
    tune, guided = _json("tune_memory_photo.json"), _json("tune_guidance_photo.json")
    lat = _json("photo_latency.json")
    cpu = _photo_row(photo, "photo", {})
    one = _photo_row(photo, "photo", {"samples": 1, "num_beams": 1})
    mem = _photo_row(photo, "photo-memory", {})
    s8 = photo.get("prompts_S8") or {}
    s1 = photo.get("prompts") or {}
    paired = {p["name"]: p for p in photo.get("paired", [])}
    consensus = next((r for r in photo.get("rows", []) if r.get("name", "").startswith(
        "CIDEr-consensus corpus caption: of the 300")), {})
    # the best retrieval baseline: the one that reads the served pixel evidence, where the report has it
    with_evidence = next((r for r in photo.get("rows", []) if "conditioned on the served pixel evidence" in
                          r.get("name", "")), {})
    pc = paired.get(consensus.get("name", ""), {})
    pe = paired.get(with_evidence.get("name", ""), {})

    def interval(p: dict) -> str:
        return f"{p['diff']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]" if p else "—"

    def rate(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}%"

    g = cpu.get("grounding") or {}
    person = g.get("person") or {}
    mac, tip_w = (_world_row(world, f) for f in ("maccap-offline-world.safetensors",
                                                  "tipcap-s4-offline-world.safetensors"))
    clipre = next((r for r in world.get("rows", []) if r.get("name", "").startswith("CLIPRe")), {})
    n = photo.get("n_images", "—")
    ret = (tune.get("retrieval") or {}).get("CIDEr")
    # the served rows as rerun under per-image noise (issue #52) where that rerun holds them, else as measured
    # before it (said so); the choice itself is the guidance study's (tune_guidance_photo)
    rerun = _json("tune_guidance_photo_per_image.json")

    def tuned(name: str) -> tuple[str, str]:
        """A train-paired row's seeds, and the report they come from."""
        if any(r["name"] == name for r in rerun.get("rows", [])):
            return _train_paired(rerun, name), "results/tune_guidance_photo_per_image.md"
        return _train_paired(guided, name) + "; before per-image noise", "results/tune_guidance_photo.md"

    served_seeds, served_md = tuned(guided.get("served_cpu", ""))
    mem_seeds, mem_md = tuned("memory model, S=8 greedy, bank guidance weight 0.5")
    rows = [
        (f"`photo` served ({_setting(lat)}; the app, `caption`, `evaluate`), val-dev ({n} photos)",
         f"CIDEr {_f(_cider(cpu))}, BLEU-4 {_f((cpu.get('scores') or {}).get('BLEU-4'))}; grounded "
         f"{g.get('own', '—')} / {g.get('other', '—')}; {_f(g.get('distinct_per_100'), 0)} distinct per 100 photos; "
         f"a person named on {person.get('named', '—')} of {person.get('photos', '—')} person photos",
         "results/benchmark_photo.md"),
        ("`photo`, one greedy guided caption (S=1)", f"CIDEr {_f(_cider(one))}", "results/benchmark_photo.md"),
        ("retrieval (CIDEr-consensus of the 300 nearest), plain / with faces", f"CIDEr "
         f"{_f(_cider(consensus))} / {_f(_cider(with_evidence))}; served minus each (paired bootstrap) "
         f"{interval(pc)} / {interval(pe)}", "results/benchmark_photo.md"),
        (f"train-paired (80 photos, 4 seeds; retrieval {_f(ret)}): `photo` served ({_setting(lat)})", served_seeds,
         served_md),
        ("train-paired: `photo-memory` with bank guidance 0.5 (S=8 greedy, sigma2=0.02)", mem_seeds, mem_md),
        ("`photo-memory` at its defaults, val-dev", f"CIDEr {_f(_cider(mem))}", "results/benchmark_photo.md"),
        *_evidence_rows(),
        ("interactive prompts: refined caption names the prompted noun (phrase / bare)",
         f"S=8: {rate(s8.get('followed_phrase'))} / {rate(s8.get('followed_bare'))}"
         f"{' (before faces)' if s8.get('note') else ''}; S=1: "
         f"{rate(s1.get('followed_phrase'))} / {rate(s1.get('followed_bare'))}", "results/benchmark_photo.md"),
        (f"offline world, held-out scenes: MacCap / TIPCap S4 / CLIPRe retrieval ({_before(mac)[2:] or 'S=20'})",
         f"CIDEr {_f(_cider(mac))} / {_f(_cider(tip_w))} / {_f(_cider(clipre))}", "results/benchmark.md"),
    ]
    out = ["| what | figure | full report |", "| --- | --- | --- |"]
    out += [f"| {a} | {b} | [{c}]({c}) |" for a, b, c in rows]
    return "\n".join(out)


BLOCKS = {"models": models_table, "results": results_table, "served": served_paragraph}
PATTERN = re.compile(r"(<!-- figures:(\w+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the results say now."""
    def fill(m: re.Match) -> str:
        if m.group(2) not in BLOCKS:
            raise KeyError(f"unknown figures block {m.group(2)!r}; known: {sorted(BLOCKS)}")
        return m.group(1) + BLOCKS[m.group(2)]() + "\n" + m.group(4)

    return PATTERN.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for name in DOCS:
        path = os.path.join(ROOT, name)
        with open(path) as f:
            text = f.read()
        new = render(text)
        if new != text:
            stale.append(name)
            if not check:
                with open(path, "w") as f:
                    f.write(new)
    if check and stale:
        print(f"stale figures in {', '.join(stale)}: run `python docs/figures.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
