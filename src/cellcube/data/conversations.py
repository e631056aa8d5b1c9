"""Multi-turn conversations as pairs: every two consecutive turns are a question and its answer.

Part of the reader stack (:mod:`cellcube.data.readers`): the turns of a JSONL ``turns`` /
``messages`` record, and chatterbot-style YAML files. A turn that is not a usable text is a
:class:`~cellcube.data.parse.BadRecord` and breaks the chain, so its neighbours never become a
false question/answer pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from cellcube.data.parse import MISSING, BadRecord, one_line, read_text, text_field, type_name
from cellcube.data.records import QAPair
from cellcube.errors import DataError

__all__ = ["conversation_pairs", "read_yaml", "record_turns"]

_STR_TAG = "tag:yaml.org,2002:str"


def conversation_pairs(
    turns: list[str | BadRecord], origin: str, context_turns: int
) -> Iterator[QAPair | BadRecord]:
    """Consecutive-turn pairs of one conversation; a bad turn is yielded and breaks the chain.

    Each pair carries as ``context`` the up to ``context_turns`` valid turns before its question
    in the same unbroken run.
    """
    run: list[str] = []
    for turn in turns:
        if isinstance(turn, BadRecord):
            yield turn
            run = []
            continue
        if run:
            context = tuple(run[-1 - context_turns : -1]) if context_turns else ()
            yield QAPair(run[-1], turn, origin, context=context)
        run.append(turn)


def _message_text(where: str, item: object, name: str) -> str | None:
    """The text of one ``messages`` entry, None for a ``system`` message."""
    if not isinstance(item, dict):
        raise BadRecord(where, "wrong type", f"{name} must be an object, got {type_name(item)}")
    if item.get("role") == "system":
        return None
    return text_field(where, item.get("content", MISSING), f"{name}.content")


def record_turns(where: str, record: dict[str, Any]) -> list[str | BadRecord]:
    """The turns of a ``turns`` / ``messages`` record, each a text or a BadRecord naming it."""
    key = "turns" if "turns" in record else "messages"
    items = record[key]
    if not isinstance(items, list):
        raise BadRecord(
            where, "wrong type", f"field '{key}' must be a list, got {type_name(items)}"
        )
    if len(items) < 2:
        raise BadRecord(
            where, "short conversation", f"field '{key}' needs at least 2 turns, got {len(items)}"
        )
    out: list[str | BadRecord] = []
    for i, item in enumerate(items):
        try:
            if key == "turns":
                out.append(text_field(where, item, f"turns[{i}]"))
            elif (text := _message_text(where, item, f"messages[{i}]")) is not None:
                out.append(text)
        except BadRecord as bad:
            out.append(bad)
    return out


def _compose(path: Path) -> yaml.Node | None:
    """The YAML node tree of ``path`` (line numbers kept); a syntax error is a DataError."""
    try:
        return yaml.compose(read_text(path), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise DataError(f"{where}: {one_line(problem)}") from None
    except RecursionError:
        raise DataError(f"{path}: invalid YAML (nested too deeply)") from None


def _yaml_turn(path: Path, node: yaml.Node) -> str | BadRecord:
    """One YAML turn: a string scalar's text, else a BadRecord at its line."""
    where = f"{path}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        try:
            return text_field(where, node.value, "turn")
        except BadRecord as bad:
            return bad
    # 42, true, null, a list or a mapping: not a turn of text.
    kind = node.tag.rsplit(":", 1)[-1] if isinstance(node, yaml.ScalarNode) else node.id
    return BadRecord(where, "wrong type", f"a turn must be a string, got {kind}")


def read_yaml(path: Path, context_turns: int) -> Iterator[QAPair | BadRecord]:
    """chatterbot-style YAML: ``conversations`` is a list of lists of turns (a line per turn)."""
    root = _compose(path)
    convs = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "conversations":
                convs = value
    if not isinstance(convs, yaml.SequenceNode):
        raise DataError(f"{path}: expected a mapping with a 'conversations' list")
    for conv in convs.value:
        line = conv.start_mark.line + 1
        if not isinstance(conv, yaml.SequenceNode):
            yield BadRecord(
                f"{path}:{line}", "wrong type", "a conversation must be a list of turns"
            )
        elif len(conv.value) < 2:
            yield BadRecord(
                f"{path}:{line}", "short conversation", "a conversation needs at least 2 turns"
            )
        else:
            turns = [_yaml_turn(path, node) for node in conv.value]
            yield from conversation_pairs(turns, f"{path.name}:{line}", context_turns)
