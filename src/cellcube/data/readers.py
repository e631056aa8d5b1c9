"""The one reader stack: question/answer pairs from user files and directories.

Everything that reads user data goes through :func:`read_path`: training (``data.path``),
``cellcube data import | expand | inspect`` and the decoder's phrase-bank file. Formats, chosen
by suffix (case-insensitive):

* **pair records** in JSON Lines (``.jsonl``/``.ndjson``, one object per line) or CSV/TSV
  (``.csv``/``.tsv``, a header row naming the columns): ``data.question_field`` and
  ``data.answer_field`` name the two texts; optional metadata ``domain``, ``variant_of`` (the
  source question of a synthetic variant, see :mod:`cellcube.data.expand`), ``split``
  (``train``/``val``/``test``, pinning the pair's split) and ``quality`` (a number);
* **multi-turn conversations**: every two consecutive turns make a pair (turn i is the question,
  turn i+1 its answer), carrying up to ``data.context_turns`` turns before the question. A JSONL
  record ``{"turns": ["...", "...", ...]}`` or ``{"messages": [{"role": "user", "content":
  "..."}, ...]}`` (``system`` messages are not turns), or YAML (``.yml``/``.yaml``) in the
  chatterbot layout ``conversations: [[turn, turn, ...], ...]``;
* **directories**: every supported file below the directory (recursively, in path order; hidden
  files are skipped and other suffixes listed in the report as ignored).

Strict mode (the default) raises one :class:`~cellcube.errors.DataError` line at the first
malformed record, naming ``file:line`` and the field. Skip mode (``data.skip_invalid``) skips
malformed records and unreadable files instead and lists every skip in the
:class:`ImportReport`, by reason and with its ``file:line``: nothing is lost silently. Texts are
stripped; exact duplicate (question, answer) pairs are dropped (first kept) and counted.

Example::

    from cellcube.config import DataConfig
    from cellcube.data import read_path

    pairs, report = read_path("my_data/", DataConfig(skip_invalid=True))
    print(report.summary())  # "120 pairs from 3 file(s); 2 malformed record(s) skipped (...)"
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cellcube.config import DataConfig
from cellcube.data.conversations import conversation_pairs, read_yaml, record_turns
from cellcube.data.parse import (
    BadRecord,
    one_line,
    optional_number,
    optional_text,
    parse_json_object,
    read_bytes,
    read_text,
    text_field,
)
from cellcube.data.records import QAPair, dedupe
from cellcube.data.split import SPLIT_NAMES
from cellcube.errors import DataError

__all__ = ["IMPORT_SUFFIXES", "ImportReport", "Skip", "fold_context", "read_path"]

IMPORT_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".csv", ".tsv", ".yml", ".yaml")


@dataclass(frozen=True)
class Skip:
    """A record (or whole file) skipped in skip mode: where, why (category) and the message."""

    where: str
    reason: str
    message: str


@dataclass
class ImportReport:
    """What a read found, kept and skipped; :meth:`summary` is the line shown to users."""

    files: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    n_pairs: int = 0
    n_duplicates: int = 0
    skipped: list[Skip] = field(default_factory=list)

    @property
    def skip_counts(self) -> dict[str, int]:
        """Skipped records per reason, most frequent first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def summary(self) -> str:
        """One line: pairs kept, files read, duplicates dropped, skips by reason."""
        parts = [f"{self.n_pairs} pairs from {len(self.files)} file(s)"]
        if self.n_duplicates:
            parts.append(f"{self.n_duplicates} exact duplicate(s) dropped")
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in self.skip_counts.items())
            parts.append(f"{len(self.skipped)} malformed record(s) skipped ({reasons})")
        if self.ignored_files:
            parts.append(f"{len(self.ignored_files)} unsupported file(s) ignored")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, every skip with its ``file:line``."""
        return {
            "files": self.files,
            "ignored_files": self.ignored_files,
            "n_pairs": self.n_pairs,
            "n_duplicates": self.n_duplicates,
            "n_skipped": len(self.skipped),
            "skip_counts": self.skip_counts,
            "skipped": [
                {"where": s.where, "reason": s.reason, "message": s.message} for s in self.skipped
            ],
        }


def read_path(
    path: str | Path, data: DataConfig | None = None
) -> tuple[list[QAPair], ImportReport]:
    """Read pairs from a file or a directory of files (see the module docstring for formats).

    Args:
        path: a data file or a directory.
        data: the validated data config; its ``question_field``, ``answer_field``,
            ``context_turns`` and ``skip_invalid`` apply (``DataConfig()`` when None).

    Returns:
        The pairs (conversation context not yet folded, see :func:`fold_context`) and the
        report of files read, duplicates dropped and records skipped.

    Raises:
        DataError: a missing path, an unsupported file, no pair at all (in both modes), or in
            strict mode the first malformed record or unreadable file.
    """
    data = data if data is not None else DataConfig()
    root = Path(path).expanduser()
    if "\x00" in str(root):
        raise DataError(f"{str(root)!r}: invalid file name (NUL byte)")
    report = ImportReport()
    pairs: list[QAPair] = []
    for f in _data_files(root, report):
        report.files.append(str(f))
        try:
            for item in _read_file(f, data):
                if isinstance(item, QAPair):
                    pairs.append(item)
                elif data.skip_invalid:
                    report.skipped.append(Skip(item.where, item.reason, item.message))
                else:
                    raise DataError(item.message)
        except DataError as exc:  # a whole-file problem (encoding, header, YAML syntax)
            if not data.skip_invalid:
                raise
            report.skipped.append(Skip(str(f), "unreadable file", str(exc)))
    kept = dedupe(pairs)
    report.n_duplicates = len(pairs) - len(kept)
    report.n_pairs = len(kept)
    if not kept:
        more = f" ({report.summary()})" if report.skipped else ""
        raise DataError(f"{root}: no question/answer pairs found{more}")
    return kept, report


def fold_context(pairs: list[QAPair]) -> list[QAPair]:
    """Pairs whose question text is their context turns followed by the question, one per line.

    This is how ``data.context_turns`` reaches the teacher: the encoder sees the conversation so
    far, and the cube maps that to the next turn. Pairs without context are returned unchanged.
    """
    return [
        replace(p, question="\n".join((*p.context, p.question))) if p.context else p for p in pairs
    ]


def _data_files(root: Path, report: ImportReport) -> list[Path]:
    """The files to read under ``root`` (itself when a file); other suffixes go to the report."""
    if not root.is_dir():
        if not root.exists():
            raise DataError(f"{root}: no such file")
        if root.suffix.lower() not in IMPORT_SUFFIXES:
            raise DataError(
                f"{root}: unsupported data file type {root.suffix.lower() or '(no suffix)'!r} "
                f"(supported: {', '.join(IMPORT_SUFFIXES)})"
            )
        return [root]
    files = []
    for f in sorted(root.rglob("*")):
        if not f.is_file() or any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        if f.suffix.lower() in IMPORT_SUFFIXES:
            files.append(f)
        else:
            report.ignored_files.append(str(f))
    if not files:
        raise DataError(
            f"{root}: no data files in directory (supported: {', '.join(IMPORT_SUFFIXES)})"
        )
    return files


def _read_file(path: Path, data: DataConfig) -> Iterator[QAPair | BadRecord]:
    """Every record of one file as a pair or a :class:`BadRecord`; a whole-file problem raises
    :class:`DataError`."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, data)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, data, "," if suffix == ".csv" else "\t")
    else:
        yield from read_yaml(path, data.context_turns)


def _pair(where: str, origin: str, record: dict[str, Any], data: DataConfig) -> QAPair:
    """A pair record (JSON object or CSV row) as a QAPair; metadata fields are optional."""
    for name in (data.question_field, data.answer_field):
        if name not in record:
            raise BadRecord(where, "missing field", f"missing field '{name}'")
    question = text_field(where, record[data.question_field], data.question_field)
    answer = text_field(where, record[data.answer_field], data.answer_field)
    split = optional_text(where, record, "split")
    if split is not None and split not in SPLIT_NAMES:
        raise BadRecord(
            where, "invalid split", f"field 'split' must be one of train, val, test, got {split!r}"
        )
    return QAPair(
        question,
        answer,
        origin,
        domain=optional_text(where, record, "domain"),
        variant_of=optional_text(where, record, "variant_of"),
        split=split,
        quality=optional_number(where, record, "quality"),
    )


def _read_jsonl(path: Path, data: DataConfig) -> Iterator[QAPair | BadRecord]:
    """JSON Lines: pair records and conversation records, one per line; blank lines skipped.

    Lines are split on ``\\n`` only (``str.splitlines`` would also split on U+2028, which JSON
    allows raw inside strings), and each line is decoded on its own, so one line of invalid
    UTF-8 is one bad record.
    """
    for lineno, line_bytes in enumerate(read_bytes(path).split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            yield BadRecord(where, "invalid UTF-8", "invalid UTF-8")
            continue
        if not line.strip():
            continue
        origin = f"{path.name}:{lineno}"
        try:
            record = parse_json_object(where, line)
            if "turns" in record or "messages" in record:
                turns = record_turns(where, record)
                yield from conversation_pairs(turns, origin, data.context_turns)
            else:
                yield _pair(where, origin, record, data)
        except BadRecord as bad:
            yield bad


def _csv_header(path: Path, row: list[str], data: DataConfig) -> list[str]:
    """The column names of a header row; the two text columns must appear exactly once."""
    header = [name.strip() for name in row]
    for name in (data.question_field, data.answer_field):
        count = header.count(name)
        if count != 1:
            problem = "missing column" if count == 0 else f"column appears {count} times:"
            raise DataError(f"{path}: {problem} '{name}' (columns: {', '.join(header)})")
    return header


def _read_csv(path: Path, data: DataConfig, delimiter: str) -> Iterator[QAPair | BadRecord]:
    """CSV/TSV pairs with a header row. Fields may be quoted (RFC 4180); blank lines are
    skipped; a record is reported at the physical line where it starts (the header is line 1)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The csv module cannot resume inside a broken quoted field: the rest is unreadable.
            where = f"{path}:{reader.line_num}"
            raise DataError(f"{where}: malformed CSV ({one_line(str(exc))})") from None
        lineno, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        where = f"{path}:{lineno}"
        if header is None:
            header = _csv_header(path, row, data)
        elif len(row) > len(header):
            yield BadRecord(
                where,
                "too many columns",
                f"expected {len(header)} columns, got {len(row)} "
                f"(quote fields that contain {delimiter!r})",
            )
        else:
            try:
                record = dict(zip(header, row, strict=False))  # a short row lacks fields
                yield _pair(where, f"{path.name}:{lineno}", record, data)
            except BadRecord as bad:
                yield bad
    if header is None:
        raise DataError(f"{path}: empty file (a header row is needed)")
