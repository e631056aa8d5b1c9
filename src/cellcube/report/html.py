"""The report page of a run: one self-contained HTML file, assembled and written atomically.

Example::

    from pathlib import Path
    from cellcube.report import write_report_html

    path = write_report_html(Path("runs/demo"))  # runs/demo/report.html

The page holds everything inline (PNG figures as ``data:`` URLs, the style sheet in the page, no
script, no font or file from elsewhere), so it opens anywhere, offline, and can be mailed alone.
It reads the run's ``config.yaml``, ``report.json``, ``pairs.jsonl``, training logs and the
cube's best checkpoint, embeds the test split through the run's embedding cache, and evaluates
identity and the cube on it (:mod:`cellcube.report.behaviour`). Its size does not grow with the
run: the examples, the lattice pictures and the map are seeded samples of the test split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cellcube.embed.splits import EmbeddedSplit, embed_splits
from cellcube.io import write_text
from cellcube.report import analysis
from cellcube.report.behaviour import cube_section, map_section, wins_section
from cellcube.report.markup import esc, para, section
from cellcube.report.results import curves_section, metrics_section, run_section, teachers_section
from cellcube.run.rundir import RunDir

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;
background:#fafbfc}
header{background:#1d3557;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}nav{padding:8px 32px;background:#e9eef5}
nav a{margin-right:16px;color:#1d3557;text-decoration:none}main{padding:8px 32px 40px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 20px;
margin:16px 0}h2{margin:4px 0 8px;font-size:18px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0}th,td{border-bottom:1px solid #e3e7ec;
padding:4px 10px;vertical-align:top;text-align:left}td.num{text-align:right;
white-space:nowrap}th{background:#f1f4f8}td ol{margin:0;padding-left:18px}img{max-width:100%}
small{color:#5b6573}.up{color:#1e7d3a;font-weight:600}.down{color:#b3372e;font-weight:600}
.row{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}code{font-size:13px}
"""

SECTIONS = (
    ("run", "Run"),
    ("metrics", "Test metrics"),
    ("curves", "Training curves"),
    ("wins", "Wins and losses"),
    ("cube", "The cube at work"),
    ("map", "Map"),
    ("teachers", "Teachers"),
)
"""The page's sections in order: (anchor, link text)."""


def build_page(run_dir: Path, emb: Mapping[str, EmbeddedSplit] | None = None) -> str:
    """The report page of the run in ``run_dir``, as HTML text.

    ``emb``: the run's embedded splits when the caller has them (``cellcube train`` does);
    otherwise they are embedded again through the run's cache. Raises a
    :class:`~cellcube.errors.CellcubeError` naming the file for a missing or corrupt run.
    """
    run = RunDir(Path(run_dir))
    cfg = run.read_config()
    report = run.read_report()
    if emb is None:
        emb = embed_splits(cfg, run.read_pairs(), progress=False)
    test = emb["test"]
    parts = [
        run_section(run, cfg, report),
        metrics_section(report),
        curves_section(run, list(report["models"])),
    ]
    if len(test):
        cube = run.load_model("cube", cfg, test.q.shape[1])
        changes = analysis.rank_changes(cube, test)
        parts += [
            wins_section(changes, test, cfg.seed),
            cube_section(cube, changes, test, cfg.seed),
            map_section(changes, test, cfg.seed),
        ]
    else:
        parts.append(section("wins", "Test examples", para("The test split is empty.")))
    parts.append(teachers_section(report))
    body = "".join(parts)
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS if f'id="{a}"' in body)
    name = run.root.resolve().name
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>cellcube run {esc(name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>cellcube run <code>{esc(name)}</code></h1>"
        f"<p>{esc(cfg.data.path or cfg.data.corpus)} · teacher {esc(cfg.teacher.label)} · "
        f"cellcube {esc(report['cellcube_version'])}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def write_report_html(
    run_dir: Path, out: Path | None = None, emb: Mapping[str, EmbeddedSplit] | None = None
) -> Path:
    """Write the report page of ``run_dir`` (:func:`build_page`) atomically to ``out``
    (default: the run's ``report.html``); the path written."""
    path = Path(out) if out is not None else RunDir(Path(run_dir)).report_html
    write_text(path, build_page(run_dir, emb))
    return path
