"""Every trained adaptor shipped in checkpoints/: it finds its CLIP, has its inference settings beside it, and
(heavy tier) captions held-out scenes and the train-paired photos as the benchmark reports it. Nothing here asserts a
val-dev figure: the photo checks run on train-paired, where the choices were made; val-dev is only reported."""

import glob
import json
import os

import pytest
import torch

from train.benchmark_photo import GREEDY
from zsc_core import world
from zsc_core.adaptor import ADAPTOR_KINDS
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import read_metadata
from zsc_core.presets import DEFAULT_PRESET, PRESETS, checkpoints_dir
from zsc_core.settings import read_settings, settings_path

ADAPTOR_FILES = sorted(p for p in glob.glob(os.path.join(checkpoints_dir(), "**", "*.safetensors"), recursive=True)
                       if read_metadata(p)["kind"] in ADAPTOR_KINDS)
# Stage-1 captioners. The interactive-prompt model refines a stage-1 model's rough caption (TIPCap's inference,
# and the app's); it has its own test below.
SHIPPED = [p for p in ADAPTOR_FILES if not read_metadata(p)["config"].get("interactive", False)]
WORLD_WORDS = set(world.KINDS) | set(world.PLURALS.values()) | set(world.COLORS)


def test_the_default_preset_is_shipped():
    assert os.path.isfile(PRESETS[DEFAULT_PRESET].checkpoint_path())


@pytest.mark.parametrize("path", ADAPTOR_FILES, ids=[os.path.relpath(p, checkpoints_dir()) for p in ADAPTOR_FILES])
def test_every_shipped_adaptor_finds_its_clip(path):
    """The CLIP path an adaptor records is relative to the adaptor's own folder (a checkpoint trained elsewhere
    and copied in once pointed outside checkpoints/)."""
    clip = read_metadata(path)["clip"]["spec"]["checkpoint"]
    assert clip and not os.path.isabs(clip)
    assert os.path.isfile(os.path.join(os.path.dirname(path), clip)), (path, clip)


@pytest.mark.parametrize("path", ADAPTOR_FILES, ids=[os.path.relpath(p, checkpoints_dir()) for p in ADAPTOR_FILES])
def test_every_shipped_adaptor_has_its_inference_settings_beside_it(path):
    """Defaults live in NAME.inference.json, not in the weights file; a bank it names exists."""
    assert os.path.isfile(settings_path(path)), f"{path} has no {settings_path(path)}"
    settings = read_settings(path)  # parses, every group and field known
    settings.config.check()
    assert not settings.bank or os.path.isfile(settings.bank), settings.bank


# ONE grounding rule for every shipped stage-1 adaptor (GROUNDING_P, shared with the benchmark): on the 100 held-out
# scenes the benchmark uses, at the checkpoint's own settings (S=20 + CLIP rerank), its captions name an object of
# their own scene more often than of the next scene, by a one-sided sign test over the scenes where exactly one of
# the two happens, at p < 0.01. How the bar was chosen: a captioner that ignores its image clears it by chance
# with probability under 1%, and a real dependence clears it with room (the benchmark's stored captions give each
# row's p-value, results/benchmark.md). The presets' models are
# captioned live here; ablations are judged on the benchmark's captions of the same bytes, and an ablation that
# does not clear the bar is reported as such in results/benchmark.md (it gets no bar of its own).
WORLD_PRESET_MODELS = sorted({PRESETS[n].checkpoint_path()
                              for n in ("offline-world", "offline-world-maccap", "maccap-authors")})
ABLATIONS = [p for p in SHIPPED if p not in WORLD_PRESET_MODELS and p not in
             {PRESETS[n].checkpoint_path() for n in PRESETS}]


@pytest.mark.heavy
@pytest.mark.parametrize("path", WORLD_PRESET_MODELS, ids=[os.path.basename(p) for p in WORLD_PRESET_MODELS])
def test_shipped_preset_model_captions_the_world_and_is_grounded(path):
    from train.benchmark import GROUNDING_P
    from zsc_core.evaluation import grounding

    assert os.path.getsize(path) < 40 * 2 ** 20  # fp16, trainable weights only
    cap = Captioner.from_pretrained(path)
    scenes = list(world.iter_scenes(0, "eval", 100))
    results = [r for i in range(0, 100, 20) for r in cap.caption([world.render(s, 128) for s in scenes[i:i + 20]])]
    for r in results:
        assert r.caption and r.candidates and r.regions
    captions = [r.caption for r in results]
    # A trained captioner talks about the world: most captions name an object kind or colour of the world...
    named = [bool(WORLD_WORDS & set(c.replace(",", " ").split())) for c in captions]
    assert sum(named) >= 100 * 5 // 6, captions
    # ...and what it names depends on the image.
    g = grounding([world.kinds_named(c) for c in captions], [{o.kind for o in s.objects} for s in scenes])
    assert g.own > g.other and g.p_value < GROUNDING_P, (g, captions[:8])


@pytest.mark.heavy
@pytest.mark.parametrize("path", ABLATIONS, ids=[os.path.relpath(p, checkpoints_dir()) for p in ABLATIONS])
def test_every_ablation_is_judged_by_the_same_rule_in_the_benchmark(path):
    """Each shipped ablation has a benchmark row scored on exactly these bytes, with the grounding rule applied to
    its stored captions; a row that does not clear the bar says so in the Markdown report. An ablation on the photo
    bridge is judged in the photo benchmark (val-dev photos and their references), the rest in the offline world's."""
    import json

    from train.benchmark import GROUNDING_P, row_grounding
    from zsc_core.checkpoint import file_fingerprint

    photo = read_metadata(path)["clip"]["name"] == PRESETS["photo"].clip.name
    stem = os.path.join(os.path.dirname(checkpoints_dir()), "results", "benchmark_photo" if photo else "benchmark")
    with open(stem + ".json") as f:
        report = json.load(f)
    with open(stem + ".md") as f:
        md = f.read()
    if photo:
        from train.benchmark_photo import photo_grounding
        from zsc_core.evaluation import coco_items

        refs = [caps for _, caps in coco_items(report["split"])]
        assert len(refs) == report["n_images"]

        def judge(captions):
            return photo_grounding(captions, refs)
    else:
        def judge(captions):
            return row_grounding(captions, report["n"])
    weights = file_fingerprint(path)  # row keys: WEIGHTS:SETTINGS (model or setting fingerprint)
    rows = [r for r in report["rows"] if str(r.get("key", [""])[0]).split(":")[0] == weights and r.get("captions")]
    assert rows, f"no row of {stem}.json has captions of {path} as shipped (re-run the benchmark)"
    for r in rows:
        g = judge(r["captions"])  # recomputed, not trusted from the file
        assert g == r["grounding"]
        assert g["grounded"] == (g["p_value"] < GROUNDING_P)
        verdict = "yes" if g["grounded"] else "**no**"
        shown = (r["name"] + (f" ({r['lm_dtype']} LM)" if r.get("lm_dtype") else "")  # a bf16 row says so
                 + (" (†)" if r.get("note") else ""))  # and a row measured under an earlier protocol
        assert f"| {shown} |" in md and f"{verdict} ({g['own']} / {g['other']}" in md


@pytest.mark.smoke
def test_shipped_prompt_model_follows_the_prompt():
    """The offline-world preset's interactive-prompt model: prompting an object of the scene that the rough caption (the
    preset's own, as in the app) left out, as a noun phrase ("An image contains a green star.") or as a bare noun
    ("An image contains star."), makes the refined caption name it in many cases; the rough caption named it in
    none, by construction (the benchmark reports the rates on more scenes, results/benchmark.md)."""
    from zsc_core.evaluation import evaluate_prompt_following

    path = PRESETS["offline-world"].prompt_checkpoint_path()
    assert os.path.isfile(path), "the offline-world preset ships an interactive-prompt model"
    base = Captioner.from_pretrained("offline-world")
    cap = Captioner.from_pretrained(path, clip=base.clip, lm=base.lm)
    assert cap.interactive
    res = evaluate_prompt_following(cap, base, n=24)
    assert res["tried"] >= 10, res
    assert res["followed_phrase"] >= 0.5 and res["followed_bare"] >= 0.25, res


# ---------------------------------------------------------------------------------------------------------
# The photo presets: real COCO photos, captioners trained on COCO caption text only.

PHOTO = [p for p in SHIPPED if read_metadata(p)["clip"]["name"] == PRESETS["photo"].clip.name]
# Models short of the shared bar on train-paired, expected to fail strictly (if one clears the bar, this says so).
# MacCap as the authors' code runs it was one when this check moved to train-paired (2026-12-06: own 24 / other 13,
# p = 0.031); since each photo draws its own noise (#52) it names its own photo's nouns 28 times and the next
# photo's 13 (p = 0.004, float32; results/heavy_tier_rerun_lm_dtype.md, where the strict expectation failed).
NOT_GROUNDED_ON_TRAIN_PAIRED: set[str] = set()


@pytest.mark.heavy
@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="not grounded on train-paired at the shared bar"))
    if p in NOT_GROUNDED_ON_TRAIN_PAIRED else p for p in PHOTO],
    ids=[os.path.relpath(p, checkpoints_dir()) for p in PHOTO])
def test_shipped_photo_captioner_is_grounded(path):
    """The same rule on real photos: on the 80 train-paired photos (one greedy sample each), captions name a noun
    (spaCy head lemma) of their OWN photo's references more often than of the next photo's, by the sign test at
    p < 0.01 (train.benchmark_photo.photo_grounding, which the photo benchmark reports for every row on val-dev)."""
    from train.benchmark_photo import photo_grounding
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image

    items = coco_items("train-paired")
    images = [load_image(p) for p, _ in items]
    cap = Captioner.from_pretrained(path)
    captions = [r.caption for i in range(0, len(images), 16)
                for r in cap.caption(images[i:i + 16], samples=1, num_beams=1)]
    assert all(captions)
    g = photo_grounding(captions, [refs for _, refs in items])
    assert g["own"] > g["other"] and g["grounded"], (g, captions[:10])


@pytest.fixture(scope="module")
def photo_prompting():
    """The photo preset and its prompt model, and the 80 train-paired photos with their references."""
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image

    base = Captioner.from_pretrained("photo")
    two = base if base.takes_prompts else Captioner.from_pretrained(PRESETS["photo"].prompt_checkpoint_path(),
                                                                    clip=base.clip, lm=base.lm)
    return base, two, [(load_image(path), refs) for path, refs in coco_items("train-paired")]


@pytest.mark.heavy
def test_photo_prompts_improve_the_caption(photo_prompting):
    """TIPCap's Table IV protocol on real photos: prompting the first reference noun that the rough caption (the
    preset's own, as in the app) misses gives refined captions that score higher CIDEr than the rough ones."""
    from zsc_core.evaluation import evaluate_prompt_following_coco
    from zsc_core.metrics import caption_metrics

    base, two, items = photo_prompting
    refs = {i: r for i, (_, r) in enumerate(items)}
    res = evaluate_prompt_following_coco(two, base, items, num_beams=GREEDY)
    assert res["tried"] > 0 and len(res["rough"]) == len(res["refined"]) == len(items)
    before, after = (caption_metrics(refs, dict(enumerate(res[k])), ("cider",))["CIDEr"] for k in ("rough", "refined"))
    assert after > before, (before, after)


@pytest.mark.heavy
def test_photo_prompt_model_names_the_prompted_noun_in_most_cases_at_one_sample(photo_prompting):
    """The target (>= 50%) at S=1, where the prompt model alone decides (one caption per pass, nothing to rank);
    judged on the 80 train-paired photos, where the prompt model was chosen (val-dev is reported by the
    benchmark)."""
    from zsc_core.evaluation import evaluate_prompt_following_coco

    base, two, items = photo_prompting
    res = evaluate_prompt_following_coco(two, base, items, num_beams=GREEDY)
    assert res["followed_phrase"] >= 0.5 and res["followed_bare"] >= 0.5, res


@pytest.mark.heavy
def test_photo_prompt_model_names_the_prompted_noun_in_most_cases_as_the_app_runs_it(photo_prompting):
    """The target as the app serves a prompt on CPU: the preset's served CPU setting (its defaults) for both passes.
    The 80 train-paired photos."""
    from zsc_core.evaluation import evaluate_prompt_following_coco

    base, two, items = photo_prompting
    d = base.config.decoding
    res = evaluate_prompt_following_coco(two, base, items, samples=d.samples, num_beams=d.num_beams)
    assert res["followed_phrase"] >= 0.5 and res["followed_bare"] >= 0.5, res


@pytest.mark.smoke
def test_the_photo_preset_ranks_by_consensus_with_a_bank_of_its_training_captions():
    """The default photo model names its caption bank (relative to checkpoints/) and ranks by consensus with it
    (embedding or CIDEr-D: what train.build_bank chose);
    the bank's rows are its own text encoder's embeddings of the COCO caption corpus it was trained on
    (re-embedding captions gives their rows back), and consensus-ranked captions of held-out photos are real
    sentences, best consensus first."""
    import torch

    from train.features import filter_captions, read_corpus
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image

    path = PRESETS["photo"].checkpoint_path()
    with open(settings_path(path)) as f:
        stored = json.load(f)
    assert stored["ranking"]["rerank"] in ("consensus", "cider") and not os.path.isabs(stored["bank"])
    with open(os.path.join(os.path.dirname(checkpoints_dir()), "results", "bank_photo.json")) as f:
        chosen = json.load(f)  # what train.build_bank chose on train-paired is what ships
    caption = read_settings(path).config.flat()
    assert caption["mix_k"] == chosen["chosen_mix_k"] and caption["bank_mix"] == chosen["chosen_mix"]
    assert caption["rerank"] == chosen["chosen_rerank"] and caption["sigma2"] == chosen["chosen_sigma2"]
    # the number of neighbours the ranking reads (rerank_k 0: the mix's mix_k)
    assert (caption["rerank_k"] or caption["mix_k"]) == (chosen["chosen_rerank_k"] or chosen["chosen_k"])
    cap = Captioner.from_pretrained("photo")
    bank = cap.bank
    corpus = filter_captions(read_corpus("coco"), bank.cfg.max_words)
    assert len(bank) == len(corpus) == bank.cfg.size
    assert bank.captions().captions == corpus  # the captions file: the rows' texts, in row order
    idx = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(0))[:64]
    feats = cap.clip.encode_text([corpus[i] for i in idx.tolist()]).float()
    cos = (bank.feats(idx) * feats).sum(-1) / bank.feats(idx).norm(dim=-1)
    assert cos.min() > 0.995, cos.min()
    images = [load_image(p) for p, _ in coco_items("train-paired")[:4]]
    for r in cap.caption(images, samples=8, num_beams=1):
        cons = [c.consensus for c in r.candidates]
        assert r.caption and None not in cons and cons == sorted(cons, reverse=True)


@pytest.mark.heavy
def test_the_photo_preset_writes_better_captions_than_the_nearest_corpus_caption():
    """The comparison on the 80 train-paired photos (where the choices were made; the benchmark reports val-dev),
    at S=1 and at the setting it serves on CPU: the default photo model's captions score higher CIDEr than each
    photo's nearest corpus caption on the same bridge (the retrieval baseline; looked up in the caption bank, which
    holds those corpus captions)."""
    from train.features import filter_captions, read_corpus
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics

    items = coco_items("train-paired")
    images = [load_image(p) for p, _ in items]
    refs = {i: r for i, (_, r) in enumerate(items)}
    cap = Captioner.from_pretrained("photo")
    corpus = filter_captions(read_corpus("coco"), cap.bank.cfg.max_words)
    ours = {s: [r.caption for i in range(0, len(images), 16) for r in cap.caption(images[i:i + 16], **kw)]
            for s, kw in ((1, {"samples": 1, "num_beams": 1}), ("served", {}))}
    feats = torch.cat([cap.clip.encode_image(cap.clip.pixels(images[i:i + 32])).float()
                       for i in range(0, len(images), 32)])
    nearest = [corpus[j] for j in cap.bank.neighbours(feats, 1)[:, 0].tolist()]
    cider = {name: caption_metrics(refs, dict(enumerate(hyps)), ("cider",))["CIDEr"]
             for name, hyps in (("S=1", ours[1]), ("served", ours["served"]), ("nearest", nearest))}
    assert cider["S=1"] > cider["nearest"] and cider["served"] > cider["nearest"], cider


@pytest.mark.smoke
def test_the_photo_preset_serves_the_bank_guidance_chosen_on_train_paired_and_it_reaches_the_words():
    """The photo model's served CPU setting is the one train.tune_memory (study=guidance) chose on train-paired, and
    on 4 fixed train-paired photos its bank guidance does what it is for: one noise-free caption per photo agrees
    more with the photo's nearest bank captions (CIDEr-D against them, the ranking's score) than the same model's
    caption without guidance."""
    with open(os.path.join(os.path.dirname(checkpoints_dir()), "results", "tune_guidance_photo.json")) as f:
        chosen = json.load(f)["served_cpu_overrides"]
    served = read_settings(PRESETS["photo"].checkpoint_path()).config.flat()
    assert {k: served[k] for k in chosen} == chosen and served["guide_weight"] > 0
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image

    cap = Captioner.from_pretrained("photo")
    images = [load_image(p) for p, _ in coco_items("train-paired")[:4]]
    guided = cap.caption(images, samples=1)
    plain = cap.caption(images, samples=1, guide_weight=0.0)
    assert all(len(r.candidates) == 1 and r.caption for r in guided + plain)
    agree = [sum(r.candidates[0].consensus for r in rs) / len(rs) for rs in (guided, plain)]
    assert agree[0] > agree[1], (agree, [r.caption for r in guided], [r.caption for r in plain])


@pytest.mark.heavy
def test_the_served_photo_setting_is_ahead_of_retrieval_on_every_train_paired_seed():
    """Issue #45's target where the choice was made: on the 80 train-paired photos the setting `photo` serves (its
    defaults) scores higher CIDEr than the CIDEr-consensus caption of each photo's 300 nearest bank captions, on
    each of the sampling seeds 0-3 (captioned as train.tune_memory does, 8 photos a batch). val-dev is reported by
    the benchmark, never checked here."""
    from zsc_core.bank import cider_consensus_caption
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics

    items = coco_items("train-paired")
    images = [load_image(p) for p, _ in items]
    refs = {i: r for i, (_, r) in enumerate(items)}
    cap = Captioner.from_pretrained("photo")
    captions = cap.bank.captions()
    feats = cap.clip.encode_image(cap.clip.pixels(images)).float()
    picks = cider_consensus_caption(cap.bank, captions.captions, feats, 300, captions.idf)
    retrieval = caption_metrics(refs, dict(enumerate(picks)), ("cider",))["CIDEr"]
    ours = {}
    for seed in range(4):
        hyps = [r.caption for i in range(0, len(images), 8) for r in cap.caption(images[i:i + 8], seed=seed)]
        ours[seed] = caption_metrics(refs, dict(enumerate(hyps)), ("cider",))["CIDEr"]
    assert all(v > retrieval for v in ours.values()), (retrieval, ours)
