"""The multi-teacher and data-expansion benchmarks render their doc tables from a results file
alone: byte-for-byte reproducible, only between their markers, with the right numbers; a
missing marker is one clear error; a resumed benchmark skips the runs its file already holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from benchmarks import data_expand, doc_tables, llm_layers, multi_teacher
from benchmarks.study_results import KEY_FIELDS, append_result

from cellcube.errors import CellcubeError

HEAD = "# A page\n\nHand-written prose above.\n\n"
TAIL = "\n\nHand-written prose below, kept as is.\n"


def _doc(path: Path, name: str) -> Path:
    begin, end = doc_tables.markers(name)
    path.write_text(f"{HEAD}{begin}\nstale table\n{end}{TAIL}", encoding="utf-8")
    return path


def _teachers(seed: int) -> dict:
    per = {
        "all-MiniLM-L6-v2": {"dim": 384, "teacher": {"mrr": 0.5}, "cube": {"mrr": 0.52},
                             "mean_weight": 0.4},
        "mpnet": {"dim": 768, "teacher": {"mrr": 0.6 + 0.01 * seed}, "cube": {"mrr": 0.53},
                  "mean_weight": 0.5},
    }  # fmt: skip
    return {"per_teacher": per, "ensemble": {"teacher": {"mrr": 0.55}, "cube": {"mrr": 0.56}}}


def _multi_rows() -> list[dict]:
    """chatterbot x seeds 0-2: single 0.50/0.52/0.54, uniform +0.01/+0.02/+0.03, adaptive the
    same as single on seed 0 and 1 only (seed 2 missing: a partial file)."""
    rows = []
    for run in multi_teacher.plan(["chatterbot"], [0, 1, 2], multi_teacher.DEFAULT_VARIANTS):
        if run.variant.name == "adaptive" and run.seed == 2:
            continue
        base = 0.50 + 0.02 * run.seed
        mrr = (
            base
            + {"single": 0.0, "uniform": 0.01 * (run.seed + 1), "adaptive": 0.0}[run.variant.name]
        )
        models = {"cube": {"mrr": mrr, "recall@1": mrr - 0.1, "val_mrr": mrr + 0.1}}
        report: dict = {"models": models, "n_test": 200}
        if run.variant.name == "single":
            models["identity"] = {"mrr": 0.48}
        else:
            report["teachers"] = _teachers(run.seed)
        rows.append({**dict(zip(KEY_FIELDS, run.key, strict=True)), "report": report})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    for row in reversed(rows):  # rendering must not depend on the file's order
        append_result(path, row)
    return path


def test_multi_teacher_render_is_byte_identical_and_in_place(tmp_path: Path) -> None:
    results = _write(tmp_path / "results.jsonl", _multi_rows())
    md = _doc(tmp_path / "multi.md", multi_teacher.BLOCK)
    multi_teacher.render(results, md)
    first = md.read_bytes()
    multi_teacher.render(results, md)
    assert md.read_bytes() == first
    text = first.decode()
    assert text.startswith(HEAD) and text.endswith(TAIL)
    assert "stale table" not in text
    assert "8 of the 18 runs" in text and "partial: 8 of 18 runs done" in text
    assert "`python -m benchmarks.multi_teacher --render-only`" in text
    # uniform minus single: diffs 0.01, 0.02, 0.03 -> mean +0.020, SE 0.01/sqrt(3) = 0.006
    assert math.isclose(0.01 / math.sqrt(3), 0.00577, abs_tol=1e-5)
    assert "+0.020 ± 0.006 (3/3 higher) | better |" in text
    # adaptive equals single on its two seeds: no measurable difference, not a win
    assert "+0.000 ± 0.000 (0/2 higher) | no measurable difference |" in text
    # single over seeds 0-2: mean 0.520, 95% t-interval 0.520 ± 4.303 * 0.02 / sqrt(3)
    assert "0.520 [0.470, 0.570]" in text
    assert "| chatterbot | mpnet | 768 | 2 | 0.605 | 0.530 | 0.500 |" in text
    assert doc_tables.NOISE_RULE in text


def _expand_rows() -> tuple[list[dict], list[dict]]:
    """tech x seeds 0-1: cube 0.80 + 0.01 * seed; expanded: +0.02 on both seeds; noisy: -0.03,
    -0.01; every other condition as original."""
    rows = []
    for run in data_expand.plan([0, 1], data_expand.DROP, data_expand.RUNS):
        shift = {"expanded": 0.02, "noisy": -0.03 + 0.02 * run.seed}.get(run.variant.name, 0.0)
        models = {m: {"mrr": 0.70} for m in data_expand.MODELS}
        models["cube"] = {"mrr": 0.80 + 0.01 * run.seed + shift}
        report = {"models": models, "n_test": 66, "n_train": 230 + run.seed}
        rows.append({**dict(zip(KEY_FIELDS, run.key, strict=True)), "report": report})
    sets = [
        {"corpus": "tech", "seed": s, "fold": None, "train_size": "all", "variant": "sets",
         "overrides_hash": "x", "broken": 23, "caught_by_low_quality": 20 + s}
        for s in (0, 1)
    ]  # fmt: skip
    return rows, sets


def test_data_expand_render_is_byte_identical_and_in_place(tmp_path: Path) -> None:
    rows, sets = _expand_rows()
    results = _write(tmp_path / "results.jsonl", rows)
    set_file = _write(tmp_path / "sets.jsonl", sets)
    md = _doc(tmp_path / "data.md", data_expand.BLOCK)
    data_expand.render(results, set_file, md)
    first = md.read_bytes()
    data_expand.render(results, set_file, md)
    assert md.read_bytes() == first
    text = first.decode()
    assert text.startswith(HEAD) and text.endswith(TAIL)
    assert "14 of the 35 runs" in text
    assert "| `original` | 230–231 | 2 | 0.805 [0.741, 0.869] |" in text
    assert "| `expanded` − `original` | +0.020 ± 0.000 (2/2 higher)" in text
    # noisy: -0.03 and -0.01 -> mean -0.020, SE 0.010: exactly 2 SE, not beyond: no verdict
    assert "| `noisy` − `original` | -0.020 ± 0.010 (0/2 higher)" in text
    assert "no measurable difference |" in text.split("`noisy` − `original`")[1].split("\n")[0]
    assert "41 of 46 (89%" in text


def test_missing_or_doubled_marker_is_one_clear_error(tmp_path: Path) -> None:
    md = tmp_path / "page.md"
    md.write_text("# no markers here\n", encoding="utf-8")
    with pytest.raises(CellcubeError, match=r"page\.md: expected one <!-- bench:x:begin -->"):
        doc_tables.render_into(md, {"x": ["table"]})
    assert md.read_text() == "# no markers here\n"  # nothing written
    begin, end = doc_tables.markers("x")
    with pytest.raises(CellcubeError) as err:
        doc_tables.splice(f"{end}\n{begin}\n", "x", ["t"], md)  # end before begin
    assert "\n" not in str(err.value)


def test_resume_skips_the_runs_the_file_holds(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    runs = multi_teacher.plan(["chatterbot", "zaragoza"], [0, 1], ["single", "adaptive"])
    for run in runs[:3]:
        append_result(results, {**dict(zip(KEY_FIELDS, run.key, strict=True)), "report": {}})
    left = doc_tables.todo(runs, results)
    assert [r.key for r in left] == [r.key for r in runs[3:]]
    assert doc_tables.todo(runs, results, max_runs=2) == left[:2]
    # a different drop fraction is a different data-expansion run
    plan_a = data_expand.plan([0], 0.1, Path("runs/x"))
    plan_b = data_expand.plan([0], 0.2, Path("runs/x"))
    assert not {r.key for r in plan_a} & {r.key for r in plan_b}


def test_llm_layers_render_names_the_best_mean_layer(tmp_path: Path) -> None:
    rows = []
    scores = {"zaragoza": {0: 0.3, 6: 0.6, 9: 0.5}, "chatterbot": {0: 0.2, 6: 0.25, 9: 0.4}}
    for run in llm_layers.plan(["zaragoza", "chatterbot"], 0, "smollm2", [0, 6, 9], []):
        layer = int(run.variant.name.rsplit("layer", 1)[1])
        row = dict(zip(KEY_FIELDS, run.key, strict=True))
        rows.append({**row, "teacher": "smollm2", "layer": layer, "overrides": [],
                     "val_mrr": scores[run.corpus][layer]})  # fmt: skip
    results = _write(tmp_path / "results.jsonl", rows)
    md = _doc(tmp_path / "multi.md", llm_layers.BLOCK)
    llm_layers.render(results, md)
    first = md.read_bytes()
    llm_layers.render(results, md)
    assert md.read_bytes() == first
    text = first.decode()
    assert "6 of the 30 runs" in text
    assert "| mean | 0.250 | 0.425 | 0.450 |" in text
    assert "Best mean: layer 9 (0.450)." in text  # not layer 6, the best on zaragoza alone


def test_cube_suite_tables_come_from_its_results_files(tmp_path: Path) -> None:
    """``benchmarks.bench_cube --render-only``: the grid, the targets (one column per run, the
    committed one first) and the context, between their markers, from the files alone."""
    from benchmarks import bench_report

    results = json.loads(bench_report.RESULTS.read_text())
    rerun = json.loads(json.dumps(results))
    rerun["flop_efficiency_wide"]["train"] = 0.123
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "r9.json").write_text(json.dumps(rerun))
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    doc = tmp_path / "benchmark.md"
    doc.write_text(
        HEAD + "".join(f"{a}\nstale\n{b}\n" for a, b in map(doc_tables.markers, BENCH)) + TAIL
    )
    bench_report.render(results_file, folder, doc)
    first = doc.read_bytes()
    bench_report.render(results_file, folder, doc)
    text = doc.read_text()
    assert doc.read_bytes() == first and "stale" not in text
    assert text.startswith(HEAD) and text.endswith(TAIL)
    wide = results["flop_efficiency_wide"]["train"]
    assert f"(target ≥ 0.5) | {wide:.2f} | 0.12 |" in text
    infer, train = (results[k]["16x16x16"]["4"] for k in ("inference_emb_per_s", "train_emb_per_s"))
    assert f"| 16×16×16 (4,096) | 4 | {infer:,.1f} | {train:,.1f} |" in text
    assert "| committed run | rerun `r9` |" in text


BENCH = ("cube-grid", "cube-targets", "cube-context")


@pytest.mark.parametrize(
    "content", [None, "{", '{"wall_s": 1}'], ids=["missing", "bad-json", "keys"]
)
def test_cube_suite_render_names_a_bad_results_file_and_leaves_the_page(tmp_path, content):
    from benchmarks import bench_report

    results, doc = tmp_path / "results.json", tmp_path / "benchmark.md"
    if content is not None:
        results.write_text(content)
    page = HEAD + "".join(f"{a}\nkept\n{b}\n" for a, b in map(doc_tables.markers, BENCH)) + TAIL
    doc.write_text(page)
    with pytest.raises(CellcubeError, match=r"results\.json"):
        bench_report.render(results, tmp_path, doc)
    assert doc.read_text() == page
