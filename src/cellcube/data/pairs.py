"""Question/answer data: loading files and built-in corpora, and splitting them.

cellcube learns to map the embedding of a question to the embedding of its answer, so all of its
training data is a list of :class:`QAPair`. This module produces those lists from user files
(JSONL/NDJSON, CSV, TSV) and from built-in corpora (``chatterbot`` and ``zaragoza``, shipped as
installed Python packages, and ``tech``, shipped with cellcube; no network access), and splits
them into train/val/test.

Design points:

* User files are validated strictly. Every malformed record raises a one-line
  :class:`~cellcube.errors.DataError` naming the file, the 1-based line and the field at fault,
  never a traceback, because the CLI shows that message to the user as is.
* Texts are stripped of surrounding whitespace; exact duplicate pairs are dropped (first kept).
* :func:`split_pairs` is deterministic given the seed (independent of input order and of Python's
  hash seed) and *grouped by answer text*: every pair sharing an answer lands in the same split, so
  the validation and test answers are never seen during training.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cellcube.errors import ConfigError, DataError

__all__ = [
    "BUILTIN_CORPORA",
    "QAPair",
    "Split",
    "autoencoder_pairs",
    "load_builtin",
    "load_csv",
    "load_jsonl",
    "load_pairs",
    "split_dataset",
    "split_pairs",
]


@dataclass(frozen=True)
class QAPair:
    """One training example: a question, its answer, and where it came from.

    ``origin`` is provenance for reports and error messages, e.g. ``"data.jsonl:12"``,
    ``"chatterbot:ai.yml"`` or ``"zaragoza:bygglov-001"``. ``domain`` is an optional topic label
    (the zaragoza category, the tech corpus domain); it is metadata only, so it takes no part in
    equality or hashing, and is None where the source has none.
    """

    question: str
    answer: str
    origin: str
    domain: str | None = field(default=None, compare=False)
    # Metadata from imported / expanded files (see cellcube.data.readers, cellcube.data.expand);
    # like
    # ``domain`` it takes no part in equality. ``variant_of``: the source question of a synthetic
    # variant (None for an original pair). ``split``: a split pinned by the file ("train", "val",
    # "test"). ``context``: previous conversation turns, oldest first.
    variant_of: str | None = field(default=None, compare=False)
    split: str | None = field(default=None, compare=False)
    context: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Split:
    """A train/validation/test partition of question/answer pairs."""

    train: list[QAPair]
    val: list[QAPair]
    test: list[QAPair]


BUILTIN_CORPORA: tuple[str, ...] = ("chatterbot", "zaragoza", "tech")

_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SUPPORTED_SUFFIXES = (*_JSONL_SUFFIXES, ".csv", ".tsv")
_UTF8_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Collapse ``text`` onto one line (error messages must be a single line)."""
    return " ".join(text.split())


def _read_text(path: Path) -> str:
    """Read ``path`` as UTF-8 (a leading BOM is ignored), raising DataError on any problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise DataError(f"{path!r}: invalid file name ({exc})") from None
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: invalid UTF-8 at line {line}") from None


def _type_name(value: object) -> str:
    """Name of ``value``'s type for error messages (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def _dedupe(pairs: Iterable[QAPair]) -> list[QAPair]:
    """Drop pairs whose (question, answer) already occurred, keeping the first occurrence."""
    seen: set[tuple[str, str]] = set()
    out: list[QAPair] = []
    for pair in pairs:
        key = (pair.question, pair.answer)
        if key not in seen:
            seen.add(key)
            out.append(pair)
    return out


def _finish(path: Path, pairs: list[QAPair]) -> list[QAPair]:
    """Deduplicate ``pairs`` read from ``path``; an empty result is a DataError."""
    result = _dedupe(pairs)
    if not result:
        raise DataError(f"{path}: no question/answer pairs found")
    return result


def _field_text(where: str, record: dict[str, Any], field: str) -> str:
    """Return ``record[field]`` stripped; ``where`` is ``"file:line"`` for error messages."""
    if field not in record:
        raise DataError(f"{where}: missing field '{field}'")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise DataError(f"{where}: field '{field}' is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape such as "\ud800"
        raise DataError(
            f"{where}: field '{field}' is not valid Unicode (unpaired surrogate escape)"
        ) from None
    return text


class _DuplicateKey(ValueError):
    """A JSON object repeats a key (raised by :func:`_unique_object`)."""


def _unique_object(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: a repeated key is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def load_pairs(
    path: str | Path, *, question_field: str = "question", answer_field: str = "answer"
) -> list[QAPair]:
    """Load question/answer pairs from a data file, choosing the format from its suffix.

    ``.jsonl``/``.ndjson`` are read with :func:`load_jsonl`, ``.csv`` with :func:`load_csv` and
    ``.tsv`` with :func:`load_csv` using a tab delimiter (suffixes are case-insensitive).
    ``question_field``/``answer_field`` name the JSON keys or CSV columns holding the texts.
    Raises :class:`DataError` for an unsupported suffix, a missing file or a malformed record.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    fields = {"question_field": question_field, "answer_field": answer_field}
    if suffix in _JSONL_SUFFIXES:
        return load_jsonl(p, **fields)
    if suffix == ".csv":
        return load_csv(p, delimiter=",", **fields)
    if suffix == ".tsv":
        return load_csv(p, delimiter="\t", **fields)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    raise DataError(
        f"{p}: unsupported data file type {suffix or '(no suffix)'!r} "
        f"(supported: {', '.join(_SUPPORTED_SUFFIXES)})"
    )


def load_jsonl(
    path: str | Path, *, question_field: str = "question", answer_field: str = "answer"
) -> list[QAPair]:
    """Load pairs from a JSON Lines file: one JSON object per line, blank lines skipped.

    Each object must hold non-empty strings under ``question_field`` and ``answer_field``
    (other keys are ignored). Texts are stripped; exact duplicate pairs are dropped. Origins
    are ``"<file name>:<line>"``. Any malformed line raises :class:`DataError`.
    """
    p = Path(path)
    text = _read_text(p)
    pairs: list[QAPair] = []
    # Split on "\n" only: str.splitlines() would also split on U+2028 etc., which JSON allows
    # raw inside strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            record = json.loads(line, object_pairs_hook=_unique_object)
        except _DuplicateKey as exc:
            raise DataError(f"{where}: duplicate key {str(exc)!r} in one record") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"{where}: not valid JSON (nested too deeply)") from None
        except ValueError as exc:  # e.g. integer literals beyond Python's digit limit
            raise DataError(f"{where}: not valid JSON ({_one_line(str(exc))})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {_type_name(record)}")
        question = _field_text(where, record, question_field)
        answer = _field_text(where, record, answer_field)
        pairs.append(QAPair(question, answer, f"{p.name}:{lineno}"))
    return _finish(p, pairs)


def load_csv(
    path: str | Path,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    delimiter: str = ",",
) -> list[QAPair]:
    """Load pairs from a CSV (or, with ``delimiter="\\t"``, TSV) file with a header row.

    The header names the columns (surrounding whitespace ignored); ``question_field`` and
    ``answer_field`` select the two text columns, other columns are ignored. Fields may be
    quoted (``"..."``, RFC 4180), which is required for a field containing the delimiter, a
    quote or a newline. Blank lines are skipped. Line numbers are 1-based physical lines (the
    header is line 1; a record spanning several lines is reported at its first line). Texts are
    stripped; exact duplicate pairs are dropped. Any malformed record raises
    :class:`DataError`.
    """
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
    p = Path(path)
    text = _read_text(p)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    pairs: list[QAPair] = []
    header: list[str] | None = None
    q_idx = a_idx = 0
    start = 1
    try:
        for row in reader:
            lineno, start = start, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            where = f"{p}:{lineno}"
            if header is None:
                header = [name.strip() for name in row]
                q_idx = _column_index(p, header, question_field)
                a_idx = _column_index(p, header, answer_field)
                continue
            if len(row) > len(header):
                raise DataError(
                    f"{where}: expected {len(header)} columns, got {len(row)} "
                    f"(quote fields that contain {delimiter!r})"
                )
            record = dict(zip(header, row, strict=False))  # short rows lack fields
            question = _field_text(where, record, header[q_idx])
            answer = _field_text(where, record, header[a_idx])
            pairs.append(QAPair(question, answer, f"{p.name}:{lineno}"))
    except csv.Error as exc:
        raise DataError(f"{p}:{reader.line_num}: malformed CSV ({_one_line(str(exc))})") from None
    if header is None:
        raise DataError(f"{p}: no question/answer pairs found (empty file; a header row is needed)")
    return _finish(p, pairs)


def _column_index(path: Path, header: list[str], name: str) -> int:
    """Index of column ``name`` in ``header``; missing or duplicated is a DataError."""
    count = header.count(name)
    if count == 0:
        raise DataError(f"{path}: missing column '{name}' (columns: {', '.join(header)})")
    if count > 1:
        raise DataError(f"{path}: column '{name}' appears {count} times in the header")
    return header.index(name)


# --------------------------------------------------------------------------------------------
# Built-in corpora
# --------------------------------------------------------------------------------------------


def load_builtin(name: str) -> list[QAPair]:
    """Load a built-in corpus (one of :data:`BUILTIN_CORPORA`) from its installed package.

    ``"chatterbot"``: every pair of consecutive turns in the English ``chatterbot_corpus``
    conversations (files in name order), origin ``"chatterbot:<file>"``. ``"zaragoza"``: the
    English Zaragoza construction FAQ, origin ``"zaragoza:<id>"``, domain its category. ``"tech"``:
    the curated technical Q&A shipped in ``cellcube/corpora/tech_qa.jsonl`` (domains ``ai_ml``,
    ``computer_science``, ``programming``, ``data_science``, ``nlp``), origin ``"tech:<line>"``.
    Turns or records that are not non-empty strings are skipped (some YAML turns parse as numbers
    or booleans). Texts are stripped and exact duplicate pairs dropped. An unknown name raises
    :class:`DataError`.
    """
    if name not in BUILTIN_CORPORA:
        raise DataError(
            f"unknown built-in corpus {name!r} (available: {', '.join(BUILTIN_CORPORA)})"
        )
    return list(_load_builtin_cached(name))


@functools.cache
def _load_builtin_cached(name: str) -> tuple[QAPair, ...]:
    """Load and cache a built-in corpus (parsing the YAML files takes about a second)."""
    loaders = {"chatterbot": _load_chatterbot, "zaragoza": _load_zaragoza, "tech": _load_tech}
    loader = loaders[name]
    pairs = _dedupe(loader())
    if not pairs:
        raise DataError(f"built-in corpus {name!r}: no question/answer pairs found")
    return tuple(pairs)


def _clean_turn(turn: object) -> str | None:
    """``turn`` stripped if it is a non-empty string, else None."""
    if isinstance(turn, str):
        text = turn.strip()
        if text:
            return text
    return None


def _load_chatterbot() -> list[QAPair]:
    """Pairs of consecutive turns from ``chatterbot_corpus/data/english/*.yml``."""
    try:
        root = resources.files("chatterbot_corpus").joinpath("data", "english")
        files = sorted((f for f in root.iterdir() if f.name.endswith(".yml")), key=lambda f: f.name)
    except (ModuleNotFoundError, OSError) as exc:
        raise DataError(
            f"built-in corpus 'chatterbot' needs the package chatterbot-corpus ({exc})"
        ) from None
    pairs: list[QAPair] = []
    for file in files:
        try:
            doc = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = _one_line(str(exc))
            raise DataError(f"chatterbot:{file.name}: cannot read ({reason})") from None
        conversations = doc.get("conversations") if isinstance(doc, dict) else None
        if not isinstance(conversations, list):
            continue
        origin = f"chatterbot:{file.name}"
        for conversation in conversations:
            if not isinstance(conversation, list):
                continue  # e.g. one trivia.yml entry is a bare string, not a list of turns
            turns = [_clean_turn(t) for t in conversation]
            # A pair is two *adjacent* turns; an invalid turn breaks the chain rather than
            # making its neighbours a (false) question/answer pair.
            for question, answer in itertools.pairwise(turns):
                if question is not None and answer is not None:
                    pairs.append(QAPair(question, answer, origin))
    return pairs


def _load_zaragoza() -> list[QAPair]:
    """Question/answer records of the English Zaragoza construction FAQ."""
    try:
        import zaragoza_construction_faq
    except ImportError as exc:
        raise DataError(
            f"built-in corpus 'zaragoza' needs the package zaragoza-construction-faq ({exc})"
        ) from None
    try:
        records = zaragoza_construction_faq.load(lang="en")
    except Exception as exc:  # a broken installation; report it as a data problem
        reason = _one_line(str(exc))
        raise DataError(f"built-in corpus 'zaragoza': cannot load ({reason})") from None
    pairs: list[QAPair] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            continue
        question = _clean_turn(record.get("q"))
        answer = _clean_turn(record.get("a"))
        if question is not None and answer is not None:
            origin = f"zaragoza:{record.get('id', index)}"
            pairs.append(QAPair(question, answer, origin, _clean_turn(record.get("category"))))
    return pairs


def _load_tech() -> list[QAPair]:
    """Records of the curated technical Q&A file ``cellcube/corpora/tech_qa.jsonl``.

    The file ships with cellcube, so a malformed record is a packaging bug and raises
    :class:`DataError` naming ``tech:<line>`` rather than being skipped.
    """
    try:
        text = (
            resources.files("cellcube")
            .joinpath("data", "corpora", "tech_qa.jsonl")
            .read_text("utf-8")
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"built-in corpus 'tech': cannot read tech_qa.jsonl ({exc})") from None
    pairs: list[QAPair] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"tech:{lineno}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{where}: not valid JSON ({_one_line(str(exc))})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {_type_name(record)}")
        question = _field_text(where, record, "question")
        answer = _field_text(where, record, "answer")
        domain = _field_text(where, record, "domain")
        pairs.append(QAPair(question, answer, where, domain))
    return pairs


# --------------------------------------------------------------------------------------------
# Derived data and splitting
# --------------------------------------------------------------------------------------------


def autoencoder_pairs(pairs: Sequence[QAPair]) -> list[QAPair]:
    """Turn pairs into autoencoder examples: each distinct text maps to itself.

    Every distinct text among the questions and answers (in first-occurrence order, a pair's
    question before its answer) becomes ``QAPair(text, text, origin)``, with the origin of the
    pair where the text first occurred.
    """
    seen: set[str] = set()
    out: list[QAPair] = []
    for pair in pairs:
        for text in (pair.question, pair.answer):
            if text not in seen:
                seen.add(text)
                out.append(QAPair(text, text, pair.origin))
    return out


def _check_fraction(name: str, value: object) -> float:
    """Validate a split fraction: a real number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in (0, 1), got {value!r}")
    if not (0.0 < value < 1.0):  # also rejects NaN
        raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def split_pairs(
    pairs: Sequence[QAPair],
    *,
    seed: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    folds: int = 0,
    fold: int = 0,
) -> Split:
    """Split pairs into train/val/test, deterministically and grouped by answer text.

    The distinct answer texts are sorted, shuffled with ``numpy.random.default_rng(seed)``,
    and assigned as whole groups: the first ``round(test_fraction * n)`` answers go to test,
    the next ``round(val_fraction * n)`` to val and the rest to train (each split gets at least
    one answer). All pairs sharing an answer text therefore land in the same split, and the
    result does not depend on the input order. Pairs keep their input order within each split.

    Cross-validation (``folds >= 2``): the test answers are the same as above (they depend on
    ``seed`` and ``test_fraction`` only), and the other answers are cut into ``folds`` groups
    of (nearly) equal size in shuffled order; group ``fold`` is val and the rest is train
    (``val_fraction`` is not used). Over ``fold = 0 .. folds-1`` every non-test pair is
    validated on exactly once, with the test split untouched.

    Raises :class:`ConfigError` for fractions outside (0, 1) or summing to 1 or more (naming
    ``data.val_fraction`` / ``data.test_fraction``), and :class:`DataError` when there are
    fewer than 3 distinct answers.
    """
    val_f = _check_fraction("data.val_fraction", val_fraction)
    test_f = _check_fraction("data.test_fraction", test_fraction)
    if val_f + test_f >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction must be < 1, got {val_f} + {test_f}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")

    answers = sorted({pair.answer for pair in pairs})
    n = len(answers)
    if n < 3:
        raise DataError(f"need at least 3 distinct answers to split, got {n}")

    if folds == 1 or folds < 0 or not 0 <= fold < max(folds, 1):
        raise ConfigError(
            f"data.folds / data.fold: need folds = 0 (no cross-validation) or >= 2, and "
            f"0 <= fold < folds; got folds={folds}, fold={fold}"
        )
    n_test = max(1, round(test_f * n))
    if folds:
        n_test = min(n_test, n - folds)  # every fold needs an answer
        if n_test < 1:
            raise DataError(
                f"need at least {folds + 1} distinct answers for {folds} folds, got {n}"
            )
    n_val = max(1, round(val_f * n))
    # Leave at least one answer for training, shrinking the larger held-out split first.
    while n_test + n_val > n - 1:
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1

    order = np.random.default_rng(int(seed)).permutation(n)
    shuffled = [answers[i] for i in order]
    test_answers = set(shuffled[:n_test])
    if folds:
        rest = shuffled[n_test:]
        bounds = [round(i * len(rest) / folds) for i in range(folds + 1)]
        val_answers = set(rest[bounds[fold] : bounds[fold + 1]])
    else:
        val_answers = set(shuffled[n_test : n_test + n_val])

    train: list[QAPair] = []
    val: list[QAPair] = []
    test: list[QAPair] = []
    for pair in pairs:
        if pair.answer in test_answers:
            test.append(pair)
        elif pair.answer in val_answers:
            val.append(pair)
        else:
            train.append(pair)
    return Split(train=train, val=val, test=test)


SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def split_dataset(
    pairs: Sequence[QAPair],
    *,
    seed: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    folds: int = 0,
    fold: int = 0,
) -> tuple[Split, int]:
    """Split ORIGINAL pairs, then attach synthetic variants to their source's split, train only.

    Original pairs (``variant_of is None``) are split by their pinned ``split`` when the file
    pins one (then every original must: a missing pin is a :class:`DataError` naming the pair's
    origin), else by :func:`split_pairs` (grouped by answer) -- the same split the originals get
    without any variants. A variant joins train only when its source question is an original
    train question; variants of validation/test sources and orphans are dropped, so validation
    and test hold original pairs only and no rephrasing of a held-out question is trained on.
    Returns the split and the number of variants dropped.
    """
    originals = [p for p in pairs if p.variant_of is None]
    variants = [p for p in pairs if p.variant_of is not None]
    pinned = [p for p in originals if p.split is not None]
    if pinned and folds:
        raise ConfigError(
            f"data.folds: {pinned[0].origin} pins its split; cross-validation needs unpinned data"
        )
    if pinned:
        missing = next((p for p in originals if p.split is None), None)
        if missing is not None:
            raise DataError(
                f"{missing.origin}: no 'split' but other pairs pin theirs; pin every original "
                "pair or none"
            )
        buckets: dict[str, list[QAPair]] = {name: [] for name in SPLIT_NAMES}
        for p in originals:
            if p.split not in buckets:
                raise DataError(
                    f"{p.origin}: field 'split' must be one of train, val, test, got {p.split!r}"
                )
            buckets[p.split].append(p)
        for name, members in buckets.items():
            if not members:
                raise DataError(f"pinned splits leave '{name}' empty; every split needs a pair")
        split = Split(**buckets)
    else:
        split = split_pairs(
            originals,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            folds=folds,
            fold=fold,
        )
    train_questions = {p.question for p in split.train}
    held_out = {t for p in (*split.val, *split.test) for t in (p.question, p.answer)}
    kept = [
        p
        for p in variants
        if p.variant_of in train_questions
        and p.question not in held_out
        and p.answer not in held_out
    ]
    return Split(split.train + kept, split.val, split.test), len(variants) - len(kept)
