"""Command-line interface: ``cellcube train | evaluate | report | ask | data {import,...}``.

Every user error (bad config key, malformed data line, missing model, corrupt checkpoint) is a
:class:`~cellcube.errors.CellcubeError`; it is printed as one ``error: ...`` line on stderr and
the command exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cellcube import __version__
from cellcube.errors import CellcubeError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellcube",
        description="Train a 3D neural cellular automaton on teacher text embeddings.",
    )
    p.add_argument("--version", action="version", version=f"cellcube {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the cube and baselines, evaluate on the test split")
    t.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config (default: the built-in defaults, which configs/default.yaml spells "
        "out; with --resume, the run's own config.yaml)",
    )
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set cube.steps=8 (repeatable)",
    )
    t.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last checkpoints",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in --out instead of refusing",
    )

    e = sub.add_parser("evaluate", help="(re)write RUN_DIR/report.json and print the table")
    e.add_argument("run_dir", type=Path)

    r = sub.add_parser("report", help="write RUN_DIR/report.html, the run's report page")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--out", type=Path, default=None, help="page file (default RUN_DIR/report.html)")

    a = sub.add_parser(
        "ask",
        help="answer questions with a trained run's cube and phrase bank; without questions, "
        "an interactive prompt",
    )
    a.add_argument("run_dir", type=Path)
    a.add_argument(
        "questions", nargs="*", help="question text(s); none and no --file: ask interactively"
    )
    a.add_argument("--file", type=Path, default=None, help="a text file, one question per line")
    a.add_argument("--json", action="store_true", help="one JSON object per answer and line")
    a.add_argument("-k", type=int, default=5, help="number of answers to show (default 5)")
    a.add_argument(
        "--bank",
        type=Path,
        default=None,
        help="phrase bank file (.txt one answer per line, or a Q&A .jsonl/.csv) or a built-in "
        "bank (chitchat: its 223k messages); default: the run's answers",
    )
    _data_parser(sub)
    return p


def _data_parser(sub: argparse._SubParsersAction) -> None:
    """``cellcube data import | expand | inspect`` (see :mod:`cellcube.cli.data`)."""
    d = sub.add_parser("data", help="import, expand and inspect question/answer data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    helps = {
        "import": "read files / a directory (pairs, conversations) into one JSONL of pairs",
        "expand": "add teacher-selected question variants, quality scores and curriculum metadata",
        "inspect": "counts, length/quality plots, duplicates, identity baseline; PNG + Markdown",
    }
    for name, text in helps.items():
        c = dsub.add_parser(name, help=text)
        c.add_argument(
            "source",
            help="a data file or directory (.jsonl/.ndjson/.csv/.tsv/.yml), or a built-in "
            "corpus name (chatterbot, zaragoza, tech, chitchat)",
        )
        c.add_argument(
            "--out",
            type=Path,
            required=True,
            help="output directory" if name == "inspect" else "output .jsonl file",
        )
        c.add_argument(
            "--config", type=Path, default=None, help="YAML config (teacher, cache, data)"
        )
        c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        c.add_argument(
            "--skip-invalid", action="store_true", help="skip and count malformed records"
        )
        c.add_argument("--context-turns", type=int, default=None, metavar="N")
    e = dsub.choices["expand"]
    e.add_argument("--variants", type=int, default=3, help="variants kept per question (3)")
    e.add_argument("--min-similarity", type=float, default=0.75, help="teacher cosine (0.75)")
    e.add_argument("--max-similarity", type=float, default=0.98, help="teacher cosine (0.98)")
    e.add_argument("--duplicate-threshold", type=float, default=0.95, help="(0.95)")
    e.add_argument("--min-quality", type=float, default=0.0, help="drop pairs below (0)")
    i = dsub.choices["inspect"]
    i.add_argument("--near-threshold", type=float, default=0.95, help="teacher cosine (0.95)")


def _train(args: argparse.Namespace) -> None:
    from cellcube.config import load_config
    from cellcube.eval.report import format_report
    from cellcube.run.pipeline import train_run
    from cellcube.run.rundir import RunDir
    from cellcube.train.distributed import is_rank_zero

    run = RunDir(args.out)
    if args.resume and args.config is None:
        cfg = run.read_config(args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)  # None: the built-in defaults
    report = train_run(cfg, run.root, resume=args.resume, overwrite=args.overwrite)
    if not is_rank_zero():  # under torchrun, rank 0 alone prints
        return
    print(format_report(report))
    print(f"run saved to {run.root} (report: {run.report}, page: {run.report_html})")


def _evaluate(args: argparse.Namespace) -> None:
    from cellcube.eval.report import format_report
    from cellcube.run.pipeline import evaluate_run

    print(format_report(evaluate_run(args.run_dir)))


def _report(args: argparse.Namespace) -> None:
    from cellcube.report import write_report_html

    print(write_report_html(args.run_dir, args.out))


def _ask(args: argparse.Namespace) -> None:
    from cellcube.cli.ask import ask_command

    ask_command(
        args.run_dir,
        args.questions,
        file=args.file,
        k=args.k,
        bank=args.bank,
        as_json=args.json,
    )


def _data(args: argparse.Namespace) -> None:
    from cellcube.cli.data import data_command
    from cellcube.config import load_config
    from cellcube.data.expand import ExpandOptions

    overrides = list(args.overrides)
    if args.skip_invalid:
        overrides.append("data.skip_invalid=true")
    if args.context_turns is not None:
        overrides.append(f"data.context_turns={args.context_turns}")
    cfg = load_config(args.config, overrides)  # config None: the built-in defaults
    options = None
    if args.data_command == "expand":
        options = ExpandOptions(
            variants=args.variants,
            min_similarity=args.min_similarity,
            max_similarity=args.max_similarity,
            duplicate_threshold=args.duplicate_threshold,
            min_quality=args.min_quality,
        )
    near = getattr(args, "near_threshold", 0.95)  # inspect only
    data_command(
        args.data_command, args.source, args.out, cfg, options=options, near_threshold=near
    )


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError escaping a command: the file at fault, then the system's reason."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    line = f"{' -> '.join(names)}: {reason}" if names else f"I/O error: {reason}"
    return " ".join(line.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellcube`` console script; returns the process exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "ask" and not any(e.startswith("-") for e in extra):
        args.questions += extra  # questions after an option: `ask RUN --json "q1" "q2"`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        commands = {"train": _train, "evaluate": _evaluate, "report": _report, "ask": _ask}
        {**commands, "data": _data}[args.command](args)
    except CellcubeError as exc:
        if not getattr(exc, "quiet", False):  # e.g. other ranks repeating rank 0's error
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only or vanished directory, ... outside atomic_open
        print(f"error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
