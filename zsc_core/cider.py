"""CIDEr-D consensus (pure math): score candidate captions against a set of reference captions by n-gram TF-IDF.

This is the CIDEr-D of Vedantam et al. (2015) exactly as ``pycocoevalcap`` computes it (n-grams of 1..4 words,
TF-IDF vectors per order, cosine with the clipping ``min(hyp, ref) * ref``, a Gaussian penalty on the length
difference with sigma 6, the mean over orders and references, times 10), with one change: the document
frequencies are not taken from the references being scored but given, as an :class:`Idf` over a whole corpus.
``tests/test_cider.py`` checks it against ``pycocoevalcap``'s scorer on the same documents.

The captioner uses it as a reranker (``CaptionConfig.rerank = "cider"``, Devlin et al.'s consensus reranking with
n-grams): a photo's k nearest caption-bank captions are the references, and the idf comes from the whole bank (a
caption is a document), so that "a" and "of" weigh nothing and a shared rare phrase weighs much. Where the
embedding consensus (``sampling.consensus_scores``) asks whether a candidate *means* what the neighbours say,
this asks whether it uses their words, which is what the CIDEr metric rewards.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ORDERS = 4  # n-grams of 1..4 words
SIGMA = 6.0  # the length penalty's width (pycocoevalcap's default)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped (what PTB tokenisation leaves of a caption, near enough)."""
    return _WORD.findall(text.lower())


def ngram_counts(words: Sequence[str], orders: int = ORDERS) -> list[Counter]:
    """Per order n = 1..orders, the counts of the space-joined n-grams of ``words``."""
    return [Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1)) for n in range(1, orders + 1)]


@dataclass
class Idf:
    """Document frequencies per order and the number of documents. An n-gram missing from ``df`` counts as in
    one document, as in pycocoevalcap (``max(1, df)``), so n-grams with df = 1 need not be stored."""

    df: list[dict[str, int]]
    n_docs: int

    @classmethod
    def from_documents(cls, documents: Iterable[Sequence[str]], orders: int = ORDERS, min_df: int = 2) -> "Idf":
        """From documents, each a list of captions (pycocoevalcap's: one image's references; the bank's: one
        caption each); n-grams in fewer than ``min_df`` documents are left out (1: keep all; 2 loses nothing)."""
        df: list[Counter] = [Counter() for _ in range(orders)]
        n_docs = 0
        for doc in documents:
            n_docs += 1
            grams = [set() for _ in range(orders)]
            for caption in doc:
                for g, counts in zip(grams, ngram_counts(tokenize(caption), orders)):
                    g.update(counts)
            for d, g in zip(df, grams):
                d.update(g)
        return cls([{k: v for k, v in d.items() if v >= min_df} for d in df], n_docs)

    def weight(self, order: int, gram: str) -> float:
        """log(n_docs) - log(max(1, df)) for an n-gram of order ``order`` (0-based)."""
        return math.log(self.n_docs) - math.log(max(1, self.df[order].get(gram, 0)))


def _vector(counts: list[Counter], idf: Idf) -> tuple[list[dict[str, float]], list[float], int]:
    """TF-IDF vectors per order, their norms, and the length pycocoevalcap uses (the number of bigrams)."""
    vecs = [{g: tf * idf.weight(n, g) for g, tf in c.items()} for n, c in enumerate(counts)]
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vecs]
    return vecs, norms, sum(counts[1].values()) if len(counts) > 1 else 0


def _similarity(a: tuple, b: tuple) -> float:
    """Sum over orders of the clipped TF-IDF cosine of two ``_vector``s, times their length penalty."""
    (vec, norm, length), (rvec, rnorm, rlength) = a, b
    penalty = math.exp(-((length - rlength) ** 2) / (2 * SIGMA ** 2))
    total = 0.0
    for n in range(len(vec)):
        dot = sum(min(v, rvec[n][g]) * rvec[n][g] for g, v in vec[n].items() if g in rvec[n])
        if norm[n] and rnorm[n]:
            dot /= norm[n] * rnorm[n]
        total += dot * penalty
    return total


def cider_d(candidates: Sequence[str], references: Sequence[str], idf: Idf) -> list[float]:
    """CIDEr-D of each candidate against all ``references`` (one score per candidate, same scale as the metric)."""
    if not references:
        raise ValueError("CIDEr-D needs at least one reference caption")
    orders = len(idf.df)
    refs = [_vector(ngram_counts(tokenize(r), orders), idf) for r in references]
    cands = [_vector(ngram_counts(tokenize(c), orders), idf) for c in candidates]
    return [10.0 * sum(_similarity(c, r) for r in refs) / orders / len(refs) for c in cands]


def leave_one_out_cider_d(texts: Sequence[str], idf: Idf) -> list[float]:
    """For each text, its CIDEr-D against all the others (``cider_d([t_i], texts without t_i)``), with every
    text's vectors built once (k builds instead of k^2; the k(k-1) similarities are the same)."""
    if len(texts) < 2:
        raise ValueError("leave-one-out CIDEr-D needs at least two texts")
    orders = len(idf.df)
    vecs = [_vector(ngram_counts(tokenize(t), orders), idf) for t in texts]
    totals = [0.0] * len(texts)
    for i in range(len(vecs)):
        for j in range(i + 1, len(vecs)):  # the clipped cosine is not symmetric: both directions
            totals[i] += _similarity(vecs[i], vecs[j])
            totals[j] += _similarity(vecs[j], vecs[i])
    return [10.0 * t / orders / (len(texts) - 1) for t in totals]
