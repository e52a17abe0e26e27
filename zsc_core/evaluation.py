"""Captioning evaluation on scenes of the offline world, through the Captioner facade."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import world
from .metrics import caption_metrics


@dataclass
class WorldEval:
    scores: dict[str, Any]  # metric name -> value (or {"unavailable": reason})
    captions: dict[int, str] = field(default_factory=dict)  # image_id -> generated caption
    n_images: int = 0


def evaluate_world(captioner, n: int = 100, split: str = "val", world_seed: int = 0, size: int = 128,
                   batch: int = 8, metrics: Sequence[str] = ("bleu", "cider"), progress: bool = False,
                   references: str = "captions", captions: dict[int, str] | None = None, **caption_kw: Any
                   ) -> WorldEval:
    """Caption ``n`` scenes of ``split`` and score them against their five reference captions
    (``references="alt"``: against their alt-text, the other caption style, for the cross-domain test).
    ``captions`` (image_id -> caption, from an earlier evaluation of these scenes) are scored without captioning."""
    scenes = list(world.iter_scenes(world_seed, split, n))
    refs = {s.image_id: (s.captions if references == "captions" else [s.alt_text]) for s in scenes}
    if captions is not None:
        if set(captions) != set(refs):
            raise ValueError("the given captions are not of these scenes")
        return WorldEval(caption_metrics(refs, captions, metrics), dict(captions), n)
    hyps: dict[int, str] = {}
    chunks = range(0, n, batch)
    if progress:
        import sys

        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"caption {split}", file=sys.stderr, mininterval=5)
    for i in chunks:
        part = scenes[i:i + batch]
        for s, r in zip(part, captioner.caption([world.render(s, size) for s in part], **caption_kw)):
            hyps[s.image_id] = r.caption
    return WorldEval(caption_metrics(refs, hyps, metrics), hyps, n)


def coco_items(split: str) -> list[tuple[str, list[str]]]:
    """(image path, reference captions) of each photo of data/coco/<split> (``val-dev``, ``train-paired``)."""
    import json
    import os

    from .presets import data_dir

    d = os.path.join(data_dir(), "coco", split)
    with open(os.path.join(d, "references.json")) as f:
        refs = json.load(f)
    caps: dict[int, list[str]] = {}
    for a in refs["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"].strip())
    return [(os.path.join(d, "images", im["file_name"]), caps[im["id"]]) for im in refs["images"] if im["id"] in caps]


def evaluate_coco(captioner, images_dir: str, references: str, samples: int | None = None, batch: int = 8,
                  metrics: Sequence[str] = ("bleu", "meteor", "rouge", "cider", "spice"), progress: bool = True,
                  limit: int | None = None, **caption_kw: Any) -> dict[str, Any]:
    """Caption every image of a COCO-format reference file found in ``images_dir`` and score the captions.

    A missing or unreadable image is reported under ``failed`` and counted, not fatal. Returns the metric
    values, counts, and every image's caption and candidates.
    """
    import json
    import os

    from .images import ImageError, load_image

    with open(references) as f:
        refs = json.load(f)
    by_image: dict[int, list[str]] = {}
    for a in refs.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    items = [(im["id"], im["file_name"]) for im in refs.get("images", []) if im["id"] in by_image]
    if not items:
        raise ValueError(f"{references} has no images with captions (COCO format: images[] and annotations[])")
    items = items[:limit] if limit else items
    hyps: dict[int, str] = {}
    per_image: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    chunks = range(0, len(items), batch)
    if progress:
        import sys

        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="evaluate", file=sys.stderr, mininterval=5)
    for i in chunks:
        loaded = []
        for image_id, name in items[i:i + batch]:
            try:
                loaded.append((image_id, name, load_image(os.path.join(images_dir, name), name=name)))
            except ImageError as e:
                failed.append({"file_name": name, "error": str(e)})
        if not loaded:
            continue
        results = captioner.caption([im for _, _, im in loaded], samples=samples, **caption_kw)
        for (image_id, name, _), r in zip(loaded, results):
            hyps[image_id] = r.caption
            per_image.append({"image_id": image_id, "file_name": name, **r.to_dict()})
    scores = caption_metrics(by_image, hyps, metrics) if hyps else {}
    return {"model": captioner.name, "metrics": scores, "n_images": len(items), "n_captioned": len(hyps),
            "n_failed": len(failed), "failed": failed, "images": per_image}


def evaluate_vqa_world(captioner, n: int = 200, split: str = "eval", world_seed: int = 0, size: int = 128,
                       batch: int = 16, samples: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Top-1/5/10 accuracy of zero-shot VQA on the world's question/answer pairs, and the question-only baseline."""
    from .vqa import generate_answers, rank_answers, vqa_prompt

    scenes = list(world.iter_scenes(world_seed, split, n))
    answers = list(world.ANSWER_VOCAB)
    captions: dict[int, str] = {}
    chunks = range(0, n, batch)
    if progress:
        import sys

        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="vqa captions", file=sys.stderr, mininterval=5)
    for i in chunks:
        part = scenes[i:i + batch]
        for s, r in zip(part, captioner.caption([world.render(s, size) for s in part], samples=samples)):
            captions[s.image_id] = r.caption
    qa = [(s.image_id, q) for s in scenes for q in s.qa]
    out: dict[str, Any] = {"n_questions": len(qa), "n_images": n, "chance_top1": 1 / len(answers)}
    for name, with_caption in (("with_caption", True), ("question_only", False)):
        hits = {1: 0, 5: 0, 10: 0}
        by_type: dict[str, list[int]] = {}
        for j in range(0, len(qa), 64):
            part = qa[j:j + 64]
            prompts = [vqa_prompt(q["question"], captions[i] if with_caption else None) for i, q in part]
            ranks = rank_answers(captioner.clip, generate_answers(captioner.lm, prompts), answers)
            for (_, q), ranking in zip(part, ranks):
                order = [a for a, _ in ranking]
                pos = order.index(q["answer"])
                for k in hits:
                    hits[k] += pos < k
                by_type.setdefault(q["type"], []).append(int(pos == 0))
        out[name] = {f"top{k}": v / len(qa) for k, v in hits.items()}
        out[name]["top1_by_type"] = {t: sum(v) / len(v) for t, v in by_type.items()}
    return out


def evaluate_prompts_world(captioner, n: int = 100, draws: int = 3, split: str = "eval", world_seed: int = 0,
                           size: int = 128, samples: int | None = None,
                           metrics: Sequence[str] = ("bleu", "cider"), base=None) -> dict[str, Any]:
    """TIPCap Table IV protocol: the rough caption (of the stage-1 ``base`` captioner; without one, the prompt
    model's own first pass), then a prompt simulated from the nouns of a randomly drawn reference that the rough
    caption misses; scores of rough and refined captions, mean and spread over draws."""
    import random
    import statistics

    from .prompts import make_prompt, missing_phrases

    scenes = list(world.iter_scenes(world_seed, split, n))
    refs = {s.image_id: s.captions for s in scenes}
    images = {s.image_id: world.render(s, size) for s in scenes}
    rough = {i: (base or captioner).caption(im, samples=samples).caption for i, im in images.items()}
    rough_scores = caption_metrics(refs, rough, metrics)
    per_draw = []
    for d in range(draws):
        rng = random.Random(d)
        refined = {}
        for s in scenes:
            prompt = make_prompt(missing_phrases(rng.choice(s.captions), rough[s.image_id]))
            refined[s.image_id] = captioner.caption(images[s.image_id], prompt=prompt, rough=rough[s.image_id],
                                                    samples=samples).caption if prompt else rough[s.image_id]
        per_draw.append(caption_metrics(refs, refined, metrics))
    keys = [k for k, v in per_draw[0].items() if isinstance(v, float)]
    summary = {k: {"mean": statistics.mean(p[k] for p in per_draw),
                   "std": statistics.pstdev(p[k] for p in per_draw)} for k in keys}
    return {"rough": rough_scores, "refined": summary, "draws": draws, "n_images": n}


def evaluate_prompt_following(captioner, base, n: int = 40, split: str = "eval", world_seed: int = 0,
                              size: int = 128) -> dict[str, Any]:
    """How often the interactive-prompt model adds an object it is asked for. For each scene, the ``base``
    (stage-1) caption is the rough one; the first object of the scene whose kind it does not name is prompted,
    once as a noun phrase ("An image contains a green star.") and once as a bare noun ("An image contains star.");
    a prompt is followed when the refined caption names that kind. Scenes whose rough caption names every object
    are skipped (``tried`` counts the others)."""
    tried, followed = 0, {"phrase": 0, "bare": 0}
    for s in world.iter_scenes(world_seed, split, n):
        im = world.render(s, size)
        rough = base.caption(im, samples=1).caption
        missing = [o for o in s.objects if o.kind not in world.kinds_named(rough)]
        if not missing:
            continue
        tried += 1
        o = missing[0]
        for form, prompt in (("phrase", f"An image contains a {o.color} {o.kind}."),
                             ("bare", f"An image contains {o.kind}.")):
            refined = captioner.caption(im, prompt=prompt, rough=rough, samples=1).caption
            followed[form] += o.kind in world.kinds_named(refined)
    return {"n_images": n, "tried": tried, **{f"followed_{k}": v / max(tried, 1) for k, v in followed.items()}}


@dataclass
class Grounding:
    """Whether captions depend on their image: do they name what THEIR image's references name more often than
    what another image's references name? Compared image by image (own vs the next image's, a rotation)."""

    own: int  # images whose caption names something of their own references
    other: int  # images whose caption names something of the next image's references
    own_only: int  # discordant images: own hit, other missed
    other_only: int  # discordant images: other hit, own missed
    p_value: float  # one-sided sign test on the discordant images: P(>= own_only of them | chance, p = 1/2)


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(X >= wins) for X ~ Binomial(wins + losses, 1/2); 1.0 without discordant pairs."""
    import math

    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def grounding(named: Sequence[set[str]], reference_words: Sequence[set[str]]) -> Grounding:
    """``named[i]``: the object words caption i names; ``reference_words[i]``: those image i's references name.
    Under chance (a caption that ignores its image) own and other hits are exchangeable, so a discordant image is
    own-only or other-only with probability 1/2 each: the sign test's p-value says how unlikely the lead is."""
    n = len(named)
    own = [bool(named[i] & reference_words[i]) for i in range(n)]
    other = [bool(named[i] & reference_words[(i + 1) % n]) for i in range(n)]
    own_only = sum(a and not b for a, b in zip(own, other))
    other_only = sum(b and not a for a, b in zip(own, other))
    return Grounding(sum(own), sum(other), own_only, other_only, sign_test(own_only, other_only))


def evaluate_prompt_following_coco(captioner, base, items: list[tuple[Any, list[str]]], samples: int = 1,
                                   **overrides: Any) -> dict[str, Any]:
    """The same protocol on real photos: for each (image, references), the ``base`` caption is the rough one, and
    the first noun of the references (spaCy noun phrases, in reference order) whose head noun it does not name
    is prompted, as a noun phrase and as a bare noun; followed when the refined caption's own noun phrases
    name that head noun. Photos whose rough caption names every reference noun are skipped (their refined caption
    is the rough one). Also returns every photo's ``rough`` and ``refined`` (noun-phrase prompt) caption, to score.
    ``overrides`` (CaptionConfig fields, e.g. num_beams) apply to both passes. A model that reads prompts as
    entities (``captioner`` is ``base``, one pass) re-captions from the image and the prompt alone."""
    from .prompts import make_prompt, noun_phrases

    tried, followed, examples = 0, {"phrase": 0, "bare": 0}, []
    roughs, refineds = [], []
    for image, refs in items:
        rough = base.caption(image, samples=samples, **overrides).caption
        roughs.append(rough)
        refineds.append(rough)
        have = {lemma for _, lemma in noun_phrases(rough)}
        missing = [(p, lemma) for ref in refs for p, lemma in noun_phrases(ref) if lemma not in have]
        if not missing:
            continue
        tried += 1
        phrase, lemma = missing[0]
        for form, words in (("phrase", phrase), ("bare", lemma)):
            one_pass = not getattr(captioner, "interactive", True)  # reads the prompt as entities
            refined = captioner.caption(image, prompt=make_prompt([words]), rough=None if one_pass else rough,
                                        samples=samples, **overrides).caption
            if form == "phrase":
                refineds[-1] = refined
            hit = lemma in {lm for _, lm in noun_phrases(refined)}
            followed[form] += hit
            if len(examples) < 6:
                examples.append({"rough": rough, "prompt": make_prompt([words]), "refined": refined, "named": hit})
    return {"n_images": len(items), "tried": tried, "examples": examples, "rough": roughs, "refined": refineds,
            **{f"followed_{k}": v / max(tried, 1) for k, v in followed.items()}}


def evaluate_vqa_coco(captioner, split: str, answers: Sequence[str], by_type: bool = True,
                      **caption_kw: Any) -> dict[str, Any]:
    """Zero-shot VQA on the real VQAv2 questions about one COCO split's photos (data/vqa/<split>-questions.json):
    VQA accuracy, min(#humans who gave the answer / 3, 1), with the caption, for the question-only baseline, and as
    the model serves its answers (``as_served``: questions its evidence answers routed to it, vqa.parse_question).
    ``caption_kw`` decode the caption the LM reads (e.g. samples=1, num_beams=1)."""
    import json
    import os

    from .images import load_image
    from .presets import data_dir
    from .vqa import generate_answers, rank_answers, typed_candidates, vqa_accuracy, vqa_prompt

    with open(os.path.join(data_dir(), "vqa", f"{split}-questions.json")) as f:
        questions = json.load(f)
    folder = os.path.join(data_dir(), "coco", split, "images")
    files = sorted({q["file_name"] for q in questions})
    captions = dict(zip(files, (r.caption for r in captioner.caption(
        [load_image(os.path.join(folder, name)) for name in files], **caption_kw))))
    out: dict[str, Any] = {"split": split, "n_questions": len(questions), "by_type": by_type, "questions": []}
    for name, with_caption in (("with_caption", True), ("question_only", False)):
        prompts = [vqa_prompt(q["question"], captions[q["file_name"]] if with_caption else None) for q in questions]
        generated = generate_answers(captioner.lm, prompts)
        scores = []
        for q, gen in zip(questions, generated):
            cands = typed_candidates(q["question"], answers) if by_type else list(answers)
            pick = rank_answers(captioner.clip, [gen], cands)[0][0][0]
            scores.append(vqa_accuracy(pick, q["answers"]))
            if with_caption:
                out["questions"].append({"question": q["question"], "file_name": q["file_name"],
                                         "caption": captions[q["file_name"]], "generated": gen, "answer": pick,
                                         "accuracy": scores[-1], "humans": q["answers"]})
        out[name] = sum(scores) / len(scores)
    # as the app answers: questions the evidence answers routed to it (the model's settings), the rest as above
    images = {name: load_image(os.path.join(folder, name)) for name in files}
    served = [captioner.answer(images[q["file_name"]], q["question"], answers, by_type=by_type,
                               caption=captions[q["file_name"]]) for q in questions]
    out["as_served"] = sum(vqa_accuracy(r.answer, q["answers"]) for r, q in zip(served, questions)) / len(questions)
    for entry, r in zip(out["questions"], served):
        entry.update(served_answer=r.answer, route=r.route, evidence=r.evidence)
    return out


def retrieval_captions(clip, images, corpus_captions: list[str], corpus_feats) -> list[str]:
    """CLIPRe baseline: each image's nearest corpus caption by CLIP cosine."""

    out = []
    feats = corpus_feats.to(clip.device)
    for i in range(0, len(images), 64):
        img = clip.encode_image(clip.pixels(images[i:i + 64]))
        out += [corpus_captions[j] for j in (img.float() @ feats.float().T).argmax(1).tolist()]
    return out
