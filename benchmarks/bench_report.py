"""The tables of ``docs/benchmark.md`` from the cube suite's results files alone.

``python -m benchmarks.bench_cube --render-only`` (and every ``make bench``) rewrites three
blocks of the page, between their ``bench:...`` markers (:mod:`benchmarks.doc_tables`), from
``benchmarks/results.json`` (the committed run) and ``benchmarks/bench_runs/*.json`` (reruns of
the same code, committed beside it):

* ``cube-grid``: inference and training speed and FLOP efficiency per lattice x steps;
* ``cube-targets``: the numbers the performance targets name, one column per run;
* ``cube-context``: bf16 autocast, ``torch.compile``, memory against steps, the default
  ``cellcube train``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.doc_tables import render_into
from benchmarks.study_tables import table
from cellcube.errors import CellcubeError

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmark.md"
RESULTS = ROOT / "benchmarks" / "results.json"
RERUNS = ROOT / "benchmarks" / "bench_runs"
COMMAND = "python -m benchmarks.bench_cube --render-only"


def _n(x: float | None, fmt: str = ",.1f") -> str:
    return "-" if x is None else format(x, fmt)


def grid_table(r: dict[str, Any]) -> list[str]:
    """Per lattice x steps: emb/s and FLOP efficiency, inference and training."""
    body = []
    for lat, by_steps in r["inference_emb_per_s"].items():
        x, y, z = (int(v) for v in lat.split("x"))
        for steps, infer in by_steps.items():
            ckpt = " (ckpt)" if r["train_checkpointed"][lat][steps] else ""
            body.append(
                [
                    f"{lat.replace('x', '×')} ({x * y * z:,})",
                    steps,
                    _n(infer),
                    _n(r["train_emb_per_s"][lat][steps]) + ckpt,
                    _n(r["flop_efficiency"]["inference"][lat][steps], ".2f"),
                    _n(r["flop_efficiency"]["train"][lat][steps], ".2f"),
                ]
            )
    head = ["lattice (cells)", "steps", "inference emb/s", "training emb/s"]
    return table([*head, "inference FLOP eff.", "training FLOP eff."], body)


TARGETS = [
    ("fp32 GEMM rate at the start (GFLOP/s)", lambda r: _n(r["gemm_flops_per_s"] / 1e9)),
    (
        "training FLOP eff., 16×16×16×32, hidden 128, 4 steps (target ≥ 0.5)",
        lambda r: _n(r["flop_efficiency_wide"]["train"], ".2f"),
    ),
    (
        "inference FLOP eff., same probe (target ≥ 0.5)",
        lambda r: _n(r["flop_efficiency_wide"]["inference"], ".2f"),
    ),
    (
        "default config: cube training forward + backward FLOP eff. (target ≥ 0.35)",
        lambda r: _n(r["default_config_context"].get("cube_train_flop_efficiency"), ".2f"),
    ),
    (
        "default config: cube / equal-size MLP training emb/s",
        lambda r: _pair(r["default_config_context"], "train"),
    ),
    (
        "default config: cube / equal-size MLP inference emb/s",
        lambda r: _pair(r["default_config_context"], "inference"),
    ),
    ("speed-up over the per-cell reference (4×4×4)", lambda r: _n(r["speedup_vs_reference"])),
    (
        "freed memory kept (`train.keep_freed_memory`)",
        lambda r: {True: "yes", False: "no"}.get(r.get("keep_freed_memory"), "-"),
    ),
    ("CPU, threads", lambda r: f"{r['machine']['cpu']}, {r['machine']['threads']}"),
    ("wall time of the suite (s)", lambda r: _n(r["wall_s"], ",.0f")),
]


def _pair(ctx: dict[str, Any], kind: str) -> str:
    return (
        f"{_n(ctx[f'cube_{kind}_emb_per_s'], ',.0f')} / {_n(ctx[f'mlp_{kind}_emb_per_s'], ',.0f')}"
    )


def targets_table(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The targets' numbers, one column per run (the committed one first)."""
    body = [[name, *(cell(r) for _, r in runs)] for name, cell in TARGETS]
    return table(["", *(name for name, _ in runs)], body)


def context_lines(r: dict[str, Any]) -> list[str]:
    """bf16 autocast, torch.compile, memory against steps and the default ``cellcube train``
    of the committed run."""
    bf = r["bf16_autocast"]
    rows = [
        [
            "bf16 autocast, 8×8×6, 8 steps: inference / training emb/s",
            f"{_n(bf['fp32_inference_emb_per_s'])} / {_n(bf['fp32_train_emb_per_s'])}",
            f"{_n(bf['bf16_inference_emb_per_s'])} / {_n(bf['bf16_train_emb_per_s'])} "
            f"(outputs within {bf['max_rel_err']:.2%} relative, cosine ≥ {bf['min_cosine']:.5f})",
        ]
    ]
    comp = r.get("torch_compile")
    if comp:
        rows.append(
            [
                "`torch.compile` of `Cube.step`, 8×8×6, 8 steps: inference / training emb/s",
                f"{_n(comp['eager_inference_emb_per_s'])} / {_n(comp['eager_train_emb_per_s'])}",
                f"{_n(comp['compiled_inference_emb_per_s'])} / "
                f"{_n(comp['compiled_train_emb_per_s'])} (after {comp['compile_s']:,.0f} s "
                "of compiling)",
            ]
        )
    out = table(["", "fp32, eager", "variant"], rows)
    mem = r["memory_mib_vs_steps"]
    steps = list(mem["plain"])
    out += [
        "",
        f"Peak memory of one training step (MiB), {mem['lattice'].replace('x', '×')}, batch "
        f"{r['config']['batch']}, every cell updated:",
        "",
        *table(
            ["steps", *steps],
            [
                ["plain", *(_n(mem["plain"][s], ",.0f") for s in steps)],
                ["checkpointed", *(_n(mem["checkpointed"][s], ",.0f") for s in steps)],
            ],
        ),
    ]
    run = r.get("default_cellcube_train")
    if run:
        per = ", ".join(f"`{m}` {s:.1f} s" for m, s in run["train_seconds"].items() if s)
        out += [
            "",
            f"The default `cellcube train` on chatterbot (all models, baselines and evaluation, "
            f"in a subprocess): **{run['wall_s']:.1f} s** wall; training time per model: {per}.",
        ]
    return out


def read_run(path: Path) -> dict[str, Any]:
    """One run's results; a missing or unreadable file, or one without this suite's keys,
    raises :class:`CellcubeError` naming it."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("inference_emb_per_s", "flop_efficiency_wide") if k not in run]
    except (OSError, ValueError, TypeError) as exc:
        raise CellcubeError(f"{path}: no readable cube-suite results ({exc})") from None
    if missing:
        raise CellcubeError(f"{path}: not a cube-suite results file (no {missing[0]!r})")
    return run


def reruns(folder: Path = RERUNS) -> list[tuple[str, dict[str, Any]]]:
    """The reruns' results, by file name."""
    return [(f"rerun `{p.stem}`", read_run(p)) for p in sorted(folder.glob("*.json"))]


def render(results: Path = RESULTS, folder: Path = RERUNS, doc: Path = DOC) -> Path:
    """Rewrite the three blocks of ``doc`` from ``results`` and the reruns in ``folder``."""
    r = read_run(results)
    note = f"<!-- rendered by `{COMMAND}` from benchmarks/results.json -->"
    runs = [("committed run", r), *reruns(folder)]
    return render_into(
        doc,
        {
            "cube-grid": [note, "", *grid_table(r)],
            "cube-targets": [note, "", *targets_table(runs)],
            "cube-context": [note, "", *context_lines(r)],
        },
    )
