"""Cost curves: wall time and peak resident memory of every stage at 1k, 10k and 100k pairs.

The corpus is the first ``n`` pairs (whole conversations, in the package's order) of the
built-in chitchat corpus with every consecutive turn pair (``data.corpus=chitchat``,
``data.chitchat_turns=all``: 131,368 pairs). Every stage of every size runs in a fresh
subprocess (``--stage``) that imports everything, sets the stage up, resets its peak resident
set size (``/proc/self/clear_refs``) and times the stage; it reports the stage's wall time, its
peak RSS and that peak above the RSS at the stage's start (``rss_stage_mib``):

=============  ============================================================================
stage          what the subprocess times (the code path it names)
=============  ============================================================================
``import``     ``import cellcube.cli.main, cellcube.run.pipeline, cellcube.decode.answer``
``embed_cold`` :func:`cellcube.embed.sharded.embed_sharded` of the subset's distinct texts
               with MiniLM into an EMPTY cache file (the teacher's load included)
``embed_warm`` :func:`cellcube.embed.splits.embed_splits` of the split: every text read back
               from the warm default cache
``train``      one epoch of the cube (:func:`cellcube.train.fit.fit`, ``train.epochs=1``,
               its validation MRR included) into a run directory made as ``cellcube train``
               makes it (its embedding and curriculum difficulty are set-up, not timed)
``evaluate``   :func:`cellcube.run.pipeline.evaluate_run` of that run (``cellcube evaluate``:
               the splits re-read from the cache, the cube on the test split, bootstrap CIs)
``inspect``    :func:`cellcube.data.inspect.inspect_pairs` of the subset (warm cache)
``expand``     :func:`cellcube.data.expand.expand_pairs` of the subset; its candidate texts
               are new text, so they go through the teacher unless ``--warm`` cached them
               (``teacher_batches`` says how many batches the teacher ran)
``ask``        :meth:`cellcube.decode.answer.Answerer.load` of the run (its stored phrase
               bank: the run's answers), the teacher loaded, 20 test questions answered
               (``load_seconds`` and ``seconds_per_question`` apart)
=============  ============================================================================

From 10,000 pairs (or the smallest size measured) to the largest, the slope of log(cost)
against log(pairs) is the fitted exponent (1: linear). Results go to the ``scale`` key of
``benchmarks/results.json`` (the file re-read and only that key replaced, written atomically),
the plot to ``docs/scale.png`` and the table between the ``bench:scale`` markers of
``docs/scale.md``. The bank search at 10k to 1M phrases is ``benchmarks/bank.py``'s.

Usage (each finished stage is kept in ``--work``/partial.json, so a rerun resumes)::

    python -m benchmarks.scale --warm          # fill the default cache (resumable, one thread)
    python -m benchmarks.scale                 # every stage at 1k, 10k and 100k pairs
    python -m benchmarks.scale --sizes 1000 10000 --cold-max 10000
    python -m benchmarks.scale --report        # results, plot and table of what --work holds
    python -m benchmarks.scale --render-only   # plot and table from benchmarks/results.json

Stages skipped on purpose (``--cold-max``, ``--expand-max``) are recorded as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.scale_report import (
    STAGES,
    read_section,
    render,
    summarise,
    table,
    write_results,
)

SIZES = (1_000, 10_000, 100_000)
QUESTIONS = 20
ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = (
    "data.corpus=chitchat",
    "data.chitchat_turns=all",
    "train.epochs=1",
    "train.progress=false",
    "eval.baselines=false",
)


def _rss_mib() -> float:
    """This process's resident set size now, MiB (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset this process's peak resident set size to its current one (Linux: ``5`` written to
    ``/proc/self/clear_refs`` resets ``VmHWM``); False where that is not possible.

    Memory the set-up freed is first handed back to the system (glibc's ``malloc_trim``):
    otherwise the stage reuses it without its RSS growing, and a small stage whose set-up
    happened to free more looks cheaper than it is."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_mib(reset: bool) -> float:
    """This process's peak resident set size, MiB: since :func:`_reset_peak` when ``reset``
    (``VmHWM``), else since it started (``ru_maxrss``, KiB on Linux)."""
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the stages (run inside the subprocess) -------------------------------------------------


def _config() -> Any:
    """The default config with :data:`OVERRIDES`."""
    from cellcube.config import load_config

    return load_config(None, OVERRIDES)


def _pairs(n: int) -> list[Any]:
    """The first ``n`` pairs of chitchat with every turn pair."""
    from cellcube.data import load_builtin

    return load_builtin("chitchat", chitchat_turns="all")[:n]


def _split(cfg: Any, n: int) -> Any:
    """The seeded split of :func:`_pairs`."""
    from cellcube.data import split_dataset

    return split_dataset(_pairs(n), cfg.data, cfg.seed)[0]


def _texts(n: int) -> list[str]:
    """The distinct texts of :func:`_pairs`."""
    return list(dict.fromkeys(t for p in _pairs(n) for t in (p.question, p.answer)))


def _embedder(cfg: Any) -> tuple[Any, Callable[[list[str]], Any]]:
    """The teacher (its weights load on a cache miss only) and ``texts -> vectors`` through it
    and the default cache."""
    from cellcube.embed.encode import embed
    from cellcube.embed.teachers import load_teacher

    teacher = load_teacher(cfg.teacher)
    return teacher, lambda texts: embed(texts, teacher, cfg.cache)


def _run_dir(work: Path, n: int) -> Path:
    """The run directory the ``train`` stage makes for ``n`` pairs."""
    return work / f"run-{n}"


def stage_embed_cold(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.config import CacheConfig
    from cellcube.embed.sharded import embed_sharded

    texts = _texts(n)
    cache = work / f"cold-{n}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)

    def body() -> dict[str, Any]:
        embed_sharded(texts, cfg.teacher, CacheConfig(path=str(cache)))
        return {"texts": len(texts)}

    return body


def stage_embed_warm(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.embed.splits import embed_splits

    split = _split(cfg, n)

    def body() -> dict[str, Any]:
        emb = embed_splits(cfg, split, progress=False)
        return {"rows": sum(len(e) for e in emb.values())}

    return body


def stage_train(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.embed.splits import embed_splits
    from cellcube.models.baselines import build_model
    from cellcube.objectives.curriculum import teacher_difficulty
    from cellcube.run.rundir import RunDir
    from cellcube.train.fit import fit

    split = _split(cfg, n)
    emb = embed_splits(cfg, split, progress=False)
    train = emb["train"]
    run = RunDir(_run_dir(work, n))
    shutil.rmtree(run.root, ignore_errors=True)
    run.start(cfg, split, teacher_difficulty(train.q, train.a, train.answer_ids, train.candidates))
    model = build_model("cube", train.q.shape[1], cfg)

    def body() -> dict[str, Any]:
        start = time.perf_counter()
        fit(model, "cube", cfg, train, emb["val"], run.model("cube"))
        run.mark_done("cube", time.perf_counter() - start)
        return {"train_pairs": len(train), "val_pairs": len(emb["val"])}

    return body


def stage_evaluate(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.run.pipeline import evaluate_run
    from cellcube.run.rundir import RunDir

    test_pairs = len(RunDir(_run_dir(work, n)).read_pairs().test)

    def body() -> dict[str, Any]:
        evaluate_run(_run_dir(work, n))
        return {"test_pairs": test_pairs}

    return body


def stage_inspect(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.data.inspect import inspect_pairs

    pairs = _pairs(n)
    teacher, embed = _embedder(cfg)

    def body() -> dict[str, Any]:
        inspect_pairs(pairs, embed)
        return {"teacher_batches": teacher.encode_calls}

    return body


def stage_expand(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.data.expand import expand_pairs

    pairs = _pairs(n)
    teacher, embed = _embedder(cfg)

    def body() -> dict[str, Any]:
        records, _ = expand_pairs(pairs, embed)
        return {"records": len(records), "teacher_batches": teacher.encode_calls}

    return body


def stage_ask(cfg: Any, work: Path, n: int) -> Callable[[], dict[str, Any]]:
    from cellcube.decode.answer import Answerer
    from cellcube.run.rundir import RunDir

    run_dir = _run_dir(work, n)
    questions = [p.question for p in RunDir(run_dir).read_pairs().test[:QUESTIONS]]

    def body() -> dict[str, Any]:
        start = time.perf_counter()
        answerer = Answerer.load(run_dir)
        answerer.warm_up()  # the teacher's weights: a constant, not a cost of the bank
        loaded = time.perf_counter()
        answerer.ask(questions, 5)
        return {
            "load_seconds": loaded - start,
            "seconds_per_question": (time.perf_counter() - loaded) / len(questions),
            "bank_phrases": len(answerer.bank.phrases),
        }

    return body


def _warm_imports() -> None:
    """Import everything a stage needs before its baseline RSS is read."""
    import lightning  # noqa: F401
    import sentence_transformers  # noqa: F401

    import cellcube.cli.main
    import cellcube.decode.answer
    import cellcube.run.pipeline  # noqa: F401


def run_stage(stage: str, n: int, work: Path) -> dict[str, Any]:
    """Inside the subprocess: set ``stage`` up for ``n`` pairs, then time its body."""
    if stage == "import":
        reset = _reset_peak()
        base, start, cpu = _rss_mib(), time.perf_counter(), time.process_time()
        _warm_imports()
        extra: dict[str, Any] = {}
    else:
        import torch

        torch.set_num_threads(1)
        _warm_imports()
        cfg = _config()
        setup = time.perf_counter()
        body = globals()[f"stage_{stage}"](cfg, work, n)
        reset = _reset_peak()  # the set-up's own peak does not count
        base, start, cpu = _rss_mib(), time.perf_counter(), time.process_time()
        extra = {"setup_seconds": start - setup, **body()}
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak = _peak_mib(reset)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # what a shared, loaded machine does not inflate
        "rss_peak_mib": peak,
        "rss_stage_mib": peak - base,
        "peak_since": "stage start" if reset else "process start",
        "load_average_1min": os.getloadavg()[0],  # the machine's load as the stage ended
        **extra,
    }


# --- the driver -----------------------------------------------------------------------------


def _child(stage: str, n: int, work: Path) -> dict[str, Any]:
    """Run one stage in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--stage", stage, "--size", str(n)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, "--work", str(work)], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"stage {stage} at {n} pairs failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warm(sizes: list[int], expand_max: int) -> None:
    """Fill the default cache with every text the stages read: the largest subset's pairs, then
    the expansion candidates of each size up to ``expand_max`` (one block at a time, so an
    interrupted warm-up resumes)."""
    import torch

    from cellcube.data.variants import template_variants
    from cellcube.embed.sharded import embed_sharded

    torch.set_num_threads(1)
    cfg = _config()
    texts = _texts(max(sizes))
    for n in sorted(s for s in sizes if s <= expand_max):
        texts += [t for p in _pairs(n) for _, t in template_variants(p.question)]
    texts = list(dict.fromkeys(texts))
    print(f"warming {len(texts):,} texts", flush=True)
    embed_sharded(texts, cfg.teacher, cfg.cache, progress=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--work", type=Path, default=Path("runs/scale"))
    p.add_argument("--cold-max", type=int, default=max(SIZES), help="largest cold embedding")
    p.add_argument("--expand-max", type=int, default=max(SIZES), help="largest expansion")
    p.add_argument("--warm", action="store_true", help="only fill the cache, then stop")
    p.add_argument("--report", action="store_true", help="only report what --work holds")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="only render docs/scale.md's table and docs/scale.png from benchmarks/results.json",
    )
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = _parser().parse_args()
    if args.render_only:
        render(read_section())
        return
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.stage:  # inside the subprocess
        print(json.dumps(run_stage(args.stage, args.size, work)))
        return
    if args.warm:
        warm(args.sizes, args.expand_max)
        return
    limits = {"embed_cold": args.cold_max, "expand": args.expand_max}
    partial = work / "partial.json"
    measured: dict[str, Any] = json.loads(partial.read_text()) if partial.exists() else {}
    for n in [] if args.report else sorted(args.sizes):
        for stage in args.stages:
            done = measured.setdefault(stage, {})
            if str(n) in done:
                continue
            if n > limits.get(stage, n):
                done[str(n)] = {"skipped": f"over --{stage.replace('_', '-')}-max"}
            else:
                done[str(n)] = _child(stage, n, work)
                print(f"{n:>7,} pairs  {stage:<10} {json.dumps(done[str(n)])}", flush=True)
            partial.write_text(json.dumps(measured, indent=1))
    sizes = sorted(int(n) for stage in measured.values() for n in stage)
    if len(set(sizes)) < 2:
        return  # one size has no slope: keep the partial results for a run with more sizes
    sizes = sorted(set(sizes))
    summary = summarise(measured)
    section = {
        "corpus": "chitchat, data.chitchat_turns=all, first n pairs",
        "pairs": sizes,
        "overrides": list(OVERRIDES),
        "threads": 1,
        "machine": f"{os.cpu_count()} CPUs, shared (see each stage's load_average_1min)",
        "stages": summary,
    }
    write_results(section)
    render(section)
    print(table(summary, sizes))


if __name__ == "__main__":
    main()
