"""The body of ``cellcube ask`` (argument parsing is in :mod:`cellcube.cli.main`).

The run is loaded once (:meth:`cellcube.decode.answer.Answerer.load`); then the questions given on
the command line, the lines of a ``--file``, or, with neither, the lines typed at an interactive
prompt (line editing and history through ``readline``; Ctrl-D leaves) are answered one after the
other. Each answer is printed as text (the cube's top-k, and identity's top-1 when it differs)
or, with ``--json``, as one JSON object per line.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from cellcube.decode.answer import Answer, Answerer
from cellcube.errors import DataError

Show = Callable[[Answer], None]


def read_questions(path: Path) -> list[str]:
    """The non-blank lines of ``path``, one question each (stripped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise DataError(f"{path}: no questions found (one question per line)")
    return questions


def show_text(answer: Answer) -> None:
    """``Q: ...``, the cube's answers with their cosine scores, and identity's top-1 when it is
    not the cube's."""
    print(f"Q: {answer.question}")
    for rank, (text, score) in enumerate(answer.cube, 1):
        print(f"  {rank}. [{score:.3f}] {text}")
    if not answer.agree:
        text, score = answer.identity
        print(f"  identity's top-1 differs: [{score:.3f}] {text}")
    if answer.margin is not None:
        print(f"  confidence: top-1 minus top-2 cosine {answer.margin:.3f}")


def show_json(answer: Answer) -> None:
    """One JSON line: :meth:`Answer.to_json`."""
    print(json.dumps(answer.to_json(), ensure_ascii=False), flush=True)


def prompt_lines() -> Iterable[str]:
    """Lines typed at the ``?`` prompt (only shown when stdin is a terminal) until end of input
    (Ctrl-D); ``readline``, where Python has it, gives line editing and history."""
    with contextlib.suppress(ImportError):  # e.g. Windows without pyreadline
        import readline  # noqa: F401 - imported for its effect on input()
    prompt = "? " if sys.stdin.isatty() else ""
    while True:
        try:
            yield input(prompt)
        except EOFError:
            if prompt:
                print(file=sys.stderr)
            return


def interactive(answerer: Answerer, k: int, show: Show) -> None:
    """Answer each non-blank line typed at the prompt; a bad line is reported and skipped."""
    answerer.warm_up()
    if sys.stdin.isatty():
        print("type a question (Ctrl-D to leave)", file=sys.stderr)
    for line in prompt_lines():
        if not line.strip():
            continue
        try:
            show(answerer.answer([line.strip()], k)[0])
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)


def ask_command(
    run_dir: Path,
    questions: list[str],
    *,
    file: Path | None,
    k: int,
    bank: Path | None,
    as_json: bool,
) -> None:
    """``cellcube ask``: the questions, the lines of ``file``, or an interactive session."""
    if k < 1:
        raise DataError(f"-k must be >= 1, got {k}")
    if questions and file is not None:
        raise DataError("ask: give questions or --file, not both")
    if file is not None:
        questions = read_questions(file)
    answerer = Answerer.load(run_dir, bank)
    show = show_json if as_json else show_text
    if not questions:
        interactive(answerer, k, show)
        return
    for answer in answerer.answer(questions, k):
        show(answer)
