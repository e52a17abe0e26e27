"""The region memory, its training inputs and entity prompts (issue #45): pure maths on hand-made tensors, then the
memory adaptor through the facade on tiny seeded models and a tiny bank."""


import pytest
import torch
import torch.nn.functional as F

from train.train_memory import MemoryTrainConfig, inference_defaults, memory_loss
from zsc_core import world
from zsc_core.adaptor import MemoryAdaptor, MemoryConfig
from zsc_core.bank import BankConfig, CaptionBank
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import CheckpointError
from zsc_core.entities import (
    entity_prompt,
    load_entities,
    merge_entities,
    prompt_nouns,
    retrieved_entities,
    save_entities,
)
from zsc_core.lm import LMSpec, load_lm
from zsc_core.memory import MemorySpec, build_memory, duplicate_rows, neighbour_anchor, noisy, pick_regions, search

from .conftest import make_tiny_bank
from .test_captioner import make_tiny_clip

TINY_MEMORY = MemoryConfig(n_queries=2, d_model=32, n_heads=2, ffn_dim=64, dropout=0.0, n_cr=2, k=8, region_k=2,
                           sigma2=0.01, entity_k=8, entity_min=2, max_entities=3)


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# -- pure maths --------------------------------------------------------------------------------------------------


def test_flat_anchor_is_the_normalised_mean_and_a_cold_softmax_is_the_nearest():
    feats = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])[None]  # (1, 3, 3)
    sims = torch.tensor([[0.9, 0.5, 0.1]])
    assert torch.allclose(neighbour_anchor(sims, feats, "mean"), _unit([1, 1, 1]))
    assert torch.allclose(neighbour_anchor(sims, feats, "softmax", temperature=0.01), _unit([1, 0, 0]), atol=1e-6)
    warm = neighbour_anchor(sims, feats, "softmax", temperature=0.2)[0]
    assert warm[0] > warm[1] > warm[2] > 0  # weights follow the similarity
    with pytest.raises(ValueError, match="weighting"):
        neighbour_anchor(sims, feats, "max")


def test_search_never_returns_an_excluded_row():
    rows = _unit([1, 0], [1, 0.01], [0, 1], [0.7, 0.7])
    bank = CaptionBank(BankConfig(size=4), "fp", feats=rows)
    _, idx = search(bank, rows[:1], 2)
    assert idx.tolist() == [[0, 1]]
    _, idx = search(bank, rows[:1], 2, exclude=[[0, 1]])
    assert idx.tolist() == [[3, 2]]


def test_a_caption_never_retrieves_itself_or_a_verbatim_duplicate_in_training():
    texts = ["A dog.", "a dog", "A cat on a mat.", "Two birds.", "A red car.", "A dog"]
    assert duplicate_rows(texts)[0] == [0, 1, 5] and duplicate_rows(texts)[2] == [2]
    g = torch.Generator().manual_seed(0)
    rows = F.normalize(torch.randn(len(texts), 8, generator=g), dim=-1)
    rows[1], rows[5] = rows[0], rows[0]  # duplicates embed identically: the nearest rows of caption 0
    bank = CaptionBank(BankConfig(size=len(texts)), "fp", feats=rows)
    dups = duplicate_rows(texts)
    m = build_memory(bank, noisy(rows, 0.001, g), None, MemorySpec(k=3), exclude=dups)
    for i, nb in enumerate(m.neighbours.tolist()):
        assert not set(nb) & set(dups[i]), (i, nb)


def test_memory_has_a_global_anchor_then_region_anchors_and_masks_empty_slots():
    g = torch.Generator().manual_seed(1)
    rows = F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    bank = CaptionBank(BankConfig(size=30), "fp", feats=rows)
    q = rows[:2]
    rq = rows[None, 10:13].expand(2, -1, -1).clone()  # (2, 3, 8)
    pad = torch.tensor([[False, False, True], [True, True, True]])
    m = build_memory(bank, q, rq, MemorySpec(k=4, region_k=2), region_padding=pad)
    assert m.tokens.shape == (2, 4, 8) and m.padding.shape == (2, 4) and m.neighbours.shape == (2, 4)
    assert m.padding.tolist() == [[False, False, False, True], [False, True, True, True]]
    assert torch.allclose(m.tokens.norm(dim=-1), torch.ones(2, 4))
    # the global anchor is the mean of the query's 4 nearest rows; region 0 the mean of region 0's 2 nearest
    assert torch.allclose(m.tokens[0, 0], F.normalize(rows[bank.neighbours(q[:1], 4)[0]].mean(0), dim=0), atol=1e-5)
    assert torch.allclose(m.tokens[0, 1], F.normalize(rows[bank.neighbours(rq[0, :1], 2)[0]].mean(0), dim=0),
                          atol=1e-5)
    only_global = build_memory(bank, q, None, MemorySpec(k=4))
    assert only_global.tokens.shape == (2, 1, 8) and not only_global.padding.any()


def test_training_regions_are_a_subset_of_the_noun_phrases_or_none():
    phrases = [torch.eye(4)[:3], torch.zeros(0, 4), torch.eye(4)[:1]]
    g = torch.Generator().manual_seed(0)
    rq, pad = pick_regions(phrases, 2, g)
    assert rq.shape == (3, 2, 4) and pad.tolist() == [[False, False], [True, True], [False, True]]
    assert all(any(torch.equal(r, p) for p in phrases[0]) for r in rq[0])
    _, pad = pick_regions(phrases, 2, g, p_none=1.0)
    assert pad.all()


# -- entities -----------------------------------------------------------------------------------------------------


def test_entities_are_nouns_that_enough_neighbours_name_most_frequent_first():
    lists = [["dog", "frisbee", "park"], ["dog", "frisbee"], ["dog", "dog", "grass"], ["cat", "frisbee"],
             ["grass", "park"]]
    assert retrieved_entities(lists, 2, 4) == ["dog", "frisbee", "park", "grass"]  # 3, 3, 2, 2: ties by first seen
    assert retrieved_entities(lists, 3, 4) == ["dog", "frisbee"]  # a caption counts a noun once
    assert retrieved_entities(lists, 2, 1) == ["dog"]
    assert retrieved_entities(lists, 6, 4) == []
    assert entity_prompt(["dog", "frisbee"]) == "There are dog, frisbee in the image."
    assert entity_prompt([]) == ""


def test_a_users_nouns_come_first_and_retrieved_ones_fill_the_rest():
    assert merge_entities(["motorcycle"], ["dog", "motorcycle", "street"], 3) == ["motorcycle", "dog", "street"]
    assert merge_entities(["a", "b", "c", "d"], ["dog"], 3) == ["a", "b", "c", "d"]  # the user's are never cut
    assert merge_entities([], ["dog", "cat"], 1) == ["dog"]
    assert prompt_nouns("An image contains a red motorcycle and two dogs.") == ["motorcycle", "dog"]
    assert prompt_nouns("motorcycle") == ["motorcycle"]
    assert prompt_nouns("An image contains") == []


def test_entities_file_is_refused_for_another_bank(tmp_path):
    path = str(tmp_path / "bank.safetensors")
    save_entities(path, [["dog"], ["cat"]], "abc")
    assert load_entities(path, 2, "abc") == [["dog"], ["cat"]]
    with pytest.raises(CheckpointError, match="another caption bank"):
        load_entities(path, 2, "other")
    with pytest.raises(CheckpointError, match="build_entities"):
        load_entities(str(tmp_path / "none.safetensors"), 2, "abc")


# -- the adaptor and the facade -----------------------------------------------------------------------------------


def _tiny_memory_captioner(tmp_path, n_rows=40):
    clip, lm = make_tiny_clip(0), load_lm(LMSpec("tiny"))
    cap = Captioner.build(clip, lm, TINY_MEMORY, config=inference_defaults(TINY_MEMORY).replace(rerank_k=6))
    bank, texts = make_tiny_bank(clip, tmp_path, n_rows)
    bank_path = bank.path
    from train.build_entities import row_phrases

    phrases = row_phrases(texts)
    save_entities(bank_path, [list(dict.fromkeys(lemma for _, lemma in r)) for r in phrases], bank.rows_fingerprint())
    cap.bank = bank
    return cap, texts, phrases


def test_a_region_anchor_changes_the_prefix_and_an_empty_slot_does_not():
    torch.manual_seed(0)
    cfg = MemoryConfig(clip_dim=8, lm_dim=12, n_queries=2, d_model=16, n_heads=2, ffn_dim=32, dropout=0.0, n_cr=2)
    a = MemoryAdaptor(cfg).eval()
    mem = F.normalize(torch.randn(1, 3, 8), dim=-1)
    other = mem.clone()
    other[0, 2] = F.normalize(torch.randn(8), dim=0)
    base = a(mem)
    assert base.shape == (1, 2, 12)
    assert not torch.allclose(base, a(other), atol=1e-4)  # what a region retrieved reaches the prefix
    pad = torch.tensor([[False, False, True]])
    assert torch.allclose(a(mem, pad), a(other, pad), atol=1e-6)  # a masked slot is not read
    assert not torch.allclose(a(mem, pad), base, atol=1e-4)


def test_memory_captioner_reads_retrieved_anchors_and_entities(tmp_path):
    cap, texts, _ = _tiny_memory_captioner(tmp_path)
    seen, prompts = [], []
    cap.adaptor.register_forward_pre_hook(lambda m, args: seen.append([x.clone() for x in args]))
    generate = cap.lm.generate

    def recording(prefix, prompts=None, cfg=None, **kw):
        prompts_seen.append(prompts)
        return generate(prefix, prompts=prompts, cfg=cfg, **kw)

    prompts_seen = prompts
    cap.lm.generate = recording
    img = world.render(world.make_scene(0, "eval", 3), 64)
    r = cap.caption(img, samples=3, max_new_tokens=4)
    tokens, padding = seen[-1]
    assert tokens.shape == (3, 1 + TINY_MEMORY.n_cr, cap.clip.embed_dim) and not padding.any()
    # S=3 noisy queries retrieve different anchors; S=1 reads the image feature itself
    assert not torch.allclose(tokens[0, 0], tokens[1, 0])
    feat = cap.clip.image_features(cap.clip.pixels([img])).global_feat.float()
    cap.caption(img, samples=1, max_new_tokens=4)
    expect = build_memory(cap.bank, feat, None, MemorySpec(k=TINY_MEMORY.k)).tokens[0, 0]
    assert torch.allclose(seen[-1][0][0, 0], expect, atol=1e-5)
    # entity prompts follow the prefix: the nouns of the nearest captions, decoded from the LM's tokens
    nouns = cap.bank.nouns()
    nearest = build_memory(cap.bank, feat, None, MemorySpec(k=TINY_MEMORY.k)).neighbours[0, :TINY_MEMORY.entity_k]
    found = retrieved_entities([nouns[j] for j in nearest.tolist()], 2, 3)
    assert found  # the tiny corpus's captions share nouns
    assert prompts[-1] == cap.lm.encode([entity_prompt(found)])
    # regions off: the memory is the global anchor alone; entities off: no prompt tokens
    cap.caption(img, samples=1, max_new_tokens=4, use_regions=False, entities=False)
    assert seen[-1][0].shape == (1, 1, cap.clip.embed_dim) and prompts[-1] is None
    # a user's prompt is read as entities, first, in one pass
    prompted = cap.caption(img, samples=1, max_new_tokens=4, prompt="An image contains a zebra")
    assert prompts[-1] == cap.lm.encode([entity_prompt(merge_entities(["zebra"], found, 3))])
    assert prompted.entities == merge_entities(["zebra"], found, 3)  # what it read, for the app to show
    # detected people are read as an entity after the user's nouns (issue #53), when the settings read faces
    from zsc_core.evidence import Detection, Evidence

    two = Evidence([Detection("face", (0, 0, 5, 5), 0.99)] * 2)
    assert cap.caption(img, samples=1, max_new_tokens=4, faces=True, evidence=two).entities[0] == "people"
    both = cap.caption(img, samples=1, max_new_tokens=4, faces=True, evidence=two, prompt="An image contains a zebra")
    assert both.entities[:2] == ["zebra", "people"] and prompts[-1] == cap.lm.encode([entity_prompt(both.entities)])
    assert cap.caption(img, samples=1, max_new_tokens=4, evidence=two).entities == found  # faces not read
    assert r.candidates and r.caption == r.candidates[0].text


def test_memory_captions_do_not_depend_on_the_other_photos_in_their_batch(tmp_path):
    from .test_captioner import _batch_and_singles, _ranked

    cap, _, _ = _tiny_memory_captioner(tmp_path)
    images = [world.render(world.make_scene(0, "eval", i), 64) for i in range(3)]
    x_batch, x_single, batch, singles = _batch_and_singles(cap, images, samples=3, max_new_tokens=4, seed=5)
    assert x_batch.shape[0] == 3 * 3 and torch.allclose(x_batch, x_single, atol=1e-6)
    assert _ranked(batch) == _ranked(singles)


def test_memory_training_step_excludes_each_caption_and_trains_the_adaptor(tmp_path):
    cap, texts, phrases = _tiny_memory_captioner(tmp_path)
    pf = [cap.clip.encode_text([p for p, _ in row]).float() if row else torch.zeros(0, cap.clip.embed_dim)
          for row in phrases]
    cfg = MemoryTrainConfig(adaptor=TINY_MEMORY, p_no_regions=0.0, p_no_entities=0.0, p_own_entity=1.0)
    dups = duplicate_rows(texts)
    loss_fn = memory_loss(cfg, cap, pf, dups)
    retrieved = []
    real_build = build_memory

    import train.train_memory as tm

    def spy(*args, **kw):
        m = real_build(*args, **kw)
        retrieved.append((m, kw["exclude"]))
        return m

    tm.build_memory = spy
    try:
        idx = torch.tensor([0, 5, 9, 12])
        feats = cap.bank.feats(idx)
        targets = cap.lm.encode([texts[i] for i in idx.tolist()], add_eos=True)
        cap.adaptor.train()
        loss, logs = loss_fn(feats, targets, idx)
    finally:
        tm.build_memory = real_build
    m, exclude = retrieved[-1]
    for row, nb in zip(idx.tolist(), m.neighbours.tolist()):
        assert row not in nb and not set(nb) & set(dups[row])
    assert m.tokens.shape == (4, 1 + TINY_MEMORY.n_cr, cap.clip.embed_dim)
    loss.backward()
    assert torch.isfinite(loss) and cap.adaptor.slots.grad is not None and cap.adaptor.slots.grad.abs().sum() > 0
    assert "regions" in logs
