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
from benchmarks.study_render import HEADLINE_BEGIN, HEADLINE_END, render
from benchmarks.study_results import KEY_FIELDS, append_result, pending, read_results, row_key
from benchmarks.study_stats import Paired, paired, sentence, t_interval, verdict

from cellcube.config import load_config
from cellcube.errors import CellcubeError

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
    # the same summaries and sentences as docs/study.md, plan small only (not cube / tune rows)
    page = md.read_text()
    cube = next(line for line in page.splitlines() if line.startswith("| `cube` |"))
    cells = cube.split(" | ")
    assert f"| **chatterbot** | `cube` | {' | '.join(cells[1:3] + cells[4:])}" in block
    assert block.count("| **") == 2 and "| **tech** | `cube` |" in block
    sentences = [line for line in block.splitlines() if line.startswith("- On ")]
    assert len(sentences) == 2 and all(s[2:] in page for s in sentences)
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
    for plan in ("small", "curve", "cube", "tune"):
        assert main(["--plan", plan, "--dry-run", "--results", str(results)]) == 0
        out = capsys.readouterr().out
        counts[plan] = int(out.split(" runs planned")[0])
        assert out.count(f"  {plan:5s} ") == counts[plan]
    assert counts == {"small": 15, "curve": 7, "cube": 81, "tune": 81}
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
