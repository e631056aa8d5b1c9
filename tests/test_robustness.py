"""Robustness evaluation (cellcube.eval.robustness), train.augment, mode denoise and
train.init_from: on real MiniLM embeddings of the tech corpus through a real SQLite cache, real
checkpoint files, and (slow) real training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchmarks.robustness import LEVELS as STUDY_LEVELS
from benchmarks.robustness import by_variant, drop_table, gain_table

from cellcube.cli.main import main
from cellcube.config import Config, CubeConfig, load_config
from cellcube.data import Corruption, corrupt_texts, load_builtin, pair_from_record, split_pairs
from cellcube.embed.encode import embed
from cellcube.embed.splits import EmbeddedSplit, embed_splits
from cellcube.errors import ConfigError
from cellcube.eval.evaluate import ModelEntry, Precomputed
from cellcube.eval.metrics import retrieval_metrics
from cellcube.eval.robustness import corrupted_splits, robustness
from cellcube.io import write_torch
from cellcube.models.cube import Cube
from cellcube.run.pipeline import initialise_from
from cellcube.run.rundir import RunDir

LEVELS = ["typo:0.2", "drop:0.3"]


@pytest.fixture(scope="module")
def run_emb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, EmbeddedSplit]]:
    """80 tech pairs split and embedded by MiniLM through a fresh cache."""
    cache = tmp_path_factory.mktemp("cache") / "c.sqlite"
    cfg = load_config(
        None, [f"cache.path={cache}", f"eval.robustness=[{','.join(LEVELS)}]", "eval.bootstrap=200"]
    )
    split = split_pairs(load_builtin("tech")[:80], cfg.data, cfg.seed)
    return cfg, embed_splits(cfg, split, progress=False)


def test_corrupted_splits_embed_the_corrupted_questions(run_emb) -> None:
    cfg, emb = run_emb
    splits = corrupted_splits(cfg, emb, [Corruption.parse(s) for s in LEVELS])
    assert list(splits) == LEVELS
    clean = emb["test"]
    for spec, s in splits.items():
        test = s["test"]
        assert test.questions == corrupt_texts(clean.questions, Corruption.parse(spec), cfg.seed)
        expected = torch.from_numpy(embed(test.questions, cfg.teacher, cfg.cache))
        torch.testing.assert_close(test.q, expected)
        changed = [a != b for a, b in zip(clean.questions, test.questions, strict=True)]
        moved = (test.q - clean.q).norm(dim=1) > 1e-4
        assert moved.tolist() == changed and sum(changed) > 0.9 * len(changed)
        assert test.candidates is clean.candidates and test.answer_ids is clean.answer_ids
        assert s["val"] is emb["val"] and s["train"] is emb["train"]


def test_robustness_numbers(run_emb) -> None:
    """Each model's corrupted MRR is the retrieval of its own output on the corrupted questions;
    ``drop`` is clean minus corrupted; a model with its own outputs is rebuilt for the corrupted
    split (``entries_for``); the paired drop of two identical models is exactly 0, and a constant
    model (which cannot drop) is the cube's whole drop below it (it "loses less")."""
    cfg, emb = run_emb
    constant = emb["train"].a.mean(0)

    def entries_for(splits):
        test, val = splits["test"], splits["val"]
        own = Precomputed(test.q.clone(), test.candidates, val.q, val.candidates)
        return {
            "cube": ModelEntry(lambda q: q, 0),
            "identity": ModelEntry(lambda q: q, 0),
            "constant": ModelEntry(lambda q: constant.expand_as(q), 384),
            "own": ModelEntry(own, 0),
        }

    section = robustness(cfg, emb, entries_for(emb), entries_for)
    assert section["seed"] == cfg.seed and list(section["corruptions"]) == LEVELS
    clean_mrr = retrieval_metrics(emb["test"].q, emb["test"].answer_ids, emb["test"].candidates)
    splits = corrupted_splits(cfg, emb, [Corruption.parse(s) for s in LEVELS])
    for spec, level in section["corruptions"].items():
        test = splits[spec]["test"]
        mrr = retrieval_metrics(test.q, test.answer_ids, test.candidates)["mrr"]
        models = level["models"]
        for name in ("cube", "identity", "own"):
            assert models[name]["mrr"] == pytest.approx(mrr, abs=1e-6)
            assert models[name]["drop"] == pytest.approx(clean_mrr["mrr"] - mrr, abs=1e-6)
            lo, hi = models[name]["ci"]
            assert lo < mrr < hi
        assert models["cube"]["drop"] > 0.1  # the corruption really hurts retrieval
        assert models["constant"]["drop"] == 0
        paired = level["paired_drop"]
        assert paired["identity"] == {"mean": 0.0, "ci": [0.0, 0.0], "se": 0.0}
        assert paired["constant"]["mean"] == pytest.approx(-models["cube"]["drop"], abs=0.03)
        assert paired["constant"]["se"] > 0
        assert level["changed"] == pytest.approx(
            sum(a != b for a, b in zip(emb["test"].questions, test.questions, strict=True))
            / len(test)
        )


def _checkpoint(run: Path, cube: torch.nn.Module) -> None:
    """A cube checkpoint in the layout of a run directory (as Lightning writes it: the model's
    state under ``model.``, with the objective's)."""
    state = {f"model.{k}": v for k, v in cube.state_dict().items()}
    state["objective.scale"] = torch.ones(())
    write_torch(RunDir(run).model("cube").best, {"cellcube": {}, "state_dict": state})


def test_initialise_from(tmp_path: Path) -> None:
    """The cube takes every weight of the other run's cube; a missing run or another cube
    shape is one ConfigError naming train.init_from (and the parameter)."""
    torch.manual_seed(0)
    pretrained = Cube(384, CubeConfig())
    _checkpoint(tmp_path / "denoise", pretrained)
    torch.manual_seed(1)
    fresh = Cube(384, CubeConfig())
    assert not torch.equal(
        fresh.state_dict()["reshaper.proj_in.weight"],
        pretrained.state_dict()["reshaper.proj_in.weight"],
    )
    initialise_from(fresh, tmp_path / "denoise")
    for key, value in pretrained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(ConfigError, match=r"^train\.init_from: .*no such checkpoint"):
        initialise_from(fresh, tmp_path / "nowhere")
    wider = Cube(384, CubeConfig(channels=8))
    with pytest.raises(ConfigError, match=r"^train\.init_from: .*cube parameter '.*' is shape"):
        initialise_from(wider, tmp_path / "denoise")


@pytest.mark.slow
def test_pipeline_robustness_augment_denoise(tmp_path: Path) -> None:
    """Real runs: report.json holds `robustness` for every model of the report; augmented copies
    are train pairs only; mode denoise maps corrupted texts to clean ones (identity below 1)."""
    data = tmp_path / "tech.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": p.question, "answer": p.answer}) + "\n"
            for p in load_builtin("tech")[:60]
        )
    )
    tiny = [
        f"data.path={data}",
        f"cache.path={tmp_path / 'cache.sqlite'}",
        "cube.lattice=[2,2,2]",
        "cube.channels=4",
        "cube.hidden=8",
        "cube.steps=2",
        "train.epochs=1",
        "train.batch_size=32",
        "train.progress=false",
        "eval.bootstrap=50",
    ]
    sets = [*tiny, "eval.robustness=[drop:0.3]", "train.augment=[typo:0.1]"]
    run = tmp_path / "dialogue"
    assert main(["train", "--out", str(run), *[a for s in sets for a in ("--set", s)]]) == 0
    report = json.loads((run / "report.json").read_text())
    level = report["robustness"]["corruptions"]["drop:0.3"]
    assert set(level["models"]) == set(report["models"])
    assert set(level["paired_drop"]) == set(report["models"]) - {"cube"}
    records = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    variants = [r for r in records if r.get("variant_of")]
    train_q = {r["question"] for r in records if r["split"] == "train"}
    assert variants and all(r["split"] == "train" for r in variants)
    assert all(r["variant_of"] in train_q for r in variants)
    held = {r["question"] for r in records if r["split"] != "train"}
    assert not {r["question"] for r in variants} & held

    denoise = tmp_path / "denoise"
    sets = [*tiny[1:], "mode=denoise", f"data.path={run / 'pairs.jsonl'}"]
    assert main(["train", "--out", str(denoise), *[a for s in sets for a in ("--set", s)]]) == 0
    report = json.loads((denoise / "report.json").read_text())
    assert 0.3 < report["models"]["identity"]["mrr"] < 0.99
    pairs = [pair_from_record(json.loads(line)) for line in (denoise / "pairs.jsonl").open()]
    dialogue = {r["question"]: r["split"] for r in records} | {
        r["answer"]: r["split"] for r in records
    }
    assert all(p.question != p.answer for p in pairs)
    assert all(dialogue[p.answer] == p.split for p in pairs)  # pinned: test texts stay test


def _row(variant: str, seed: int, clean: dict[str, float], typo: dict[str, float]) -> dict:
    """A results row of benchmarks.robustness with the given clean and typo:0.05 MRRs."""
    levels = {lv: {"models": {m: {"mrr": v} for m, v in typo.items()}} for lv in STUDY_LEVELS}
    report = {"models": {m: {"mrr": v} for m, v in clean.items()}}
    report["robustness"] = {"corruptions": levels}
    return {"variant": variant, "corpus": "tech", "seed": seed, "report": report}


def test_study_tables_pair_the_drops() -> None:
    """The study's drop table gives (rival's drop - cube's drop) as mean ± SE over units, and
    the gain table after - before on the same units."""
    models = ("cube", "no_lattice", "linear", "mlp", "identity")
    rows = [
        # seed 0: cube drops 0.1, every rival 0.3 -> +0.2; seed 1: cube 0.2, rivals 0.2 -> 0
        _row(
            "clean", 0, dict.fromkeys(models, 0.8), {"cube": 0.7} | dict.fromkeys(models[1:], 0.5)
        ),
        _row("clean", 1, dict.fromkeys(models, 0.8), dict.fromkeys(models, 0.6)),
        _row("augment", 0, dict.fromkeys(models, 0.9), dict.fromkeys(models, 0.9)),
        _row("augment", 1, dict.fromkeys(models, 0.7), dict.fromkeys(models, 0.6)),
    ]
    v = by_variant(rows)
    lines = drop_table(v["clean"])
    assert lines[2].split(" | ")[1] == "+0.100 ± 0.100 (1/2)"  # mean 0.1, SE 0.1 over 2 units
    gain = gain_table(v["augment"], v["clean"], ("cube",))
    assert gain[2] == "| clean | +0.000 ± 0.100 (1/2) |"  # +0.1 and -0.1
