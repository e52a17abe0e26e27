"""Entity hard prompts (ViECap; IFCap's frequency-filtered nouns): nouns the retrieved captions agree on, as text.

The soft prefix says what the image is like; the entity prompt names what is in it. After the prefix the LM reads
``There are dog, frisbee in the image.`` and writes the caption. The entities are the head nouns that recur among
an image's nearest bank captions (at least ``min_count`` of the ``k`` nearest name them), most frequent first. A
caption bank ships the head nouns of every row (spaCy noun chunks, :func:`zsc_core.prompts.noun_phrases`) in
``<bank>.entities.json.gz`` beside it, checked against the bank's rows like its captions file.

Training derives them the same way from the text side: the nouns of the neighbours of the caption's own noisy
feature, the caption itself excluded (``zsc_core.memory``).

A user's prompt ("An image contains motorcycle") and the retrieved entities do not fight: the prompt's head nouns
come first and the retrieved ones fill the remaining places (:func:`merge_entities`), so what the user names is
always read, and the retrieved nouns add what the user did not name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .checkpoint import CheckpointError, read_json_gz, write_json_gz

ENTITIES_KIND = "bank-entities"
TEMPLATE = "There are {} in the image."


def entities_path(bank_path: str) -> str:
    """Where a bank's entities file lives: beside it, ``<stem>.entities.json.gz``."""
    stem = bank_path[:-len(".safetensors")] if bank_path.endswith(".safetensors") else bank_path
    return stem + ".entities.json.gz"


def retrieved_entities(noun_lists: Sequence[Sequence[str]], min_count: int, max_entities: int) -> list[str]:
    """The nouns named by at least ``min_count`` of the captions (each caption counts a noun once), most frequent
    first, ties in order of first appearance; at most ``max_entities``."""
    if min_count < 1 or max_entities < 0:
        raise ValueError(f"min_count must be >= 1 and max_entities >= 0, got {min_count} and {max_entities}")
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for nouns in noun_lists:
        for n in dict.fromkeys(nouns):
            counts[n] += 1
            first.setdefault(n, len(first))
    keep = [n for n in counts if counts[n] >= min_count]
    keep.sort(key=lambda n: (-counts[n], first[n]))
    return keep[:max_entities]


def merge_entities(user: Sequence[str], retrieved: Sequence[str], max_entities: int) -> list[str]:
    """The user's nouns first (all of them, in order, once each), then retrieved ones up to ``max_entities``."""
    out = list(dict.fromkeys(n.strip().lower() for n in user if n.strip()))
    for n in retrieved:
        if len(out) >= max_entities:
            break
        if n not in out:
            out.append(n)
    return out


def entity_prompt(entities: Sequence[str]) -> str:
    """``There are a, b in the image.``; empty when there is no entity (the LM then reads the prefix alone)."""
    return TEMPLATE.format(", ".join(entities)) if entities else ""


def prompt_nouns(prompt: str) -> list[str]:
    """The head nouns a user's prompt names ("An image contains a red motorcycle and a dog" -> motorcycle, dog)."""
    from .prompts import noun_phrases

    text = prompt.strip()
    for lead in ("an image contains", "the image contains", "image contains"):
        if text.lower().startswith(lead):
            text = text[len(lead):]
            break
    return list(dict.fromkeys(lemma for _, lemma in noun_phrases(text.strip(" .")))) if text.strip(" .") else []


def save_entities(bank_path: str, nouns: list[list[str]], rows_fingerprint: str) -> str:
    """Write the head nouns of every bank row beside the bank; bytes depend on the content only."""
    doc = {"kind": ENTITIES_KIND, "rows": len(nouns), "rows_fingerprint": rows_fingerprint, "nouns": nouns}
    return write_json_gz(entities_path(bank_path), doc)


def load_entities(bank_path: str, rows: int, rows_fingerprint: str) -> list[list[str]]:
    """Read a bank's entities file and check it belongs to that bank (rows and their fingerprint)."""
    path = entities_path(bank_path)
    doc = read_json_gz(path, ENTITIES_KIND, "entities file",
                       f"the caption bank {bank_path} has no entities file {path}, which entity prompts need (build "
                       "it with `python -m train.build_entities`)")
    if (doc["rows"], doc["rows_fingerprint"]) != (rows, rows_fingerprint):
        raise CheckpointError(f"{path} belongs to another caption bank ({doc['rows']} rows) than {bank_path} "
                              f"({rows} rows); rebuild it with `python -m train.build_entities`")
    return doc["nouns"]
