"""Caption metrics on hand-made examples, and the gap statistics on synthetic embeddings."""

import pytest
import torch
import torch.nn.functional as F

from zsc_core import analysis
from zsc_core.metrics import caption_metrics, paired_bootstrap, per_image_cider

REFS = {1: ["a red car next to a green tree", "a red car"], 2: ["a blue boat on the water", "a small blue boat"]}


def test_perfect_captions_score_high_and_wrong_ones_low():
    good = caption_metrics(REFS, {1: "a red car next to a green tree", 2: "a blue boat on the water"},
                           metrics=("bleu", "cider", "rouge"))
    bad = caption_metrics(REFS, {1: "purple fish", 2: "two stars above a house"}, metrics=("bleu", "cider", "rouge"))
    assert good["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert good["BLEU-4"] > 0.9 and good["ROUGE-L"] > 0.9
    assert bad["BLEU-4"] < 1e-3 and bad["CIDEr"] == pytest.approx(0.0, abs=1e-6)
    assert good["CIDEr"] > bad["CIDEr"] + 1


def test_spice_reports_unavailable_instead_of_crashing():
    out = caption_metrics(REFS, {1: "a red car", 2: "a blue boat"}, metrics=("spice",))
    assert isinstance(out["SPICE"], (float, dict))
    if isinstance(out["SPICE"], dict):  # no CoreNLP jars here (they cannot be downloaded): said so, not a crash
        assert "unavailable" in out["SPICE"] and out["SPICE"]["unavailable"]
        assert out["scorers"]["spice"] == out["SPICE"]["unavailable"]


def test_every_result_says_which_tokenizer_and_scorers_ran(monkeypatch):
    import shutil

    from zsc_core import metrics

    hyps = {1: "a red car next to a tree", 2: "a boat"}
    out = caption_metrics(REFS, hyps, metrics=("bleu", "cider"))
    assert out["scorers"] == {"bleu": "ran", "cider": "ran"}
    assert out["tokenizer"] == (metrics.PTB if shutil.which("java") else metrics.REGEX)
    # Without Java: the regex tokenizer is used and said to be used; METEOR says why it did not run.
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    no_java = caption_metrics(REFS, hyps, metrics=("bleu", "meteor"))
    assert no_java["tokenizer"] == metrics.REGEX and "not comparable" in no_java["tokenizer"]
    assert no_java["METEOR"] == {"unavailable": "METEOR needs Java"} and no_java["scorers"]["meteor"]
    assert isinstance(no_java["BLEU-4"], float)


def test_a_bug_in_a_python_scorer_is_not_silenced(monkeypatch):
    from pycocoevalcap.cider.cider import Cider

    def broken(self, gts, res):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Cider, "compute_score", broken)
    with pytest.raises(ZeroDivisionError):
        caption_metrics(REFS, {1: "a red car", 2: "a blue boat"}, metrics=("bleu", "cider"))


def test_metric_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        caption_metrics(REFS, {1: "x"}, metrics=("blue",))
    with pytest.raises(ValueError, match="no hypothesis"):
        caption_metrics(REFS, {9: "x"})


def test_retrieval_recall_hand_made():
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.0],
                        [0.2, 0.3, 0.1, 0.95]])
    image_of_text = torch.tensor([0, 0, 1, 1])
    i2t, t2i = analysis.retrieval_recall(sim, image_of_text, 1)
    assert i2t == 1.0  # image 0 -> text 0 (its own), image 1 -> text 3 (its own)
    assert t2i == 0.5  # texts 0 and 3 right; text 1 picks image 1, text 2 picks image 0


def test_gap_stats_see_a_known_offset():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(300, 64, generator=g)
    offset = torch.zeros(64)
    offset[0] = 6.0
    image = F.normalize(content + offset, dim=-1)
    text = F.normalize(content - offset, dim=-1)
    s = analysis.gap_stats(image, text)
    # Unrelated images share the +offset direction, so they are more alike than matched pairs: a gap.
    assert s["image_image_cos"] > s["paired_cos_mean"] and s["text_text_cos"] > s["paired_cos_mean"]
    assert s["centroid_distance"] > 1.0
    none = analysis.gap_stats(F.normalize(content, dim=-1), F.normalize(content, dim=-1))
    assert none["paired_cos_mean"] == pytest.approx(1.0, abs=1e-5) and none["centroid_distance"] < 1e-5


def test_subregion_share():
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    glob = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    sub = F.normalize(torch.tensor([[[1.0, 0.1], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]]), dim=-1)
    s = analysis.subregion_share(glob, sub, text)
    assert s["share_subregion_closer"] == 0.5  # pair 0: a subregion beats the global; pair 1: global is exact


def test_difference_histograms_and_tsne_figures(tmp_path):
    g = torch.Generator().manual_seed(0)
    content = torch.randn(60, 16, generator=g)
    offset = torch.zeros(16)
    offset[0] = 4.0
    img, txt = F.normalize(content + offset, dim=-1), F.normalize(content - offset, dim=-1)
    fig = analysis.difference_histograms({"global": img - txt, "subregion": (img - txt) * 0.5}, dims=(0, 3))
    assert len(fig.axes) == 2 * 3
    assert "dimension 3" in fig.axes[2].get_title() and "mean" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    pts = analysis.tsne_points({"image": img, "text": txt}, perplexity=30, max_iter=250)
    assert pts["image"].shape == (60, 2) and pts["text"].shape == (60, 2)
    # The planted offset separates the modalities in 2-D too: class centroids far apart vs spread.
    import numpy as np

    gap2d = np.linalg.norm(pts["image"].mean(0) - pts["text"].mean(0))
    assert gap2d > pts["text"].std(0).mean()
    fig2 = analysis.tsne_figure({"raw": {"image": img, "text": txt}, "noisy": {"image": img, "text": txt + 0.1}},
                                max_iter=250)
    assert len(fig2.axes) == 2
    small = analysis.tsne_points({"a": img[:5], "b": txt[:5]}, perplexity=30, max_iter=250)  # perplexity < n
    assert small["a"].shape == (5, 2)


def test_features_are_encoded_in_bounded_batches_with_the_same_result(tiny_clip, monkeypatch):
    """The gap analysis encodes images a few at a time (109 photos through the photo bridge's CNN at once took the
    app past 3 GB), and batching does not change a single feature."""
    from zsc_core import world

    images = [world.render(s, 64) for s in world.iter_scenes(0, "eval", 40)]
    whole = analysis.global_and_subregion_features(tiny_clip, images, n_cr=4, batch=len(images))
    seen = []
    encode = tiny_clip.image_features
    monkeypatch.setattr(tiny_clip, "image_features", lambda px: (seen.append(len(px)), encode(px))[1])
    glob, sub = analysis.global_and_subregion_features(tiny_clip, images, n_cr=4)  # the default batch
    assert sum(seen) == 40 and max(seen) == analysis.ENCODE_BATCH < 40, seen
    assert torch.allclose(glob, whole[0], atol=1e-5) and torch.allclose(sub, whole[1], atol=1e-5)
    assert sub.shape == (40, 4, glob.shape[1])
    seen.clear()
    analysis.global_and_subregion_features(tiny_clip, images[:11], n_cr=4, batch=4)
    assert seen == [4, 4, 3]


def test_gap_report_measures_how_far_each_mapping_closes_the_gap(tiny_clip):
    from zsc_core import world

    scenes = list(world.iter_scenes(0, "eval", 16))
    images, captions = [world.render(s, 64) for s in scenes], [s.captions[0] for s in scenes]
    glob, _ = analysis.global_and_subregion_features(tiny_clip, images, n_cr=4)
    text = tiny_clip.encode_text(captions).float()
    planted = (glob - text).mean(0)  # the mean image-minus-text offset of these very pairs
    dim = planted.shape[0]
    rep = analysis.gap_report(tiny_clip, images, captions, n_cr=4, tsne_n=12, tsne_iter=250,
                              mapping={"true offset": (planted, torch.eye(dim) * 1e-3),
                                       "wrong way": (-planted, torch.eye(dim) * 1e-3)})
    cos = rep.table["mapped_paired_cos"]
    assert cos["raw"] == pytest.approx(rep.table["global"]["paired_cos_mean"], abs=1e-4)
    assert cos["true offset"] > cos["raw"] > cos["wrong way"]
    far = rep.table["mapped_centroid_distance"]
    assert far["true offset"] < far["raw"] / 2 and far["raw"] < far["wrong way"], far
    assert len(rep.tsne.axes) == 4  # raw, isotropic noise, and one panel per mapping


def test_per_image_cider_averages_to_the_corpus_cider():
    hyps = {1: "a red car near a tree", 2: "a boat"}
    per = per_image_cider(REFS, hyps)
    assert set(per) == {1, 2} and per[1] > per[2] >= 0
    assert sum(per.values()) / 2 == pytest.approx(caption_metrics(REFS, hyps, metrics=("cider",))["CIDEr"], abs=1e-6)
    with pytest.raises(ValueError, match="no hypothesis"):
        per_image_cider(REFS, {7: "a cat"})


def test_paired_bootstrap_sees_a_real_difference_and_none_between_equal_lists():
    base = [0.1 * (i % 7) for i in range(60)]
    better = paired_bootstrap([x + 0.2 for x in base], base)
    for key in ("diff", "low", "high"):  # every resample sees the same shift
        assert better[key] == pytest.approx(0.2)
    assert better["p_above"] == 1.0 and better["wins"] == 60 and better["losses"] == 0 and better["n"] == 60
    noisy = paired_bootstrap([x + (0.3 if i % 2 else -0.3) for i, x in enumerate(base)], base)
    assert noisy["low"] < 0 < noisy["high"] and noisy["wins"] == noisy["losses"] == 30
    same = paired_bootstrap(base, base)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["wins"] == same["losses"] == 0
    assert paired_bootstrap(base, base, seed=3) == same  # seeded
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap(base, base[:-1])
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([], [])


def test_sign_test_hand_computed():
    from zsc_core.evaluation import sign_test

    assert sign_test(3, 0) == pytest.approx(1 / 8)  # all three discordant pairs won: (1/2)^3
    assert sign_test(2, 1) == pytest.approx(4 / 8)  # P(X >= 2), X ~ Bin(3, 1/2) = (3 + 1) / 8
    assert sign_test(0, 0) == 1.0
    assert sign_test(10, 2) == pytest.approx(79 / 4096)  # (C(12,10) + C(12,11) + C(12,12)) / 2^12


def test_grounding_compares_each_caption_with_its_own_and_the_next_images_words():
    from zsc_core.evaluation import grounding

    refs = [{"dog"}, {"pizza"}, {"bus"}, {"cat"}]
    grounded = grounding([{"dog"}, {"pizza"}, {"bus", "street"}, {"cat"}], refs)
    assert (grounded.own, grounded.other, grounded.own_only, grounded.other_only) == (4, 0, 4, 0)
    assert grounded.p_value == pytest.approx(1 / 16)
    # A caption that ignores its image ("a dog" everywhere) names the next image's words as often as its own.
    blind = grounding([{"dog"}] * 4, refs)
    assert blind.own == blind.other == 1 and blind.p_value == pytest.approx(3 / 4)


def test_distinct_captions_and_person_naming_on_hand_written_captions():
    from zsc_core.metrics import distinct_per_100, names_person, person_rate

    assert distinct_per_100(["a", "b", "a", "c"]) == 75.0 and distinct_per_100([]) == 0.0
    assert names_person("Two men riding horses.") and names_person("A surfer, on a wave")
    assert not names_person("A plate of food on a table") and not names_person("A mannequin in a window")
    refs = [["A man on a horse."] * 3 + ["A horse."] * 2,  # a person photo: 3 of 5 name one
            ["A dog.", "A man.", "A dog on grass.", "A dog.", "A puppy."],  # not one: 1 of 5
            ["A woman cooking.", "A lady in a kitchen.", "A person cooks.", "A kitchen.", "A stove."]]
    r = person_rate(["A horse in a field.", "A man and a dog.", "A woman in a kitchen."], refs)
    assert r == {"photos": 2, "named": 1, "rate": 0.5}
    assert person_rate(["x"], [["A dog."] * 5])["rate"] is None
