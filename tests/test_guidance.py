"""Bank-guided decoding (guidance.py): the n-gram table's back-off, the mixture's math, and its way into generate."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import make_tiny_bank, make_tiny_clip
from tests.test_bank import SMALL, _img
from zsc_core.captioner import Captioner
from zsc_core.guidance import START, BankGuidance, NgramTable
from zsc_core.lm import LMSpec, clean_caption, load_lm
from zsc_core.settings import CaptionConfig

EOS = 0


def test_table_backs_off_to_the_longest_context_it_has_seen():
    t = NgramTable([[1, 2, 3, EOS], [1, 2, 4, EOS], [5, 2, 3, EOS]], order=3)
    assert t.next([]) == ([1, 5], [2 / 3, 1 / 3])  # caption openings: the start counts as a token
    ids, p = t.next([1, 2])  # context (1, 2): 3 once, 4 once
    assert dict(zip(ids, p)) == {3: 0.5, 4: 0.5}
    ids, p = t.next([5, 2])  # context (5, 2) seen once: 3
    assert dict(zip(ids, p)) == {3: 1.0}
    ids, p = t.next([7, 2])  # (7, 2) never seen: back off to (2,): 3 twice, 4 once
    assert dict(zip(ids, p)) == pytest.approx({3: 2 / 3, 4: 1 / 3})
    assert t.next([1, 2, 3]) == ([EOS], [1.0])  # a caption's end is predicted like any token
    assert t.next([9]) is None  # not even the last token is known: no guidance
    assert START not in [w for c in t.counts.values() for w in c]  # the start marker is never predicted


def test_table_contexts_are_at_most_order_minus_one_tokens():
    t = NgramTable([[1, 2, 3, 4, EOS]], order=2)
    assert all(len(k) == 1 for k in t.counts)
    with pytest.raises(ValueError, match="order"):
        NgramTable([[1]], order=1)


def test_guidance_mixes_the_distributions_and_leaves_unknown_contexts_to_the_lm():
    torch.manual_seed(0)
    scores = torch.randn(4, 6)
    tables = [NgramTable([[2, EOS]], 3), NgramTable([[3, EOS], [4, EOS]], 3)]
    w = 0.3
    g = BankGuidance(tables, w, num_beams=2)  # rows 0-1 read table 0, rows 2-3 table 1
    ids = torch.tensor([[], [], [], []], dtype=torch.long).view(4, 0)
    out = g(ids, scores.clone())
    p_lm = scores.softmax(-1)
    want0 = (1 - w) * p_lm[0]
    want0[2] += w
    want2 = (1 - w) * p_lm[2]
    want2[3] += w / 2
    want2[4] += w / 2
    assert torch.allclose(out[0].exp(), want0, atol=1e-6) and torch.allclose(out[2].exp(), want2, atol=1e-6)
    assert torch.allclose(out.exp().sum(-1), torch.ones(4), atol=1e-5)  # each row is a distribution
    # after a token no caption contains, the row is the LM's own log-probabilities
    late = g(torch.tensor([[5], [5], [5], [5]]), scores.clone())
    assert torch.allclose(late, scores.log_softmax(-1), atol=1e-6)
    # one step, mixed rows: row 0 after token 2 (table 0: the caption's end follows), row 1 after an unknown token
    # (the LM alone), rows 2-3 after token 3 (table 1: its end follows)
    mixed = g(torch.tensor([[2], [5], [3], [3]]), scores.clone())
    want = (1 - w) * p_lm
    want[0, EOS] += w
    want[2:, EOS] += w
    want[1] = p_lm[1]
    assert torch.allclose(mixed.exp(), want, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        g(ids[:3], scores[:3])
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="weight"):
            BankGuidance(tables, bad)
    assert math.isclose(g._log_lm, math.log(0.7))


def _captioner_with_bank(tmp_path, n_rows=30):
    clip = make_tiny_clip(0)
    cap = Captioner.build(clip, load_lm(LMSpec("tiny")), SMALL)
    cap.bank, texts = make_tiny_bank(clip, tmp_path, n_rows)
    return cap, texts


def test_strong_guidance_from_one_neighbour_writes_that_neighbour(tmp_path):
    cap, texts = _captioner_with_bank(tmp_path)
    img = _img(2)
    feat = cap.clip.image_features(cap.clip.pixels([img])).global_feat.float()
    nearest = texts[int(cap.bank.neighbours(feat, 1)[0, 0])]
    want = clean_caption(cap.lm.tokenizer.decode(cap.lm.encode([nearest])[0], skip_special_tokens=True))
    plain = cap.caption(img, samples=1, max_new_tokens=30)
    guided = cap.caption(img, samples=1, max_new_tokens=30, guide_weight=0.99, guide_k=1, guide_order=32)
    assert guided.caption == want
    assert plain.caption != want  # the random tiny LM alone does not write it: the guidance did


def test_guidance_settings_are_checked_and_the_ranking_k_is_the_default():
    cfg = CaptionConfig().replace(rerank="cider", rerank_k=300, guide_weight=0.5)
    assert cfg.uses_bank and cfg.guide_k == 300
    assert cfg.replace(guide_k=50).guide_k == 50
    for bad in ({"guide_weight": 1.0}, {"guide_weight": -0.1}, {"guide_order": 1}, {"guide_k": -1}):
        with pytest.raises(ValueError, match="guide"):
            CaptionConfig().replace(**bad).check()


def test_the_first_pass_is_guided_and_a_prompted_pass_never_is(tmp_path):
    """A typed prompt writes the user's words: the n-grams of the neighbours would pull away from them. So with a
    prompt, the rough first pass reads the guidance and the prompted pass does not."""
    cap, _ = _captioner_with_bank(tmp_path)
    cap.interactive = True
    seen = []
    generate = cap.lm.generate

    def recording(prefix, prompts=None, cfg=None, logits_processor=None, **kw):
        seen.append(logits_processor)
        return generate(prefix, prompts=prompts, cfg=cfg, logits_processor=logits_processor, **kw)

    cap.lm.generate = recording
    cap.caption(_img(3), prompt="An image contains red circle.", samples=2, max_new_tokens=4, guide_weight=0.5)
    assert len(seen) == 2 and isinstance(seen[0], BankGuidance) and seen[1] is None
    assert seen[0].weight == 0.5 and len(seen[0].tables) == 2  # one row per sample, both reading the photo's table
    assert seen[0].tables[0] is seen[0].tables[1]
    seen.clear()
    cap.caption(_img(3), samples=2, max_new_tokens=4)  # weight 0 (the default): plain decoding
    assert seen == [None]
