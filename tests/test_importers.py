"""Importers: pair files with metadata, conversations (JSONL turns/messages, YAML), directories.

Every malformed-input case of every importer must give ONE DataError line naming file:line (and
the field), and in skip mode be skipped, counted by reason and listed with its file:line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellcube.config import DataConfig
from cellcube.data import QAPair, fold_context, read_path
from cellcube.data.readers import ImportReport
from cellcube.errors import DataError


def import_path(path: Path, **data: object) -> tuple[list[QAPair], ImportReport]:
    """The reader stack with these ``data.*`` settings."""
    return read_path(path, DataConfig(**data))


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        import_path(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


GOOD = '{"question": "q0", "answer": "a0"}\n'

# (file name, content after one good line, expected message after "<path>:", skip reason)
MALFORMED = [
    (
        "d.jsonl",
        "{not json}\n",
        "2: not valid JSON (Expecting property name enclosed in double quotes)",
        "invalid JSON",
    ),
    ("d.jsonl", "[1, 2]\n", "2: expected a JSON object, got list", "not an object"),
    ("d.jsonl", '{"question": "q"}\n', "2: missing field 'answer'", "missing field"),
    ("d.jsonl", '{"question": "q", "answer": "  "}\n', "2: field 'answer' is empty", "empty field"),
    (
        "d.jsonl",
        '{"question": 3, "answer": "a"}\n',
        "2: field 'question' must be a string, got int",
        "wrong type",
    ),
    (
        "d.jsonl",
        '{"question": null, "answer": "a"}\n',
        "2: field 'question' must be a string, got null",
        "wrong type",
    ),
    (
        "d.jsonl",
        '{"question": "q", "answer": "a", "answer": "b"}\n',
        "2: duplicate key 'answer' in one record",
        "duplicate key",
    ),
    (
        "d.jsonl",
        '{"question": "q", "answer": "a", "split": "dev"}\n',
        "2: field 'split' must be one of train, val, test, got 'dev'",
        "invalid split",
    ),
    (
        "d.jsonl",
        '{"question": "\\ud800", "answer": "a"}\n',
        "2: field 'question' is not valid Unicode (unpaired surrogate)",
        "invalid unicode",
    ),
    ("d.jsonl", '{"turns": "hi"}\n', "2: field 'turns' must be a list, got str", "wrong type"),
    (
        "d.jsonl",
        '{"turns": ["only one"]}\n',
        "2: field 'turns' needs at least 2 turns, got 1",
        "short conversation",
    ),
    (
        "d.jsonl",
        '{"turns": ["hi", 5, "x"]}\n',
        "2: field 'turns[1]' must be a string, got int",
        "wrong type",
    ),
    (
        "d.jsonl",
        '{"messages": ["hi", {"role": "user", "content": "yo"}]}\n',
        "2: messages[0] must be an object, got str",
        "wrong type",
    ),
    (
        "d.jsonl",
        '{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}\n',
        "2: missing field 'messages[0].content'",
        "missing field",
    ),
]


@pytest.mark.parametrize(("name", "bad", "expected", "reason"), MALFORMED)
def test_malformed_jsonl_record_is_one_line_naming_file_line_and_field(
    tmp_path: Path, name: str, bad: str, expected: str, reason: str
) -> None:
    path = _write(tmp_path / name, GOOD + bad + '{"question": "q9", "answer": "a9"}\n')
    assert _error(path) == f"{path}:{expected}"
    pairs, report = import_path(path, skip_invalid=True)
    assert [(p.question, p.answer) for p in pairs] == [("q0", "a0"), ("q9", "a9")]
    assert report.skip_counts == {reason: 1}
    assert [s.where for s in report.skipped] == [f"{path}:2"]
    assert report.skipped[0].message == f"{path}:{expected}"


def test_a_bad_turn_breaks_the_chain_of_consecutive_pairs(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", '{"turns": ["t0", "t1", 7, "t3", "t4"]}\n')
    pairs, report = import_path(path, skip_invalid=True)
    assert [(p.question, p.answer) for p in pairs] == [("t0", "t1"), ("t3", "t4")]
    assert report.skip_counts == {"wrong type": 1}


def test_invalid_utf8_line_is_named_and_skippable(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", GOOD.encode() + b'{"question": "\xff", "answer": "a"}\n')
    assert _error(path) == f"{path}:2: invalid UTF-8"
    pairs, report = import_path(path, skip_invalid=True)
    assert len(pairs) == 1 and report.skip_counts == {"invalid UTF-8": 1}


def test_csv_and_tsv_records(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "d.csv",
        'q,a,domain,split\nhi,hello,chat,train\n"x, y",z,,test\nonly,\nr,s,t,u,v\n',
    )
    assert (
        _error(csv_path, question_field="q", answer_field="a")
        == f"{csv_path}:4: field 'a' is empty"
    )
    pairs, report = import_path(csv_path, question_field="q", answer_field="a", skip_invalid=True)
    assert pairs == [QAPair("hi", "hello", "d.csv:2"), QAPair("x, y", "z", "d.csv:3")]
    assert (pairs[0].domain, pairs[0].split, pairs[1].domain, pairs[1].split) == (
        "chat",
        "train",
        None,
        "test",
    )
    assert report.skip_counts == {"empty field": 1, "too many columns": 1}
    assert [s.where for s in report.skipped] == [f"{csv_path}:4", f"{csv_path}:5"]
    tsv = _write(tmp_path / "d.tsv", "question\tanswer\nwhy?\tbecause\n")
    assert import_path(tsv)[0] == [QAPair("why?", "because", "d.tsv:2")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("q,b\nx,y\n", ": missing column 'question' (columns: q, b)"),
        (
            "question,answer,answer\nx,y,z\n",
            ": column appears 2 times: 'answer' (columns: question, answer, answer)",
        ),
        ("", ": empty file (a header row is needed)"),
        ('question,answer\n"x,y\n', ":2: malformed CSV (unexpected end of data)"),
    ],
)
def test_csv_file_level_problems_name_the_file_and_skip_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = _write(tmp_path / "bad.csv", content)
    assert _error(path) == f"{path}{expected}"
    good = _write(tmp_path / "good.jsonl", GOOD)
    pairs, report = import_path(tmp_path, skip_invalid=True)
    assert [p.question for p in pairs] == ["q0"]
    assert report.skip_counts == {"unreadable file": 1}
    assert report.skipped[0].where == str(path)
    assert report.files == [str(path), str(good)]


def test_yaml_conversations_with_line_numbers(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "chat.yml",
        "categories: [x]\nconversations:\n- - Hello\n  - Hi there\n  - 42\n  - ok\n  - sure\n"
        "- - lonely\n- just a string\n- - 'quoted 7'\n  - yes indeed\n",
    )
    assert _error(path) == f"{path}:5: a turn must be a string, got int"
    pairs, report = import_path(path, skip_invalid=True)
    assert [(p.question, p.answer) for p in pairs] == [
        ("Hello", "Hi there"),
        ("ok", "sure"),
        ("quoted 7", "yes indeed"),
    ]
    assert [(s.where, s.reason) for s in report.skipped] == [
        (f"{path}:5", "wrong type"),
        (f"{path}:8", "short conversation"),
        (f"{path}:9", "wrong type"),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "conversations:\n- - a\n  - b\n - c\n",
            ":4: expected <block end>, but found '<block sequence start>'",
        ),
        ("other: 1\n", ": expected a mapping with a 'conversations' list"),
    ],
)
def test_yaml_file_level_problems(tmp_path: Path, content: str, expected: str) -> None:
    path = _write(tmp_path / "c.yaml", content)
    assert _error(path).startswith(f"{path}{expected}")


def test_context_turns_carry_previous_turns_and_fold_into_the_question(tmp_path: Path) -> None:
    msgs = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(4)
    ]
    path = _write(tmp_path / "c.jsonl", json.dumps({"messages": msgs}) + "\n")
    pairs, _ = import_path(path, context_turns=2)
    assert [(p.question, p.answer, p.context) for p in pairs] == [
        ("m0", "m1", ()),
        ("m1", "m2", ("m0",)),
        ("m2", "m3", ("m0", "m1")),
    ]
    assert [p.question for p in fold_context(pairs)] == ["m0", "m0\nm1", "m0\nm1\nm2"]
    assert [p.context for p in import_path(path)[0]] == [(), (), ()]


def test_directory_import_dispatches_by_suffix_and_reports_everything(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", GOOD + GOOD + '{"turns": ["t0", "t1"]}\n')
    _write(tmp_path / "sub" / "b.tsv", "question\tanswer\nq1\ta1\n")
    _write(tmp_path / "sub" / "c.yml", "conversations:\n- - y0\n  - y1\n")
    _write(tmp_path / "notes.txt", "not data")
    _write(tmp_path / ".hidden" / "x.jsonl", "garbage")
    pairs, report = import_path(tmp_path)
    assert [(p.question, p.origin) for p in pairs] == [
        ("q0", "a.jsonl:1"),
        ("t0", "a.jsonl:3"),
        ("q1", "b.tsv:2"),
        ("y0", "c.yml:2"),
    ]
    assert report.n_duplicates == 1 and report.ignored_files == [str(tmp_path / "notes.txt")]
    assert report.summary() == (
        "4 pairs from 3 file(s); 1 exact duplicate(s) dropped; 1 unsupported file(s) ignored"
    )


def test_no_pairs_is_an_error_in_both_modes(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", "{}\n[]\n")
    assert _error(path) == f"{path}:1: missing field 'question'"
    assert _error(path, skip_invalid=True) == (
        f"{path}: no question/answer pairs found (0 pairs from 1 file(s); 2 malformed record(s) "
        "skipped (1 missing field, 1 not an object))"
    )
    assert _error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error(empty).startswith(f"{empty}: no data files in directory")
    assert "unsupported data file type '.txt'" in _error(_write(tmp_path / "x.txt", "hi"))


def test_quality_is_read_as_a_number_and_a_bad_one_is_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.jsonl",
        '{"question": "q", "answer": "a", "quality": 0.5}\n'
        '{"question": "q2", "answer": "a2", "quality": "high"}\n',
    )
    assert _error(path) == f"{path}:2: field 'quality' must be a finite number, got 'high'"
    pairs, report = import_path(path, skip_invalid=True)
    assert [p.quality for p in pairs] == [0.5] and report.skip_counts == {"wrong type": 1}
    csv_path = _write(tmp_path / "d.csv", "question,answer,quality\nq,a,0.25\nq2,a2,\n")
    assert [p.quality for p in import_path(csv_path)[0]] == [0.25, None]


def test_skip_mode_loses_nothing_silently(tmp_path: Path) -> None:
    """Every non-blank record is either a pair, a counted duplicate or a counted skip."""
    lines = [GOOD, "oops\n", '{"question": "q1", "answer": "a1"}\n', GOOD, "\n", "7\n"]
    path = _write(tmp_path / "d.jsonl", "".join(lines))
    pairs, report = import_path(path, skip_invalid=True)
    records = sum(1 for line in lines if line.strip())
    assert len(pairs) + report.n_duplicates + len(report.skipped) == records == 5
    assert report.to_dict()["skip_counts"] == {"invalid JSON": 1, "not an object": 1}


def test_config_data_keys_reach_the_pipeline(tmp_path: Path) -> None:
    from cellcube.config import load_config
    from cellcube.run.pipeline import read_pairs

    _write(tmp_path / "d" / "c.jsonl", '{"turns": ["t0", "t1", "t2"]}\nnope\n')
    sets = [f"data.path={tmp_path / 'd'}", "data.skip_invalid=true", "data.context_turns=1"]
    logged: list[str] = []
    pairs = read_pairs(load_config(None, sets), logged.append)
    assert [(p.question, p.answer) for p in pairs] == [("t0", "t1"), ("t0\nt1", "t2")]
    assert logged == [
        "import: 2 pairs from 1 file(s); 1 malformed record(s) skipped (1 invalid JSON)",
        f"  skipped {tmp_path / 'd' / 'c.jsonl'}:2: not valid JSON (Expecting value)",
    ]
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        read_pairs(load_config(None, [f"data.path={tmp_path / 'd'}"]))
