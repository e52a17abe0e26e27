"""Zero-shot VQA on real photos from evidence (issue #54): probes built from the references, chosen on 189 photos.

    python -m train.benchmark_vqa                 # -> results/vqa_photo.{json,md}

Per split (train-paired, val-dev; each reported on its own):

- existence probes, POPE's protocol (Li et al., EMNLP 2023) on the references instead of box annotations: "Is there
  a <object> in the image?", yes for COCO categories that at least 2 of the 5 references name (up to 3 a photo), no
  for categories none names: random, popular (the corpus's most frequent) and adversarial (those most often named
  beside the photo's own) negatives, as many as the positives, each setting balanced and reported;
- counting probes: "How many <objects> are there?" where at least 3 references give the same count (objects.py's
  caption words; "two giraffes"); and, answered 0, the same question of each random negative of the existence
  probes (an object none of the references names);
- colour probes: "What color is the <thing>?" where a reference gives a thing a colour and none gives it another
  (:func:`color_probes`; "a red double decker bus");
- the real VQAv2 questions of ``data/vqa``, scored with VQA accuracy.

Rows: always yes; the question alone through the LM (the prior of its answer type); the served caption through
the LM (the Ask tab before #54); the evidence answers (vqa.parse_question's routes) at each ``exist_share``, with
and without the face detector. The `photo` preset's served caption is read from results/tune_evidence_photo.json
(seed 0, without pixel evidence: what the Ask tab read before #54) where it is there, else decoded.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass

from train.common import parse_overrides, save_report, set_threads

SHARES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
EXAMPLES_ROW = "served caption + LM, five answered examples first where not yes/no (vqa.vqa_prompt)"


@dataclass
class VqaBenchConfig:
    splits: tuple[str, ...] = ("train-paired", "val-dev")
    shares: tuple[float, ...] = SHARES
    out: str = "results/vqa_photo"
    max_positives: int = 3
    seed: int = 0
    threads: int = 0


def corpus_statistics(captions: list[str]) -> tuple[Counter, dict[str, Counter]]:
    """How often each COCO category is named in the corpus, and how often each pair is named together."""
    from zsc_core.objects import named_categories

    freq: Counter = Counter()
    pairs: dict[str, Counter] = {}
    for c in captions:
        cats = named_categories(c)
        freq.update(cats)
        for a in cats:
            pairs.setdefault(a, Counter()).update(cats - {a})
    return freq, pairs


def existence_probes(refs: list[list[str]], freq: Counter, pairs: dict[str, Counter], max_pos: int,
                     seed: int) -> list[dict]:
    """Per photo: its positives and, per negative setting, as many negatives (see the module doc)."""
    from zsc_core.objects import CATEGORIES, named_categories

    rng = random.Random(seed)
    cats = sorted(CATEGORIES)
    out = []
    for i, rs in enumerate(refs):
        named = Counter(c for r in rs for c in named_categories(r))
        pos = [c for c, n in named.most_common() if n >= 2][:max_pos]
        if not pos:
            continue
        absent = [c for c in cats if c not in named]
        popular = sorted(absent, key=lambda c: -freq[c])
        together = Counter()
        for p in pos:
            together.update(pairs.get(p, Counter()))
        adversarial = sorted(absent, key=lambda c: (-together[c], -freq[c]))
        negatives = {"random": rng.sample(absent, len(pos)), "popular": popular[:len(pos)],
                     "adversarial": adversarial[:len(pos)]}
        for c in pos:
            out.append({"photo": i, "object": c, "answer": "yes", "setting": "positive"})
        for setting, neg in negatives.items():
            out += [{"photo": i, "object": c, "answer": "no", "setting": setting} for c in neg]
    for p in out:
        p["question"] = f"Is there {'an' if p['object'][0] in 'aeiou' else 'a'} {p['object']} in the image?"
    return out


def how_many(category: str) -> str:
    """The counting question of a category: "How many giraffes are there?" ("people" for person)."""
    from zsc_core.objects import plural

    return f"How many {'people' if category == 'person' else plural(category)} are there?"


def counting_probes(refs: list[list[str]]) -> list[dict]:
    """"How many <objects> are there?" where >= 3 references give the same count of a category."""
    from zsc_core.objects import CATEGORIES
    from zsc_core.vqa import count_in

    out = []
    for i, rs in enumerate(refs):
        for cat in CATEGORIES:
            counts = Counter(n for n in (count_in(r, cat) for r in rs) if n is not None)
            if counts:
                n, k = counts.most_common(1)[0]
                if k >= 3:
                    out.append({"photo": i, "object": cat, "answer": str(n), "question": how_many(cat)})
    return out


def color_probes(refs: list[list[str]]) -> list[dict]:
    """"What color is the <thing>?" where a reference gives a thing a colour and no reference gives it another: a
    colour word that spaCy parses as an adjective of a noun ("a man in a red shirt": shirt, red; "a yellow fire
    hydrant": fire hydrant), the noun's COCO category where it names one; people aside. (The COCO references rarely
    colour one thing twice: with >= 2 agreeing, 13 and 8 probes.)"""
    from zsc_core.objects import category_of, named_categories
    from zsc_core.prompts import nlp
    from zsc_core.vqa import COLOR_WORDS

    out = []
    for i, rs in enumerate(refs):
        said: dict[str, set[str]] = {}
        for doc in nlp().pipe([r.lower() for r in rs]):
            for tok in doc:
                head = tok.head
                if tok.text in COLOR_WORDS and tok.dep_ == "amod" and head.pos_ == "NOUN":
                    words = " ".join([c.text for c in head.children if c.dep_ == "compound"] + [head.lemma_])
                    cats = named_categories(words)
                    thing = next(iter(cats)) if len(cats) == 1 else category_of(head.lemma_)
                    if thing != "person" and len(thing) > 2:
                        said.setdefault(thing, set()).add(COLOR_WORDS[tok.text])
        out += [{"photo": i, "object": thing, "answer": next(iter(c)), "question": f"What color is the {thing}?"}
                for thing, c in sorted(said.items()) if len(c) == 1]
    return out


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(VqaBenchConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from tqdm import tqdm

    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.evidence import neighbour_index
    from zsc_core.images import load_image
    from zsc_core.presets import data_dir
    from zsc_core.vqa import (
        Seen,
        answer_color,
        answer_count,
        answer_exists,
        answer_vocabulary,
        generate_answers,
        parse_question,
        rank_answers,
        typed_candidates,
        vqa_accuracy,
        vqa_prompt,
    )

    cap = Captioner.from_pretrained("photo")
    bank, texts = cap.bank, cap.bank.captions().captions
    freq, pairs = corpus_statistics(texts)
    vocab = [a for a in answer_vocabulary(cap.answers)]
    served = cap.effective()
    captions_from = {}
    if os.path.isfile("results/tune_evidence_photo.json"):
        with open("results/tune_evidence_photo.json") as f:
            tuned = json.load(f)
        source = "plain"  # the caption the Ask tab read before #54 (the served one without pixel evidence)
        for split, sp in tuned["splits"].items():
            row = sp["rows"].get(f"`photo` served decoding, {source}, seed 0")
            if row:
                captions_from[split] = row["captions"]
    report: dict = {"model": cap.name, "lm_dtype": str(cap.lm.model.dtype).removeprefix("torch."), "splits": {}}
    cache: dict[str, str] = {}  # LM prompt -> its retrieved answer, kept from the last run (the LM is the slow part)
    if os.path.isfile(cfg.out + ".json"):
        with open(cfg.out + ".json") as f:
            earlier = json.load(f)
        if earlier.get("lm_dtype", "float32") == report["lm_dtype"]:  # an LM in another dtype answers otherwise
            cache = earlier.get("lm_cache", {})
    report["lm_cache"] = cache

    def lm_answers(questions: list[str], captions: list[str | None], examples: bool = False) -> list[str]:
        prompts = [vqa_prompt(q, c, examples) for q, c in zip(questions, captions)]
        todo = [i for i, p in enumerate(prompts) if p not in cache]
        for j in range(0, len(todo), 32):
            idx = todo[j:j + 32]
            gens = generate_answers(cap.lm, [prompts[i] for i in idx])
            for i, g in zip(idx, gens):
                cache[prompts[i]] = rank_answers(cap.clip, [g], typed_candidates(questions[i], vocab))[0][0][0]
        return [cache[p] for p in prompts]

    for split in cfg.splits:
        items = coco_items(split)
        images = [load_image(p) for p, _ in items]
        refs = [caps for _, caps in items]
        captions = captions_from.get(split) or [r.caption for i in tqdm(range(0, len(images), 8), desc="caption")
                                                for r in cap.caption(images[i:i + 8])]
        found = [cap.detect(im, faces=True, bodies=False) for im in tqdm(images, desc=f"detect {split}")]
        feats = cap.clip.encode_image(cap.clip.pixels(images)).float()
        k = served.answering.answer_k
        seen = {"with faces": [Seen(t, f) for t, f in zip(bank.texts(neighbour_index(bank, feats, k, found)), found)],
                "without detectors": [Seen(t, None) for t in bank.texts(bank.neighbours(feats, k))]}
        probes = existence_probes(refs, freq, pairs, cfg.max_positives, cfg.seed)
        counts = counting_probes(refs)
        with open(os.path.join(data_dir(), "vqa", f"{split}-questions.json")) as f:
            vqav2 = json.load(f)
        names = [os.path.basename(p) for p, _ in items]
        for q in vqav2:
            q["photo"] = names.index(q["file_name"])
        sp: dict = {"n_images": len(items), "n_existence": len(probes), "n_counting": len(counts),
                    "n_vqav2": len(vqav2), "rows": {}}
        report["splits"][split] = sp
        qs = [p["question"] for p in probes]
        rows = sp["rows"]
        rows["always yes"] = {"existence": existence_row(["yes"] * len(probes), probes)}
        q_only = lm_answers(qs, [None] * len(qs))
        shown = [captions[p["photo"]] for p in probes]  # the caption each probe's photo got
        with_cap = lm_answers(qs, shown)
        rows["question only (LM)"] = {"existence": existence_row(q_only, probes)}
        rows["served caption + LM (the Ask tab before #54)"] = {"existence": existence_row(with_cap, probes)}
        rows[EXAMPLES_ROW] = {"existence": existence_row(lm_answers(qs, shown, True), probes)}
        for which, s in seen.items():
            for share in cfg.shares:
                ans = [answer_exists(s[p["photo"]], p["object"], share)[0] for p in probes]
                rows[f"evidence, {which}, exist_share {share:g}"] = {"existence": existence_row(ans, probes)}
        # counting
        cq = [p["question"] for p in counts]

        def acc(pred: list[str], gold: list[dict]) -> float:
            return sum(a == g["answer"] for a, g in zip(pred, gold)) / max(1, len(gold))

        rows["question only (LM)"]["counting"] = acc(lm_answers(cq, [None] * len(cq)), counts)
        shown_c = [captions[p["photo"]] for p in counts]
        rows["served caption + LM (the Ask tab before #54)"]["counting"] = acc(lm_answers(cq, shown_c), counts)
        rows[EXAMPLES_ROW]["counting"] = acc(lm_answers(cq, shown_c, True), counts)
        rows["always 2"] = {"counting": acc(["2"] * len(counts), counts)}
        # absent objects: the existence probes' negatives asked as counts, whose answer is 0
        absent = [{"photo": p["photo"], "object": p["object"], "answer": "0", "question": how_many(p["object"])}
                  for p in probes if p["answer"] == "no" and p["setting"] == "random"]
        sp["n_counting_absent"] = len(absent)
        rows["always 2"]["counting_absent"] = acc(["2"] * len(absent), absent)
        share = served.answering.exist_share

        def counted(s, probes_, **kw):
            return [answer_count(s[p["photo"]], parse_question(p["question"]).target, **kw)[0] for p in probes_]

        for which, s in seen.items():
            rows[f"evidence, {which}, counting from the captions"] = {
                "counting": acc(counted(s, counts), counts), "counting_absent": acc(counted(s, absent), absent)}
            for z in sorted({share, 0.005, 0.01}):
                rows[f"evidence, {which}, counting from the captions, 0 where under {z:g} of them name it"
                     + (" (the existence route's share)" if z == share else "")] = {
                    "counting": acc(counted(s, counts, min_share=z), counts),
                    "counting_absent": acc(counted(s, absent, min_share=z), absent)}
        rows["evidence, with faces, counting people from the faces found"] = {
            "counting": acc(counted(seen["with faces"], counts, count_faces=True), counts),
            "counting_absent": acc(counted(seen["with faces"], absent, count_faces=True), absent)}
        # colour: the colour the nearest captions give the object, else (none does) the LM with the caption
        colors = color_probes(refs)
        sp["n_color"] = len(colors)
        if colors:
            kq = [p["question"] for p in colors]
            lm_q_c = lm_answers(kq, [None] * len(kq))
            shown_k = [captions[p["photo"]] for p in colors]
            lm_c, lm_e = lm_answers(kq, shown_k), lm_answers(kq, shown_k, True)
            rows["question only (LM)"]["color"] = acc(lm_q_c, colors)
            rows["served caption + LM (the Ask tab before #54)"]["color"] = acc(lm_c, colors)
            rows[EXAMPLES_ROW]["color"] = acc(lm_e, colors)
            fallback = lm_e if served.answering.lm_examples else lm_c  # what the served LM route writes
            most = Counter(p["answer"] for p in colors).most_common(1)[0][0]
            rows[f"always {most}"] = {"color": acc([most] * len(colors), colors)}
            vocab_set = set(vocab)
            for which, s in seen.items():
                for anywhere, how in ((False, ""), (True, ", else the colour they name most")):
                    picks = [answer_color(s[p["photo"]], p["object"], vocab_set, anywhere)[0] for p in colors]
                    rows[f"evidence, {which}, colour from the captions{how}, else caption + LM"] = {
                        "color": acc([c or a for c, a in zip(picks, fallback)], colors),
                        "color_from_evidence": sum(c is not None for c in picks) / len(colors)}
        # VQAv2 questions: the routed answer (evidence where a route applies, else the LM with the caption)
        vq = [q["question"] for q in vqav2]
        shown_q = [captions[q["photo"]] for q in vqav2]
        lm_cap, lm_ex = lm_answers(vq, shown_q), lm_answers(vq, shown_q, True)
        lm_q = lm_answers(vq, [None] * len(vq))
        routed = [cap.answer(images[q["photo"]], q["question"], by_type=True, caption=captions[q["photo"]],
                             evidence_answers=True, seen=seen["with faces"][q["photo"]]) for q in vqav2]
        sp["vqav2"] = {"question only (LM)": _vqa(lm_q, vqav2, vqa_accuracy),
                       "served caption + LM": _vqa(lm_cap, vqav2, vqa_accuracy),
                       "served caption + LM, five answered examples first where not yes/no":
                           _vqa(lm_ex, vqav2, vqa_accuracy),
                       "routed (evidence, else caption + LM)": _vqa([r.answer for r in routed], vqav2, vqa_accuracy),
                       "examples": [{"question": q["question"], "routed": r.answer, "route": r.route,
                                     "evidence": r.evidence, "lm": a, "humans": q["answers"][:5]}
                                    for q, r, a in zip(vqav2, routed, lm_cap)]}
        sp["probe_examples"] = probes[:12] + counts[:6]
        save(cfg, report)
    return report


def existence_row(answers: list[str], probes: list[dict]) -> dict:
    """Accuracy per negative setting (the positives and that setting's negatives) and the share of yes answers."""
    out = {}
    for setting in ("random", "popular", "adversarial"):
        sel = [i for i, p in enumerate(probes) if p["setting"] in ("positive", setting)]
        out[setting] = sum(answers[i] == probes[i]["answer"] for i in sel) / len(sel)
    out["yes_rate"] = sum(a == "yes" for a in answers) / len(answers)
    return out


def _vqa(pred: list[str], questions: list[dict], score) -> float:
    return sum(score(p, q["answers"]) for p, q in zip(pred, questions)) / max(1, len(questions))


def save(cfg: VqaBenchConfig, report: dict) -> None:
    md = ["# Zero-shot VQA on real photos from evidence (`python -m train.benchmark_vqa`)\n\n",
          f"Model `{report['model']}`, its LM in {report.get('lm_dtype', 'float32')}. "
          "Existence: POPE-style probes from the references (accuracy with the "
          "positives and each setting's negatives, balanced; yes-rate over all). Counting: accuracy where >= 3 "
          "references agree. VQAv2: VQA accuracy.\n\n"]
    for split, sp in report["splits"].items():
        md.append(f"## {split} ({sp['n_images']} photos, {sp['n_existence']} existence probes, {sp['n_counting']} "
                  f"counting probes, {sp.get('n_counting_absent', 0)} counts of absent objects, "
                  f"{sp.get('n_color', 0)} colour probes, {sp['n_vqav2']} VQAv2 questions)\n\n| row | random | "
                  "popular | adversarial | yes-rate | counting | counting, absent (0) | colour (from evidence) |\n"
                  "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
        for name, r in sp["rows"].items():
            e = r.get("existence")
            ex = (f"{e['random']:.3f} | {e['popular']:.3f} | {e['adversarial']:.3f} | {e['yes_rate']:.2f}" if e
                  else " | | | ")
            c = f"{r['counting']:.3f}" if "counting" in r else ""
            z = f"{r['counting_absent']:.3f}" if "counting_absent" in r else ""
            k = (f"{r['color']:.3f}" + (f" ({100 * r['color_from_evidence']:.0f}%)" if "color_from_evidence" in r
                                         else "")) if "color" in r else ""
            md.append(f"| {name} | {ex} | {c} | {z} | {k} |\n")
        v = sp.get("vqav2")
        if v:
            md.append("\nVQAv2: " + "; ".join(f"{k} {v[k]:.3f}" for k in v if k != "examples") + "\n\n")
            for e in v["examples"]:
                md.append(f"- {e['question']} -> **{e['routed']}** ({e['route']}: {e['evidence']}); LM with the "
                          f"caption: {e['lm']}; humans: {', '.join(e['humans'])}\n")
        md.append("\n")
    save_report(cfg.out, report, "".join(md))


if __name__ == "__main__":
    main()
