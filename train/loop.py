"""The text-only training loop every adaptor trainer shares: data order, schedule, resume, evaluation, export.

A trainer supplies a config (a :class:`RunConfig` subclass), a built :class:`Captioner`, the cached caption
features and a ``loss_fn(feats (B, D), targets, idx) -> (loss, logs)``; this module does the rest. Data order,
noise and dropout of step k depend on (seed, k) alone, so a killed run resumed from ``run_dir/state.pt`` ends
with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from train.common import RunLogger, load_state, save_state, write_json
from train.features import cached_text_features
from zsc_core.captioner import Captioner
from zsc_core.checkpoint import Checkpoint
from zsc_core.device import autocast, resolve_device, resolve_dtype
from zsc_core.encode import ClipEncoder
from zsc_core.evaluation import evaluate_world
from zsc_core.lm import LanguageModel, load_lm
from zsc_core.presets import PRESETS
from zsc_core.settings import read_settings
from zsc_core.towers import load_clip


@dataclass
class RunConfig:
    """Fields every text-only training run has."""

    preset: str = "offline-world"  # gives the frozen CLIP and LM
    corpus: str = "world:12000"  # caption corpus (train/features.py); 12k world scenes ~ 50k distinct captions
    max_words: int = 15  # longer captions are dropped (papers: <= 15 words)
    max_tokens: int = 24  # LM tokens per caption, EOS included
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4  # peak AdamW learning rate
    warmup: int = 50  # linear warm-up steps, then cosine decay to 10%
    weight_decay: float = 0.01
    seed: int = 0
    save_every: int = 25  # steps between resumable state saves
    eval_every: int = 200  # steps between validation captioning and checkpoint export
    eval_n: int = 100  # validation scenes (0: export without evaluating)
    run_dir: str = "runs/adaptor"
    out: str = "checkpoints/adaptor.safetensors"
    device: str = "auto"
    dtype: str = "auto"  # the frozen LM's runtime dtype (device.resolve_dtype); trainable weights stay fp32
    threads: int = 0  # torch threads (0: torch's default)
    eval_set: str = "world"  # validation: "world" (offline-world val scenes) or "coco" (data/coco/train-paired
    #                          photos; val-dev is never used in training)
    keep_evals: bool = True  # also keep each evaluation's export as run_dir/step-N.safetensors
    encoder_record: str = ""  # train without the encoder's weights: a JSON record of its identity (written by
    #                           `python -m train.features record=...`); needs the cached features, eval_n=0
    init: str = ""  # continue training: start from this exported checkpoint's weights (same kind, config, CLIP and
    #                 LM); a fresh optimiser and schedule. Pass another seed for another data order.


def lr_at(cfg: RunConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """The corpus rows of a step: a fresh seeded permutation per epoch, so a resumed run sees the same data."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size]


@dataclass
class Dist:
    """This process's place in a multi-process run (torchrun / accelerate launch set RANK, WORLD_SIZE...)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun or accelerate (gloo on CPU, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def run_device(cfg: RunConfig, d: Dist) -> torch.device:
    """The configured device; in a multi-GPU run, this process's own GPU."""
    dev = resolve_device(cfg.device)
    if d.world > 1 and dev.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return dev


def load_frozen(cfg: RunConfig) -> tuple[ClipEncoder, LanguageModel, list[str], torch.Tensor]:
    """The preset's frozen CLIP and LM and the corpus's cached text features."""
    preset = PRESETS[cfg.preset]
    dev = run_device(cfg, init_distributed())
    if cfg.encoder_record:
        if cfg.eval_n > 0:
            raise SystemExit("encoder_record= trains from cached features only: set eval_n=0")
        clip = RecordedEncoder.read(cfg.encoder_record)
    else:
        clip = load_clip(preset.clip_spec(), dev)
    lm = load_lm(preset.lm, dev, resolve_dtype(cfg.dtype, dev))
    captions, feats = corpus_features(cfg, clip)
    return clip, lm, captions, feats


class RecordedEncoder:
    """A frozen encoder's identity without its weights, for training where only its cached text features and
    the LM are at hand (e.g. a GPU machine without the photo bridge's packages). Encodes nothing; adaptor
    checkpoints trained with it record the real encoder's name, fingerprint and spec."""

    def __init__(self, record: dict):
        from zsc_core.encode import ClipSpec

        self.spec = ClipSpec(**record["spec"])
        self.embed_dim = int(record["embed_dim"])
        self.fingerprint = record["fingerprint"]
        self.text_fingerprint = record["text_fingerprint"]
        self.device = torch.device("cpu")

    @classmethod
    def read(cls, path: str) -> "RecordedEncoder":
        import json

        with open(path) as f:
            return cls(json.load(f))

    @staticmethod
    def write(clip: ClipEncoder, path: str) -> None:
        import json

        spec = asdict(clip.spec)
        if spec.get("checkpoint"):  # relative to the working directory (the repository root), to travel
            spec["checkpoint"] = os.path.relpath(os.path.abspath(spec["checkpoint"]))
        rec = {"spec": spec, "embed_dim": clip.embed_dim, "fingerprint": clip.fingerprint,
               "text_fingerprint": clip.text_fingerprint}
        with open(path, "w") as f:
            json.dump(rec, f, indent=1)

    def identity(self) -> dict[str, str]:
        return {"name": self.spec.display_name(), "fingerprint": self.fingerprint}

    def encode_text(self, texts):
        raise RuntimeError("a RecordedEncoder has no weights: the corpus features must be cached already")


def validate(cfg: RunConfig, cap: Captioner) -> tuple[dict, list[str]]:
    """Validation scores at S=1 (fast, noise-free) and a few captions, on the configured ``eval_set``."""
    if cfg.eval_set == "coco":
        from zsc_core.evaluation import evaluate_coco
        from zsc_core.presets import data_dir

        d = os.path.join(data_dir(), "coco", "train-paired")
        out = evaluate_coco(cap, os.path.join(d, "images"), os.path.join(d, "references.json"), samples=1,
                            metrics=("bleu", "cider"), progress=False, limit=cfg.eval_n)
        return out["metrics"], [im["caption"] for im in out["images"][:3]]
    ev = evaluate_world(cap, cfg.eval_n, "val", samples=1)
    return ev.scores, list(ev.captions.values())[:3]


def corpus_features(cfg: RunConfig, clip: ClipEncoder) -> tuple[list[str], torch.Tensor]:
    """The run's corpus encoded by ``clip``, cached beside the run folders (``runs/features/``), shared by runs."""
    name = f"{cfg.corpus.replace(':', '-').replace('/', '_')}-{clip.text_fingerprint}.safetensors"
    cache = os.path.join(os.path.dirname(os.path.abspath(cfg.run_dir)), "features", name)
    return cached_text_features(clip, cfg.corpus, cache, cfg.max_words)


def export(cfg: RunConfig, cap: Captioner, step: int, scores: dict, init: dict | None = None) -> str:
    """Write ``run_dir/last.safetensors`` always, and ``out`` when this step has the best validation CIDEr so far
    (or, without validation, always). Each export records which one it is under ``extra["selected"]``, and the
    weights the run started from under ``extra["init"]`` (:func:`init_record`).
    The best score survives a resume (``run_dir/best.json``). Returns what ``out`` now holds."""
    extra = {"step": step, "val": scores, "train": asdict(cfg), **({"init": init} if init else {})}
    cap.save(os.path.join(cfg.run_dir, "last.safetensors"), extra={**extra, "selected": "last"})
    if cfg.keep_evals:
        cap.save(os.path.join(cfg.run_dir, f"step-{step}.safetensors"), extra={**extra, "selected": "last"})
    score = scores.get("CIDEr") if isinstance(scores.get("CIDEr"), float) else None
    best_path = os.path.join(cfg.run_dir, "best.json")
    best = None
    if os.path.isfile(best_path):
        with open(best_path) as f:
            best = json.load(f)
    if score is None:
        cap.save(cfg.out, extra={**extra, "selected": "last step (no validation)"})
        return "last"
    if best is None or score > best["CIDEr"]:
        best = {"step": step, "CIDEr": score}
        cap.save(cfg.out, extra={**extra, "selected": f"best validation CIDEr of the steps evaluated ({cfg.eval_set})"})
        write_json(best_path, best)
    return f"best (step {best['step']})"


def finish(out: str, steps: int) -> None:
    """Mark ``out`` as the final export of a finished run (its step may be earlier than the last: the best one)."""
    from zsc_core.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(out)
    save_checkpoint(out, ck.tensors, kind=ck.kind, config=ck.config, clip=ck.clip, lm=ck.lm,
                    extra={**ck.extra, "finished": True, "run_steps": steps}, dtype=None)


def _eval_due(cfg: RunConfig, done: int) -> bool:
    return done % cfg.eval_every == 0 or done == cfg.steps


def _last_export_step(cfg: RunConfig) -> int | None:
    """The step of ``run_dir/last.safetensors`` (written by every export), or None before the first export."""
    from zsc_core.checkpoint import load_checkpoint

    path = os.path.join(cfg.run_dir, "last.safetensors")
    return load_checkpoint(path).extra.get("step") if os.path.isfile(path) else None


def _validate_and_export(cfg: RunConfig, cap: Captioner, done: int, log: RunLogger, init: dict | None) -> None:
    scores = {}
    if cfg.eval_n > 0:
        scores, examples = validate(cfg, cap)
        log.info(f"step {done} val ({cfg.eval_set}, {cfg.eval_n}) {scores}; e.g. {examples}")
    cap.adaptor.train()
    export(cfg, cap, done, scores, init)


def init_record(cfg: RunConfig, fresh: bool) -> dict | None:
    """What ``init=`` held when the run began: its path and file fingerprint, written to ``run_dir/init.json`` by
    a fresh run and read back on resume. A continuation is often shipped over its own init (``init=`` the
    shipped file, then ``python -m zsc_core ship`` onto it), so the path alone would name the wrong bytes afterwards."""
    from zsc_core.checkpoint import file_fingerprint

    if not cfg.init:
        return None
    path = os.path.join(cfg.run_dir, "init.json")
    if not fresh and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    record = {"path": cfg.init, "fingerprint": file_fingerprint(cfg.init)}
    write_json(path, record)
    return record


# loss_fn(text features (B, D), target token ids per row, corpus indices (B,)) -> (loss, numbers to log)
LossFn = Callable[[torch.Tensor, list, torch.Tensor], "tuple[torch.Tensor, dict[str, float]]"]


def read_init(path: str, cap: Captioner) -> Checkpoint:
    """The exported checkpoint ``path`` (``init=``) whose weights ``cap.adaptor`` starts from: refused, with a
    one-line reason, unless it is the same kind of adaptor with the same config, for the same frozen CLIP and LM."""
    from zsc_core.checkpoint import CheckpointError, check_compatible, load_checkpoint

    try:
        ck = load_checkpoint(path, expect_kind=cap.kind)
        check_compatible(ck, cap.clip.identity(), cap.lm.identity())
    except CheckpointError as e:
        raise SystemExit(f"init={path}: {e}") from e
    mine = json.loads(json.dumps(asdict(cap.adaptor.cfg)))  # as a checkpoint stores it (tuples become lists)
    if ck.config["adaptor"] != mine:
        diff = {k: (v, ck.config["adaptor"].get(k)) for k, v in mine.items() if ck.config["adaptor"].get(k) != v}
        raise SystemExit(f"init={path}: its adaptor config differs from this run's (this run, it): {diff}")
    if bool(ck.config.get("interactive", False)) != cap.interactive:
        raise SystemExit(f"init={path}: {'an' if cap.interactive else 'no'} interactive-prompt (stage-2) "
                         f"checkpoint was expected")
    return ck


def continue_settings(cap: Captioner, path: str) -> None:
    """A continuation serves as the model it continues: ``cap`` takes the inference settings (defaults and caption
    bank, the JSON beside the weights) of the init checkpoint at ``path``, so validation and every export use them,
    not those of the model the run was built from (a stage-2 run is built from its base, whose defaults are a
    stage-1 model's)."""
    settings = read_settings(path)
    cap.config, cap.bank = settings.config, settings.bank or None


def train_loop(cfg: RunConfig, cap: Captioner, captions: list[str], feats: torch.Tensor, log: RunLogger,
               loss_fn: LossFn) -> list[float]:
    """Run (or resume) ``cfg.steps`` optimiser steps of ``cap.adaptor``; returns the losses of the steps run.

    Under torchrun / accelerate launch each of the W processes takes every W-th row of the global batch of
    ``batch_size`` and the adaptor's gradients are averaged across processes after each backward (an all-reduce:
    the same result as DistributedDataParallel, for any forward path), so all replicas stay identical. Only
    rank 0 logs, evaluates and writes files.
    """
    d = init_distributed()
    lm, model = cap.lm, cap.adaptor
    targets = [ids[:cfg.max_tokens - 1] + [lm.eos_id] for ids in lm.encode(captions)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    os.makedirs(cfg.run_dir, exist_ok=True)
    state_path = os.path.join(cfg.run_dir, "state.pt")
    init = read_init(cfg.init, cap) if cfg.init else None  # checked on resume too: a wrong init= is never silent
    if init is not None:
        continue_settings(cap, cfg.init)
    start = load_state(state_path, model, opt)
    started_from = init_record(cfg, fresh=not start) if d.main else None
    if start:
        log.info(f"resumed from {state_path} at step {start}")
    elif init is not None:
        device = next(model.parameters()).device
        model.load_state_dict({k: v.float().to(device) for k, v in init.tensors.items()})
    if not start and d.main:
        log.info(f"new run: {asdict(cfg)}; {len(captions)} captions; "
                 f"{sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters; {d.world} process(es)")


    if d.world > 1:  # every replica starts from rank 0's weights (a fresh init or the resumed state)
        import torch.distributed as dist

        for p in model.state_dict().values():
            dist.broadcast(p, 0)
    pending = start > 0 and d.main and _eval_due(cfg, start) and _last_export_step(cfg) != start
    if pending:  # killed between saving this step's state and exporting it: validate and export it now
        log.info(f"step {start} was saved but not validated before the run stopped: validating it now")
        _validate_and_export(cfg, cap, start, log, started_from)
    model.train()
    losses: list[float] = []
    bar = log.progress(total=cfg.steps, initial=start, desc=cap.kind, disable=not d.main)
    t0, ema = time.time(), None
    for step in range(start, cfg.steps):
        # Noise and dropout of step k depend on (k, rank) alone; with one process, on k alone.
        torch.manual_seed((cfg.seed * 7919 + step) * d.world + d.rank)
        idx = batch_indices(len(captions), cfg.batch_size, step, cfg.seed)[d.rank::d.world]
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        with autocast(lm.device, lm.model.dtype):  # fp32 adaptor, LM in its runtime dtype (device.py)
            loss, logs = loss_fn(feats[idx].to(lm.device), [targets[i] for i in idx.tolist()], idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if d.world > 1:
            import torch.distributed as dist

            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= d.world
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        ema = losses[-1] if ema is None else 0.95 * ema + 0.05 * losses[-1]
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}")
        done = step + 1
        if done % 10 == 0 and d.main:
            parts = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
            log.info(f"step {done} loss {losses[-1]:.4f} ema {ema:.4f} {parts} lr {lr_at(cfg, step):.2e} "
                     f"{(time.time() - t0) / (done - start):.2f}s/step")
        if (done % cfg.save_every == 0 or done == cfg.steps) and d.main:
            save_state(state_path, model, opt, done)
        if _eval_due(cfg, done) and d.main:
            _validate_and_export(cfg, cap, done, log, started_from)
    bar.close()
    if d.main and (start < cfg.steps or pending) and os.path.isfile(cfg.out):
        finish(cfg.out, cfg.steps)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()  # every replica leaves with rank 0's files written
    model.eval()
    return losses
