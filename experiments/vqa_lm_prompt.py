"""The LM route of the Ask tab: does a one-shot prompt make SmolLM2 answer instead of starting a new "A:" line?

    python -m experiments.vqa_lm_prompt      # -> results/vqa_lm_prompt.json

With the zero-shot prompt "<caption>. Question: <q> Answer:", SmolLM2-135M-Instruct often writes "\\nA:" and stops;
the first line is then "A", and the nearest VQAv2 answer to "A" is "b". The one-shot prompt puts one answered
example first (a caption, a colour question, a one-word answer); the four-shot prompt four, of four kinds. On both
choice sets, each on its own, the LM reading the served caption (the one the VQA benchmark reads:
results/tune_evidence_photo.json, seed 0, plain) is asked the VQA benchmark's existence (balanced yes / no), colour
and counting probes (train.benchmark_vqa) and the real VQAv2 questions, and its text is mapped to the nearest
answer of the question's type, as the app does. Reported per prompt: accuracy on each probe kind (and the share of
"yes"), VQA accuracy on VQAv2, and how many answers were a single character.
"""

from __future__ import annotations

import json
import os

OUT = "results/vqa_lm_prompt.json"
SHOT = "A dog sleeping on a green couch. Question: What color is the couch? Answer: green\n"
# four answered examples of different kinds (colour, count, yes/no, activity), none of whose answers is a COCO object
SHOTS = ("A dog sleeping on a green couch. Question: What color is the couch? Answer: green\n"
         "Two men standing in a kitchen. Question: How many people are there? Answer: 2\n"
         "A cat on a bed next to a laptop. Question: Is the cat asleep? Answer: no\n"
         "A boy riding a skateboard down a street. Question: What is the boy doing? Answer: skateboarding\n")


def prompts(question: str, caption: str) -> dict[str, str]:
    from zsc_core.vqa import vqa_prompt

    return {"zero-shot (served before)": vqa_prompt(question, caption),
            "one-shot": SHOT + vqa_prompt(question, caption),
            "four-shot": SHOTS + vqa_prompt(question, caption)}


def main(out: str = OUT) -> dict:
    from bench.app_serving import report as bench_report
    from train.benchmark_vqa import color_probes, corpus_statistics, counting_probes, existence_probes
    from zsc_core.captioner import Captioner
    from zsc_core.evaluation import coco_items
    from zsc_core.presets import data_dir
    from zsc_core.vqa import answer_vocabulary, generate_answers, rank_answers, typed_candidates, vqa_accuracy

    cap = Captioner.from_pretrained("photo")
    vocab = list(answer_vocabulary(cap.answers))
    with open("results/tune_evidence_photo.json") as f:
        tuned = json.load(f)
    report: dict = {"lm_dtype": str(cap.lm.model.dtype).removeprefix("torch."), "shot": SHOT, "shots": SHOTS,
                    "splits": {}}
    for split in ("train-paired", "val-dev"):
        items = coco_items(split)
        refs = [c for _, c in items]
        captions = tuned["splits"][split]["rows"]["`photo` served decoding, plain, seed 0"]["captions"]
        with open(os.path.join(data_dir(), "vqa", f"{split}-questions.json")) as f:
            vqav2 = json.load(f)
        names = [os.path.basename(p) for p, _ in items]
        probes = existence_probes(refs, *corpus_statistics(cap.bank.captions().captions), 3, 0)  # the bench's own
        asks = {"existence (yes/no)": [(p["question"], p["photo"], p["answer"]) for p in probes],
                "colour": [(p["question"], p["photo"], p["answer"]) for p in color_probes(refs)],
                "counting": [(p["question"], p["photo"], p["answer"]) for p in counting_probes(refs)],
                "vqav2": [(q["question"], names.index(q["file_name"]), q["answers"]) for q in vqav2]}
        sp = report["splits"][split] = {}
        for name in prompts("q", "c"):
            row = sp[name] = {}
            for kind, qs in asks.items():
                texts = [prompts(q, captions[i])[name] for q, i, _ in qs]
                gens = [g for j in range(0, len(texts), 32) for g in generate_answers(cap.lm, texts[j:j + 32])]
                picked = [rank_answers(cap.clip, [g], typed_candidates(q, vocab))[0][0][0]
                          for g, (q, _, _) in zip(gens, qs)]
                if kind == "vqav2":
                    score = sum(vqa_accuracy(a, gold) for a, (_, _, gold) in zip(picked, qs)) / max(1, len(qs))
                else:
                    score = sum(a == gold for a, (_, _, gold) in zip(picked, qs)) / max(1, len(qs))
                row[kind] = {"n": len(qs), "accuracy": round(score, 3),
                             "yes_rate": round(sum(a == "yes" for a in picked) / max(1, len(qs)), 3),
                             "one_letter": sum(len(g.strip()) == 1 for g in gens),
                             "examples": [[q, g, a] for (q, _, _), g, a in list(zip(qs, gens, picked))[:6]]}
                print(split, name, kind, row[kind]["accuracy"], "one letter:", row[kind]["one_letter"], flush=True)
    return bench_report(report, out)


if __name__ == "__main__":
    main()
