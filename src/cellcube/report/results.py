"""The report page's sections read from the run's files: the run, the test metrics with their
intervals and paired differences, the training curves, and a multi-teacher run's teachers.

Every number here is the one ``report.json`` holds (written by
:func:`cellcube.eval.evaluate.evaluate`) or the run's config; nothing is recomputed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cellcube.config import Config
from cellcube.eval.plots import plot_training
from cellcube.report.figures import png_tag
from cellcube.report.markup import esc, number, para, section, table, with_interval
from cellcube.run.rundir import RunDir


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"cube": {"steps": 4}}`` -> ``{"cube.steps": 4}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(cfg: Config) -> list[tuple[str, Any, Any]]:
    """``(key, this run's value, default value)`` for every config key that differs from the
    built-in default (``Config()``, which ``configs/default.yaml`` spells out)."""
    now, default = _flat(cfg.model_dump(mode="json")), _flat(Config().model_dump(mode="json"))
    keys = dict.fromkeys([*now, *default])
    return [(k, now.get(k, "-"), default.get(k, "-")) for k in keys if now.get(k) != default.get(k)]


def _data_source(cfg: Config) -> str:
    d = cfg.data
    source = f"file {d.path}" if d.path is not None else f"built-in corpus <b>{esc(d.corpus)}</b>"
    if d.path is not None:
        source = esc(source)
    capped = f", train capped at {d.max_train} pairs (data.max_train)" if d.max_train else ""
    return f"{source}, mode {esc(cfg.mode)}{esc(capped)}"


def run_section(run: RunDir, cfg: Config, report: dict[str, Any]) -> str:
    """Data source and split sizes, teacher, cube shape, code version, the config keys that
    differ from the default, and the wall time of each training stage the run recorded."""
    c = cfg.cube
    lattice = "×".join(str(n) for n in c.lattice)
    others = ", ".join(t.label for t in cfg.teachers.others)
    facts = [
        ["run directory", esc(run.root.resolve())],
        ["data", _data_source(cfg)],
        [
            "split sizes",
            f"{report['n_train']:,} train / {report['n_val']:,} val / {report['n_test']:,} test "
            f"pairs; {report['n_candidates']:,} distinct test answers to rank",
        ],
        ["teacher", f"<b>{esc(cfg.teacher.label)}</b> <small>{esc(report['teacher'])}</small>"],
        *([["other teachers", esc(others)]] if others else []),
        [
            "cube",
            f"{lattice} cells × {c.channels} channels, {c.steps} steps, "
            f"{c.neighbourhood}-neighbourhood, {esc(c.boundary)} walls, {esc(c.reshaper)} reshaper",
        ],
        ["seed", str(cfg.seed)],
        ["code version", f"cellcube {esc(report['cellcube_version'])}"],
    ]
    changes = config_changes(cfg)
    changed = (
        table(
            ["config key", "this run", "default"],
            [[f"<code>{esc(k)}</code>", esc(v), esc(d)] for k, v, d in changes],
            numeric=(),
        )
        if changes
        else para("Every config key has its default value.")
    )
    return section(
        "run",
        "The run",
        table(["", ""], facts, numeric=()),
        "<h3>Config keys that differ from the default</h3>",
        changed,
        "<h3>Wall time per stage</h3>",
        _wall_time(report),
    )


def _wall_time(report: dict[str, Any]) -> str:
    """Wall seconds of each stage of the job that wrote the report, then of each model's
    training (ridge: its fit), as the run recorded them."""
    stages = report.get("stage_seconds") or {}
    rows = [[esc(stage), number(sec, "{:.1f}")] for stage, sec in stages.items()]
    if stages:
        rows.append(["<b>total</b>", f"<b>{sum(stages.values()):.1f}</b>"])
    models = [
        [f"training of {esc(name)}", number(m.get("train_seconds"), "{:.1f}")]
        for name, m in report["models"].items()
        if m.get("train_seconds")
    ]
    if not rows and not models:
        return para("This run recorded no stage or training times.")
    return table(["stage", "seconds"], rows + models)


def _ks(report: dict[str, Any]) -> list[int]:
    first = next(iter(report["models"].values()))
    return sorted(int(k.split("@")[1]) for k in first if k.startswith("recall@"))


def metrics_section(report: dict[str, Any]) -> str:
    """Every model's test metrics with their 95% intervals, best MRR first, and the cube's
    paired differences with a plain verdict: higher, lower, or within the noise."""
    ks = _ks(report)
    rows = []
    for name, m in sorted(report["models"].items(), key=lambda kv: -kv[1]["mrr"]):
        ci = m.get("ci", {})
        label = f"<b>{esc(name)}</b>" if name == "cube" else esc(name)
        rows.append(
            [
                label,
                with_interval(m["mrr"], ci.get("mrr")),
                *[with_interval(m[f"recall@{k}"], ci.get(f"recall@{k}")) for k in ks],
                f"{m['cosine']:.3f}",
                number(m.get("val_mrr")),
                f"{m['params']:,}",
                number(m.get("train_seconds"), "{:.1f}"),
            ]
        )
    head = ["model", "test MRR", *[f"R@{k}" for k in ks], "cosine", "val MRR", "params", "train s"]
    note = (
        "Test split: {n_test:,} questions ranked against {n_candidates:,} distinct answers. "
        "Brackets: 95% bootstrap interval over test pairs. Cosine rewards collapse "
        "(mean_answer); models are compared on MRR and Recall@k."
    ).format(**report)
    return section("metrics", "Test metrics", para(note), table(head, rows), _paired(report))


def _verdict(ci: list[float]) -> str:
    if ci[0] > 0:
        return '<span class="up">cube higher</span>'
    if ci[1] < 0:
        return '<span class="down">cube lower</span>'
    return "within the noise"


def _paired(report: dict[str, Any]) -> str:
    paired = report.get("paired")
    if not paired:
        return ""
    rows = [
        [
            f"cube − {esc(name)}",
            f"{d['mean']:+.3f}",
            f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]",
            f"{d['se']:.3f}",
            _verdict(d["ci"]),
        ]
        for name, d in paired.items()
    ]
    boot = report.get("bootstrap", {})
    head = "<h3>Cube minus each model (test MRR, paired bootstrap, {} resamples)</h3>".format(
        boot.get("resamples", "?")
    )
    return head + table(["difference", "mean", "95% CI", "SE", "verdict"], rows)


def curves_section(run: RunDir, model_names: list[str]) -> str:
    """Validation MRR and training loss per epoch of each trained model: the run's
    ``plots/training.png``, drawn again from the training logs when it is missing."""
    if run.plot.is_file():
        png = run.plot.read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "training.png"
            plot_training({name: run.model(name).metrics_csv for name in model_names}, out)
            png = out.read_bytes()
    return section(
        "curves",
        "Training curves",
        para("Validation MRR (left; early stopping keeps the best epoch) and training loss."),
        png_tag(png, "validation MRR and training loss per epoch"),
    )


def teachers_section(report: dict[str, Any]) -> str:
    """A multi-teacher run: each teacher's own retrieval and the cube's in that teacher's space,
    the teachers' mean weights, and the ensembles (empty for a single-teacher run)."""
    teachers = report.get("teachers")
    if not teachers:
        return ""
    ks = [int(k.split("@")[1]) for k in teachers["ensemble"]["cube"] if k.startswith("recall@")]

    def cells(m: dict[str, float]) -> list[str]:
        return [f"{m['mrr']:.3f}", *[f"{m[f'recall@{k}']:.3f}" for k in ks]]

    rows = []
    for label, t in teachers["per_teacher"].items():
        space = f"{esc(label)} ({t['dim']}-d)"
        rows.append([space, "teacher", *cells(t["teacher"]), f"{t['mean_weight']:.3f}"])
        rows.append(["", "cube", *cells(t["cube"]), ""])
    for who in ("teacher", "cube"):
        rows.append(
            ["ensemble" if who == "teacher" else "", who, *cells(teachers["ensemble"][who]), ""]
        )
    head = ["space", "model", "MRR", *[f"R@{k}" for k in ks], "mean weight"]
    return section(
        "teachers",
        "Teachers",
        para(f"Weighting: <b>{esc(teachers['weighting'])}</b>; each row ranks in its own space."),
        table(head, rows, numeric=range(2, len(head))),
    )
