"""Greedy decoding that reads the LM's weights fewer times: drafts from the caption bank, a head over its vocabulary.

On a CPU each decode step of the frozen LM reads all its weights from memory (~540 MB for SmolLM2-135M at fp32),
whatever the batch: a step costs the same for 8 rows as for 1, and nearly the same for 2 or 3 tokens a row as for
one. Two ways to read the weights fewer times, both used by :func:`greedy`:

* **Drafts** (prompt-lookup / speculative decoding: Leviathan et al., ICML 2023; Saxena's prompt lookup
  decoding, 2023): before each step every row guesses its next ``draft`` tokens from its bank-guidance n-gram
  table (:meth:`guidance.BankGuidance.draft`), and one forward pass scores the row's last token and its guesses
  together. Guesses are kept while they equal the token greedy decoding would have chosen there (the LM's
  distribution mixed with the table's, exactly as :class:`guidance.BankGuidance` mixes it), plus the first token
  greedy decoding chooses after them. The captions are those of plain greedy decoding (up to the rounding of a
  wider matrix product); a step just writes up to ``draft + 1`` tokens. Guided captions copy the bank's n-grams,
  so most guesses hold.
* **A head over the bank's vocabulary**: the LM head (49,152 x 576, a fifth of SmolLM2's weights) scores only
  the tokens that occur in the caption bank, the end of text and the tokens of the pass's prompts; every other
  token scores minus infinity. A caption can then only use tokens some COCO caption uses.

Each row keeps its own positions: a rejected guess stays in the KV cache but is masked out of every later
attention (its row's positions skip it), so rows that keep different numbers of guesses share one batch.

Runs Llama-style models of ``transformers`` (SmolLM2, and the tiny test LM); :meth:`lm.LanguageModel.generate`
keeps ``transformers``' own ``generate`` for beam search and for anything else.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class DecodeStats:
    """What one :func:`greedy` call did: LM forward passes (the prefix's included), guesses made, guesses kept."""

    forwards: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def attention_mask(valid: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """The (B, 1, width, start + width) boolean mask of ``width`` new positions after ``start`` cached ones:
    each attends to the valid positions (``valid``: (B, start + width) bool) at or before its own. A position
    with nothing to attend to (left padding) attends to itself, so no attention row is empty (an empty row's
    softmax is NaN, which would reach the cache)."""
    b, total = valid.shape
    q = torch.arange(start, start + width, device=valid.device)
    causal = torch.arange(total, device=valid.device)[None, :] <= q[:, None]  # (width, total)
    mask = causal[None] & valid[:, None, :]
    own = torch.zeros(width, total, dtype=torch.bool, device=valid.device)
    own[torch.arange(width), q] = True
    empty = ~mask.any(-1, keepdim=True)  # (B, width, 1)
    return (mask | (empty & own[None]))[:, None]


def accept(guesses: Sequence[int], chosen: Sequence[int], eos: int) -> list[int]:
    """The tokens a row writes after one verified step: its guesses while each equals the token chosen at its
    place (``chosen[j]``: the greedy choice after the row's last token and ``guesses[:j]``), then the first choice
    after the kept ones; nothing after an end of text. Pure."""
    out: list[int] = []
    for j, g in enumerate(guesses):
        if chosen[j] != g:
            break
        out.append(g)
        if g == eos:
            return out
    out.append(chosen[len(out)])
    return out


_HEADS: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor | None]] = {}


def head_rows(head: torch.nn.Module, vocab: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head's weight and bias rows of ``vocab`` (all rows for None), copied once per head, vocabulary, device
    and dtype and kept (the copy of a 12k-token head is 28 MB at fp32; making it per call costs a pass over it).
    Two copies at most are kept: the served vocabulary's and the last prompted pass's (which adds its prompt's
    tokens), so a stream of different prompts does not grow the memory."""
    bias = getattr(head, "bias", None)
    if vocab is None:
        return head.weight, bias
    key = (head.weight.data_ptr(), hash(tuple(vocab.tolist())), f"{head.weight.device}{head.weight.dtype}")
    if key not in _HEADS:
        while len(_HEADS) >= 2:
            _HEADS.pop(next(iter(_HEADS)))  # the oldest
        index = vocab.to(head.weight.device)
        _HEADS[key] = (head.weight[index].contiguous(), None if bias is None else bias[index].contiguous())
    return _HEADS[key]


def _cache_kwarg(base: torch.nn.Module) -> str:
    """The name the base model's forward takes its KV cache by (``cache`` in transformers >= 5.2, else
    ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy(lm, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, guide=None, draft: int = 0,
           vocab: torch.Tensor | None = None, stats: DecodeStats | None = None,
           min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy decoding of ``max_new_tokens`` at most per row from ``embeds`` (B, T, H) left-padded with ``mask``
    (B, T) (:meth:`lm.LanguageModel.prefix_inputs`). The first token is never one of ``lm.empty_starts``.

    guide: a :class:`guidance.BankGuidance` (num_beams 1) mixed into every choice; its tables draft ``draft``
    guesses a step (0: none; drafts need a guide). vocab: sorted token ids the head scores (None: all).
    min_new_tokens: no sentence end (``lm.sentence_ends``) is chosen before a row has this many tokens; held back
    after the guidance is mixed in, as ``transformers``' MinNewTokensLengthLogitsProcessor does after it.
    Returns each row's tokens, ending with the end of text where it ended."""
    from transformers import DynamicCache

    model, eos, device = lm.model, lm.eos_id, embeds.device
    base = model.base_model
    head = model.get_output_embeddings()
    weight, bias = head_rows(head, vocab)
    n_vocab = head.weight.shape[0]
    cache_kw = {_cache_kwarg(base): DynamicCache(config=model.config)}
    stats = stats if stats is not None else DecodeStats()
    b = embeds.shape[0]
    valid = mask.to(device=device, dtype=torch.bool)  # (B, cached positions) : which positions count
    pos = valid.long().sum(-1)  # each row's next position
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    suppress = torch.tensor(lm.empty_starts, device=device)
    ends = torch.tensor(lm.sentence_ends, device=device) if min_new_tokens else None

    def forward(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states of the new positions x (B, W, H), with the cache before them; (B, W, H)."""
        start = valid.shape[1] - x.shape[1]
        hidden = base(inputs_embeds=x, attention_mask=attention_mask(valid, start, x.shape[1]),
                      position_ids=positions, use_cache=True, **cache_kw).last_hidden_state
        stats.forwards += 1
        return hidden

    def choose(hidden: torch.Tensor, contexts: list[list[int]], rows: list[int]) -> list[int]:
        """The greedy token after each context (hidden: (N, H), one per context; rows: each context's row)."""
        sub = torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias).float()
        if vocab is None:
            scores = sub
        else:
            scores = torch.full((sub.shape[0], n_vocab), NEG_INF, device=device)
            scores[:, vocab.to(device)] = sub
        first = [i for i, c in enumerate(contexts) if not c]
        if first:
            scores[torch.tensor(first, device=device)[:, None], suppress[None, :]] = NEG_INF
        if guide is not None:
            scores = guide.mix(contexts, [r // guide.num_beams for r in rows], scores)
        short = [i for i, c in enumerate(contexts) if len(c) < min_new_tokens] if min_new_tokens else []
        if short:
            scores[torch.tensor(short, device=device)[:, None], ends[None, :]] = NEG_INF
        return scores.argmax(-1).tolist()

    batch = list(range(b))  # the rows in the cache, in its order: a finished row leaves it
    first = True  # the first pass reads the prefix (and any prompt), then the guesses of each caption's start
    while not all(done):
        if any(done[r] for r in batch):
            keep = [i for i, r in enumerate(batch) if not done[r]]
            index = torch.tensor(keep, device=device)
            cache_kw[next(iter(cache_kw))].batch_select_indices(index)
            valid, pos, batch = valid[index], pos[index], [batch[i] for i in keep]
        guesses = [guide.draft(r // guide.num_beams, out[r], min(draft, max_new_tokens - len(out[r]) - 1), eos)
                   if guide is not None and draft else [] for r in batch]
        lead = 0 if first else 1  # each row's last token goes first, except after the prefix (it is in it)
        width = lead + max(len(g) for g in guesses)
        ids = torch.full((len(batch), width), lm.pad_id, dtype=torch.long)
        new_valid = torch.zeros(len(batch), width, dtype=torch.bool)
        for i, r in enumerate(batch):
            row = out[r][-1:] + guesses[i] if lead else guesses[i]
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            new_valid[i, :len(row)] = True
        x = lm.embed(ids).to(embeds.dtype)
        if first:
            x, valid = torch.cat([embeds, x], dim=1), torch.cat([valid, new_valid.to(device)], dim=1)
            positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
            base_col = embeds.shape[1] - 1  # the prefix's last position scores the first token
        else:
            valid = torch.cat([valid, new_valid.to(device)], dim=1)
            positions = pos[:, None] + torch.arange(width, device=device)[None, :]
            base_col = 0
        hidden = forward(x, positions)
        spans = [len(g) + 1 for g in guesses]  # positions scored per row: before each guess, and after the last
        contexts = [out[r] + g[:j] for r, g in zip(batch, guesses) for j in range(len(g) + 1)]
        rows = [r for r, n in zip(batch, spans) for _ in range(n)]
        at_row = torch.tensor([i for i, n in enumerate(spans) for _ in range(n)], device=device)
        at = torch.tensor([base_col + j for n in spans for j in range(n)], device=device)
        chosen = choose(hidden[at_row, at], contexts, rows)
        k, start = 0, valid.shape[1] - x.shape[1] + base_col
        for i, (r, g, n) in enumerate(zip(batch, guesses, spans)):
            new = accept(g, chosen[k:k + n], eos)[:max_new_tokens - len(out[r])]
            k += n
            kept = _kept(new, g)  # guesses written: their cache positions stay valid
            stats.drafted += n - 1
            stats.accepted += kept
            valid[i, start + 1 + kept:start + n] = False  # the rejected guesses: never attended to again
            pos[i] += lead + kept
            out[r].extend(new)
            done[r] = eos in new or len(out[r]) >= max_new_tokens
        first = False
    return out


def _kept(new: list[int], guesses: list[int]) -> int:
    """How many of the guesses are among the tokens written (the leading ones that agree)."""
    k = 0
    while k < len(guesses) and k < len(new) and new[k] == guesses[k]:
        k += 1
    return k
