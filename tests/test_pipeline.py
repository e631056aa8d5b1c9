"""End to end on real data with the real MiniLM teacher: train, evaluate, ask, cache, resume.

Every test here trains real models (through the module-scoped ``trained_run`` or its own run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cellcube.cli.main import main
from cellcube.config import load_config
from cellcube.data import load_builtin, split_pairs
from cellcube.embed.splits import EmbeddedSplit, embed_splits
from cellcube.embed.teachers import Teacher
from cellcube.eval.metrics import retrieval_metrics
from cellcube.models.baselines import build_model
from cellcube.run.pipeline import evaluate_run
from cellcube.run.rundir import RunDir
from cellcube.train.checkpoints import load_checkpoint
from cellcube.train.fit import fit

pytestmark = pytest.mark.slow

TINY = [
    "cube.lattice=[2,2,2]",
    "cube.channels=4",
    "cube.hidden=8",
    "cube.steps=2",
    "train.epochs=2",
    "train.batch_size=16",
    "train.progress=false",
]
MODELS = {"cube", "no_lattice", "linear", "identity", "mean_answer", "ridge", "mlp", "cube_0_steps"}


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real FAQ pairs from the zaragoza corpus as a user JSONL file."""
    path = tmp_path_factory.mktemp("data") / "faq.jsonl"
    pairs = load_builtin("zaragoza")[:120]
    path.write_text(
        "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in pairs)
    )
    return path


def _metadata_file(path: Path) -> Path:
    """The 120 zaragoza pairs with their ``domain``, and for each a synthetic question variant
    (``variant_of``: the original question) with the same answer."""
    lines = []
    for p in load_builtin("zaragoza")[:120]:
        rec = {"question": p.question, "answer": p.answer, "domain": p.domain}
        variant = {**rec, "question": f"Tell me: {p.question}", "variant_of": p.question}
        lines += [json.dumps(rec) + "\n", json.dumps(variant) + "\n"]
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, qa_file: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("run")
    cache = root / "cache.sqlite"
    code = main(
        [
            "train",
            "--out",
            str(root / "run"),
            "--set",
            f"data.path={qa_file}",
            "--set",
            f"cache.path={cache}",
            *[arg for s in TINY for arg in ("--set", s)],
            # per-model optimiser settings, and a small bootstrap to keep the suite fast
            *("--set", "train.models.linear.lr=0.003", "--set", "eval.bootstrap=200"),
        ]
    )
    assert code == 0
    return root / "run", cache


def test_train_writes_a_complete_report(trained_run):
    run, _ = trained_run
    report = json.loads((run / "report.json").read_text())
    assert set(report["models"]) == MODELS
    assert report["n_test"] > 0 and 0 < report["n_candidates"] <= report["n_test"]
    for m in report["models"].values():
        for key in ("cosine", "recall@1", "recall@10", "mrr"):
            assert 0.0 <= m[key] <= 1.0 or key == "cosine"
        assert m["recall@1"] <= m["recall@10"]
    # the wall seconds of each stage of the job, in order; training is the bulk of it
    stages = report["stage_seconds"]
    assert list(stages) == [
        "read and split", "embed", "prepare", "train", "ridge, fine-tuning, plots", "evaluate"
    ]  # fmt: skip
    assert all(v >= 0 for v in stages.values()) and stages["train"] > stages["prepare"]
    # parameters that affect the output: the 2x2x2 cube loses the 48 weights on the neighbour
    # above (always zero there); at 0 steps only proj_out.bias (D) is left
    models = report["models"]
    dim = 384
    assert models["cube"]["params"] == 13_068 - 48
    assert models["cube_0_steps"]["params"] == dim
    assert models["no_lattice"]["params"] == 2 * 2 * 4 * dim * 2 + 2 * 2 * 4 + dim
    assert models["linear"]["params"] == models["ridge"]["params"] == dim * dim + dim
    # each model's own optimiser settings and training time
    for name in ("cube", "mlp"):
        assert (models[name]["lr"], models[name]["weight_decay"]) == (0.001, 3.0)
    for name in ("no_lattice", "cube_0_steps"):  # the tuned defaults of train.models
        assert (models[name]["lr"], models[name]["weight_decay"]) == (0.001, 0.3)
    assert (models["linear"]["lr"], models["linear"]["weight_decay"]) == (0.003, 3.0)
    for name in ("cube", "no_lattice", "linear", "mlp", "cube_0_steps", "ridge"):
        assert models[name]["train_seconds"] > 0
    for name in ("identity", "mean_answer"):
        assert models[name]["train_seconds"] == 0 and models[name]["lr"] is None
    # 95% bootstrap intervals around every model's MRR and R@1; the cube's paired differences
    assert report["bootstrap"]["resamples"] == 200
    for m in models.values():
        for key in ("mrr", "recall@1"):
            lo, hi = m["ci"][key]
            assert lo <= m[key] <= hi and hi - lo < 0.5
    assert set(report["paired"]) == MODELS - {"cube"}
    for name, d in report["paired"].items():
        assert d["mean"] == pytest.approx(models["cube"]["mrr"] - models[name]["mrr"], abs=0.03)
        assert d["ci"][0] <= d["mean"] <= d["ci"][1] and d["se"] >= 0
    assert (run / "plots" / "training.png").stat().st_size > 1000
    assert (run / "models" / "cube" / "logs" / "metrics.csv").exists()
    assert any((run / "models" / "cube" / "logs" / "tensorboard").iterdir())


def test_identity_baseline_is_the_question_embedding(trained_run):
    """The identity row must be computed from the raw teacher embeddings of the test split."""
    run, _ = trained_run
    cfg = load_config(run / "config.yaml")
    test = embed_splits(cfg, RunDir(run).read_pairs(), progress=False)["test"]
    expected = retrieval_metrics(test.q, test.answer_ids, test.candidates)
    got = json.loads((run / "report.json").read_text())["models"]["identity"]
    assert got["mrr"] == pytest.approx(expected["mrr"])


def test_evaluate_reproduces_the_report_from_checkpoints(trained_run, capsys):
    run, _ = trained_run
    before = json.loads((run / "report.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    after = json.loads((run / "report.json").read_text())
    for name in MODELS:
        for key in ("mrr", "params", "lr", "weight_decay", "train_seconds"):
            assert after["models"][name][key] == pytest.approx(before["models"][name][key])
        assert after["models"][name]["ci"] == before["models"][name]["ci"]
    assert after["paired"] == before["paired"]  # seeded draws: the same intervals
    out = capsys.readouterr().out
    assert "cube_0_steps" in out and "cube - no_lattice" in out


def test_second_run_makes_zero_encoder_calls(trained_run, monkeypatch):
    run, _ = trained_run

    def refuse(self, texts, **kw):
        raise AssertionError(f"teacher called for {len(texts)} texts despite the cache")

    monkeypatch.setattr(Teacher, "encode", refuse)
    evaluate_run(run)  # embeds every split again: all from the on-disk cache


def test_ask_prints_ranked_answers(trained_run, capsys):
    run, _ = trained_run
    assert main(["ask", str(run), "What is a building permit?", "-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Q: What is a building permit?"
    ranked = [line for line in out[1:] if line.startswith("  ") and line[2].isdigit()]
    scores = [float(line.split("[")[1].split("]")[0]) for line in ranked]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_fresh_train_refuses_to_overwrite_a_run(trained_run, capsys):
    run, _ = trained_run
    assert main(["train", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def _toy_splits(seed: int = 0) -> tuple[EmbeddedSplit, EmbeddedSplit]:
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> EmbeddedSplit:
        q = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
        a = torch.nn.functional.normalize(q + 0.5 * torch.randn(n, 16, generator=g), dim=-1)
        return EmbeddedSplit(q, a, torch.arange(n), a, [""] * n, [""] * n)

    return make(96), make(32)


def test_training_is_deterministic_and_resume_is_exact(tmp_path):
    cfg = load_config(None, [*TINY, "train.epochs=4", "train.patience=100", "cube.steps=2"])
    train, val = _toy_splits()

    def weights(path: Path) -> dict[str, torch.Tensor]:
        return load_checkpoint(path)["state_dict"]

    straight = tmp_path / "straight"
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, straight)
    again = tmp_path / "again"
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, again)
    interrupted = tmp_path / "interrupted"
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    fit(build_model("cube", 16, cfg), "cube", short, train, val, interrupted)
    fit(build_model("cube", 16, cfg), "cube", cfg, train, val, interrupted, resume=True)

    ref = weights(straight / "checkpoints" / "last.ckpt")
    for other in (again, interrupted):
        got = weights(other / "checkpoints" / "last.ckpt")
        assert ref.keys() == got.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)
    assert load_checkpoint(interrupted / "checkpoints" / "last.ckpt")["epoch"] == 3


def test_split_has_no_answer_leakage_in_a_run(trained_run):
    run, _ = trained_run
    rows = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    by_split: dict[str, set[str]] = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(r["answer"])
    assert not by_split["train"] & by_split["test"]
    # the curriculum's measured difficulty travels with the train pairs (quantiles in [0, 1])
    difficulty = sorted(r["difficulty"] for r in rows if r["split"] == "train")
    assert difficulty[0] == 0.0 and difficulty[-1] == 1.0
    assert all("difficulty" not in r for r in rows if r["split"] != "train")
    assert not by_split["val"] & by_split["test"]
    n_train = len(split_pairs(load_builtin("zaragoza")[:120], load_config().data, seed=0).train)
    assert len(rows) == n_train + len(by_split["val"]) + len(by_split["test"])


def _tiny_args(out: Path, cache: Path, *extra: str) -> list[str]:
    sets = [*TINY, f"cache.path={cache}", *extra]
    return ["train", "--out", str(out), *[a for s in sets for a in ("--set", s)]]


def test_cli_resume_finishes_an_interrupted_run(tmp_path, trained_run, monkeypatch):
    """A run cut off after the cube: resume keeps the cube, trains the rest, writes the report,
    and trains on the run's own pairs with every field (domain, variant_of) kept."""
    _, cache = trained_run
    run = RunDir(tmp_path / "run")
    data = _metadata_file(tmp_path / "meta.jsonl")
    assert main(_tiny_args(run.root, cache, f"data.path={data}", "eval.baselines=false")) == 0
    cube_ckpt = run.model("cube").best.read_bytes()
    written = run.read_pairs()
    run.report.unlink()  # "killed" before evaluation; resume re-enables baselines
    seen = []

    def spy(cfg, split, **kw):  # type: ignore[no-untyped-def]
        seen.append(split)
        return embed_splits(cfg, split, **kw)

    monkeypatch.setattr("cellcube.run.pipeline.embed_splits", spy)
    assert main(["train", "--resume", "--out", str(run.root), "--set", "eval.baselines=true"]) == 0
    report = json.loads(run.report.read_text())
    assert set(report["models"]) == MODELS
    assert run.model("cube").best.read_bytes() == cube_ckpt
    (resumed,) = seen
    for name in ("train", "val", "test"):
        got, want = getattr(resumed, name), getattr(written, name)
        assert [(p.domain, p.variant_of) for p in got] == [(p.domain, p.variant_of) for p in want]
    pairs = [*resumed.train, *resumed.val, *resumed.test]
    assert all(p.domain for p in pairs)
    assert any(p.variant_of for p in resumed.train)


def test_autoencoder_mode_maps_each_text_to_itself(tmp_path, qa_file, trained_run):
    _, cache = trained_run
    run = tmp_path / "ae"
    assert main(_tiny_args(run, cache, f"data.path={qa_file}", "mode=autoencoder")) == 0
    rows = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert all(r["question"] == r["answer"] for r in rows)
    report = json.loads((run / "report.json").read_text())
    assert report["models"]["identity"]["mrr"] == pytest.approx(1.0)


def test_plain_reshaper_runs_end_to_end(tmp_path, qa_file, trained_run):
    """The spec's exact reshape: 384 = 2x2x2 cells x 48 channels; its 0-step cube is identity."""
    _, cache = trained_run
    run = tmp_path / "plain"
    args = _tiny_args(run, cache, f"data.path={qa_file}", "cube.reshaper=plain", "cube.channels=48")
    assert main(args) == 0
    models = json.loads((run / "report.json").read_text())["models"]
    assert models["cube_0_steps"]["mrr"] == pytest.approx(models["identity"]["mrr"])
    assert models["cube_0_steps"]["params"] == 0  # the exact reshape and back: nothing used
    assert "no_lattice" not in models  # it would be the identity under plain


def test_train_with_a_local_transformers_teacher_in_fp16(tmp_path, qa_file, tiny_bert_dir):
    """The hub/local-path loading code, end to end: a model directory through the CLI."""
    run = tmp_path / "bert"
    args = _tiny_args(
        run,
        tmp_path / "cache.sqlite",
        f"data.path={qa_file}",
        "teacher.kind=transformers",
        f"teacher.model={tiny_bert_dir}",
        "teacher.dtype=float16",
    )
    assert main(args) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"].startswith("transformers:") and "float16" in report["teacher"]
    assert set(report["models"]) == MODELS
    cube = load_checkpoint(RunDir(run).model("cube").best)
    # the tiny BERT is 32-d: the cube's read-out maps its output face back to 32 dimensions
    assert cube["state_dict"]["model.reshaper.proj_out.weight"].shape[0] == 32
