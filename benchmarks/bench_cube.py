"""Throughput of the cube's forward pass at the default config, batch 64, on this machine.

Reports embeddings/s for inference (eval mode, no grad) and for a training step (forward,
InfoNCE + cosine loss, backward, AdamW step), and, measured in the same run for scale, the same
numbers for the equal-size residual MLP baseline and the teacher encoder (MiniLM) encoding short
sentences. Ratios in one run are what to compare across machines; absolute numbers are not.

    python benchmarks/bench_cube.py [--config configs/default.yaml] [--batch 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from cellcube.baselines import build_model
from cellcube.config import load_config
from cellcube.io import write_json
from cellcube.losses import build_loss


def _rate(step: Callable[[], None], batch: int, min_time: float = 2.0) -> float:
    """Median embeddings/s over repeats of ``step`` after a warm-up."""
    for _ in range(3):
        step()
    rates: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(rates) < 5:
        t = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_model(name: str, cfg, dim: int, batch: int) -> dict[str, float]:
    model = build_model(name, dim, cfg)
    with torch.no_grad():  # non-zero read-out so the whole graph is exercised
        for p in model.parameters():
            p.normal_(0, 0.02)
    loss = build_loss(cfg.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    q = F.normalize(torch.randn(batch, dim), dim=-1)
    a = F.normalize(torch.randn(batch, dim), dim=-1)
    ids = torch.arange(batch)

    def infer() -> None:
        with torch.inference_mode():
            model(q)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        total, _ = loss(model(q), a, ids)
        total.backward()
        opt.step()

    model.eval()
    infer_rate = _rate(infer, batch)
    model.train()
    return {"inference_emb_per_s": infer_rate, "train_emb_per_s": _rate(train, batch)}


def bench_teacher(cfg, batch: int) -> float:
    from cellcube.pipeline import make_teacher

    teacher = make_teacher(cfg)
    texts = [f"What is the meaning of sentence number {i} in this benchmark?" for i in range(batch)]
    teacher.encode(texts)  # load + warm up
    t = time.perf_counter()
    teacher.encode(texts * 4)
    return 4 * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=384, help="embedding dimension (MiniLM: 384)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    cube = bench_model("cube", cfg, args.dim, args.batch)
    mlp = bench_model("mlp", cfg, args.dim, args.batch)
    teacher = bench_teacher(cfg, args.batch)
    c = cfg.cube
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "config": {
            "lattice": list(c.lattice),
            "channels": c.channels,
            "hidden": c.hidden,
            "steps": c.steps,
            "neighbourhood": c.neighbourhood,
            "batch": args.batch,
        },
        "cube": cube,
        "mlp_same_params": mlp,
        "teacher_encode_emb_per_s": teacher,
        "ratios": {
            "cube_inference_vs_teacher": cube["inference_emb_per_s"] / teacher,
            "cube_inference_vs_mlp": cube["inference_emb_per_s"] / mlp["inference_emb_per_s"],
            "cube_train_vs_mlp": cube["train_emb_per_s"] / mlp["train_emb_per_s"],
        },
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
