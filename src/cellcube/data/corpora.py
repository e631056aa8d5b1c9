"""Built-in corpora: question/answer pairs that need no file and no network.

``chatterbot``, ``zaragoza`` and ``chitchat`` ship as installed Python packages
(``chatterbot-corpus``, ``zaragoza-construction-faq``, ``chitchat-dataset``; the chitchat reader is
:mod:`cellcube.data.chitchat`); ``tech`` ships with cellcube itself
(``cellcube/data/corpora/tech_qa.jsonl``). :func:`load_builtin` returns a fresh list each call;
the parsed corpus is cached per process.
"""

from __future__ import annotations

import functools
import itertools
from importlib import resources

import yaml

from cellcube.data.chitchat import (
    TURNS,
    chitchat_conversations,
    chitchat_messages,
    load_chitchat,
)
from cellcube.data.parse import MISSING, BadRecord, one_line, parse_json_object, text_field
from cellcube.data.records import QAPair, dedupe
from cellcube.errors import DataError

__all__ = ["BUILTIN_BANKS", "BUILTIN_CORPORA", "load_builtin", "load_builtin_bank"]

BUILTIN_CORPORA: tuple[str, ...] = ("chatterbot", "zaragoza", "tech", "chitchat")
BUILTIN_BANKS: tuple[str, ...] = ("chitchat",)
"""Built-in phrase banks (:func:`load_builtin_bank`)."""


def load_builtin(name: str, *, chitchat_turns: str = "questions") -> list[QAPair]:
    """Load a built-in corpus (one of :data:`BUILTIN_CORPORA`) from its installed package.

    ``"chatterbot"``: every pair of consecutive turns in the English ``chatterbot_corpus``
    conversations (files in name order), origin ``"chatterbot:<file>"``. ``"zaragoza"``: the
    English Zaragoza construction FAQ, origin ``"zaragoza:<id>"``, domain its category. ``"tech"``:
    the curated technical Q&A shipped in ``cellcube/data/corpora/tech_qa.jsonl`` (domains
    ``ai_ml``, ``computer_science``, ``programming``, ``data_science``, ``nlp``), origin
    ``"tech:<line>"``. ``"chitchat"``: a chat turn that asks a question (ends in "?", at least 3
    words) and the other speaker's reply (at least 3 words), from ``chitchat-dataset``, origin
    ``"chitchat:<conversation id>:<turn>"`` (:func:`cellcube.data.chitchat.chitchat_pairs` has
    the exact rule; 23,911 pairs); with ``chitchat_turns="all"`` (``data.chitchat_turns``), every
    pair of consecutive non-empty turns (131,368 pairs). Turns or records that are not non-empty
    strings are skipped
    (some YAML turns parse as numbers or booleans). Texts are stripped and exact duplicate pairs
    dropped.

    Raises:
        DataError: for an unknown name, or a corpus whose package is missing or broken.
    """
    if name not in BUILTIN_CORPORA:
        raise DataError(
            f"unknown built-in corpus {name!r} (available: {', '.join(BUILTIN_CORPORA)})"
        )
    if chitchat_turns not in TURNS:
        raise DataError(f"chitchat_turns: {chitchat_turns!r} is not one of {', '.join(TURNS)}")
    return list(_load_cached(name, chitchat_turns if name == "chitchat" else "questions"))


def load_builtin_bank(name: str) -> list[str]:
    """A built-in phrase bank (one of :data:`BUILTIN_BANKS`): distinct phrases for the decoder.

    ``"chitchat"``: every distinct message (utterance) of ``chitchat-dataset``, whitespace
    collapsed, in first-occurrence order (:func:`cellcube.data.chitchat.chitchat_messages`;
    223,013 phrases).

    Raises:
        DataError: for an unknown name, or a missing or broken package.
    """
    if name not in BUILTIN_BANKS:
        raise DataError(f"unknown built-in bank {name!r} (available: {', '.join(BUILTIN_BANKS)})")
    return chitchat_messages(chitchat_conversations())


@functools.cache
def _load_cached(name: str, chitchat_turns: str) -> tuple[QAPair, ...]:
    """Load and cache a built-in corpus (parsing chatterbot's YAML files or chitchat's JSON file
    takes about a second)."""
    loaders = {
        "chatterbot": _load_chatterbot,
        "zaragoza": _load_zaragoza,
        "tech": _load_tech,
        "chitchat": functools.partial(load_chitchat, chitchat_turns),
    }
    pairs = dedupe(loaders[name]())
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
            raise DataError(f"chatterbot:{file.name}: cannot read ({one_line(str(exc))})") from None
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
        raise DataError(f"built-in corpus 'zaragoza': cannot load ({one_line(str(exc))})") from None
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
    """Records of the curated technical Q&A file ``cellcube/data/corpora/tech_qa.jsonl``.

    The file ships with cellcube, so a malformed record is a packaging bug and raises
    :class:`DataError` naming ``tech:<line>`` rather than being skipped.
    """
    try:
        path = resources.files("cellcube").joinpath("data", "corpora", "tech_qa.jsonl")
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"built-in corpus 'tech': cannot read tech_qa.jsonl ({exc})") from None
    pairs: list[QAPair] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"tech:{lineno}"
        try:
            record = parse_json_object(where, line)
            question, answer, domain = (
                text_field(where, record.get(name, MISSING), name)
                for name in ("question", "answer", "domain")
            )
        except BadRecord as bad:
            raise DataError(bad.message) from None
        pairs.append(QAPair(question, answer, where, domain))
    return pairs
