"""The report page: written by ``cellcube train`` and ``cellcube report``, self-contained, its
numbers those of the run, rendered without error in a real headless Chromium; bad run
directories are one clear error line.

The browser tests use Debian's ``chromium`` through Playwright (``executable_path``; Playwright
never downloads a browser here). Without Chromium they skip, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from _smallrun import small_run
from cellcube.cli.main import main
from cellcube.config import load_config
from cellcube.embed.splits import embed_splits
from cellcube.report import analysis
from cellcube.report.results import config_changes, teachers_section
from cellcube.run.rundir import RunDir

SECTIONS = ("run", "metrics", "curves", "wins", "cube", "map")


# -- the browser --------------------------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium found; install the Debian package chromium")
    pytest.importorskip("playwright", reason="playwright missing; pip install -e '.[dev]'")
    return path


IMAGES_JS = "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
"""Each ``<img>``'s alt text and whether it decoded (a broken image has naturalWidth 0)."""


@dataclass
class Rendered:
    """What a page did in the browser."""

    errors: list[str]  # console errors and uncaught page errors
    images: int
    broken: list[str]  # alt text of every <img> that did not decode
    pixel_std: float  # standard deviation of the screenshot's grey levels (0: blank)


def render(*pages: Path) -> list[Rendered]:
    """Open each page file in one headless Chromium, wait for it to load, check every image,
    and take a full-page screenshot (``<page>.png`` beside it)."""
    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium())
        try:
            for page_file in pages:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on(
                    "console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None
                )
                page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
                page.goto(page_file.resolve().as_uri(), wait_until="load")
                images = page.evaluate(IMAGES_JS)
                shot = page_file.with_suffix(".png")
                page.screenshot(path=str(shot), full_page=True)
                page.close()
                grey = ImageStat.Stat(Image.open(shot).convert("L")).stddev[0]
                seen.append(Rendered(errors, len(images), [a for a, ok in images if not ok], grey))
        finally:
            browser.close()
    return seen


def test_the_browser_check_detects_a_broken_image_and_a_console_error(tmp_path):
    """The check can fail: a page with an image that does not decode, and a page logging an
    error, are caught; the same page with a good image passes."""
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
        "RU5ErkJggg=="
    )
    pages = {
        "good": f'<img alt="dot" src="data:image/png;base64,{png}"><p>text</p>',
        "broken": '<img alt="dot" src="data:image/png;base64,iVBORw0KGgoAAAA"><p>text</p>',
        "console": f'<img alt="dot" src="data:image/png;base64,{png}"><script>'
        'console.error("boom")</script>',
    }
    for name, body in pages.items():
        (tmp_path / f"{name}.html").write_text(f"<!DOCTYPE html><html><body>{body}</body></html>")
    seen = dict(zip(pages, render(*(tmp_path / f"{n}.html" for n in pages)), strict=True))
    assert seen["good"].images == 1 and not seen["good"].broken and not seen["good"].errors
    assert seen["broken"].broken == ["dot"]
    assert seen["console"].errors == ["boom"]


# -- bad run directories --------------------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err


def test_report_of_a_missing_run_directory_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    _one_error_line(capsys, "config.yaml", "missing", "run directory")
    assert not (tmp_path / "nothing" / "report.html").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "report.json: missing"),
        ("{not json", "corrupt report"),
        ('{"models": {}}', "corrupt"),
    ],
)
def test_report_of_a_run_without_a_readable_report_is_one_clear_error(
    tmp_path, capsys, content, needle
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  progress: false\n")
    if content is not None:
        (run / "report.json").write_text(content)
    assert main(["report", str(run)]) == 2
    _one_error_line(capsys, needle)
    assert not (run / "report.html").exists()


# -- sections from the run's files ---------------------------------------------------------------


def test_config_changes_are_exactly_the_overridden_keys():
    cfg = load_config(None, ["cube.steps=6", "data.max_train=100", "teacher.max_length=128"])
    assert config_changes(cfg) == [
        ("data.max_train", 100, None),
        ("teacher.max_length", 128, 256),
        ("cube.steps", 6, 4),
    ]
    assert config_changes(load_config(None)) == []


def test_teachers_section_shows_each_teacher_its_weight_and_the_ensembles():
    def metrics(mrr: float) -> dict[str, float]:
        return {"mrr": mrr, "recall@1": mrr / 2, "recall@10": 0.9, "cosine": 0.5}

    per = {
        "minilm": {"dim": 384, "teacher": metrics(0.41), "cube": metrics(0.43), "mean_weight": 0.7},
        "mpnet": {"dim": 768, "teacher": metrics(0.45), "cube": metrics(0.44), "mean_weight": 0.3},
    }
    report = {
        "teachers": {
            "weighting": "adaptive",
            "per_teacher": per,
            "ensemble": {"teacher": metrics(0.47), "cube": metrics(0.48)},
        }
    }
    html = teachers_section(report)
    assert 'id="teachers"' in html and "<b>adaptive</b>" in html
    for value in ("minilm (384-d)", "mpnet (768-d)", "0.700", "0.300", "0.410", "0.480"):
        assert value in html
    assert html.count("<tr>") == 1 + 2 * 2 + 2  # head, teacher + cube per space, 2 ensembles
    assert teachers_section({"models": {}}) == ""


# -- the page of a real run -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory)


@pytest.mark.slow
def test_train_writes_a_self_contained_page_with_every_section(run):
    page = (run / "report.html").read_text(encoding="utf-8")
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
    assert 'id="teachers"' not in page  # a single-teacher run
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert len(re.findall(r"<img ", page)) >= 7  # curves, histogram, steps, spread, 3 lattices


@pytest.mark.slow
def test_report_command_rewrites_the_same_page(run, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text(encoding="utf-8") == (run / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_page_numbers_are_the_runs(run):
    """Every test MRR in the metrics table is report.json's; identity's ranks and the cube's
    MRR after its T steps, recomputed by the page's analysis, equal the report's."""
    report = json.loads((run / "report.json").read_text())
    page = (run / "report.html").read_text(encoding="utf-8")
    for m in report["models"].values():
        assert f'<td class="num">{m["mrr"]:.3f} <small>[' in page
    rundir = RunDir(run)
    cfg = load_config(rundir.config)
    test = embed_splits(cfg, rundir.read_pairs(), progress=False)["test"]
    cube = rundir.load_model("cube", cfg, test.q.shape[1])
    changes = analysis.rank_changes(cube, test)
    identity_mrr = (1.0 / changes.identity.double()).mean().item()
    assert identity_mrr == pytest.approx(report["models"]["identity"]["mrr"], abs=1e-6)
    steps = analysis.step_mrr(cube, test)
    assert len(steps) == cfg.cube.steps + 1
    assert steps[-1] == pytest.approx(report["models"]["cube"]["mrr"], abs=1e-6)
    assert f"{steps[-1]:.3f}" in page


@pytest.mark.slow
def test_lattice_trace_is_the_forward_pass_step_by_step(run):
    """The pictures' states, run on the whole lattice one step at a time, read out to the cube's
    own output; and the signal crosses one layer per step (faces reshaper)."""
    rundir = RunDir(run)
    cfg = load_config(rundir.config)
    cube = rundir.load_model("cube", cfg, 384)
    e = torch.nn.functional.normalize(
        torch.randn(8, 384, generator=torch.Generator().manual_seed(0))
    )
    trace = analysis.lattice_trace(cube, e)
    with torch.inference_mode():
        out = cube(e)
    assert (out - e).abs().max() > 1e-2  # the trained cube is far from the identity
    torch.testing.assert_close(trace.output, out, atol=1e-5, rtol=1e-4)
    z = cfg.cube.lattice[2]
    assert trace.norms.shape == (cfg.cube.steps + 1, 8, *cfg.cube.lattice)
    for t in range(min(cfg.cube.steps + 1, z - 1)):  # after t steps, the layers above t:
        assert trace.spread[t, :, :, t].max() > 1e-3
        assert trace.spread[t, :, :, t + 1 :].max() < 1e-5  # the same for every question


@pytest.mark.slow
def test_largest_moves_are_the_largest_and_seeded(run):
    rundir = RunDir(run)
    cfg = load_config(rundir.config)
    test = embed_splits(cfg, rundir.read_pairs(), progress=False)["test"]
    changes = analysis.rank_changes(rundir.load_model("cube", cfg, 384), test)
    up, down = analysis.largest_moves(changes, 5, seed=0)
    moved = changes.moved_up
    assert up and down
    assert all(changes.cube[i] < changes.identity[i] for i in up)
    assert all(changes.cube[i] > changes.identity[i] for i in down)
    assert [moved[i] for i in up] == sorted((moved[i] for i in up), reverse=True)
    assert moved[up[0]] == moved.max() and moved[down[0]] == moved.min()
    assert analysis.largest_moves(changes, 5, seed=0) == (up, down)


@pytest.mark.slow
def test_page_renders_in_chromium_and_a_broken_image_in_it_is_caught(run, tmp_path):
    """The run's page: no console error, every image decoded, not blank. The same page with
    one image's data corrupted: that image is reported broken."""
    page = tmp_path / "report.html"
    shutil.copy(run / "report.html", page)  # its screenshot goes beside it
    text = page.read_text(encoding="utf-8")
    first = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(text[:first] + "AAAA" + text[first + 40 :], encoding="utf-8")
    seen, seen_broken = render(page, broken)
    assert seen.errors == []
    assert seen.images >= 7 and seen.broken == []
    assert seen.pixel_std > 20  # not blank
    assert len(seen_broken.broken) == 1 and seen_broken.images == seen.images
