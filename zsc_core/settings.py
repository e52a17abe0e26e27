"""Inference settings, kept beside the weights.

As transformers keeps ``generation_config.json`` next to a model's weights, every adaptor checkpoint
``NAME.safetensors`` has its inference defaults in ``NAME.inference.json`` beside it. The weights file holds what
built the model (adaptor config, CLIP and LM fingerprints); the JSON holds how it captions by default (decoding,
subregions, the caption bank and its mix, the ranking). Changing a default edits the JSON and never rewrites a
weight file. Every field can still be overridden per call (``Captioner.caption(image, samples=8)``).

The settings are split by concern, one dataclass each; flat field names are unique across the groups, so a call,
the CLI and the benchmark rows name a setting by its field name alone (:meth:`CaptionConfig.replace`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, get_type_hints

# the names a setting may take, here so that reading settings needs no torch (the app's page is built from them)
WEIGHTINGS = ("mean", "softmax")  # memory.neighbour_anchor's neighbour weightings
RERANKERS = ("clip", "consensus", "cider")  # sampling.rerank's
BANK_RERANKERS = ("consensus", "cider")  # those that read the caption bank

SETTINGS_VERSION = 1
SUFFIX = ".inference.json"
TOP_LEVEL = ("format_version", "bank", "lm_dtype")  # the JSON's fields outside the setting groups
LM_DTYPES = ("float32", "bfloat16")


@dataclass
class DecodingConfig:
    """How the candidates are drawn from the LM."""

    samples: int = 20  # S noisy copies of the input decoded in one batch, then ranked; 1: one noise-free caption
    sigma2: float | None = None  # noise variance of the S copies; None: the adaptor's (Captioner.noise_variance)
    num_beams: int = 1  # beam width per sample; 1: greedy
    keep_beams: bool = False  # every beam hypothesis a candidate (S x num_beams ranked); False: each sample's best
    max_new_tokens: int = 20  # captions are short (the papers': <= 15 words)
    # no sentence end (end of text, ".", "!", "?", a newline) before this many tokens: longer candidates for the
    # ranking (the generator's captions ran ~1 word shorter than the references and the retrieved captions)
    min_new_tokens: int = 0
    seed: int = 0  # seeds the sampling noise, so a caption is reproducible
    # Greedy, guided decoding (decode.py): tokens each row guesses from its n-gram table per LM pass, kept where
    # the LM agrees (the captions are greedy decoding's; fewer passes over the weights). 0: one token a pass.
    draft_tokens: int = 0
    bank_vocab: bool = False  # the LM head scores only the tokens the caption bank's captions use (and the prompt's)


@dataclass
class RegionConfig:
    """MacCap's subregions (regions.py): how many the adaptor reads, and whether it reads them at all."""

    n_cr: int | None = None  # subregions N_cr; None: the adaptor's own
    use_regions: bool = True  # False: the global feature repeated N_cr times (the ablation)


@dataclass
class RetrievalConfig:
    """What the adaptor reads from the caption bank (bank.py; DeCap's projection into a text memory)."""

    # The adaptor reads normalize((1 - bank_mix) x image feature + bank_mix x anchor), the anchor being the
    # normalised mean of the image's mix_k nearest bank captions; 0: the image feature alone.
    bank_mix: float = 0.0
    mix_k: int = 20  # nearest bank captions averaged into the anchor (the memory adaptor's global anchor too)
    # The memory adaptor (memory.py) only: neighbours behind each region anchor, and how neighbours are weighted
    # ("mean": flat; "softmax": DeCap's softmax over similarity / temperature).
    region_k: int = 20
    weighting: str = "mean"
    temperature: float = 0.05


@dataclass
class EntityConfig:
    """Entity hard prompts (entities.py; models trained with them): nouns recurring among the nearest captions."""

    entities: bool = False  # read "There are X, Y in the image." after the prefix
    entity_k: int = 20  # nearest bank captions whose nouns are counted
    entity_min: int = 4  # a noun named by at least this many of them is an entity
    max_entities: int = 4


@dataclass
class GuidanceConfig:
    """Bank-guided decoding (guidance.py): the LM's next token mixed with an n-gram model of the nearest captions."""

    guide_weight: float = 0.0  # weight of the captions' n-gram distribution; 0: plain decoding
    guide_k: int = 0  # nearest bank captions the n-gram table is built from; 0: the ranking's (rerank_k)
    guide_order: int = 4  # n-gram order: contexts of up to guide_order - 1 tokens


@dataclass
class RankingConfig:
    """How the candidates are ranked (sampling.py)."""

    # "clip": MacCap's cosine with the image; "consensus": mean cosine with the image's rerank_k nearest bank
    # captions; "cider": CIDEr-D against their texts, n-gram weights from the whole bank (cider.py).
    rerank: str = "clip"
    rerank_k: int = 0  # nearest bank captions the bank rankings read; 0: the mix's mix_k
    # With a prompt: add prompt_weight x each refined candidate's cosine with the prompt to its score (0: none).
    prompt_weight: float = 0.0


@dataclass
class EvidenceConfig:
    """Pixel evidence beyond the bridge's classes (evidence.py): detectors whose findings condition the neighbours."""

    faces: bool = False  # MTCNN faces: with a person found, the neighbours are the pool's captions that name people
    bodies: bool = False  # OpenCV's HOG people detector, likewise
    count_people: bool = False  # with >= 2 people found, captions that name several people come first
    evidence_pool: int = 3000  # nearest bank captions the conditioned neighbours are chosen from
    face_prob: float = 0.9  # MTCNN face probability at least this
    body_score: float = 1.5  # HOG SVM margin at least this
    # the body crops of the people found move the retrieval query toward what they hold, ride or stand on
    # (evidence.crop_query): query = norm(norm(image) + crop_weight * norm(crop)); 0: the image feature alone
    crop_weight: float = 0.0
    crop_grow: float = 3.0  # a face's body box: this many face widths each side, 2x this many face heights down

    @property
    def detects(self) -> bool:
        """Whether any detector runs."""
        return self.faces or self.bodies


@dataclass
class AnswerConfig:
    """Zero-shot VQA (vqa.py): which questions are answered from the photo's evidence instead of the LM."""

    evidence_answers: bool = False  # existence, counting and class questions answered from the evidence
    answer_k: int = 300  # nearest bank captions (conditioned on the detections) the evidence reads
    exist_share: float = 0.01  # "yes" when at least this share of them name the object (or a face, for people)
    count_faces: bool = False  # "how many people": the faces found (else the count the nearest captions agree on)
    lm_examples: bool = False  # the LM reads answered examples before a question that is not yes / no (vqa_prompt)


@dataclass
class AuthorsCode:
    """Switches that reproduce MacCap's public code where it differs from this project (docs/fidelity.md)."""

    region_weights: str = "renorm"  # "softmax": the authors' double softmax over the CLS row
    cls_candidate: bool = False  # the CLS token may be chosen as a subregion centre
    normalize_tokens: bool = False  # L2-normalise every patch token before pooling
    noise_on_sum: bool = False  # add the sampling noise to normalize(I_s) + I_c before normalising
    noise_single: bool = False  # add the sampling noise at S=1 too


GROUPS: dict[str, type] = {"decoding": DecodingConfig, "regions": RegionConfig, "retrieval": RetrievalConfig,
                           "entities": EntityConfig, "guidance": GuidanceConfig, "ranking": RankingConfig,
                           "evidence": EvidenceConfig, "answering": AnswerConfig, "authors": AuthorsCode}
# flat field name -> its group; names are unique across groups (checked at import)
FIELD_GROUP: dict[str, str] = {f.name: g for g, cls in GROUPS.items() for f in fields(cls)}
assert len(FIELD_GROUP) == sum(len(fields(c)) for c in GROUPS.values()), "flat setting names must be unique"


@dataclass
class CaptionConfig:
    """Every inference setting, by concern. ``cfg.decoding.samples``; flat: ``cfg.replace(samples=8)``."""

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    entities: EntityConfig = field(default_factory=EntityConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    answering: AnswerConfig = field(default_factory=AnswerConfig)
    authors: AuthorsCode = field(default_factory=AuthorsCode)

    def replace(self, **flat: Any) -> CaptionConfig:
        """A copy with flat fields changed (``samples=8, rerank="clip"``; None is a value, e.g. sigma2=None)."""
        unknown = sorted(set(flat) - set(FIELD_GROUP))
        if unknown:
            raise ValueError(f"not inference settings: {unknown}; known: {sorted(FIELD_GROUP)}")
        groups: dict[str, dict[str, Any]] = {}
        for k, v in flat.items():
            groups.setdefault(FIELD_GROUP[k], {})[k] = v
        return replace(self, **{g: replace(getattr(self, g), **kw) for g, kw in groups.items()})

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        return {k: v for g in GROUPS for k, v in asdict(getattr(self, g)).items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {g: asdict(getattr(self, g)) for g in GROUPS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptionConfig:
        """From :meth:`to_dict`'s nesting; a missing group or field takes its default, an unknown one is an error."""
        unknown = sorted(set(d) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown settings groups {unknown}; known: {sorted(GROUPS)}")
        return cls(**{g: GROUPS[g](**(d.get(g) or {})) for g in GROUPS})

    # -- derived ----------------------------------------------------------------------------------------------
    @property
    def ranking_k(self) -> int:
        """How many nearest bank captions the bank rankings read: rerank_k, else mix_k."""
        return self.ranking.rerank_k or self.retrieval.mix_k

    @property
    def uses_bank(self) -> bool:
        """Whether these settings read a caption bank (a bank ranking, or a non-zero mix)."""
        return (self.ranking.rerank in BANK_RERANKERS or bool(self.retrieval.bank_mix)
                or bool(self.guidance.guide_weight))

    @property
    def guide_k(self) -> int:
        """How many nearest bank captions the guidance's n-gram table reads: guide_k, else the ranking's."""
        return self.guidance.guide_k or self.ranking_k

    def resolved(self, sigma2: float, n_cr: int) -> CaptionConfig:
        """These settings with every value that stands for another made concrete, in one place: sigma2 None and
        n_cr None (the adaptor's own, given here), rerank_k 0 (mix_k), guide_k 0 (the ranking's k). What a caption
        was made with (``CaptionResult.settings``)."""
        d = self.decoding
        return self.replace(sigma2=sigma2 if d.sigma2 is None else d.sigma2, n_cr=self.regions.n_cr or n_cr,
                            rerank_k=self.ranking_k, guide_k=self.guide_k,
                            keep_beams=d.keep_beams and d.num_beams > 1)

    def check(self) -> None:
        """Raise ValueError, naming the setting, for a value no caption can be made with."""
        d, r = self.decoding, self.retrieval
        if d.samples < 1:
            raise ValueError(f"samples must be >= 1, got {d.samples}")
        if d.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {d.num_beams}")
        if not 0 <= d.draft_tokens <= 16:
            raise ValueError(f"draft_tokens must be between 0 and 16, got {d.draft_tokens}")
        if not 0 <= d.min_new_tokens < d.max_new_tokens:
            raise ValueError(f"min_new_tokens must be >= 0 and below max_new_tokens={d.max_new_tokens}, got "
                             f"{d.min_new_tokens}")
        if self.ranking.rerank not in RERANKERS:
            raise ValueError(f"unknown rerank {self.ranking.rerank!r}; known: {RERANKERS}")
        if not 0.0 <= r.bank_mix <= 1.0:
            raise ValueError(f"bank_mix must be between 0 and 1, got {r.bank_mix}")
        if r.mix_k < 1 or self.ranking.rerank_k < 0 or r.region_k < 1:
            raise ValueError(f"mix_k and region_k must be >= 1 and rerank_k >= 0, got {r.mix_k}, {r.region_k} and "
                             f"{self.ranking.rerank_k}")
        if r.weighting not in WEIGHTINGS or r.temperature <= 0:
            raise ValueError(f"weighting must be 'mean' or 'softmax' and temperature > 0, got {r.weighting!r} and "
                             f"{r.temperature}")
        e = self.entities
        if e.entity_k < 1 or e.entity_min < 1 or e.max_entities < 0:
            raise ValueError(f"entity_k and entity_min must be >= 1 and max_entities >= 0, got {e.entity_k}, "
                             f"{e.entity_min} and {e.max_entities}")
        v = self.evidence
        if v.evidence_pool < 1 or not 0.0 <= v.face_prob <= 1.0:
            raise ValueError(f"evidence_pool must be >= 1 and face_prob in [0, 1], got {v.evidence_pool} and "
                             f"{v.face_prob}")
        if v.crop_weight < 0 or v.crop_grow <= 0:
            raise ValueError(f"crop_weight must be >= 0 and crop_grow > 0, got {v.crop_weight} and {v.crop_grow}")
        a = self.answering
        if a.answer_k < 1 or not 0.0 < a.exist_share <= 1.0:
            raise ValueError(f"answer_k must be >= 1 and exist_share in (0, 1], got {a.answer_k} and {a.exist_share}")
        g = self.guidance
        if not 0.0 <= g.guide_weight < 1.0 or g.guide_k < 0 or g.guide_order < 2:
            raise ValueError(f"guide_weight must be in [0, 1), guide_k >= 0 and guide_order >= 2, got "
                             f"{g.guide_weight}, {g.guide_k} and {g.guide_order}")


# Inference as MacCap's public code runs it: S=4 samples, each a beam search of width 4, subregions by the double
# softmax with the CLS token eligible and tokens normalised, noise on the unnormalised sum, also for one caption.
AUTHORS_INFERENCE = CaptionConfig(decoding=DecodingConfig(samples=4, num_beams=4),
                                  authors=AuthorsCode("softmax", True, True, True, True))


# ---------------------------------------------------------------------------------------------------------------
# The JSON beside the weights.


def settings_path(weights_path: str) -> str:
    """``NAME.safetensors`` -> ``NAME.inference.json`` (beside it)."""
    stem = weights_path[:-len(".safetensors")] if weights_path.endswith(".safetensors") else weights_path
    return stem + SUFFIX


@dataclass
class InferenceSettings:
    """What ``NAME.inference.json`` holds: the defaults and the caption bank (absolute path, or ""). The defaults
    are the one setting served everywhere: the app (CPU and GPU), ``caption`` and ``evaluate`` without flags, and
    the benchmark's headline row."""

    config: CaptionConfig
    bank: str = ""
    # The frozen LM's dtype where the hardware computes it natively (a GPU, a CPU with AVX512-BF16 or AMX;
    # device.resolve_dtype), float32 elsewhere. "bfloat16" only for a model with its own parity run: bf16 halves
    # the bytes each decode step reads, but it moved the offline world's MacCap off its grounding bar.
    lm_dtype: str = "float32"


def read_settings(weights_path: str) -> InferenceSettings:
    """The inference settings beside an adaptor's weights; without a file, the defaults and no bank.

    The bank is stored relative to the JSON's folder (a copied pair keeps working) and returned absolute."""
    path = settings_path(weights_path)
    if not os.path.isfile(path):
        return InferenceSettings(CaptionConfig())
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format_version") != SETTINGS_VERSION:
        raise ValueError(f"{path}: settings format {doc.get('format_version')}, this zsc_core reads "
                         f"{SETTINGS_VERSION}")
    bank = doc.get("bank") or ""
    if bank and not os.path.isabs(bank):
        bank = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), bank))
    unknown = sorted(set(doc) - set(GROUPS) - set(TOP_LEVEL))
    try:
        if unknown:  # e.g. a per-device "served" layer (until 2026-12-07): one setting is served everywhere now
            raise ValueError(f"unknown fields {unknown}; known: {', '.join(TOP_LEVEL)}, {', '.join(GROUPS)}")
        lm_dtype = doc.get("lm_dtype") or "float32"
        if lm_dtype not in LM_DTYPES:
            raise ValueError(f"lm_dtype {lm_dtype!r} is not one of {', '.join(LM_DTYPES)}")
        settings = InferenceSettings(CaptionConfig.from_dict({g: doc.get(g) or {} for g in GROUPS}), bank, lm_dtype)
        settings.config.check()
        return settings
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def write_settings(weights_path: str, settings: InferenceSettings) -> str:
    """Write ``NAME.inference.json`` beside the weights (bank relative to it), atomically; one field a line, so a
    changed default is a one-line diff. Returns its path."""
    path = settings_path(weights_path)
    folder = os.path.dirname(os.path.abspath(path))
    bank = os.path.relpath(os.path.abspath(settings.bank), folder) if settings.bank else None
    doc = {"format_version": SETTINGS_VERSION, "bank": bank,
           **({"lm_dtype": settings.lm_dtype} if settings.lm_dtype != "float32" else {}),  # the usual case unwritten
           **settings.config.to_dict()}
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def require_adaptor(weights_path: str) -> None:
    """Raise CheckpointError (a ValueError) unless ``weights_path`` holds an adaptor: only adaptors have settings."""
    from .adaptor import ADAPTOR_KINDS
    from .checkpoint import CheckpointError, read_metadata

    if read_metadata(weights_path)["kind"] not in ADAPTOR_KINDS:  # read_metadata raises for a missing file
        raise CheckpointError(f"{weights_path} is not an adaptor checkpoint: only adaptors have inference settings")


def set_defaults(weights_path: str, **flat: Any) -> InferenceSettings:
    """Change some default settings of the adaptor at ``weights_path`` (flat names): its JSON only."""
    require_adaptor(weights_path)
    current = read_settings(weights_path)
    new = replace(current, config=current.config.replace(**flat))
    new.config.check()
    write_settings(weights_path, new)
    return new


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["samples=8", "sigma2=none", "keep_beams=true"]`` -> typed flat settings; a clear ValueError for an
    unknown name or a value of the wrong type."""
    out: dict[str, Any] = {}
    for a in assignments:
        name, eq, text = a.partition("=")
        name = name.strip()
        if not eq or name not in FIELD_GROUP:
            raise ValueError(f"{a!r}: expected NAME=VALUE with NAME one of {sorted(FIELD_GROUP)}")
        hint = str(get_type_hints(GROUPS[FIELD_GROUP[name]])[name])
        text = text.strip()
        try:
            if text.lower() in ("none", "null") and "None" in hint:
                out[name] = None
            elif "bool" in hint:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError("expected true or false")
                out[name] = text.lower() in ("true", "1")
            elif "int" in hint:
                out[name] = int(text)
            elif "float" in hint:
                out[name] = float(text)
            else:
                out[name] = text
        except ValueError as e:
            raise ValueError(f"{a!r}: {e}") from e
    return out


def ship(src: str, dst: str) -> str:
    """Copy a trained adaptor (weights and settings) to ``dst``, re-basing the CLIP and bank paths they record on
    ``dst``'s folder (a plain ``cp`` of a run's export into checkpoints/ would point nowhere). Returns ``dst``."""
    from .checkpoint import CheckpointError, copy_checkpoint

    settings = read_settings(src)
    if settings.bank and not os.path.isfile(settings.bank):
        raise CheckpointError(f"{src} names a caption bank that does not exist: {settings.bank}")
    copy_checkpoint(src, dst)
    write_settings(dst, settings)  # the defaults travel with it
    return dst
