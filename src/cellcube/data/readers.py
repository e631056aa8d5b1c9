"""Importing question/answer pairs from user files: pairs, conversations and whole directories.

:mod:`cellcube.data.pairs` reads one pair file strictly. This module is what ``data.path`` and
``cellcube data import`` go through; it adds

* **multi-turn conversations**: every two consecutive turns make a pair (turn i is the question,
  turn i+1 its answer), optionally carrying the ``context_turns`` turns before the question.
  Formats: a JSONL record ``{"turns": ["...", "...", ...]}`` or
  ``{"messages": [{"role": "user", "content": "..."}, ...]}`` (``system`` messages are not
  turns), and YAML (``.yml``/``.yaml``) in the chatterbot layout
  ``conversations: [[turn, turn, ...], ...]``;
* **pair records with metadata**: JSONL/CSV/TSV pairs may carry ``domain``, ``variant_of`` (the
  source question of a synthetic variant, see :mod:`cellcube.data.expand`) and ``split``
  (``train``/``val``/``test``, pinning the pair's split);
* **directories**: every supported file below the directory (recursively, in path order; hidden
  files and other suffixes are listed in the report as ignored);
* **skip mode**: by default the first malformed record raises one :class:`DataError` naming
  ``file:line`` and the fault. With ``skip_invalid=True`` malformed records (and unreadable
  files) are skipped instead and every skip is counted in the :class:`ImportReport`, by reason
  and with its ``file:line``: nothing is lost silently.

Exact duplicate pairs are dropped (first kept) and counted in the report too.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from cellcube.data.pairs import QAPair, _one_line, _read_text, _type_name, _unique_object
from cellcube.errors import DataError

__all__ = ["IMPORT_SUFFIXES", "ImportReport", "Skip", "fold_context", "import_path"]

IMPORT_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".csv", ".tsv", ".yml", ".yaml")
_SPLITS = ("train", "val", "test")
_UTF8_BOM = b"\xef\xbb\xbf"


class _Bad(Exception):
    """One malformed record: ``reason`` is its category (for counts), ``message`` the full line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Skip:
    """A record (or whole file) skipped in skip mode: where, why (category) and the message."""

    where: str
    reason: str
    message: str


@dataclass
class ImportReport:
    """What an import read, kept and skipped; :meth:`summary` is the line shown to users."""

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


def import_path(
    path: str | Path,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    context_turns: int = 0,
    skip_invalid: bool = False,
) -> tuple[list[QAPair], ImportReport]:
    """Read pairs from a file or a directory of files (see the module docstring for formats).

    ``question_field``/``answer_field`` name the JSON keys / CSV columns of pair records;
    ``context_turns`` is how many previous turns a conversation pair carries in ``context``.
    Strict mode raises :class:`DataError` at the first malformed record; ``skip_invalid`` skips
    and reports it. No pair at all is a DataError in both modes.
    """
    if context_turns < 0:
        raise DataError(f"context_turns must be >= 0, got {context_turns}")
    root = Path(path).expanduser()
    report = ImportReport()
    if root.is_dir():
        files = []
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if not f.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            if f.suffix.lower() in IMPORT_SUFFIXES:
                files.append(f)
            else:
                report.ignored_files.append(str(f))
        if not files:
            raise DataError(
                f"{root}: no data files in directory (supported: {', '.join(IMPORT_SUFFIXES)})"
            )
    else:
        if not root.exists():
            raise DataError(f"{root}: no such file")
        if root.suffix.lower() not in IMPORT_SUFFIXES:
            raise DataError(
                f"{root}: unsupported data file type {root.suffix.lower() or '(no suffix)'!r} "
                f"(supported: {', '.join(IMPORT_SUFFIXES)})"
            )
        files = [root]
    opts = _Options(question_field, answer_field, context_turns)
    pairs: list[QAPair] = []
    for f in files:
        report.files.append(str(f))
        try:
            for item in _read_file(f, opts):
                if isinstance(item, _Bad):
                    if not skip_invalid:
                        raise DataError(item.message)
                    report.skipped.append(
                        Skip(item.message.split(": ", 1)[0], item.reason, item.message)
                    )
                else:
                    pairs.append(item)
        except DataError as exc:  # a problem with the whole file (encoding, header, YAML syntax)
            if not skip_invalid:
                raise
            report.skipped.append(Skip(str(f), "unreadable file", str(exc)))
    unique = list(dict.fromkeys(pairs))  # QAPair equality: (question, answer, origin)
    seen: set[tuple[str, str]] = set()
    kept: list[QAPair] = []
    for p in unique:
        if (p.question, p.answer) not in seen:
            seen.add((p.question, p.answer))
            kept.append(p)
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


# --------------------------------------------------------------------------------------------
# Readers: each yields QAPair or _Bad per record; a whole-file problem raises DataError.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    question_field: str
    answer_field: str
    context_turns: int


def _read_file(path: Path, opts: _Options) -> Iterator[QAPair | _Bad]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, opts)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, opts, "," if suffix == ".csv" else "\t")
    else:
        yield from _read_yaml(path, opts)


_MISSING = object()
_STR_TAG = "tag:yaml.org,2002:str"


def _text(where: str, value: object, name: str) -> str:
    """``value`` stripped, or :class:`_Bad` naming ``name`` when it is not a usable text."""
    if value is _MISSING:
        raise _Bad("missing field", f"{where}: missing field '{name}'")
    if not isinstance(value, str):
        raise _Bad(
            "wrong type", f"{where}: field '{name}' must be a string, got {_type_name(value)}"
        )
    text = value.strip()
    if not text:
        raise _Bad("empty field", f"{where}: field '{name}' is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(
            "invalid unicode", f"{where}: field '{name}' is not valid Unicode (unpaired surrogate)"
        ) from None
    return text


def _optional(where: str, record: dict[str, Any], name: str) -> str | None:
    """An optional metadata field: absent, null or empty is None; another type is _Bad."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _text(where, value, name)


def _pair(where: str, origin: str, record: dict[str, Any], opts: _Options) -> QAPair:
    """A pair record (JSON object or CSV row) as a QAPair; metadata fields are optional."""
    for name in (opts.question_field, opts.answer_field):
        if name not in record:
            raise _Bad("missing field", f"{where}: missing field '{name}'")
    question = _text(where, record[opts.question_field], opts.question_field)
    answer = _text(where, record[opts.answer_field], opts.answer_field)
    split = _optional(where, record, "split")
    if split is not None and split not in _SPLITS:
        raise _Bad(
            "invalid split",
            f"{where}: field 'split' must be one of train, val, test, got {split!r}",
        )
    return QAPair(
        question,
        answer,
        origin,
        domain=_optional(where, record, "domain"),
        variant_of=_optional(where, record, "variant_of"),
        split=split,
    )


def _conversation_pairs(
    turns: list[tuple[str, str | _Bad]], origin: str, opts: _Options
) -> Iterator[QAPair | _Bad]:
    """Consecutive-turn pairs of one conversation; a bad turn is yielded and breaks the chain.

    ``turns`` holds ``(where, text or _Bad)``. Context is the up to ``context_turns`` valid turns
    before the question in the same unbroken run.
    """
    run: list[str] = []
    for _, turn in turns:
        if isinstance(turn, _Bad):
            yield turn
            run = []
            continue
        if run:
            context = tuple(run[-1 - opts.context_turns : -1]) if opts.context_turns else ()
            yield QAPair(run[-1], turn, origin, context=context)
        run.append(turn)


def _read_jsonl(path: Path, opts: _Options) -> Iterator[QAPair | _Bad]:
    """JSON Lines: pair records and conversation records, one per line; blank lines skipped."""
    raw = _read_bytes(path)
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            yield _Bad("invalid UTF-8", f"{where}: invalid UTF-8")
            continue
        if not line.strip():
            continue
        try:
            record = _parse_json(where, line)
            origin = f"{path.name}:{lineno}"
            if "turns" in record or "messages" in record:
                yield from _conversation_pairs(_record_turns(where, record), origin, opts)
            else:
                yield _pair(where, origin, record, opts)
        except _Bad as bad:
            yield bad


def _parse_json(where: str, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line, object_pairs_hook=_unique_object)
    except json.JSONDecodeError as exc:
        raise _Bad("invalid JSON", f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise _Bad("invalid JSON", f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # _DuplicateKey, or an integer beyond Python's digit limit
        if type(exc).__name__ == "_DuplicateKey":
            raise _Bad(
                "duplicate key", f"{where}: duplicate key {str(exc)!r} in one record"
            ) from None
        raise _Bad("invalid JSON", f"{where}: not valid JSON ({_one_line(str(exc))})") from None
    if not isinstance(record, dict):
        raise _Bad("not an object", f"{where}: expected a JSON object, got {_type_name(record)}")
    return record


def _record_turns(where: str, record: dict[str, Any]) -> list[tuple[str, str | _Bad]]:
    """The turns of a ``turns`` / ``messages`` record, each a text or a _Bad naming its index."""
    key = "turns" if "turns" in record else "messages"
    items = record[key]
    if not isinstance(items, list):
        raise _Bad("wrong type", f"{where}: field '{key}' must be a list, got {_type_name(items)}")
    if len(items) < 2:
        raise _Bad(
            "short conversation", f"{where}: field '{key}' needs at least 2 turns, got {len(items)}"
        )
    out: list[tuple[str, str | _Bad]] = []
    for i, item in enumerate(items):
        name = f"{key}[{i}]"
        try:
            if key == "messages":
                if not isinstance(item, dict):
                    raise _Bad(
                        "wrong type", f"{where}: {name} must be an object, got {_type_name(item)}"
                    )
                if item.get("role") == "system":
                    continue
                content = item.get("content", _MISSING)
                out.append((where, _text(where, content, f"{name}.content")))
            else:
                out.append((where, _text(where, item, name)))
        except _Bad as bad:
            out.append((where, bad))
    return out


def _read_csv(path: Path, opts: _Options, delimiter: str) -> Iterator[QAPair | _Bad]:
    """CSV/TSV pairs with a header row (column names from ``opts``); metadata columns optional."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The csv module cannot resume inside a broken quoted field: the rest is unreadable.
            raise DataError(
                f"{path}:{reader.line_num}: malformed CSV ({_one_line(str(exc))})"
            ) from None
        lineno, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        where = f"{path}:{lineno}"
        if header is None:
            header = [name.strip() for name in row]
            for name in (opts.question_field, opts.answer_field):
                count = header.count(name)
                if count != 1:
                    problem = "missing column" if count == 0 else f"column appears {count} times:"
                    raise DataError(f"{path}: {problem} '{name}' (columns: {', '.join(header)})")
            continue
        if len(row) > len(header):
            yield _Bad(
                "too many columns",
                f"{where}: expected {len(header)} columns, got {len(row)} "
                f"(quote fields that contain {delimiter!r})",
            )
            continue
        try:
            yield _pair(where, f"{path.name}:{lineno}", dict(zip(header, row, strict=False)), opts)
        except _Bad as bad:
            yield bad
    if header is None:
        raise DataError(f"{path}: empty file (a header row is needed)")


def _read_yaml(path: Path, opts: _Options) -> Iterator[QAPair | _Bad]:
    """chatterbot-style YAML: ``conversations`` is a list of lists of turns (line per turn)."""
    text = _read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise DataError(f"{where}: {_one_line(problem)}") from None
    except RecursionError:
        raise DataError(f"{path}: invalid YAML (nested too deeply)") from None
    convs = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "conversations":
                convs = value
    if not isinstance(convs, yaml.SequenceNode):
        raise DataError(f"{path}: expected a mapping with a 'conversations' list")
    for conv in convs.value:
        where = f"{path}:{conv.start_mark.line + 1}"
        if not isinstance(conv, yaml.SequenceNode):
            yield _Bad("wrong type", f"{where}: a conversation must be a list of turns")
            continue
        if len(conv.value) < 2:
            yield _Bad("short conversation", f"{where}: a conversation needs at least 2 turns")
            continue
        turns: list[tuple[str, str | _Bad]] = []
        for node in conv.value:
            turn_where = f"{path}:{node.start_mark.line + 1}"
            if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
                try:
                    turns.append((turn_where, _text(turn_where, node.value, "turn")))
                except _Bad as bad:
                    turns.append((turn_where, bad))
                continue
            # 42, true, null, a list or a mapping: not a turn of text.
            kind = node.tag.rsplit(":", 1)[-1] if isinstance(node, yaml.ScalarNode) else node.id
            message = f"{turn_where}: a turn must be a string, got {kind}"
            turns.append((turn_where, _Bad("wrong type", message)))
        yield from _conversation_pairs(turns, f"{path.name}:{conv.start_mark.line + 1}", opts)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
