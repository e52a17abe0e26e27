"""CIDEr-D consensus ranking: the maths against pycocoevalcap's scorer, the bank's captions file, and the facade."""

import gzip
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zsc_core import bank as bank_module
from zsc_core.bank import (
    BankConfig,
    CaptionBank,
    attach_bank,
    captions_path,
    load_bank,
    load_bank_captions,
    save_bank_captions,
)
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import CheckpointError
from zsc_core.cider import Idf, cider_d, leave_one_out_cider_d, ngram_counts, tokenize
from zsc_core.sampling import rerank
from zsc_core.settings import set_defaults

from .test_bank import _captioner_with_bank, _img

ITEMS = [  # (candidate, references), already lower-case and tokenised so both scorers read the same words
    ("a man riding a horse on a beach", ["a man rides a horse along the beach", "a person on a horse by the sea",
                                         "a horse and rider on the sand"]),
    ("a plate of food on a table", ["a plate with food on a wooden table", "a table with a plate of pasta"]),
    ("a cat sleeping on a couch", ["a cat asleep on the sofa", "a grey cat lying on a couch",
                                   "a cat curled up on a red couch", "a sleeping cat"]),
    ("two dogs", ["a dog running in a field", "two dogs play with a ball"]),
    # repeated n-grams on both sides: the clipping min(hyp, ref) * ref at counts above one (cider.similarities)
    ("a dog and a dog and a dog", ["a dog a dog", "a dog and a dog and a dog and a dog", "dog"]),
]


def test_tokenize_and_ngrams():
    assert tokenize("A man's Horse, on the beach.") == ["a", "man's", "horse", "on", "the", "beach"]
    counts = ngram_counts(["a", "b", "a", "b"])
    assert counts[0] == {"a": 2, "b": 2} and counts[1] == {"a b": 2, "b a": 1} and counts[3] == {"a b a b": 1}


def test_cider_d_equals_pycocoevalcap_with_the_same_document_frequencies():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    for cand, refs in ITEMS:
        scorer += (cand, refs)
    _, theirs = scorer.compute_score()
    # pycocoevalcap's documents are the images' reference sets; the same idf given explicitly
    for min_df in (1, 2):  # n-grams in one document weigh the same stored or not
        idf = Idf.from_documents([refs for _, refs in ITEMS], min_df=min_df)
        ours = [cider_d([cand], refs, idf)[0] for cand, refs in ITEMS]
        assert ours == pytest.approx(list(theirs), abs=1e-9)
    assert min(theirs) >= 0 and theirs[0] > theirs[3]  # not a degenerate case: scores differ


def test_leave_one_out_cider_d_equals_scoring_each_text_against_the_others():
    texts = [c for _, refs in ITEMS for c in refs]
    idf = Idf.from_documents([t] for t in texts)
    expected = [cider_d([t], texts[:i] + texts[i + 1:], idf)[0] for i, t in enumerate(texts)]
    assert leave_one_out_cider_d(texts, idf) == pytest.approx(expected, abs=1e-12)
    assert len(set(round(x, 6) for x in expected)) > 3  # the scores differ: not a degenerate case
    with pytest.raises(ValueError, match="at least two"):
        leave_one_out_cider_d(texts[:1], idf)


def test_cider_d_prefers_the_references_words_and_needs_references():
    idf = Idf.from_documents([[c] for c in ["a dog on the grass", "a cat on a bed", "a man on a bike",
                                             "a dog in the park", "a bowl of fruit"]])
    assert idf.n_docs == 5 and idf.weight(0, "a") == pytest.approx(0.0)  # in every document: weighs nothing
    assert idf.weight(0, "zebra") == pytest.approx(torch.log(torch.tensor(5.0)).item())  # unseen: as if in one
    refs = ["a dog on the grass", "a dog in the park"]
    agree, other = cider_d(["a dog on the grass", "a bowl of fruit"], refs, idf)
    assert agree > other >= 0.0
    with pytest.raises(ValueError, match="at least one reference"):
        cider_d(["a dog"], [], idf)


def test_cider_ranking_overrules_clip_score_and_keeps_it_for_display():
    img = torch.tensor([1.0, 0.0])
    feats = F.normalize(torch.tensor([[1.0, 0.1], [0.3, 1.0]]), dim=-1)  # CLIP prefers the first
    idf = Idf.from_documents([[c] for c in ["a dog on the grass", "a cat on a bed", "a red car"]])
    ranked = rerank(["a red car", "a dog on the grass"], feats, img, cider_refs=(["a dog on grass"], idf))
    assert [c.text for c in ranked] == ["a dog on the grass", "a red car"]
    assert ranked[0].score == ranked[0].consensus == pytest.approx(cider_d(["a dog on the grass"],
                                                                           ["a dog on grass"], idf)[0])
    assert ranked[0].clip_score == pytest.approx(float(feats[1] @ img))


def _bank_of(captions, fingerprint="fp", seed=0):
    rows = F.normalize(torch.randn(len(captions), 8, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return CaptionBank(BankConfig(size=len(captions)), fingerprint, feats=rows), rows


def test_captions_file_round_trips_is_deterministic_and_refuses_another_bank(tmp_path):
    caps = ["a dog on the grass", "a dog in the park", "a cat on a bed"]
    bank, _ = _bank_of(caps)
    bank.path = str(tmp_path / "bank.safetensors")
    path = save_bank_captions(bank.path, caps, bank)
    assert path == captions_path(bank.path) == str(tmp_path / "bank.captions.json.gz")
    first = Path(path).read_bytes()
    save_bank_captions(bank.path, caps, bank)
    assert Path(path).read_bytes() == first  # same content, same bytes (no timestamp in the gzip header)
    loaded = bank.captions()
    assert loaded.captions == caps and loaded.idf.n_docs == 3
    assert loaded.idf.df[0] == {"a": 3, "dog": 2, "on": 2, "the": 2}  # only n-grams in >= 2 captions are stored
    assert bank.texts(torch.tensor([[2, 0]])) == [["a cat on a bed", "a dog on the grass"]]
    other, _ = _bank_of(caps, seed=1)  # same size and encoder, other rows
    with pytest.raises(CheckpointError, match="another caption bank"):
        load_bank_captions(path, other)
    with pytest.raises(ValueError, match="2 captions for a bank of 3 rows"):
        save_bank_captions(bank.path, caps[:2], bank)
    with pytest.raises(CheckpointError, match="has no captions file"):
        load_bank_captions(str(tmp_path / "none.captions.json.gz"), bank)
    with gzip.open(path, "wt") as f:
        json.dump({"kind": "clip"}, f)
    with pytest.raises(CheckpointError, match="not a caption bank's captions file"):
        load_bank_captions(path, bank)
    with open(path, "wb") as f:
        f.write(b"not gzip")
    with pytest.raises(CheckpointError, match="not a readable captions file"):
        load_bank_captions(path, bank)


def test_captioner_ranks_by_cider_against_the_nearest_bank_captions(tmp_path):
    from zsc_core import world

    cap, path, bank_path = _captioner_with_bank(tmp_path)
    texts = [world.make_scene(0, "corpus", i).captions[0] for i in range(40)]  # the bank's rows, in order
    save_bank_captions(bank_path, texts, load_bank(bank_path))
    attach_bank(path, bank_path, k=5)
    set_defaults(path, rerank="cider")
    loaded = Captioner.from_pretrained(path)
    r = loaded.caption(_img(1), samples=8, max_new_tokens=5)
    # by hand: the image's 5 nearest bank rows, their texts as references, idf over all 40 captions
    img = loaded.clip.image_features(loaded.clip.pixels([_img(1)])).global_feat.float()
    bank = load_bank(bank_path)
    refs = [texts[j] for j in bank.neighbours(img, 5)[0].tolist()]
    idf = Idf.from_documents([t] for t in texts)
    expected = cider_d([c.text for c in r.candidates], refs, idf)
    assert [c.consensus for c in r.candidates] == pytest.approx(expected)
    assert [c.score for c in r.candidates] == sorted((c.score for c in r.candidates), reverse=True)
    # the same samples ranked by embedding consensus: same texts, other scores
    emb = loaded.caption(_img(1), samples=8, max_new_tokens=5, rerank="consensus")
    assert {c.text for c in emb.candidates} == {c.text for c in r.candidates}
    os.remove(captions_path(bank_path))  # a bank without its captions file: a clear error, for CIDEr only
    bank_module._load.cache_clear()  # the loaded bank keeps the captions it read; a new process would not
    fresh = Captioner.from_pretrained(path)
    with pytest.raises(CheckpointError, match="has no captions file"):
        fresh.caption(_img(1), samples=2, max_new_tokens=4)
    assert fresh.caption(_img(1), samples=2, max_new_tokens=4, rerank="consensus").candidates[0].consensus is not None


def test_rerank_k_gives_the_ranking_more_references_than_the_input_mix_averages(tmp_path):
    from zsc_core import world
    from zsc_core.sampling import consensus_scores

    from .test_bank import _adaptor_inputs

    cap, path, bank_path = _captioner_with_bank(tmp_path)
    texts = [world.make_scene(0, "corpus", i).captions[0] for i in range(40)]
    save_bank_captions(bank_path, texts, load_bank(bank_path))
    attach_bank(path, bank_path, k=3, mix=1.0)
    set_defaults(path, rerank="cider", rerank_k=9)
    loaded = Captioner.from_pretrained(path)
    seen = _adaptor_inputs(loaded)
    img = loaded.clip.image_features(loaded.clip.pixels([_img(1)])).global_feat.float()
    bank = load_bank(bank_path)
    order = bank.neighbours(img, 9)[0].tolist()
    r = loaded.caption(_img(1), samples=1, max_new_tokens=5)
    # the input is the mean of the 3 nearest (mix_k); the ranking's references are the 9 nearest
    anchor = F.normalize(bank.feats(torch.tensor(order[:3])).mean(0), dim=-1)
    assert torch.allclose(seen[-1][0], anchor.expand_as(seen[-1][0]), atol=1e-5)
    idf = Idf.from_documents([t] for t in texts)
    refs = [texts[j] for j in order]
    assert [c.consensus for c in r.candidates] == pytest.approx(cider_d([c.text for c in r.candidates], refs, idf))
    assert r.candidates[0].consensus != pytest.approx(cider_d([r.caption], refs[:3], idf)[0])  # not the 3 nearest
    # the embedding consensus reads the same 9; rerank_k=0 falls back to mix_k
    emb = loaded.caption(_img(1), samples=1, max_new_tokens=5, rerank="consensus")
    text_feat = loaded.clip.encode_text([emb.caption]).float()
    nine = consensus_scores(text_feat, bank.feats(torch.tensor(order)))[0]
    assert emb.candidates[0].consensus == pytest.approx(float(nine), abs=1e-4)
    three = loaded.caption(_img(1), samples=1, max_new_tokens=5, rerank_k=0)
    assert three.candidates[0].consensus == pytest.approx(cider_d([three.caption], refs[:3], idf)[0])
    with pytest.raises(ValueError, match="rerank_k >= 0"):
        loaded.caption(_img(1), samples=1, rerank_k=-1)


def test_cider_consensus_caption_baseline_picks_the_neighbour_that_shares_most_words():
    from zsc_core.bank import cider_consensus_caption

    caps = ["a dog on the grass", "a brown dog on the grass", "a dog on green grass", "a red car", "a cat"]
    rows = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.8, 0.5], [0.7, 0.7], [-1.0, 0.0]]), dim=-1)
    bank = CaptionBank(BankConfig(size=5), "fp", feats=rows)
    idf = Idf.from_documents([c] for c in caps)
    # image nearest rows 0..3 (k=4): "a red car" shares no word but "a"; "a dog on the grass" shares the most
    picks = cider_consensus_caption(bank, caps, F.normalize(torch.tensor([[1.0, 0.1]]), dim=-1), 4, idf)
    assert picks == ["a dog on the grass"]
