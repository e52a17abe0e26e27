"""The drafting greedy decoder (decode.py): the same tokens as transformers' greedy generate, fewer LM passes."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

from zsc_core.decode import DecodeStats, accept, attention_mask, greedy
from zsc_core.guidance import BankGuidance, NgramTable
from zsc_core.lm import GenerationCfg, LMSpec, load_lm
from zsc_core.settings import CaptionConfig

EOS = 1


@pytest.fixture(scope="module")
def sharp_lm():
    """The tiny LM with larger random weights: its attention is peaked enough that attending to one position more
    (a rejected guess left in) changes what it writes, which the test below must be able to see."""
    return load_lm(LMSpec("tiny", tiny={"initializer_range": 1.0}))


def test_accept_keeps_agreeing_guesses_then_the_first_choice_after_them():
    assert accept([5, 6, 7], [5, 6, 7, 8], EOS) == [5, 6, 7, 8]  # every guess held: one more token for free
    assert accept([5, 6, 7], [5, 9, 7, 8], EOS) == [5, 9]  # the second guess fails: the LM's choice there
    assert accept([5, 6], [4, 6, 3], EOS) == [4]  # none held: one token, as without guesses
    assert accept([], [4], EOS) == [4]
    assert accept([5, EOS, 7], [5, EOS, 7, 8], EOS) == [5, EOS]  # nothing after the end of text


def test_attention_mask_is_causal_skips_invalid_positions_and_never_leaves_a_row_empty():
    valid = torch.tensor([[False, True, True, False, True],    # left pad, two prefix, a rejected guess, a new token
                          [True, True, True, True, True]])
    m = attention_mask(valid, start=3, width=2)[:, 0]  # the last 2 positions are new
    assert m.shape == (2, 2, 5)
    assert m[0, 0].tolist() == [False, True, True, False, False]  # position 3 (itself invalid) sees 1, 2
    assert m[0, 1].tolist() == [False, True, True, False, True]  # position 4 skips the rejected position 3
    assert m[1, 1].tolist() == [True] * 5 and m[1, 0].tolist() == [True, True, True, True, False]
    pad = attention_mask(torch.tensor([[False, False, True]]), start=0, width=3)[0, 0]
    assert pad[0].tolist() == [True, False, False]  # a left pad with nothing before it attends to itself
    assert pad[2].tolist() == [False, False, True]


def _hf_tokens(lm, embeds, mask, n, guide):
    """transformers' greedy generate, as LanguageModel.generate calls it: each row's tokens up to its end."""
    out = lm.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, do_sample=False,
                            pad_token_id=lm.pad_id, eos_token_id=lm.eos_id, begin_suppress_tokens=lm.empty_starts,
                            logits_processor=LogitsProcessorList([guide]) if guide else None)
    rows = []
    for r in out.tolist():
        rows.append(r[:r.index(lm.eos_id) + 1] if lm.eos_id in r else r)
    return rows


def _inputs(lm, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randn(b, 3, lm.hidden_size, generator=g)
    prompts = [lm.encode(["a red car"])[0] if i % 3 == 0 else [] for i in range(b)]  # left padding in some rows
    return lm.prefix_inputs(prefix, prompts)


@pytest.mark.parametrize("draft", [0, 1, 3])
def test_greedy_writes_what_transformers_greedy_writes_guided_or_not(sharp_lm, draft):
    tiny_lm = sharp_lm
    embeds, mask = _inputs(tiny_lm)
    plain = _hf_tokens(tiny_lm, embeds, mask, 12, None)
    assert greedy(tiny_lm, embeds, mask, 12) == plain
    # tables from other sentences: the guesses hold sometimes, fail sometimes
    texts = ["a red circle above a blue square", "two green triangles on the left", "a red car", "a tree",
             "a small blue square next to a big red circle", "the sun"]
    tables = [NgramTable(tiny_lm.encode([texts[i], texts[(i + 1) % 6]], add_eos=True), 3) for i in range(6)]
    guide = BankGuidance(tables, 0.6)
    want = _hf_tokens(tiny_lm, embeds, mask, 12, guide)
    assert want != plain  # the guidance changed what is written
    assert len({len(r) for r in want}) > 1  # rows end at different steps (and leave the batch)
    stats = DecodeStats()
    assert greedy(tiny_lm, embeds, mask, 12, guide=guide, draft=draft, stats=stats) == want
    if draft:
        assert stats.drafted > 0 and 0 < stats.accepted < stats.drafted


@pytest.mark.parametrize("draft", [0, 3])
def test_min_new_tokens_holds_back_sentence_ends_as_transformers_does_after_the_guidance(sharp_lm, draft):
    """No row ends (end of text or a token with ".", "!", "?", a newline) before min_new_tokens, also where the
    guidance gives the end its mass back; the drafting decoder writes what transformers' generate writes with its
    MinNewTokensLengthLogitsProcessor after the guidance (LanguageModel.generate's order)."""
    from transformers import MinNewTokensLengthLogitsProcessor

    lm = sharp_lm
    ends = set(lm.sentence_ends)
    assert lm.eos_id in ends and lm.tokenizer.encode(".", add_special_tokens=False)[0] in ends
    assert not any(t in ends for t in lm.tokenizer.encode("a red car", add_special_tokens=False))
    embeds, mask = _inputs(lm, seed=4)
    texts = ["a tree", "the sun", "a red car", "two green triangles", "a blue square", "a red circle"]
    tables = [NgramTable(lm.encode([texts[i]], add_eos=True), 3) for i in range(6)]  # short: the end comes early
    guide = BankGuidance(tables, 0.6)
    free = greedy(lm, embeds, mask, 12, guide=guide, draft=draft)
    assert min(len(r) for r in free) < 6  # without it, some rows end early
    held = greedy(lm, embeds, mask, 12, guide=guide, draft=draft, min_new_tokens=6)
    assert held != free
    assert all(len(r) >= 6 and not ends & set(r[:5]) for r in held)
    hold = MinNewTokensLengthLogitsProcessor(0, 6, lm.sentence_ends)
    out = lm.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=12, do_sample=False,
                            pad_token_id=lm.pad_id, eos_token_id=lm.eos_id, begin_suppress_tokens=lm.empty_starts,
                            logits_processor=LogitsProcessorList([guide, hold])).tolist()
    assert held == [r[:r.index(lm.eos_id) + 1] if lm.eos_id in r else r for r in out]


def test_min_new_tokens_is_checked():
    CaptionConfig().replace(min_new_tokens=10).check()
    for bad in (-1, 20):
        with pytest.raises(ValueError, match="min_new_tokens"):
            CaptionConfig().replace(min_new_tokens=bad).check()


def test_guesses_that_hold_save_passes(tiny_lm):
    """Tables made of the very captions greedy decoding writes: every guess holds, so a caption of n tokens takes
    about n / (draft + 1) passes instead of n."""
    embeds, mask = _inputs(tiny_lm, seed=1)
    first = greedy(tiny_lm, embeds, mask, 12, guide=BankGuidance([NgramTable([[2]], 2)] * 6, 0.01))
    guide = BankGuidance([NgramTable([row if row[-1] == EOS else row + [EOS]], 16) for row in first], 0.5)
    slow, fast = DecodeStats(), DecodeStats()
    one = greedy(tiny_lm, embeds, mask, 12, guide=guide, stats=slow)
    many = greedy(tiny_lm, embeds, mask, 12, guide=guide, draft=4, stats=fast)
    assert many == one
    assert fast.accepted == fast.drafted > 0
    assert slow.forwards == max(len(r) for r in one)  # one pass per token of the longest row
    assert fast.forwards <= -(-slow.forwards // 5) + 1


def test_a_restricted_head_writes_only_its_vocabulary(tiny_lm):
    embeds, mask = _inputs(tiny_lm, seed=2)
    everything = torch.arange(tiny_lm.model.get_output_embeddings().weight.shape[0])
    full = greedy(tiny_lm, embeds, mask, 10)
    assert greedy(tiny_lm, embeds, mask, 10, vocab=everything) == full  # the whole vocabulary: nothing changes
    vocab = tiny_lm.vocabulary(["a red circle above a blue square", "two green triangles"])
    assert tiny_lm.eos_id in vocab.tolist()
    rows = greedy(tiny_lm, embeds, mask, 10, vocab=vocab)
    assert all(t in set(vocab.tolist()) for r in rows for t in r)
    assert rows != full  # the random tiny LM wanted other words


def test_generate_adds_the_prompt_tokens_to_a_restricted_vocabulary(tiny_lm):
    prefix = torch.randn(2, 3, tiny_lm.hidden_size, generator=torch.Generator().manual_seed(3))
    prompt = tiny_lm.encode(["motorcycle"])[0] if "motorcycle" in tiny_lm.tokenizer.get_vocab() else \
        tiny_lm.encode(["tree"])[0]
    seen = {}

    import zsc_core.decode as decode

    real = decode.greedy

    def recording(lm, embeds, mask, n, **kw):
        seen["vocab"] = kw["vocab"]
        return real(lm, embeds, mask, n, **kw)

    decode.greedy = recording
    try:
        tiny_lm.generate(prefix, prompts=[prompt, prompt], cfg=GenerationCfg(max_new_tokens=3),
                         vocab=torch.tensor([tiny_lm.eos_id, 5]))
    finally:
        decode.greedy = real
    assert set(prompt) <= set(seen["vocab"].tolist()) and {tiny_lm.eos_id, 5} <= set(seen["vocab"].tolist())


def test_draft_tokens_are_checked():
    CaptionConfig().replace(draft_tokens=3, bank_vocab=True).check()
    with pytest.raises(ValueError, match="draft_tokens"):
        CaptionConfig().replace(draft_tokens=-1).check()


def test_captioner_drafts_change_nothing_and_the_bank_vocabulary_is_kept_on_disk(tmp_path, monkeypatch):
    from tests.test_bank import _img
    from tests.test_guidance import _captioner_with_bank

    monkeypatch.setenv("ZSC_CACHE_DIR", str(tmp_path / "cache"))
    cap, texts = _captioner_with_bank(tmp_path)
    kw = dict(samples=3, max_new_tokens=10, guide_weight=0.6, rerank="cider", rerank_k=10)
    plain = cap.caption(_img(4), **kw)
    drafted = cap.caption(_img(4), draft_tokens=3, **kw)
    assert [c.text for c in drafted.candidates] == [c.text for c in plain.candidates]
    vocab = cap.bank.vocabulary(cap.lm)
    assert torch.equal(vocab, cap.lm.vocabulary(texts))
    files = list((tmp_path / "cache" / "vocab").glob("*.json"))
    assert len(files) == 1
    cap.bank._vocab.clear()
    files[0].write_text("[1, 2, 3]")  # read back from the cache, not tokenised again
    assert cap.bank.vocabulary(cap.lm).tolist() == [1, 2, 3]
    cap.bank._vocab.clear()
    files[0].unlink()
    restricted = cap.caption(_img(4), bank_vocab=True, **kw)
    allowed = set(cap.bank.vocabulary(cap.lm).tolist())
    assert all(t in allowed for c in restricted.candidates for t in cap.lm.encode([c.text])[0])


def test_greedy_runs_in_the_lm_s_own_dtype():
    """The GPU path loads the LM in fp16/bf16: the loop, the restricted head and the guidance run in its dtype
    (bf16 here, on the CPU) and write what transformers' greedy writes in that dtype."""
    lm = load_lm(LMSpec("tiny", tiny={"initializer_range": 1.0}), dtype=torch.bfloat16)
    embeds, mask = _inputs(lm)
    assert embeds.dtype == torch.bfloat16
    assert greedy(lm, embeds, mask, 8) == _hf_tokens(lm, embeds, mask, 8, None)
    vocab = lm.vocabulary(["a red circle above a blue square", "two green triangles"])
    assert all(t in set(vocab.tolist()) for r in greedy(lm, embeds, mask, 8, vocab=vocab) for t in r)
