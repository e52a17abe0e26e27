"""Smaller weights for the frozen LM on this CPU (issue #55): int8 dynamic quantization and bf16 against fp32.

    python -m experiments.lm_precision            # -> results/lm_precision.json
    python -m experiments.lm_precision results/lm_precision_bf16_cpu.json   # on another CPU, another file

For SmolLM2-135M as the `photo` preset loads it: the seconds of 16 cached decode steps at batch 8 (the served
S=8 greedy decode, one thread and two), and how far each variant's next-token distribution moves from fp32's on
eight COCO-style caption beginnings (top-1 agreement over every position, mean KL(fp32 || variant)). The int8
variants are torch's dynamic quantization (weights int8 per output channel, activations quantized per call) of
every Linear but the tied LM head, of the attention projections only, and of the MLPs only.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
import warnings

import torch

TEXTS = ["A man riding a wave on top of a", "A kitchen with a stove and a", "Two giraffes standing next to",
         "A plate of food with broccoli and", "A group of people sitting at a table with", "A cat sleeping on a",
         "A red double decker bus driving down a", "A bathroom with a toilet and a"]
OUT = "results/lm_precision.json"


def decode_seconds(model, steps: int = 16, batch: int = 8) -> float:
    """Seconds for ``steps`` cached greedy decode steps at ``batch`` rows after a 12-token prompt (best of 2)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 1000, (batch, 12), generator=g)
    best = float("inf")
    for _ in range(2):
        with torch.no_grad():
            out = model(input_ids=x, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            best = min(best, time.perf_counter() - t)
    return best


def divergence(reference, model, ids: list[list[int]]) -> dict[str, float]:
    """Top-1 agreement over every position of the texts, and the mean KL(reference || model) per position."""
    agree = kl = 0.0
    for t in ids:
        with torch.no_grad():
            a = reference(input_ids=torch.tensor([t])).logits[0].float()
            b = model(input_ids=torch.tensor([t])).logits[0].float()
        agree += (a.argmax(-1) == b.argmax(-1)).float().mean().item()
        kl += torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True,
                                         reduction="batchmean").item()
    return {"top1_agreement": agree / len(ids), "kl": kl / len(ids)}


def main(out: str = OUT) -> dict:
    warnings.filterwarnings("ignore")
    from torch.ao.quantization import per_channel_dynamic_qconfig

    from zsc_core.lm import load_lm
    from zsc_core.presets import PRESETS

    lm = load_lm(PRESETS["photo"].lm, torch.device("cpu"), torch.float32)
    fp32 = lm.model.eval()
    ids = lm.encode(TEXTS)
    linear = [n for n, m in fp32.named_modules() if isinstance(m, torch.nn.Linear)]

    def int8(names):
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {n: per_channel_dynamic_qconfig
                                                                            for n in names}, dtype=torch.qint8)

    variants = {
        "fp32": fp32,
        "bf16": copy.deepcopy(fp32).to(torch.bfloat16),
        "int8 dynamic, every Linear but the LM head": int8([n for n in linear if n != "lm_head"]),
        "int8 dynamic, attention projections only": int8([n for n in linear if n.rsplit(".", 1)[-1] in
                                                          ("q_proj", "k_proj", "v_proj", "o_proj")]),
        "int8 dynamic, MLPs only": int8([n for n in linear if n.rsplit(".", 1)[-1] in
                                         ("gate_proj", "up_proj", "down_proj")]),
    }
    flags = ""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    report = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "bf16_hardware": any(f in flags for f in ("avx512_bf16", "amx_bf16")), "rows": {}}
    for name, model in variants.items():
        row = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row[f"decode_s_{threads}_threads"] = decode_seconds(model)
        row.update(divergence(fp32, model, ids) if name != "fp32" else {"top1_agreement": 1.0, "kl": 0.0})
        report["rows"][name] = row
        print(json.dumps({name: {k: round(v, 4) for k, v in row.items()}}), flush=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
