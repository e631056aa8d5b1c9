"""Which hidden layer of a causal-LLM teacher makes the best embedding? Validation only.

For every hidden-state layer of the teacher (0 = token embeddings .. L = last block), texts are
mean-pooled over real tokens, z-scored with train statistics and L2-normalised (what
``standardize: true`` does), and scored by the teacher's own identity retrieval on the VALIDATION
split: each question embedding ranks all distinct validation answers. All layers come from one
forward pass per batch. The test split is never read.

    python benchmarks/llm_layers.py --model SmolLM2-135M-Instruct \
        --corpus zaragoza --corpus chatterbot
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from cellcube.config import load_config
from cellcube.data.pairs import split_pairs
from cellcube.embed.encode import make_teacher
from cellcube.eval.metrics import retrieval_metrics
from cellcube.run.pipeline import read_pairs


def layer_embeddings(teacher, texts: list[str], batch: int = 64) -> torch.Tensor:
    """(n, layers + 1, hidden) mean-pooled hidden states of every layer, in input order."""
    teacher.encode(texts[:1])  # loads tokenizer and model
    tok, model = teacher._tokenizer, teacher._model
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            states = model(**enc, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = torch.stack([(h.float() * mask).sum(1) / mask.sum(1) for h in states], 1)
        for j, i in enumerate(idx):
            out[i] = pooled[j]
    return torch.stack(out)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--corpus", action="append", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results: dict[str, dict[int, float]] = {}
    for corpus in args.corpus or ["zaragoza", "chatterbot"]:
        cfg = load_config(
            None,
            [f"data.corpus={corpus}", f"seed={args.seed}", f"teacher.model={args.model}",
             "teacher.kind=transformers"],
        )  # fmt: skip
        split = split_pairs(
            read_pairs(cfg),
            seed=cfg.seed,
            val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction,
        )
        train, val = split.train, split.val
        pairs_text = [t for p in [*train, *val] for t in (p.question, p.answer)]
        texts = list(dict.fromkeys(pairs_text))
        row = {t: i for i, t in enumerate(texts)}
        states = layer_embeddings(make_teacher(cfg), texts)
        fit_rows = [row[t] for p in train for t in (p.question, p.answer)]
        answers = list(dict.fromkeys(p.answer for p in val))
        ids = torch.tensor([answers.index(p.answer) for p in val])
        scores = {}
        for layer in range(states.shape[1]):
            x = states[:, layer]
            mean, std = x[fit_rows].mean(0), x[fit_rows].std(0).clamp_min(1e-6)
            z = F.normalize((x - mean) / std, dim=-1)
            q, c = z[[row[p.question] for p in val]], z[[row[a] for a in answers]]
            scores[layer] = retrieval_metrics(q, ids, c)["mrr"]
        results[corpus] = scores
    corpora = list(results)
    print("| layer | " + " | ".join(f"{c} val MRR" for c in corpora) + " | mean |")
    print("|---|" + "---|" * (len(corpora) + 1))
    for layer in results[corpora[0]]:
        vals = [results[c][layer] for c in corpora]
        cells = " | ".join(f"{v:.3f}" for v in vals)
        print(f"| {layer} | {cells} | {sum(vals) / len(vals):.3f} |")


if __name__ == "__main__":
    main()
