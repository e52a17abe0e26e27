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

import numpy as np
from scipy import sparse

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


def _matrix(rows: Sequence[Counter], index: dict[str, int]) -> sparse.csr_matrix:
    """The term counts of ``rows`` (one Counter each) as a sparse (rows, len(index)) matrix; new n-grams join
    ``index``."""
    cols, vals, ptr = [], [], [0]
    for counts in rows:
        for g, tf in counts.items():
            cols.append(index.setdefault(g, len(index)))
            vals.append(tf)
        ptr.append(len(cols))
    return sparse.csr_matrix((np.asarray(vals, dtype=np.float64), np.asarray(cols, dtype=np.int64),
                              np.asarray(ptr, dtype=np.int64)), shape=(len(rows), max(1, len(index))))


def _at_least(tf: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """1 where a count is at least k, else 0 (sparse)."""
    out = tf.copy()
    out.data = (out.data >= k).astype(np.float64)
    out.eliminate_zeros()
    return out


def similarities(candidates: Sequence[str], references: Sequence[str], idf: Idf) -> np.ndarray:
    """(C, R): for each candidate and reference, the sum over orders of their clipped TF-IDF cosine
    (``sum_g min(c_g, r_g) * r_g / (|c| |r|)``, with ``c_g = tf * idf``) times their length penalty.

    All pairs at once, as sparse products: with ``w_g`` an n-gram's idf weight, ``min(c_g, r_g) * r_g`` is
    ``w_g^2 * sum_k [tf_c >= k] [tf_r >= k] tf_r`` (counts are integers), one product per k up to the largest
    count; pycocoevalcap computes the same pair by pair."""
    orders = len(idf.df)
    cand = [ngram_counts(tokenize(t), orders) for t in candidates]
    refs = [ngram_counts(tokenize(t), orders) for t in references]
    total = np.zeros((len(cand), len(refs)))
    for n in range(orders):
        index: dict[str, int] = {}
        tc, tr = _matrix([c[n] for c in cand], index), _matrix([r[n] for r in refs], index)
        grams = sorted(index, key=index.__getitem__)
        w = np.array([idf.weight(n, g) for g in grams] or [0.0])
        tc.resize((tc.shape[0], len(w)))
        tr.resize((tr.shape[0], len(w)))
        nc = np.sqrt(np.asarray(tc.multiply(tc).multiply(w ** 2).sum(1)).ravel())
        nr = np.sqrt(np.asarray(tr.multiply(tr).multiply(w ** 2).sum(1)).ravel())
        dot = np.zeros_like(total)
        top = int(max(tc.data.max(initial=0), tr.data.max(initial=0)))
        for k in range(1, top + 1):
            dot += (_at_least(tc, k) @ _at_least(tr, k).multiply(tr).multiply(w ** 2).T).toarray()
        both = np.outer(nc, nr)
        total += np.divide(dot, both, out=np.zeros_like(dot), where=both > 0)
    lc = np.array([sum(c[1].values()) if orders > 1 else 0 for c in cand], dtype=np.float64)
    lr = np.array([sum(r[1].values()) if orders > 1 else 0 for r in refs], dtype=np.float64)
    return total * np.exp(-((lc[:, None] - lr[None, :]) ** 2) / (2 * SIGMA ** 2))


def cider_d(candidates: Sequence[str], references: Sequence[str], idf: Idf) -> list[float]:
    """CIDEr-D of each candidate against all ``references`` (one score per candidate, same scale as the metric)."""
    if not references:
        raise ValueError("CIDEr-D needs at least one reference caption")
    if not candidates:
        return []
    sims = similarities(candidates, references, idf)
    return (10.0 * sims.sum(1) / len(idf.df) / len(references)).tolist()


def leave_one_out_cider_d(texts: Sequence[str], idf: Idf) -> list[float]:
    """For each text, its CIDEr-D against all the others (``cider_d([t_i], texts without t_i)``), from one (k, k)
    matrix of similarities (the clipped cosine is not symmetric: both directions are in it)."""
    if len(texts) < 2:
        raise ValueError("leave-one-out CIDEr-D needs at least two texts")
    sims = similarities(texts, texts, idf)
    return (10.0 * (sims.sum(1) - np.diag(sims)) / len(idf.df) / (len(texts) - 1)).tolist()
