"""Bank-guided decoding: the LM's next token, interpolated with an n-gram model of the image's nearest captions.

At each step the frozen LM's next-token distribution p_LM is mixed with p_bank, the next-token distribution of
the image's ``guide_k`` nearest bank captions given the tokens written so far:

    p(w | context) = (1 - weight) * p_LM(w | prefix, context) + weight * p_bank(w | context)

p_bank backs off to the longest suffix of the context (at most ``order - 1`` tokens, the start of the caption
counting as one) that occurs in those captions, as the infini-gram of Liu et al. (2024) does over a whole corpus,
and is interpolated with a neural LM as kNN-LM (Khandelwal et al., ICLR 2020) interpolates its neighbours. Where no
suffix of at least one token occurs (the last token is in none of the captions), the step is the LM's alone.

It is the decoding-side use of the text memory (DeCap's and Knight's bank) that the adaptor reads on the input
side: the adaptor's prefix says what the photo is about, the neighbours' n-grams say it in the words COCO captions
use. The trainable part is unchanged (and saw caption text alone); ``weight = 0`` is plain decoding.

:class:`NgramTable` is pure (token ids in, a distribution out; tests/test_guidance.py); :class:`BankGuidance` is a
``transformers`` ``LogitsProcessor`` that applies one table per decoded row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

START = -1  # the start-of-caption marker in a table's contexts (never a token id)


class NgramTable:
    """Next-token counts of a few token sequences, by context, for contexts of 1 to ``order - 1`` tokens.

    sequences: token ids per caption, each ending with the LM's end-of-text id (so a caption's end is predicted
    like any token)."""

    def __init__(self, sequences: Sequence[Sequence[int]], order: int = 4):
        if order < 2:
            raise ValueError(f"an n-gram table needs order >= 2 (a context of one token), got {order}")
        self.order = order
        self.counts: dict[tuple[int, ...], Counter] = {}
        for seq in sequences:
            toks = [START, *seq]
            for i in range(1, len(toks)):
                for n in range(1, min(order - 1, i) + 1):
                    self.counts.setdefault(tuple(toks[i - n:i]), Counter())[toks[i]] += 1
        self._cache: dict[tuple[int, ...], tuple[list[int], list[float]] | None] = {}

    def next(self, generated: Sequence[int]) -> tuple[list[int], list[float]] | None:
        """(token ids, probabilities) that follow the longest known suffix of [start] + ``generated``, or None
        when not even its last token occurs in the table."""
        toks = (START, *generated)[-(self.order - 1):]
        key = tuple(toks)
        if key in self._cache:
            return self._cache[key]
        out = None
        for n in range(len(toks), 0, -1):
            c = self.counts.get(key[len(key) - n:])
            if c:
                total = sum(c.values())
                ids = list(c)
                out = (ids, [c[w] / total for w in ids])
                break
        self._cache[key] = out
        return out


def tables_for(lm, texts: Sequence[Sequence[str]], order: int) -> list[NgramTable]:
    """One table per image from its captions, tokenised as the LM's training targets are (train/loop.py)."""
    return [NgramTable(lm.encode([t.strip() for t in group], add_eos=True), order) for group in texts]


class BankGuidance(LogitsProcessor):
    """Mixes each row's next-token distribution with its table's: ``log((1 - w) p_LM + w p_bank)``.

    tables: one per decoded row before beams (B x S, image-major); each beam of row r reads ``tables[r]``.
    ``input_ids`` holds the generated tokens only (generation from ``inputs_embeds``)."""

    def __init__(self, tables: Sequence[NgramTable], weight: float, num_beams: int = 1):
        if not 0.0 < weight < 1.0:
            raise ValueError(f"the guidance weight must be strictly between 0 and 1, got {weight}")
        self.tables, self.weight, self.num_beams = list(tables), weight, num_beams
        self._log_lm, self._log_bank = math.log1p(-weight), math.log(weight)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.tables) * self.num_beams:
            raise ValueError(f"{scores.shape[0]} rows to guide, but {len(self.tables)} tables x {self.num_beams} "
                             "beams")
        # one host copy of the generated tokens per step (not one per row)
        return self.mix(input_ids.tolist(), [r // self.num_beams for r in range(scores.shape[0])], scores)

    def mix(self, contexts: Sequence[Sequence[int]], tables: Sequence[int], scores: torch.Tensor) -> torch.Tensor:
        """Row i of ``scores`` (N, V) mixed with table ``tables[i]``'s distribution after ``contexts[i]`` (the
        tokens generated so far): what ``__call__`` does per decoded row, and what the drafting decoder
        (decode.py) does per verified position. One scatter for every row."""
        logp = torch.log_softmax(scores.float(), dim=-1)
        out = logp + self._log_lm
        rows, toks, probs, alone = [], [], [], []
        for r, (generated, t) in enumerate(zip(contexts, tables)):
            dist = self.tables[t].next(generated)
            if dist is None:
                alone.append(r)  # no context in the captions: the LM alone
                continue
            rows += [r] * len(dist[0])
            toks += dist[0]
            probs += dist[1]
        if alone:
            index = torch.tensor(alone, device=scores.device)
            out[index] = logp[index]
        if rows:
            r_i = torch.tensor(rows, device=scores.device)
            t_i = torch.tensor(toks, device=scores.device)
            bank = torch.log(torch.tensor(probs, device=scores.device, dtype=out.dtype)) + self._log_bank
            out[r_i, t_i] = torch.logaddexp(out[r_i, t_i], bank)
        return out.to(scores.dtype)

    def draft(self, table: int, generated: Sequence[int], n: int, stop: int) -> list[int]:
        """Up to ``n`` tokens that table ``table`` expects after ``generated``: its most frequent next token, then
        the next after that, ... (ties to the token seen first), ending at ``stop`` (the end of text) or where the
        table knows no context. The drafting decoder's guesses (decode.py), which the LM then checks."""
        out: list[int] = []
        context = list(generated)
        while len(out) < n:
            dist = self.tables[table].next(context)
            if dist is None:
                break
            ids, probs = dist
            tok = ids[max(range(len(ids)), key=probs.__getitem__)]
            out.append(tok)
            if tok == stop:
                break
            context.append(tok)
        return out
