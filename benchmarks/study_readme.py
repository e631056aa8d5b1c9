"""The README's headline block: the runs of plan ``small`` between the study:headline markers.

:func:`headline_block` renders one table (corpora as row groups), the lattice sentence per corpus
and links to the study page and its learning-curve plots, from the same summaries and sentences
as the page; :func:`splice` puts it between the markers ``<!-- study:headline:begin -->`` and
``<!-- study:headline:end -->``, touching nothing outside them.
:func:`benchmarks.study_render.render` calls both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.study_protocol import headline_selection, notes_lines
from benchmarks.study_results import ROOT
from benchmarks.study_stats import LATTICE_RIVALS, grouped, sentence, summarise
from benchmarks.study_tables import (
    RENDER_COMMAND,
    corpus_models,
    corpus_pairs,
    curve_png,
    curve_rows,
    link,
    shown,
    summary_cells,
    table,
)
from cellcube.errors import CellcubeError

README = ROOT / "README.md"
HEADLINE_BEGIN = "<!-- study:headline:begin -->"
HEADLINE_END = "<!-- study:headline:end -->"


def headline_block(
    rows: list[dict[str, Any]], results: Path, readme: Path, md: Path, plots: Path
) -> list[str]:
    """The README's results block: plan ``small``, one table with the corpora as row groups, one
    lattice sentence per corpus, and links to the study page and the learning-curve plots."""
    chosen, notes = headline_selection(rows)
    small = grouped(chosen, lambda r: True)
    lines = [
        f"Rendered by `{RENDER_COMMAND}` from `{shown(results)}` ({len(chosen)} full-size runs "
        "of `python -m benchmarks.study --plan small`, each under today's default config unless "
        "a note below says otherwise; each seed its own split and initialisation); do not edit "
        "by hand. Test MRR is the "
        "mean over seeds with its 95% "
        "interval (t over seeds; with one seed, the run's bootstrap over test pairs); params "
        "counts the parameters that affect the output; train s is training seconds. Every "
        f"table, the paired differences and the plots: [{link(md, readme)}]({link(md, readme)}).",
        "",
    ]
    if not small:
        lines += [f"No run of plan `small` is in `{shown(results)}` yet."]
    body, sentences = [], []
    for corpus, units in small.items():
        group = f"**{corpus}**"  # the corpus names its first row only
        for m in corpus_models(units):
            s = summarise(units, m)
            if s is not None:
                body.append([group, f"`{m}`", *summary_cells(s)])
                group = ""
        text = sentence(corpus, corpus_pairs(units, LATTICE_RIVALS))
        if text:
            sentences.append(f"- {text}")
    if body:
        head = ["corpus", "model", "test MRR", "95% interval", "R@1", "params", "train s", "seeds"]
        lines += [*table(head, body), ""]
    if sentences:
        lines += [*sentences, ""]
    if notes:
        lines += [*notes_lines(notes), ""]
    for corpus in curve_rows(rows):
        png = curve_png(plots, corpus)
        lines += [
            f"Learning curve on {corpus} (test MRR against train size; table in "
            f"[{link(md, readme)}]({link(md, readme)}#learning-curve)):",
            "",
            f"![test MRR against train size on {corpus}]({link(png, readme)})",
            "",
        ]
    return lines


def splice(text: str, block: list[str], path: Path) -> str:
    """``text`` with everything between the headline markers replaced by ``block``."""
    begin, end = text.find(HEADLINE_BEGIN), text.find(HEADLINE_END)
    if text.count(HEADLINE_BEGIN) != 1 or text.count(HEADLINE_END) != 1 or end < begin:
        raise CellcubeError(
            f"{shown(path)}: expected one {HEADLINE_BEGIN} line and, after it, one "
            f"{HEADLINE_END} line around the study's headline block"
        )
    inner = "\n".join(block).strip("\n")
    return f"{text[: begin + len(HEADLINE_BEGIN)]}\n\n{inner}\n\n{text[end:]}"
