"""The study command (benchmarks.study): plans, resume, the results file, and its rendering.

Fast tests read ``tests/fixtures/study_results.jsonl``: 14 SYNTHETIC rows (each marked
``"fixture": true``) in the real row format, numbers made up. The one slow test trains a real tiny
run on the tech corpus through ``cellcube train``.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from benchmarks.study import (
    Run,
    Runner,
    Variant,
    cube_variants,
    main,
    plan_runs,
    tune_variants,
)
from benchmarks.study_budget import capacity_paragraph
from benchmarks.study_plans import budget_variants, large_variants, model_variants
from benchmarks.study_render import HEADLINE_BEGIN, HEADLINE_END, render
from benchmarks.study_results import (
    KEY_FIELDS,
    append_result,
    overrides_hash,
    pending,
    read_results,
    row_key,
)
from benchmarks.study_stats import Paired, paired, sentence, t_interval, verdict

from cellcube.config import load_config
from cellcube.errors import CellcubeError
from cellcube.models.baselines import build_model, n_params

FIXTURE = Path(__file__).parent / "fixtures" / "study_results.jsonl"


def _render(tmp: Path) -> tuple[bytes, bytes]:
    md, plots = tmp / "docs" / "study.md", tmp / "docs" / "study"
    render(FIXTURE, md, plots)
    return md.read_bytes(), (plots / "learning_curve_chitchat.png").read_bytes()


def test_render_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = _render(tmp_path / "a")
    again = _render(tmp_path / "a")  # over its own output
    other = _render(tmp_path / "b")  # into a fresh place
    assert first == again == other
    assert first[1].startswith(b"\x89PNG") and b"Software" not in first[1]
    text = first[0].decode()
    assert "python -m benchmarks.study --render-only" in text
    assert "`0123456789ab` (14)" in text and "14 rows are synthetic test fixtures" in text


def test_headline_numbers_are_the_fixture_means(tmp_path: Path) -> None:
    """chatterbot (3 seeds): t-interval over seeds; tech (1 seed): the run's bootstrap interval."""
    text = _render(tmp_path)[0].decode()
    rows = [r for r in read_results(FIXTURE) if r["variant"] == "default"]
    cube = [r["report"]["models"]["cube"]["mrr"] for r in rows if r["corpus"] == "chatterbot"]
    assert len(cube) == 3
    mean, half = statistics.fmean(cube), 4.303 * statistics.stdev(cube) / math.sqrt(3)
    assert (
        f"| `cube` | {mean:.3f} | [{mean - half:.3f}, {mean + half:.3f}] | t over seeds |" in text
    )
    assert t_interval(cube) == pytest.approx((mean - half, mean + half))
    tech = next(r for r in rows if r["corpus"] == "tech")["report"]["models"]["cube"]
    lo, hi = tech["ci"]["mrr"]
    assert f"| `cube` | {tech['mrr']:.3f} | [{lo:.3f}, {hi:.3f}] | bootstrap |" in text


def test_paired_se_matches_a_hand_computation(tmp_path: Path) -> None:
    p = paired([0.03, 0.01, -0.01])
    assert (p.mean, p.n, p.wins, p.se_from) == (pytest.approx(0.01), 3, 2, "seeds")
    assert p.se == pytest.approx(0.02 / math.sqrt(3))  # stdev of (.03, .01, -.01) is .02
    one = paired([0.02], [0.011])
    assert (one.mean, one.se, one.se_from, one.wins) == (0.02, 0.011, "bootstrap", 1)
    # in the rendered page: cube minus linear on chatterbot, from the fixture rows by hand
    rows = [r for r in read_results(FIXTURE) if r["corpus"] == "chatterbot"]
    diffs = [
        r["report"]["models"]["cube"]["mrr"] - r["report"]["models"]["linear"]["mrr"]
        for r in rows
        if r["variant"] == "default"
    ]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    wins = sum(d > 0 for d in diffs)
    line = f"| `linear` | {statistics.fmean(diffs):+.3f} | {se:.3f} | seeds | {wins}/3 |"
    assert line in _render(tmp_path)[0].decode()


def test_verdict_flips_at_two_standard_errors() -> None:
    def sent(d: float) -> str:
        return sentence("tech", {"no_lattice": Paired(d, 0.01, 5, 3, "seeds"),
                                 "linear": Paired(d, 0.01, 5, 3, "seeds")})  # fmt: skip

    assert verdict(Paired(0.0201, 0.01, 5, 4, "seeds")) == "wins"
    assert verdict(Paired(0.0199, 0.01, 5, 4, "seeds")) == "none"
    assert verdict(Paired(-0.0199, 0.01, 5, 1, "seeds")) == "none"
    assert verdict(Paired(-0.0201, 0.01, 5, 1, "seeds")) == "loses"
    assert verdict(Paired(0.5, None, 1, 1, "bootstrap")) == "unknown"
    assert sent(0.0201).endswith("the lattice earns its keep here.")
    assert "beats `no_lattice` (+0.020 ± 0.010 MRR)" in sent(0.0201)
    assert sent(0.0199).endswith("the lattice adds nothing measurable here.")
    assert "shows no measurable difference from `linear`" in sent(0.0199)
    assert "is beaten by `linear` (-0.020 ± 0.010 MRR)" in sent(-0.0201)


README_BEFORE = "# project\r\n\nKept as it is: ±, tabs\t, CRLF.\r\n\n"
README_AFTER = "\n\n## Next section\n\nalso kept\n"


def _render_readme(tmp: Path, readme_text: str) -> tuple[int, Path, Path]:
    readme, md = tmp / "README.md", tmp / "docs" / "study.md"
    readme.write_bytes(readme_text.encode())
    args = ["--render-only", "--results", str(FIXTURE), "--md", str(md)]
    status = main([*args, "--plots", str(tmp / "docs" / "study"), "--readme", str(readme)])
    return status, readme, md


def test_readme_headline_block_is_rendered_between_the_markers_only(tmp_path: Path) -> None:
    stale = f"{HEADLINE_BEGIN}\nstale table\n{HEADLINE_END}"
    status, readme, md = _render_readme(tmp_path, README_BEFORE + stale + README_AFTER)
    assert status == 0
    first = readme.read_bytes()
    assert main(["--render-only", "--results", str(FIXTURE), "--md", str(md), "--plots",
                 str(tmp_path / "docs" / "study"), "--readme", str(readme)]) == 0  # fmt: skip
    assert readme.read_bytes() == first  # byte-for-byte the same the second time
    text = first.decode()
    assert text.startswith(README_BEFORE + HEADLINE_BEGIN + "\n\n")
    assert text.endswith("\n\n" + HEADLINE_END + README_AFTER)
    block = text[len(README_BEFORE) : -len(README_AFTER)]
    assert "stale" not in block and "python -m benchmarks.study --render-only" in block
    assert "[docs/study.md](docs/study.md)" in block
    assert "(docs/study/learning_curve_chitchat.png)" in block
    # the same summaries and sentences as docs/study.md: the full-size default runs (plan small,
    # and the curve's full-size fine-tune run, which only adds a baseline), not cube / tune rows
    page = md.read_text()
    cube = next(line for line in page.splitlines() if line.startswith("| `cube` |"))
    cells = cube.split(" | ")
    assert f"| **chatterbot** | `cube` | {' | '.join(cells[1:3] + cells[4:])}" in block
    assert block.count("| **") == 3 and "| **tech** | `cube` |" in block
    assert "| **chitchat** | `cube` |" in block and "| `finetuned_teacher` |" in block
    sentences = [line for line in block.splitlines() if line.startswith("- On ")]
    assert len(sentences) == 3 and all(s[2:] in page for s in sentences)
    assert "On chatterbot (3 seeds; cube minus baseline, mean ± SE over seeds)" in sentences[0]


@pytest.mark.parametrize(
    "markers",
    ["", HEADLINE_BEGIN, HEADLINE_END, f"{HEADLINE_END}\n{HEADLINE_BEGIN}",
     f"{HEADLINE_BEGIN}\n{HEADLINE_END}\n{HEADLINE_BEGIN}\n{HEADLINE_END}"],
)  # fmt: skip
def test_readme_without_one_marker_pair_is_one_error(tmp_path: Path, markers, capsys) -> None:
    status, readme, md = _render_readme(tmp_path, README_BEFORE + markers + README_AFTER)
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "README.md" in err and HEADLINE_BEGIN in err
    assert readme.read_bytes() == (README_BEFORE + markers + README_AFTER).encode()
    assert not md.exists()  # checked before anything is written


def _row(run: Run, mrr: float = 0.5) -> dict:
    key = dict(zip(KEY_FIELDS, run.key, strict=True))
    return {**key, "overrides": run.overrides, "report": {"models": {"cube": {"mrr": mrr}}}}


def test_resume_skips_finished_runs_and_ignores_a_torn_last_line(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    runs = plan_runs("small")
    assert len(runs) == 15 and len(pending(runs, [])) == 15
    for run in runs[:2]:
        append_result(results, _row(run))
    with results.open("ab") as fh:  # a writer killed mid-line
        fh.write(b'{"corpus": "tech", "se')
    with pytest.warns(UserWarning, match="torn last line"):
        rows = read_results(results)
    assert [row_key(r) for r in rows] == [runs[0].key, runs[1].key]
    assert pending(runs, rows) == runs[2:]
    with pytest.warns(UserWarning, match="cutting off a torn last line"):
        append_result(results, _row(runs[2]))
    lines = results.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert pending(runs, read_results(results)) == runs[3:]
    # the key covers the overrides: the same run with one more --set is a different run
    other = plan_runs("small", extra=["train.epochs=5"])[0]
    assert other.key != runs[0].key and pending([other], read_results(results)) == [other]


def test_a_bad_line_inside_the_file_is_one_error_naming_the_line(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text('{"corpus": "tech"}\nnot json\n{"corpus": "zaragoza"}\n')
    with pytest.raises(CellcubeError, match=r"results\.jsonl:2: not a JSON object"):
        read_results(results)


def test_dry_run_prints_each_plan_and_its_count(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.jsonl"
    counts = {}
    for plan in ("small", "curve", "cube", "tune", "variants", "budget", "large"):
        assert main(["--plan", plan, "--dry-run", "--results", str(results)]) == 0
        out = capsys.readouterr().out
        counts[plan] = int(out.split(" runs planned")[0])
        assert out.count(f"  {plan:5s} ") == counts[plan]
    assert counts == {
        "small": 15, "curve": 7, "cube": 81, "tune": 81, "variants": 60, "budget": 28, "large": 3
    }  # fmt: skip
    assert not results.exists()
    # the cube plan's overlap with small (the default at seeds 0-2) is planned once
    assert main(["--plan", "small", "--plan", "cube", "--dry-run", "--results", str(results)]) == 0
    assert capsys.readouterr().out.startswith("87 runs planned")


def test_plan_variants_are_valid_configs() -> None:
    """Every cube variant passes the config's checks (steps >= Z-1 for the faces reshaper), and
    every tune cell sets one lr / weight decay for every trained model."""
    names = [v.name for v in cube_variants()]
    assert names == [
        "T3_4x4x4", "default", "T6_4x4x4", "T8_4x4x4", "T8_4x4x8",
        "T3_8x8x4", "T4_8x8x4", "T6_8x8x4", "T8_8x8x4",
    ]  # fmt: skip
    for v in cube_variants():
        cfg = load_config(None, list(v.overrides))
        assert cfg.cube.steps >= cfg.cube.lattice[2] - 1
    for v in tune_variants():
        cfg = load_config(None, list(v.overrides))
        settings = {cfg.train.optimiser(m) for m in ("cube", "no_lattice", "linear", "mlp")}
        assert len(settings) == 1
    curve = plan_runs("curve")
    assert [r.train_size for r in curve] == [250, 500, 1000, 2000, 4000, 8000, "all"]
    assert [r.variant.name for r in curve].count("finetune") == 2
    assert "data.max_train=250" in curve[0].sets() and load_config(None, curve[0].sets())


@pytest.mark.slow
def test_one_real_tiny_run_end_to_end(tmp_path: Path) -> None:
    tiny = (
        f"cache.path={tmp_path / 'cache.sqlite'}",
        "cube.lattice=[2,2,2]",
        "cube.channels=4",
        "cube.hidden=8",
        "cube.steps=1",
        "train.epochs=1",
        "eval.bootstrap=50",
    )
    run = Run("small", "tech", 0, Variant("tiny", tiny))
    results = tmp_path / "results.jsonl"
    runner = Runner(results, tmp_path / "runs", threads=2)
    row = runner.run(run)
    [stored] = read_results(results)
    assert stored == json.loads(json.dumps(row)) and row_key(stored) == run.key
    report = stored["report"]
    assert report["n_test"] > 0 and {"cube", "no_lattice", "linear"} <= set(report["models"])
    assert 0 < report["models"]["cube"]["mrr"] <= 1 and stored["wall_seconds"] > 0
    assert stored["config"]["data"]["corpus"] == "tech" and stored["config"]["cube"]["steps"] == 1
    assert not (tmp_path / "runs" / run.name).exists()  # run directories are removed
    assert pending([run], read_results(results)) == []


# -- issue 16: plans `variants` and `budget`, and their sections ------------------------------


def test_variants_and_budget_plans() -> None:
    variants = plan_runs("variants")
    names = ["default", "refine_input", "refine_base", "clamp", "anytime", "anytime_clamp"]
    assert [v.name for v in model_variants()] == names
    assert len(variants) == 6 * 3 * 3 + 6  # 3 corpora x 3 seeds, then chitchat at 4000, seed 0
    assert {(r.corpus, r.seed, r.train_size) for r in variants[-6:]} == {("chitchat", 0, 4000)}
    assert all(r.corpus != "chitchat" for r in plan_runs("variants", seeds=[0]))
    budget = plan_runs("budget")
    assert len(budget) == 7 * 3 + 7
    for v in [*model_variants(), *budget_variants()]:
        cfg = load_config(None, list(v.overrides))
        cube = build_model("cube", 384, cfg)
        if v.name.startswith("budget_") and cfg.eval.linear_rank:
            linear = build_model("linear", 384, cfg)  # the low-rank linear matches the cube
            assert abs(n_params(linear) / n_params(cube) - 1) < 0.02, v.name
    assert load_config(None, list(model_variants()[4].overrides)).eval.passes == 8


def _variant_row(corpus: str, seed: int, variant: Variant, cube: float, lin: float) -> dict:
    run = Run("variants", corpus, seed, variant)
    models = {
        "cube": {"mrr": cube, "val_mrr": cube + 0.1, "params": 1000},
        "no_lattice": {"mrr": cube - 0.01, "val_mrr": 0.0, "params": 900},
        "linear": {"mrr": lin, "val_mrr": 0.0, "params": 800},
        "mlp": {"mrr": cube, "val_mrr": 0.0, "params": 1000},
    }
    report: dict = {"models": models}
    if variant.name == "anytime":
        report["confidence"] = {
            "steps": [{"steps": t, "mrr": cube - 0.01 * t, "val_mrr": 0.5} for t in (0, 4)],
            "passes": {"k": 8, "mrr": cube + 0.002, "spread": {"auroc": 0.6 + 0.1 * seed}},
            "margin": {"linear": {"auroc": 0.7}},
        }
    key = dict(zip(KEY_FIELDS, run.key, strict=True))
    return {**key, "plan": "variants", "overrides": run.overrides, "report": report}


def test_variants_section_numbers_by_hand(tmp_path: Path) -> None:
    default, anytime = model_variants()[0], model_variants()[4]
    rows = [
        _variant_row("tech", s, v, cube, 0.5)
        for s in (0, 1)
        for v, cube in ((default, 0.50 + 0.01 * s), (anytime, 0.53 + 0.02 * s))
    ]
    # the same variant name with other overrides is another experiment: left out
    other = Variant("anytime", (*anytime.overrides, "train.select_window=3"))
    rows.append(_variant_row("tech", 2, other, 0.9, 0.1))
    results, md = tmp_path / "results.jsonl", tmp_path / "docs" / "study.md"
    for row in rows:
        append_result(results, row)
    render(results, md, tmp_path / "docs" / "study")
    text = md.read_text()
    # anytime wins on validation (0.64 vs 0.605); cube - linear (+0.03, +0.05): mean 0.04, SE 0.01
    assert "| **anytime** | 0.640 | 0.640 | 0.540 |" in text
    assert "| anytime | 0.640 | 0.540 | +0.010 ± 0.000 (2/2) | +0.040 ± 0.010 (2/2) |" in text
    # minus the default cube, paired by seed: (0.03, 0.04) -> +0.035 ± 0.005
    assert "| +0.035 ± 0.005 (2/2) | 1,000 |" in text
    assert "| anytime | 0.540 (0.500) | 0.500 (0.500) |" in text  # T=0, T=4: means over seeds
    # spread AUROC (0.6, 0.7) minus linear margin AUROC 0.7: -0.05 ± 0.05
    assert (
        "| tech | anytime | 8 | 0.540 | 0.542 | 0.650 |" in text and "-0.050 ± 0.050 (0/2)" in text
    )
    assert (tmp_path / "docs" / "study" / "variants_steps.png").read_bytes().startswith(b"\x89PNG")


def test_cube_plan_chooses_by_the_one_standard_error_rule(tmp_path: Path) -> None:
    """The cheapest variant within one SE of the best on validation is chosen, not the best."""
    by_name = {v.name: v for v in cube_variants()}
    # (variant, params, val MRR per seed): T3_8x8x4 is best; default is 0.005 +- 0.005 below it
    # (within one SE) and cheaper; T3_4x4x4 is as cheap and has fewer steps, but 0.03 +- 0.00 below
    cells = [
        ("T3_8x8x4", 4000, (0.80, 0.82)),
        ("default", 1000, (0.80, 0.81)),
        ("T3_4x4x4", 1000, (0.77, 0.79)),
    ]
    results, md = tmp_path / "results.jsonl", tmp_path / "docs" / "study.md"
    for name, params, vals in cells:
        for seed, val in enumerate(vals):
            row = _variant_row("tech", seed, by_name[name], val - 0.1, 0.5)
            row.update(plan="cube", train_size="all")
            row["config"] = load_config(None, list(by_name[name].overrides)).to_dict()
            row["report"]["models"]["cube"]["params"] = params
            append_result(results, row)
    render(results, md, tmp_path / "docs" / "study")
    text = md.read_text().split("(plan `cube`)")[1]
    assert "| T3_8x8x4 | 8x8x4 | 3 | 0.810 | best |" in text
    assert "| **default** | 4x4x4 | 4 | 0.805 | -0.005 ± 0.005 |" in text
    assert "| T3_4x4x4 | 4x4x4 | 3 | 0.780 | -0.030 ± 0.000 |" in text


def test_large_plan_and_its_section(tmp_path: Path) -> None:
    """Plan ``large``: full chitchat, seed 0, three valid configs; its default is the headline's
    chitchat run (same key, so not run twice); the section shows each run's paired numbers."""
    runs = plan_runs("large")
    assert {(r.corpus, r.seed, r.train_size) for r in runs} == {("chitchat", 0, "all")}
    assert overrides_hash(runs[-1].overrides) == "d0106baf8043"  # the headline chitchat run
    big = load_config(None, list(large_variants()[1].overrides))
    assert n_params(build_model("cube", 384, big)) == 1_598_944
    assert load_config(None, list(large_variants()[0].overrides)).cube.steps == 12
    results, md = tmp_path / "results.jsonl", tmp_path / "docs" / "study.md"
    for v, cube in zip(large_variants(), (0.19, 0.18, 0.20), strict=True):
        row = _variant_row("chitchat", 0, v, cube, 0.2)
        row.update(plan="large", train_size="all")
        row["report"]["paired"] = {"linear": {"se": 0.004}}
        append_result(results, row)
    render(results, md, tmp_path / "docs" / "study")
    text = md.read_text().split("(plan `large`)")[1]
    # cube - linear within each run, the run's bootstrap SE; minus the default run's cube
    assert "| T12 | 0.290 | 0.190 | +0.010 ± - (1/1) | -0.010 ± 0.004 (0/1) |" in text
    assert "| T8_8x8x8_c32 | 0.280 | 0.180 |" in text and "| -0.020 ± - (0/1) |" in text


def test_budget_section_and_capacity_verdict(tmp_path: Path) -> None:
    results, md = tmp_path / "results.jsonl", tmp_path / "docs" / "study.md"
    for v, size in zip(budget_variants()[:2], (0, 1), strict=True):
        run = Run("budget", "chatterbot", 0, v)
        models = {
            "cube": {"mrr": 0.40 + 0.02 * size, "params": 13000 * (size + 1)},
            "mlp": {"mrr": 0.41, "params": 13100 * (size + 1)},
            "linear": {"mrr": 0.43, "params": 13440 * (size + 1)},
        }
        key = dict(zip(KEY_FIELDS, run.key, strict=True))
        append_result(results, {**key, "overrides": run.overrides, "report": {"models": models}})
    render(results, md, tmp_path / "docs" / "study")
    text = md.read_text()
    assert "## Parameter budget (plan `budget`)" in text
    assert "| budget_c2 | 26,000 | 26,200 | 26,880 | 0.420 | 0.410 | 0.430 |" in text
    assert (
        "| budget_c1 | 13,000 | 13,100 | 13,440 | 0.400 | 0.410 | 0.430 | -0.010 ± - (0/1)" in text
    )
    assert (tmp_path / "docs" / "study" / "budget.png").read_bytes().startswith(b"\x89PNG")

    def mrr(units: dict, model: str) -> float | None:
        return units.get(model)

    flat = [(250, "250", {"cube": 0.18, "linear": 0.185, "identity": 0.17}),
            (8000, "all", {"cube": 0.19, "linear": 0.19, "identity": 0.17})]  # fmt: skip
    [text] = capacity_paragraph(flat, mrr)[:1]
    assert "moves by +0.005" in text and "within 0.000" in text and "is not built" in text
    steep = [flat[0], (8000, "all", {"cube": 0.25, "linear": 0.2, "identity": 0.17})]
    assert "worth building" in capacity_paragraph(steep, mrr)[0]
