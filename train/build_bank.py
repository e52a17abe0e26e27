"""Build a caption bank (zsc_core/bank.py) from TEXT only, choose its number of neighbours k, measured.

    python -m train.build_bank            # -> checkpoints/bank-coco-photo.safetensors, results/bank_photo.{md,json}
    python -m train.build_bank attach=checkpoints/tipcap-s4-photo.safetensors

The bank is the preset's text encoder's embeddings of the caption corpus (the same captions, filtered to
``max_words``, that the adaptors were trained on), stored int8. k is chosen on ``coco/train-paired`` (80 photos,
never evaluated on): the preset's captioner samples S candidates per photo once per seed, with CLIP ranking, and
every k reranks those same candidates by consensus with the photo's k nearest bank captions (k=0: CLIP ranking,
MacCap's). The report also scores, for each k, the bank caption that agrees most with the other k-1 (a retrieval
baseline of its own). Then, at the chosen k, the input mix (the settings' bank_mix: the adaptor reads the image
feature mixed with the mean of its k nearest bank captions) is chosen the same way, on fresh samples per mix and
seed (mix 0: the k row), then the sampling noise (``sigma2s``) and the ranking together: embedding consensus
against CIDEr-D with the k neighbours' texts as references (``rerank="cider"``, zsc_core/cider.py), then how many
neighbours that ranking reads (``rerank_ks``, the settings' rerank_k; the mix keeps its k), and last how many
neighbours the input mix averages (``mix_ks``, fresh samples, ranked as chosen). ``coco/val-dev`` is not read
here. Each sweep after the first keeps the previous sweep's setting unless its best row is ahead on most seeds
(``prevails``). Beside the bank it writes its captions file (the rows' texts and n-gram document frequencies,
which the CIDEr ranking reads). ``attach=`` makes the listed adaptor checkpoints use the bank at the chosen k, mix,
noise, ranking and mix k by default (metadata only, tensors bit for bit).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass

import torch

from train.common import parse_overrides, set_threads, write_json
from train.features import cached_text_features


@dataclass
class BankBuildConfig:
    preset: str = "photo"  # the captioner whose text encoder embeds the bank, and which chooses k
    corpus: str = "coco"
    max_words: int = 15
    ks: tuple[int, ...] = (5, 10, 20, 30, 50)  # numbers of neighbours tried
    mixes: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # input mixes tried at the chosen k (0 is the k row)
    # S-sampling noise variances tried at the chosen k and mix (the adaptor's training sigma2 is the first row)
    sigma2s: tuple[float, ...] = (0.002, 0.004, 0.008, 0.024)
    rerank_ks: tuple[int, ...] = (100, 150, 200, 300)  # neighbours the chosen ranking reads
    # neighbours the input mix averages, tried last at the chosen ranking (fresh samples; the k row is the first)
    mix_ks: tuple[int, ...] = (300,)
    samples: int = 20  # S candidates per photo, as the benchmark's S=20 rows
    # Sampling seeds; the choice is on their mean (and the seed-majority rule, prevails): on 80 photos one seed
    # moves CIDEr by more than the differences being chosen between (results/bank_photo.md lists every seed).
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    split: str = "train-paired"  # the selection set
    batch: int = 8
    out: str = "checkpoints/bank-coco-photo.safetensors"
    report: str = "results/bank_photo"
    features_cache: str = "runs/features"
    attach: tuple[str, ...] = ()
    threads: int = 0


def prevails(challenger: dict, incumbent: dict) -> dict:
    """The row a sweep keeps: its best-scoring row (``challenger``) replaces the setting carried from the previous
    sweep (``incumbent``) only when it scores higher on most sampling seeds. On 80 photos one seed moves CIDEr by
    up to 0.08, so a higher mean that only some seeds share is noise, and the earlier setting stays."""
    wins = sum(c > i for c, i in zip(challenger["S_CIDEr"], incumbent["S_CIDEr"], strict=True))
    return challenger if 2 * wins > len(incumbent["S_CIDEr"]) else incumbent


def same_rows(path: str, bank) -> bool:
    """Whether the bank file at ``path`` holds exactly ``bank``'s rows, scales and text encoder."""
    from zsc_core.bank import load_bank

    if not os.path.isfile(path):
        return False
    old = load_bank(path)
    return (old.text_fingerprint == bank.text_fingerprint and old.rows.shape == bank.rows.shape
            and torch.equal(old.rows, bank.rows) and torch.equal(old.scale, bank.scale))


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_overrides(BankBuildConfig(), sys.argv[1:] if argv is None else argv)
    set_threads(cfg.threads)
    from zsc_core.bank import (
        BankConfig,
        CaptionBank,
        attach_bank,
        cider_consensus_caption,
        consensus_caption,
        load_bank,
        quantize_rows,
        save_bank,
        save_bank_captions,
    )
    from zsc_core.captioner import Captioner
    from zsc_core.checkpoint import state_fingerprint
    from zsc_core.cider import Idf
    from zsc_core.evaluation import coco_items
    from zsc_core.images import load_image
    from zsc_core.metrics import caption_metrics
    from zsc_core.sampling import rerank
    from zsc_core.settings import set_defaults

    cap = Captioner.from_pretrained(cfg.preset)
    enc = cap.clip
    corpus, feats = cached_text_features(enc, cfg.corpus, os.path.join(
        cfg.features_cache, f"{cfg.corpus}-{enc.text_fingerprint}.safetensors"), max_words=cfg.max_words)
    text_id = {"name": f"{enc.spec.display_name()} (text)", "text_fingerprint": enc.text_fingerprint}
    bank_cfg = BankConfig(cfg.corpus, len(corpus), cfg.max_words)
    # The sweep reads the bank exactly as it will ship: int8 codes and their scales.
    codes, scale = quantize_rows(feats)
    bank = CaptionBank(bank_cfg, enc.text_fingerprint, codes=codes, scale=scale)
    items = coco_items(cfg.split)
    refs = dict(enumerate(c for _, c in items))
    images = [load_image(p) for p, _ in items]
    with torch.no_grad():
        image_feats = torch.cat([enc.encode_image(enc.pixels(images[i:i + cfg.batch])).float()
                                 for i in range(0, len(images), cfg.batch)])  # (B, D)

    def cider(hyps: list[str]) -> float:
        return float(caption_metrics(refs, dict(enumerate(hyps)), ("cider",))["CIDEr"])

    adaptor_fp = state_fingerprint(cap.adaptor.state_dict())
    cap.bank = bank
    # Sample from the adaptor's own settings, not from what an earlier run attached (a None override is ignored).
    cap.config = cap.config.replace(sigma2=None)

    def pools(mix: float = 0.0, k: int = 0, sigma2: float | None = None
              ) -> list[list[tuple[list[str], torch.Tensor]]]:
        """Per seed: each photo's S candidate texts and their text features, sampled with the input ``mix`` of
        the k nearest bank captions (0: the image feature alone, which does not depend on k) and the noise
        ``sigma2`` (None: the adaptor's). Kept under runs/ by adaptor weights, split, S, seed, mix and sigma2:
        adding a seed, a k, a mix or a sigma2 later samples only what is new."""
        out = []
        for seed in cfg.seeds:
            tag = (f"-mix{mix:g}-k{k}" if mix else "") + (f"-sigma2{sigma2:g}" if sigma2 is not None else "")
            cache = os.path.join(cfg.features_cache, "..", "bank-candidates",
                                 f"{adaptor_fp}-{cfg.split}-S{cfg.samples}-seed{seed}{tag}.json")
            if os.path.isfile(cache):
                with open(cache) as f:
                    texts_per_photo = json.load(f)
            else:
                texts_per_photo = [[c.text for c in r.candidates] for i in range(0, len(images), cfg.batch)
                                   for r in cap.caption(images[i:i + cfg.batch], samples=cfg.samples, seed=seed,
                                                        rerank="clip", bank_mix=mix, mix_k=max(k, 1),
                                                        sigma2=sigma2)]
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                write_json(cache, texts_per_photo)
            with torch.no_grad():
                out.append([(texts, enc.encode_text(texts).float()) for texts in texts_per_photo])
            print(f"seed {seed}{tag}: {len(texts_per_photo)} photos sampled at S={cfg.samples}", file=sys.stderr,
                  flush=True)
        return out

    idf = Idf.from_documents([c] for c in corpus)  # n-gram weights of the CIDEr ranking (and of the captions file)

    def scored(label: str, pool_list, k: int, /, ranker: str = "consensus", **row) -> dict:
        """A sweep row: ``row`` plus the CIDEr per seed (and their mean) of the candidates ranked by ``ranker``
        with the k nearest (k=0: by CLIP score); printed as it is scored."""
        index = bank.neighbours(image_feats, k) if k else None  # (B, k), nearest first
        nb = bank.feats(index) if k and ranker == "consensus" else None  # (B, k, D)
        refs = [None] * len(images)
        if k and ranker == "cider":
            refs = [([corpus[j] for j in row_], idf) for row_ in index.tolist()]
        per_seed = [cider([rerank(t, f, image_feats[i], nb[i] if nb is not None else None, cider_refs=refs[i])[0].text
                           for i, (t, f) in enumerate(pool)]) for pool in pool_list]
        row.update(S_CIDEr=per_seed, mean_CIDEr=sum(per_seed) / len(per_seed))
        print(f"{label} {cfg.split} S={cfg.samples} CIDEr {row['mean_CIDEr']:.3f} "
              f"(seeds {', '.join(f'{x:.3f}' for x in per_seed)})", file=sys.stderr, flush=True)
        return row

    def carried(best_row: dict, **row) -> dict:
        """The first row of the next sweep: the previous sweep's best, under the next sweep's setting."""
        return {**row, "S_CIDEr": best_row["S_CIDEr"], "mean_CIDEr": best_row["mean_CIDEr"]}

    rows, plain = [], pools()
    for k in (0, *cfg.ks):
        row = scored(f"k={k:<3}", plain, k, k=k)
        if k > 1:
            row["consensus_caption_CIDEr"] = cider(consensus_caption(bank, corpus, image_feats, k))
        rows.append(row)
    best = max((r for r in rows if r["k"] > 0), key=lambda r: r["mean_CIDEr"])
    mix_rows = [carried(best, mix=0.0)] + [scored(f"mix={mix:<4g} k={best['k']}", pools(mix, best["k"]), best["k"],
                                                  mix=mix) for mix in cfg.mixes]
    best_mix = prevails(max(mix_rows, key=lambda r: r["mean_CIDEr"]), mix_rows[0])
    # The noise and the ranking are chosen together: which ranking wins depends on how diverse the candidates are.
    sigma_rows = []
    for sigma2 in (None, *cfg.sigma2s):
        label = f"sigma2={sigma2 if sigma2 is not None else 'adaptor'} mix={best_mix['mix']:g} k={best['k']}"
        sigma_rows += [carried(best_mix, sigma2=None, rerank=ranker) if sigma2 is None and ranker == "consensus" else
                       scored(f"rerank={ranker} {label}", pools(best_mix["mix"], best["k"], sigma2), best["k"],
                              ranker, sigma2=sigma2, rerank=ranker) for ranker in ("consensus", "cider")]
    best_sigma = prevails(max(sigma_rows, key=lambda r: r["mean_CIDEr"]), sigma_rows[0])
    # Then how many neighbours the ranking reads (the settings' rerank_k), on the same candidates: the input mix
    # keeps its k; more references smooth the consensus (rerank_k 0: the mix's k, the previous row).
    rank_pools = pools(best_mix["mix"], best["k"], best_sigma["sigma2"])
    rerank_k_rows = [carried(best_sigma, rerank_k=0)] + [
        scored(f"rerank={best_sigma['rerank']} rerank_k={rk}", rank_pools, rk, best_sigma["rerank"], rerank_k=rk)
        for rk in cfg.rerank_ks if rk != best["k"]]
    best_rerank_k = prevails(max(rerank_k_rows, key=lambda r: r["mean_CIDEr"]), rerank_k_rows[0])
    rank_k = best_rerank_k["rerank_k"] or best["k"]
    # Last, how many neighbours the input mix averages (the mix's mix_k), on fresh samples, ranked as chosen.
    # (with no mix, the input does not read the neighbours and there is nothing to sweep)
    mix_ks = [mk for mk in cfg.mix_ks if mk != best["k"]] if best_mix["mix"] else []
    mix_k_rows = [carried(best_rerank_k, mix_k=best["k"])] + [
        scored(f"mix_k={mk} rerank={best_sigma['rerank']} rerank_k={rank_k}",
               pools(best_mix["mix"], mk, best_sigma["sigma2"]), rank_k, best_sigma["rerank"], mix_k=mk)
        for mk in mix_ks]
    best_mix_k = prevails(max(mix_k_rows, key=lambda r: r["mean_CIDEr"]), mix_k_rows[0])
    for r in rerank_k_rows:  # the same neighbours, retrieved instead of generated: the baselines at each k
        rk = r["rerank_k"] or best["k"]
        r["consensus_caption_CIDEr"] = cider(consensus_caption(bank, corpus, image_feats, rk))
        r["cider_consensus_caption_CIDEr"] = cider(cider_consensus_caption(bank, corpus, image_feats, rk, idf))
    if same_rows(cfg.out, bank):  # a 32 MB file in git: rewritten only when its rows change (the report has it all)
        print(f"{cfg.out}: rows unchanged, file kept", file=sys.stderr)
    else:
        save_bank(cfg.out, feats, bank_cfg, text_id,
                  extra={"chosen_on": f"coco/{cfg.split}", "k": best["k"], "rows": rows, "build": asdict(cfg)})
    # read back: the file is a bank of this text encoder, and its captions file belongs to it
    save_bank_captions(cfg.out, corpus, bank, idf)
    load_bank(cfg.out, enc.text_fingerprint).captions()
    for path in cfg.attach:
        attach_bank(path, cfg.out, best_mix_k["mix_k"], best_mix["mix"])
        # sigma2 None: the adaptor's training sigma2; rerank_k 0 (the mix's k) only while that k is the ranking's
        set_defaults(path, sigma2=best_sigma["sigma2"], rerank=best_sigma["rerank"],
                             rerank_k=0 if rank_k == best_mix_k["mix_k"] else rank_k)
        print(f"{path}: ranks by {best_sigma['rerank']} with {cfg.out} against the {rank_k} nearest, input mix "
              f"{best_mix['mix']:g} of the {best_mix_k['mix_k']} nearest, "
              f"sampling sigma2 {best_sigma['sigma2'] if best_sigma['sigma2'] is not None else 'of its training'}",
              file=sys.stderr)
    report = {"split": cfg.split, "samples": cfg.samples, "seeds": list(cfg.seeds), "chosen_k": best["k"],
              "chosen_mix": best_mix["mix"], "chosen_sigma2": best_sigma["sigma2"],
              "chosen_rerank": best_sigma["rerank"], "chosen_rerank_k": best_rerank_k["rerank_k"],
              "chosen_mix_k": best_mix_k["mix_k"], "bank": cfg.out,
              "size": len(corpus), "rows": rows, "mix_rows": mix_rows, "sigma2_rows": sigma_rows,
              "rerank_k_rows": rerank_k_rows, "mix_k_rows": mix_k_rows}
    os.makedirs(os.path.dirname(cfg.report) or ".", exist_ok=True)
    with open(cfg.report + ".json", "w") as f:
        json.dump(report, f, indent=1)
    md = [f"# Caption bank: consensus reranking, k chosen on `coco/{cfg.split}` (`python -m train.build_bank`)\n\n",
          f"{len(corpus):,} corpus captions embedded by the `{cfg.preset}` preset's text encoder (int8). The "
          f"`{cfg.preset}` captioner samples S={cfg.samples} candidates per photo (seeds {list(cfg.seeds)}); k=0 ranks "
          "them by CLIP score (MacCap), k>0 by mean cosine with the photo's k nearest bank captions. The last column "
          "is a retrieval baseline: the bank caption that agrees most with the photo's k nearest. Each later sweep "
          "starts from the setting chosen before it (its first row) and keeps it unless its best row scores higher "
          "on more than half of the seeds.\n\n"
          "| k | CIDEr (mean of seeds) | per seed | consensus bank caption |\n| --- | --- | --- | --- |\n"]
    for r in rows:
        c = r.get("consensus_caption_CIDEr")
        md.append(f"| {r['k'] or '0 (CLIP)'}{' (chosen)' if r is best else ''} | {r['mean_CIDEr']:.3f} | "
                  f"{' / '.join(f'{x:.3f}' for x in r['S_CIDEr'])} | {f'{c:.3f}' if c is not None else ''} |\n")
    for title, column, sweep, chosen, name in (
            (f"Input mix at k={best['k']} (the settings' bank_mix): the adaptor reads normalize((1 - mix) x image "
             "feature + mix x the normalised mean of its k nearest bank captions); fresh S candidates per mix and "
             "seed, ranked by consensus.", "mix", mix_rows, best_mix, lambda r: f"{r['mix']:g}"),
            (f"Sampling noise and ranking at k={best['k']} and mix {best_mix['mix']:g}: the variance per dimension of "
             "the noise on each of the S copies (the adaptor's training sigma2 by default); the same candidates "
             "ranked by mean cosine with the k nearest bank captions (consensus), or by CIDEr-D with their texts as "
             "references and n-gram weights from the whole bank (cider).", "sigma2, rerank", sigma_rows, best_sigma,
             lambda r: f"{'the adaptor' if r['sigma2'] is None else format(r['sigma2'], 'g')}, {r['rerank']}"),
            (f"Number of neighbours the {best_sigma['rerank']} ranking reads (the settings' rerank_k; 0: the input "
             f"mix's k={best['k']}), on the chosen candidates above; beside it, the two retrieval baselines at the "
             "same k (the bank caption closest to the mean of the k; the one with the highest CIDEr-D against "
             "the other k-1).", "rerank_k", rerank_k_rows, best_rerank_k,
             lambda r: f"{r['rerank_k'] or best['k']}"),
            (f"Number of neighbours the input mix averages (the mix's k; first row: the bank's k={best['k']}), on "
             f"fresh S candidates per k and seed, ranked by {best_sigma['rerank']} against the {rank_k} nearest.",
             "mix k", mix_k_rows, best_mix_k, lambda r: f"{r['mix_k']}")):
        base = "cider_consensus_caption_CIDEr" in sweep[0]  # the rerank_k sweep: retrieval baselines beside it
        md.append(f"\n{title}\n\n| {column} | CIDEr (mean of seeds) | per seed |"
                  + (" consensus bank caption | CIDEr-consensus bank caption |\n| --- | --- | --- | --- | --- |\n"
                     if base else "\n| --- | --- | --- |\n"))
        md += [f"| {name(r)}{' (chosen)' if r is chosen else ''} | {r['mean_CIDEr']:.3f} | "
               f"{' / '.join(f'{x:.3f}' for x in r['S_CIDEr'])} |"
               + (f" {r['consensus_caption_CIDEr']:.3f} | {r['cider_consensus_caption_CIDEr']:.3f} |" if base else "")
               + "\n" for r in sweep]
    with open(cfg.report + ".md", "w") as f:
        f.write("".join(md))
    return report


if __name__ == "__main__":
    main()
