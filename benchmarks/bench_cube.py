"""Performance suite of the cube: throughput, FLOP efficiency, speed-up, memory, precision.

One run measures, on this machine and in this process (``make bench``)::

    python -m benchmarks.bench_cube [--lattices 8x8x6,8x8x12,16x16x16] [--steps 4,8,16,32]
        [--batch 64] [--channels 16] [--hidden 64] [--threads N] [--device cpu|cuda|auto]
        [--compile] [--train-run] [--plain-malloc] [--quick] [--out benchmarks/results.json]
    python -m benchmarks.bench_cube --render-only   # docs/benchmark.md's tables, nothing timed

* **Throughput** (embeddings/s) of inference (eval, ``inference_mode``) and of a training step
  (forward, InfoNCE + cosine loss, backward, AdamW step) for every lattice x steps cell, batch 64,
  updating every cell at every step (the cube's light cone and signal front off: the cost of
  the lattice itself; ``default_config_context`` and the reference speed-up use them).
  Time = the fastest of the timed repeats after a warm-up (the machine is shared; the minimum is
  the least disturbed estimate); each cell is repeated until ``--min-time`` seconds or 5 repeats.
* **FLOP efficiency** = the cube's achieved FLOP/s divided by the fp32 matrix-multiply FLOP/s
  measured in the same run (large square ``A @ B``, 2 n^3 FLOPs). The VM's speed drifts, so a
  GEMM is timed right before every timed repeat of the cube and ``flop_efficiency`` is the
  median over these pairs (:func:`paired_time`); ``flop_efficiency_vs_run_peak`` divides the
  fastest repeat by the GEMM rate measured at the start of the run. FLOPs are counted as the
  multiply-adds the model really does, 2 FLOPs per MAC: per cell and step ``K*C*(C+H)`` (stencil
  + first MLP layer on the gathered K-cell neighbourhood) ``+ H*C`` (second layer), plus the
  reshaper's two projections. Bias adds, GELU, the gather and the residual add are not counted
  (they are the overhead the efficiency exposes). A training step counts 3x the forward FLOPs
  (forward, input gradients, weight gradients); recomputation under checkpointing is not counted
  as useful work.
* **Speed-up over the per-cell reference** (:func:`per_cell_forward`, the earlier prototype's
  style: one embedding at a time, a Python loop over cells) at the default config, on the SAME
  weights (:func:`make_cube` with ``gain=1``, at which each embedding's own input drives its
  output); before any timing counts, the part of the outputs that depends on the input
  (:func:`input_signal`) is asserted equal to 1e-4 of its own size (:func:`signal_error`).
* **Peak memory of one training step vs steps**, with and without activation checkpointing
  (:func:`peak_train_memory`), plotted to ``benchmarks/memory_vs_steps.png``.
* **bf16 autocast** inference/training throughput and its error vs fp32, and (``--compile``)
  ``torch.compile`` of the cell update; both run unchanged on CUDA, where memory is read from
  ``torch.cuda.max_memory_allocated``.
* **The default config in context** (``default_config_context``): training and inference
  embeddings/s of the default cube as it runs (light cone and signal front) beside the
  equal-size MLP's, the cube's training FLOP efficiency there, and (``--train-run``) the wall
  time of the default ``cellcube train`` on chatterbot (all five trained models, the baselines,
  the evaluation) in a subprocess, with each model's ``train_seconds`` from its report.

Training cells whose activations would not fit in ``--max-train-gib`` are measured with
checkpointing and flagged (``train_checkpointed``). This module is the driver (arguments, the
``bench_*`` measurements, ``results.json`` and the plot); the workloads, timers, FLOP/memory
accounting and the per-cell reference named above are in :mod:`benchmarks.cube_workloads`.
Everything runs with freed memory kept, as ``cellcube train`` trains (``--plain-malloc``: not).
The run keeps the other suites' keys of ``results.json``; written to the default path, it also
renders the tables of ``docs/benchmark.md`` (:mod:`benchmarks.bench_report`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import bench_report
from benchmarks.cube_workloads import (
    DIM,
    activation_bytes,
    best_time,
    cube_config,
    forward_flops,
    gemm_flops_per_s,
    infer_fn,
    make_cube,
    paired_time,
    peak_train_memory,
    per_cell_forward,
    random_batch,
    signal_error,
    sync,
    train_step_fn,
)
from cellcube.config import Config
from cellcube.errors import CellcubeError
from cellcube.io import write_json
from cellcube.models.baselines import build_model
from cellcube.train.memory import freed_memory_kept


def bench_lattice(
    lattice: tuple[int, int, int],
    steps_list: list[int],
    args: argparse.Namespace,
    device: torch.device,
    peak: float,
) -> dict[str, dict]:
    """Inference and training throughput and FLOP efficiency for one lattice, every step count.

    Every cell is updated at every step (``cones=False``): the cost of the lattice itself. (With
    the faces reshaper and fewer than Z-1 steps the input cannot reach the output face, and the
    cones would leave almost nothing to compute per embedding.)"""
    cfg = cube_config(lattice, args.channels, args.hidden)
    q, a = random_batch(args.batch, device)
    keys = ("infer", "train", "eff_infer", "eff_train", "ckpt", "run_eff_infer", "run_eff_train")
    out: dict[str, dict] = {k: {} for k in keys}
    for steps in steps_list:
        flops = forward_flops(cfg, args.batch, steps, cones=False)
        big = flops * 3 > 2e11  # a minute-long repeat on CPU: time it once
        reps = 1 if big and device.type == "cpu" else 5
        cube = make_cube(cfg, device, cones=False).eval()
        t_inf, eff_inf = paired_time(
            infer_fn(cube, q, steps, False), flops, device, args.min_time, reps
        )
        ckpt = activation_bytes(cfg, args.batch, steps, cones=False) > args.max_train_gib * 2**30
        cube = make_cube(cfg.model_copy(update={"checkpointing": ckpt}), device, cones=False)
        t_train, eff_train = paired_time(
            train_step_fn(cube.train(), q, a, steps, False), 3 * flops, device, args.min_time, reps
        )
        key = str(steps)
        out["infer"][key] = args.batch / t_inf
        out["train"][key] = args.batch / t_train
        out["eff_infer"][key] = eff_inf
        out["eff_train"][key] = eff_train
        out["run_eff_infer"][key] = flops / t_inf / peak
        out["run_eff_train"][key] = 3 * flops / t_train / peak
        out["ckpt"][key] = ckpt
        name = "x".join(map(str, lattice))
        print(
            f"  {name} steps {steps:>2}: inference {args.batch / t_inf:10.1f}"
            f" emb/s (eff {eff_inf:.2f}), training {args.batch / t_train:9.1f} emb/s"
            f" (eff {eff_train:.2f}{', checkpointed' if ckpt else ''})",
            flush=True,
        )
    return out


def bench_reference(device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """Speed-up of the cube over the per-cell reference at the default config, same weights:
    the cube as it runs (light cone and signal front), and updating every cell every step."""
    cfg = Config().cube
    cube = make_cube(cfg, torch.device("cpu"), gain=1.0).eval()
    q, _ = random_batch(args.batch, torch.device("cpu"))
    n_ref = 16
    runs = {}
    for cones in (True, False):
        fast_cube = make_cube(cfg, device, cones=cones, gain=1.0).eval()
        runs[cones] = (fast_cube, infer_fn(fast_cube, q.to(device), None, False))
        runs[cones][1]()
    rows, ref_times = [], []
    fast_times: dict[bool, list[float]] = {True: [], False: []}
    for row in q[:n_ref]:  # interleaved, so all see the same load; fastest of each
        t = time.perf_counter()
        with torch.no_grad():
            rows.append(per_cell_forward(cube, row[None]))
        ref_times.append(time.perf_counter() - t)
        for cones, (_, run) in runs.items():
            for _ in range(3):
                t = time.perf_counter()
                run()
                sync(device)
                fast_times[cones].append(time.perf_counter() - t)
    ref = torch.cat(rows)
    with torch.no_grad():
        signal = ref - q[:n_ref] - per_cell_forward(cube, torch.zeros_like(q[:1]))
    errors = []
    for fast_cube, _ in runs.values():
        with torch.inference_mode():
            fast = fast_cube(q.to(device)).cpu()
        errors.append(float(signal_error(fast[:n_ref], ref, signal).max()))
        if errors[-1] > 1e-4:  # the same numbers, relative to what depends on the input
            raise AssertionError(f"cube != per-cell reference: relative error {errors[-1]:.2e}")
    ref_rate = 1 / min(ref_times)
    rate = {cones: args.batch / min(times) for cones, times in fast_times.items()}
    return {
        "lattice": list(cfg.lattice),
        "steps": cfg.steps,
        "reference_emb_per_s": ref_rate,
        "cube_emb_per_s": rate[True],
        "speedup": rate[True] / ref_rate,
        "cube_every_cell_emb_per_s": rate[False],
        "speedup_every_cell": rate[False] / ref_rate,
        "max_signal_rel_err": max(errors),
    }


def bench_memory(
    device: torch.device, args: argparse.Namespace, lattice: tuple[int, int, int]
) -> dict[str, dict[str, float]]:
    """Peak MiB of one training step vs steps, without and with checkpointing."""
    cfg = cube_config(lattice, args.channels, args.hidden)
    q, _ = random_batch(args.batch, device)
    curve: dict[str, dict[str, float]] = {"plain": {}, "checkpointed": {}}
    for ckpt, name in ((False, "plain"), (True, "checkpointed")):  # every cell, every step
        cube = make_cube(cfg.model_copy(update={"checkpointing": ckpt}), device, cones=False)
        for steps in args.steps:
            curve[name][str(steps)] = peak_train_memory(cube, q, steps) / 2**20
    return curve


def bench_bf16(device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """bf16 autocast vs fp32 on 8x8x6, 8 steps: throughput and the error of the outputs."""
    cfg = cube_config((8, 8, 6), args.channels, args.hidden)
    q, a = random_batch(args.batch, device)
    cube = make_cube(cfg, device).eval()
    with torch.inference_mode():
        ref = cube(q, steps=8)
        with torch.autocast(device.type, torch.bfloat16):
            low = cube(q, steps=8).float()
    res: dict[str, float] = {
        "max_rel_err": float((low - ref).norm(dim=-1).div(ref.norm(dim=-1)).max()),
        "min_cosine": float(F.cosine_similarity(low, ref, dim=-1).min()),
    }
    for name, ac in (("fp32", False), ("bf16", True)):
        cube = make_cube(cfg, device).eval()
        res[f"{name}_inference_emb_per_s"] = args.batch / best_time(
            infer_fn(cube, q, 8, ac), device, args.min_time, 5
        )
        cube.train()
        res[f"{name}_train_emb_per_s"] = args.batch / best_time(
            train_step_fn(cube, q, a, 8, ac), device, args.min_time, 5
        )
    return res


def bench_compile(device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """``torch.compile`` of one step of the cube (:meth:`Cube.step`, in training the one-node
    step of :mod:`cellcube.models.step`) vs eager, 8x8x6 and 8 steps; ``compile_s`` is the
    first (compiling) inference and training call. Inference runs the in-place kernels
    (:mod:`cellcube.models.kernels`), which the compiled step does not touch."""
    cfg = cube_config((8, 8, 6), args.channels, args.hidden)
    q, a = random_batch(args.batch, device)
    res: dict[str, float] = {}
    for name in ("eager", "compiled"):
        cube = make_cube(cfg, device)
        if name == "compiled":
            cube.step = torch.compile(cube.step)  # type: ignore[method-assign]
            t = time.perf_counter()
            infer_fn(cube.eval(), q, 8, False)()
            train_step_fn(cube.train(), q, a, 8, False)()
            res["compile_s"] = time.perf_counter() - t
        res[f"{name}_inference_emb_per_s"] = args.batch / best_time(
            infer_fn(cube.eval(), q, 8, False), device, args.min_time, 5
        )
        res[f"{name}_train_emb_per_s"] = args.batch / best_time(
            train_step_fn(cube.train(), q, a, 8, False), device, args.min_time, 5
        )
    return res


def bench_context(device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """Default cube vs the equal-size MLP baseline and the teacher, for scale; the default
    cube's training FLOP efficiency (as it runs: light cone and signal front)."""
    cfg = Config()
    q, a = random_batch(args.batch, device)
    res: dict[str, float] = {}
    for name in ("cube", "mlp"):
        model = build_model(name, DIM, cfg).to(device)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        res[f"{name}_inference_emb_per_s"] = args.batch / best_time(
            infer_fn(model.eval(), q, None, False), device, 1.0, 50
        )
        res[f"{name}_train_emb_per_s"] = args.batch / best_time(
            train_step_fn(model.train(), q, a, None, False), device, 1.0, 50
        )
        if name == "cube":  # the cube's own fwd + bwd, without loss and optimiser
            flops = 3 * forward_flops(cfg.cube, args.batch, cfg.cube.steps)
            res["cube_train_fwd_bwd_s"], res["cube_train_flop_efficiency"] = paired_time(
                lambda m=model: m(q).square().sum().backward(), flops, device, 1.0, 20
            )
    if not args.quick:
        from cellcube.embed.teachers import load_teacher

        teacher = load_teacher(cfg.teacher)
        texts = [f"What does sentence number {i} of this benchmark mean?" for i in range(64)]
        teacher.encode(texts)  # load + warm up
        t = time.perf_counter()
        teacher.encode(texts * 4)
        res["teacher_encode_emb_per_s"] = 4 * len(texts) / (time.perf_counter() - t)
    return res


def bench_train_run(quick: bool) -> dict[str, object]:
    """Wall time of the default ``cellcube train`` on chatterbot (``configs/default.yaml``) in a
    subprocess with this process's environment, and each model's ``train_seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "cellcube.cli.main", "train", "--out", f"{tmp}/run"]
        cmd += ["--set", "train.progress=false"]
        if quick:  # a smoke run: two epochs, no bootstrap
            cmd += ["--set", "train.epochs=2", "--set", "eval.bootstrap=0"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t
        report = json.loads(Path(f"{tmp}/run/report.json").read_text())
    seconds = {k: v["train_seconds"] for k, v in report["models"].items() if "train_seconds" in v}
    return {"wall_s": wall, "train_seconds": seconds, "epochs": 2 if quick else None}


def plot_memory(curve: dict[str, dict[str, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cellcube.io import atomic_open

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, pts in curve.items():
        xs = [int(s) for s in pts]
        ax.plot(xs, list(pts.values()), marker="o", label=name)
    ax.set_xlabel("steps")
    ax.set_ylabel("peak memory of a training step (MiB)")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([int(s) for s in next(iter(curve.values()))])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def machine(device: torch.device) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


OTHER_SUITES = ("bank", "scale")
"""Keys of ``results.json`` that other benchmarks write (:mod:`benchmarks.bank`,
:mod:`benchmarks.scale`): kept as they are when this suite rewrites the file."""


def other_suites(path: Path) -> dict[str, object]:
    """The other suites' entries of the results file at ``path`` (none if it does not exist)."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    return {k: old[k] for k in OTHER_SUITES if k in old}


def _lattice(text: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in text.lower().split("x"))
    return x, y, z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lattices", default="8x8x6,8x8x12,16x16x16")
    ap.add_argument("--steps", default="4,8,16,32")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of repeats per cell")
    ap.add_argument("--max-train-gib", type=float, default=3.0)
    ap.add_argument("--memory-lattice", default="8x8x6")
    ap.add_argument("--efficiency", default="16x16x16:32:128:4", help="LATTICE:C:H:STEPS probe")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the rule")
    ap.add_argument("--train-run", action="store_true", help="also time `cellcube train`")
    ap.add_argument(
        "--plain-malloc",
        action="store_true",
        help="leave malloc returning freed memory (cellcube train: train.keep_freed_memory=false)",
    )
    ap.add_argument("--quick", action="store_true", help="small smoke run (tests)")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="only render docs/benchmark.md's tables from benchmarks/results.json and the reruns",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    ap.add_argument("--plot", type=Path, default=Path("benchmarks/memory_vs_steps.png"))
    args = ap.parse_args()
    if args.render_only:
        try:
            print(f"wrote {bench_report.render()}")
        except CellcubeError as exc:
            raise SystemExit(f"error: {exc}") from None
        return
    with freed_memory_kept(not args.plain_malloc) as kept:  # as `cellcube train` runs
        measure(args, kept)


def measure(args: argparse.Namespace, kept: bool) -> None:
    """Every measurement of the suite, then ``results.json`` and the plot."""
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, cube and peak alike
    args.steps = [int(s) for s in args.steps.split(",")]
    lattices = [_lattice(t) for t in args.lattices.split(",")]
    started = time.perf_counter()
    result: dict[str, object] = {"machine": machine(device)}
    result["keep_freed_memory"] = kept

    peaks = [gemm_flops_per_s(device)]
    print(f"fp32 GEMM: {peaks[0] / 1e9:.1f} GFLOP/s", flush=True)
    ref = bench_reference(device, args)
    print(f"per-cell reference: {ref['speedup']:.0f}x slower ({ref})", flush=True)
    infer, train, eff_i, eff_t, ckpt, run_i, run_t = ({} for _ in range(7))
    for lat in lattices:
        r = bench_lattice(lat, args.steps, args, device, max(peaks))
        name = "x".join(map(str, lat))
        infer[name], train[name], ckpt[name] = r["infer"], r["train"], r["ckpt"]
        eff_i[name], eff_t[name] = r["eff_infer"], r["eff_train"]
        run_i[name], run_t[name] = r["run_eff_infer"], r["run_eff_train"]
    lat_s, c_s, h_s, st_s = args.efficiency.split(":")
    probe = argparse.Namespace(**{**vars(args), "channels": int(c_s), "hidden": int(h_s)})
    if args.quick:
        probe.batch = 4
    print(f"efficiency probe {args.efficiency}:", flush=True)
    wide = bench_lattice(_lattice(lat_s), [int(st_s)], probe, device, max(peaks))
    peak = max(peaks)
    mem_lat = _lattice(args.memory_lattice)
    memory = bench_memory(device, args, mem_lat)
    print(f"peak training-step memory (MiB) vs steps: {memory}", flush=True)
    result.update(
        {
            "config": {
                "channels": args.channels,
                "hidden": args.hidden,
                "neighbourhood": 6,
                "reshaper": "faces",
                "every_cell_every_step": True,
                "batch": args.batch,
                "steps": args.steps,
                "lattices": list(infer),
            },
            "gemm_flops_per_s": peak,
            "gemm_flops_per_s_samples": peaks,
            "inference_emb_per_s": infer,
            "train_emb_per_s": train,
            "train_checkpointed": ckpt,
            "flop_efficiency": {"inference": eff_i, "train": eff_t},
            "flop_efficiency_vs_run_peak": {"inference": run_i, "train": run_t},
            "flop_efficiency_wide": {
                "lattice": lat_s,
                "channels": probe.channels,
                "hidden": probe.hidden,
                "steps": int(st_s),
                "batch": probe.batch,
                "inference": wide["eff_infer"][st_s],
                "train": wide["eff_train"][st_s],
                "inference_vs_run_peak": wide["run_eff_infer"][st_s],
                "inference_emb_per_s": wide["infer"][st_s],
                "train_emb_per_s": wide["train"][st_s],
            },
            "speedup_vs_reference": ref["speedup"],
            "reference": ref,
            "memory_mib_vs_steps": {"lattice": args.memory_lattice, **memory},
        }
    )
    result["bf16_autocast"] = bench_bf16(device, args)
    print(f"bf16 autocast: {result['bf16_autocast']}", flush=True)
    if args.compile:
        result["torch_compile"] = bench_compile(device, args)
        print(f"torch.compile: {result['torch_compile']}", flush=True)
    result["default_config_context"] = bench_context(device, args)
    print(f"default config: {result['default_config_context']}", flush=True)
    if args.train_run:
        result["default_cellcube_train"] = bench_train_run(args.quick)
        print(f"cellcube train (default): {result['default_cellcube_train']}", flush=True)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())  # type: ignore[index]
    result["wall_s"] = time.perf_counter() - started
    plot_memory(
        memory,
        f"cube {args.memory_lattice}x{args.channels}ch, batch {args.batch} ({device.type})",
        args.plot,
    )
    write_json(args.out, {**other_suites(args.out), **result})
    if args.out.resolve() == bench_report.RESULTS:
        print(f"wrote {bench_report.render()}")
    print(json.dumps({k: result[k] for k in ("speedup_vs_reference", "flop_efficiency")}, indent=1))
    print(f"wrote {args.out} and {args.plot} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
