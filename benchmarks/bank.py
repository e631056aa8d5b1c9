"""Phrase bank at scale: exact against FAISS search at 10k, 100k and 1M phrases, ``ask`` on a
million-phrase bank, and the peak memory of chunked similarity.

Run from the repository root (about 15 minutes on 2 cores)::

    python -m benchmarks.bank                      # all sections, writes the "bank" key
    python -m benchmarks.bank --sizes 10000 --no-ask --queries 50   # a quick look

**Banks.** Real MiniLM embeddings (the default teacher) of the chitchat messages and turn texts
(:func:`cellcube.data.chitchat.chitchat_messages`, the all-turns corpus), read from the default
embedding cache, less the query questions: only the texts already cached are used
(``--embed`` embeds the others first), and their number is recorded. A bank of size ``n`` is
``min(n, real)`` of them (a seeded sample) plus random unit vectors for the rest, each as its
own stored bank
(:func:`cellcube.decode.bank.store_bank`, memory-mapped on open). Queries are the teacher
embeddings of chitchat questions (:func:`cellcube.data.load_builtin`, ``"chitchat"``).

**Per size**: exact search (:func:`cellcube.eval.similarity.topk_dot` over the memory map) and
the FAISS index (:mod:`cellcube.decode.index`, built with ``exact_max=0`` whatever the size):
build time, median per-question latency (one question per call, ``--latency`` questions),
recall@10 of the index against exact search over ``--queries`` questions at ``nprobe`` 8-128,
and peak resident memory (``VmHWM``, reset before each phase).

**ask**: a small ``cellcube train`` run (200 chatterbot pairs, 2 epochs), then
:meth:`cellcube.decode.answer.Answerer.load` with a million-phrase ``--bank`` file whose stored
bank (real texts and embeddings, then filler phrases with random unit vectors) is written
beside the run first, as ``cellcube ask`` would have stored it: the first load, and the time per
question after it.

**Memory**: :func:`cellcube.eval.similarity.true_ranks` on a 20k-question x 20k-answer pool and
:func:`cellcube.data.inspect.near_duplicates` on 20k questions: peak RSS increase against the
bytes of the dense float32 matrix they avoid.

Results go to the ``bank`` key of ``--out`` (re-read and rewritten at the end; other keys are
kept) and a Markdown table to stdout; ``--memory-only`` re-measures only the memory part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellcube.config import Config
from cellcube.data import load_builtin
from cellcube.data.chitchat import chitchat_conversations, chitchat_messages
from cellcube.data.inspect import near_duplicates
from cellcube.decode.answer import Answerer
from cellcube.decode.bank import bank_digest, open_bank, read_bank_file, store_bank
from cellcube.decode.index import faiss_module, n_probe
from cellcube.embed.encode import embed, open_cache
from cellcube.embed.teachers import load_teacher
from cellcube.eval.similarity import topk_dot, true_ranks, unit
from cellcube.io import write_json

K = 10
NPROBES = (8, 16, 32, 64, 100, 128)
SEED = 0


def reset_peak() -> None:
    """Reset this process's peak resident set size (Linux: ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib(field: str = "VmHWM") -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall time in seconds and its peak RSS increase in MiB."""
    reset_peak()
    base = rss_mib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, rss_mib() - base


def per_question_ms(search: Callable[[torch.Tensor], Any], queries: torch.Tensor) -> float:
    """Median milliseconds of ``search`` on one question at a time (after one warm-up call)."""
    search(queries[:1])
    times = []
    for row in queries:
        t0 = time.perf_counter()
        search(row[None])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def real_texts(
    cfg: Config, teacher: Any, embed_missing: bool, questions: list[str]
) -> tuple[list[str], np.ndarray]:
    """The chitchat texts (messages, then all-turn texts) other than the query ``questions``,
    with their cached MiniLM embeddings; with ``embed_missing`` the uncached ones are embedded
    first."""
    texts = chitchat_messages(chitchat_conversations())
    pairs = load_builtin("chitchat", chitchat_turns="all")
    texts = list(dict.fromkeys([*texts, *(t for p in pairs for t in (p.question, p.answer))]))
    asked = set(questions)
    texts = [t for t in texts if t not in asked]  # a question is never its own answer
    if embed_missing:
        return texts, embed(texts, teacher, cfg.cache, progress=True)
    with open_cache(cfg.cache) as cache:
        found = cache.get_many(teacher.identity, texts)
    keep = [i for i, v in enumerate(found) if v is not None]
    return [texts[i] for i in keep], np.stack([found[i] for i in keep]).astype(np.float32)


def mixed_bank(real: np.ndarray, n: int, dim: int) -> tuple[np.ndarray, int]:
    """``n`` unit rows: a seeded sample of ``min(n, len(real))`` real rows, then random unit
    rows; returns them and the number of real rows."""
    rng = np.random.default_rng(SEED)
    n_real = min(n, len(real))
    rows = real[np.sort(rng.permutation(len(real))[:n_real])]
    filler = rng.standard_normal((n - n_real, dim), dtype=np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    return np.concatenate([rows, filler]), n_real


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact top-k found in its approximate top-k."""
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / exact.shape[1]


def bench_size(
    n: int, real: np.ndarray, queries: torch.Tensor, work: Path, n_latency: int
) -> dict[str, Any]:
    """Exact and index search on a bank of ``n`` phrases (see the module docstring)."""
    vectors, n_real = mixed_bank(real, n, real.shape[1])
    phrases = [str(i) for i in range(n)]
    directory = work / f"bank-{n}"
    t0 = time.perf_counter()
    store_bank(directory, phrases, vectors, "bench", exact_max=n)
    store_s = time.perf_counter() - t0
    del vectors
    bank, load_s, load_mib = measured(lambda: open_bank(directory))
    q = unit(queries)
    (exact_scores, exact_ids), exact_all_s, exact_mib = measured(
        lambda: topk_dot(q, bank.embeddings, K)
    )
    exact_ms = per_question_ms(lambda x: topk_dot(x, bank.embeddings, K), q[:n_latency])

    faiss = faiss_module()
    index_dir = work / f"bank-{n}-index"
    _, build_s, build_mib = measured(
        lambda: store_bank(index_dir, phrases, bank.embeddings.numpy(), "bench", exact_max=0)
    )
    indexed, index_load_s, index_mib = measured(lambda: open_bank(index_dir))
    ivf = faiss.extract_index_ivf(indexed.index)
    by_nprobe = {}
    for nprobe in sorted({*NPROBES, n_probe(ivf.nlist)}):
        ivf.nprobe = min(nprobe, ivf.nlist)
        ids = indexed.index.search(q.numpy(), K)[1]
        ms = per_question_ms(lambda x: indexed.index.search(x.numpy(), K), q[:n_latency])
        by_nprobe[str(nprobe)] = {"recall@10": recall_at_k(ids, exact_ids.numpy()), "ms": ms}
    ivf.nprobe = n_probe(ivf.nlist)
    top1 = exact_scores[:, 0]
    return {
        "phrases": n,
        "real_rows": n_real,
        "random_rows": n - n_real,
        "stored_mib": (directory / "vectors.npy").stat().st_size / 2**20,
        "store_s": store_s,
        "open_s": load_s,
        "open_peak_rss_increase_mib": load_mib,
        "exact": {
            "ms_per_question": exact_ms,
            "s_all_queries": exact_all_s,
            "peak_rss_increase_mib": exact_mib,
            "median_top1_cosine": float(top1.median()),
        },
        "index": {
            "kind": "faiss IVF-Flat, inner product",
            "lists": ivf.nlist,
            "nprobe": ivf.nprobe,
            "build_and_store_s": build_s,
            "build_peak_rss_increase_mib": build_mib,
            "open_s": index_load_s,
            "open_peak_rss_increase_mib": index_mib,
            "recall@10": by_nprobe[str(ivf.nprobe)]["recall@10"],
            "ms_per_question": by_nprobe[str(ivf.nprobe)]["ms"],
            "by_nprobe": by_nprobe,
        },
    }


def bench_memory(real: np.ndarray, queries: torch.Tensor, n: int = 20_000) -> dict[str, Any]:
    """Peak RSS of chunked ranking and near-duplicate search against the dense matrix bytes."""
    keys = torch.from_numpy(real[:n])
    q = queries[:n] if len(queries) >= n else torch.from_numpy(real[-n:])
    targets = torch.arange(len(q)) % len(keys)
    dense_mib = len(q) * len(keys) * 4 / 2**20
    _, rank_s, rank_mib = measured(lambda: true_ranks(q, keys, targets))
    found, near_s, near_mib = measured(lambda: near_duplicates(q, 0.95))
    return {
        "queries": len(q),
        "candidates": len(keys),
        "dense_matrix_mib": dense_mib,
        "true_ranks": {
            "s": rank_s,
            "peak_rss_increase_mib": rank_mib,
            "ratio": rank_mib / dense_mib,
        },
        "near_duplicates": {
            "s": near_s,
            "pairs": len(found),
            "peak_rss_increase_mib": near_mib,
            "ratio": near_mib / dense_mib,
        },
    }


def bench_ask(
    texts: list[str], real: np.ndarray, teacher_id: str, work: Path, n: int, n_latency: int
) -> dict[str, Any]:
    """``cellcube ask`` with an ``n``-phrase bank (see the module docstring)."""
    run, root = work / "ask-run", work / "ask-run-data"
    if not (run / "report.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        data = root / "chat.jsonl"
        pairs = load_builtin("chatterbot")[:200]
        data.write_text(
            "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in pairs)
        )
        sets = [f"data.path={data}", "train.epochs=2", "train.progress=false", "eval.bootstrap=0"]
        args = [sys.executable, "-m", "cellcube", "train", "--out", str(run), "--overwrite"]
        subprocess.run([*args, *[a for s in sets for a in ("--set", s)]], check=True)
    vectors, n_real = mixed_bank(real, n, real.shape[1])
    order = np.sort(np.random.default_rng(SEED).permutation(len(real))[:n_real])
    phrases = [texts[i] for i in order] + [f"(filler phrase {i})" for i in range(n - n_real)]
    bank_file = work / f"bank-{n}.txt"
    bank_file.write_text("\n".join(phrases) + "\n", encoding="utf-8")
    if read_bank_file(bank_file) != phrases:  # else ask would embed a million phrases
        raise RuntimeError(f"{bank_file}: does not read back as the phrases written")
    directory = run / "bank" / bank_digest(phrases, teacher_id)[:16]
    if not (directory / "manifest.json").exists():
        store_bank(directory, phrases, vectors, teacher_id)
    del vectors
    answerer, load_s, load_mib = measured(lambda: Answerer.load(run, bank_file))
    questions = [p.question for p in load_builtin("chitchat")[: n_latency + 1]]
    answerer.ask(questions[:1], k=5)  # the teacher's weights load on the first question
    times = []
    for question in questions[1:]:
        t0 = time.perf_counter()
        answerer.ask([question], k=5)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    cli = [sys.executable, "-m", "cellcube", "ask", str(run), "--bank", str(bank_file)]
    subprocess.run([*cli, "-k", "3", questions[1]], check=True, capture_output=True)
    cli_s = time.perf_counter() - t0
    return {
        "phrases": n,
        "real_rows": n_real,
        "searched_by": "index" if answerer.bank.index is not None else "exact",
        "first_load_s": load_s,
        "first_load_peak_rss_increase_mib": load_mib,
        "ms_per_question_median": 1000 * statistics.median(times),
        "ms_per_question_max": 1000 * max(times),
        "questions": len(times),
        "cli_one_question_s": cli_s,
    }


def table(result: dict[str, Any]) -> str:
    """The Markdown table of the per-size results."""
    lines = [
        "| phrases (real) | exact ms/question | index ms/question | recall@10 | index build s | "
        "peak RSS MiB exact / build |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["sizes"]:
        e, i = r["exact"], r["index"]
        lines.append(
            f"| {r['phrases']:,} ({r['real_rows']:,}) | {e['ms_per_question']:.1f} | "
            f"{i['ms_per_question']:.2f} | {i['recall@10']:.3f} | {i['build_and_store_s']:.1f} | "
            f"{e['peak_rss_increase_mib']:.0f} / {i['build_peak_rss_increase_mib']:.0f} |"
        )
    return "\n".join(lines)


def save(out: Path, result: dict[str, Any]) -> None:
    """Re-read ``out`` and rewrite it atomically with only the ``bank`` key replaced."""
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["bank"] = result
    write_json(out, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=500, help="questions for recall")
    ap.add_argument("--latency", type=int, default=50, help="questions timed one by one")
    ap.add_argument("--ask-size", type=int, default=1_000_000)
    ap.add_argument("--no-ask", action="store_true")
    ap.add_argument(
        "--memory-only", action="store_true", help="re-measure only the memory part of --out"
    )
    ap.add_argument("--embed", action="store_true", help="embed the uncached chitchat texts")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_bank"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    cfg = Config()
    teacher = load_teacher(cfg.teacher)
    questions = list(dict.fromkeys(p.question for p in load_builtin("chitchat")))
    texts, real = real_texts(cfg, teacher, args.embed, questions)
    queries = torch.from_numpy(embed(questions, teacher, cfg.cache))
    pick = torch.randperm(len(queries), generator=torch.Generator().manual_seed(SEED))
    print(f"{len(real):,} real bank rows, {len(queries):,} questions", flush=True)
    result: dict[str, Any] = {
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "load_avg_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "teacher": teacher.identity,
        "real_rows_available": len(real),
        "queries": args.queries,
        "latency_questions": args.latency,
        "k": K,
        "sizes": [],
    }
    if args.memory_only:
        result = json.loads(args.out.read_text())["bank"]
        result["memory"] = bench_memory(real, queries[pick])
        save(args.out, result)
        print(json.dumps(result["memory"]))
        return
    for n in (int(s) for s in args.sizes.split(",")):
        row = bench_size(n, real, queries[pick[: args.queries]], args.work, args.latency)
        result["sizes"].append(row)
        print(json.dumps(row), flush=True)
    result["memory"] = bench_memory(real, queries[pick])
    print(json.dumps(result["memory"]), flush=True)
    if not args.no_ask:
        result["ask"] = bench_ask(
            texts, real, teacher.identity, args.work, args.ask_size, args.latency
        )
        print(json.dumps(result["ask"]), flush=True)
    result["wall_s"] = time.perf_counter() - t0
    save(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()
