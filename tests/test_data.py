"""The data stage's records, pair files through the reader stack (strict mode), built-in corpora,
autoencoder pairs and the split."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from cellcube.config import DataConfig, load_config
from cellcube.data import (
    BUILTIN_CORPORA,
    QAPair,
    Split,
    autoencoder_pairs,
    dedupe,
    load_builtin,
    pair_from_record,
    pair_to_record,
    read_path,
    split_dataset,
    split_pairs,
    subsample_train,
)
from cellcube.data.chitchat import chitchat_pairs, load_chitchat
from cellcube.errors import ConfigError, DataError


def load_pairs(path: Path | str, **fields: str) -> list[QAPair]:
    """The pairs of one file read strictly, with ``data.question_field``/``answer_field``."""
    return read_path(path, DataConfig(**fields))[0]


def split(pairs: list[QAPair], seed: int, **data: object) -> Split:
    return split_pairs(pairs, DataConfig(**data), seed)


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _jsonl(path: Path, *records: object) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


def _error(func: object, *args: object, **kwargs: object) -> str:
    """Call ``func`` expecting a DataError; return its (single-line) message."""
    with pytest.raises(DataError) as info:
        func(*args, **kwargs)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- JSONL


def test_jsonl_happy_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "data.jsonl",
        '{"question": "  What is 2+2? ", "answer": "4\\n", "extra": 1}\n'
        "\n"
        "   \n"
        '{"question": "Capital of France?", "answer": "Paris"}\n'
        '{"question": "What is 2+2?", "answer": " 4 "}\n'  # duplicate after stripping
        '{"question": "What is 2 + 2?", "answer": "4"}',  # no trailing newline
    )
    pairs = load_pairs(path)
    assert pairs == [
        QAPair("What is 2+2?", "4", "data.jsonl:1"),
        QAPair("Capital of France?", "Paris", "data.jsonl:4"),
        QAPair("What is 2 + 2?", "4", "data.jsonl:6"),
    ]
    assert load_pairs(path) == pairs


def test_jsonl_keeps_inner_text_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.ndjson"
    line = json.dumps({"question": "a  b\u2028c", "answer": "é"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + line.encode("utf-8") + b"\n")
    assert load_pairs(path) == [QAPair("a  b\u2028c", "é", "d.ndjson:1")]


def test_jsonl_custom_fields(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"prompt": "hi", "response": "hello"})
    assert load_pairs(path, question_field="prompt", answer_field="response") == [
        QAPair("hi", "hello", "d.jsonl:1")
    ]
    message = _error(load_pairs, path)
    assert "d.jsonl:1" in message and "missing field 'question'" in message


@pytest.mark.parametrize(
    ("lines", "line", "expected"),
    [
        (
            ['{"question": "q", "answer": "a"}', '{"question": "q2" "answer": "a"}'],
            2,
            "not valid JSON (Expecting ',' delimiter)",
        ),
        (
            ['{"question": "q", "answer": "a"}'] * 2 + ['{"question": "q"}'],
            3,
            "missing field 'answer'",
        ),
        (
            ['{"question": "q", "answer": "a"}'] * 3 + ['{"question": "  ", "answer": "a"}'],
            4,
            "field 'question' is empty",
        ),
        (
            ['{"question": "q", "answer": "a"}'] * 4 + ['{"question": "q", "answer": 5}'],
            5,
            "field 'answer' must be a string, got int",
        ),
        (['{"question": null, "answer": "a"}'], 1, "field 'question' must be a string, got null"),
        (['{"question": "q", "answer": "a"}', '["q", "a"]'], 2, "expected a JSON object, got list"),
        (['"just a string"'], 1, "expected a JSON object, got str"),
        (['{"question": "q", "answer": "a"', ""], 1, "not valid JSON"),
        (["[" * 100_000], 1, "not valid JSON"),
    ],
)
def test_jsonl_malformed(tmp_path: Path, lines: list[str], line: int, expected: str) -> None:
    path = _write(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    message = _error(load_pairs, path)
    assert message.startswith(f"{path}:{line}: ")
    assert expected in message
    assert "data.jsonl" in message


def test_jsonl_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    good = b'{"question": "q", "answer": "a"}\n'
    path.write_bytes(good * 2 + b'{"question": "q\xff", "answer": "a"}\n')
    assert _error(load_pairs, path) == f"{path}:3: invalid UTF-8"


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_jsonl_no_pairs(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path / "data.jsonl", content)
    assert _error(load_pairs, path) == f"{path}: no question/answer pairs found"


# ---------------------------------------------------------------------------- CSV / TSV


def test_csv_happy_path_custom_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "data.csv",
        'id, q ,a\n1, Why?,"Because, well,\nreasons"\n\n2,Who?,Me\n3,Who?, Me \n',
    )
    expected = [
        QAPair("Why?", "Because, well,\nreasons", "data.csv:2"),
        QAPair("Who?", "Me", "data.csv:5"),
    ]
    assert load_pairs(path, question_field="q", answer_field="a") == expected


def test_tsv(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.tsv", "question\tanswer\nhello, there\thi\nbye\tsee you\n")
    assert load_pairs(path) == [
        QAPair("hello, there", "hi", "data.tsv:2"),
        QAPair("bye", "see you", "data.tsv:3"),
    ]
    # The same file read as comma-separated has a single column named after the whole header.
    assert "missing column 'question'" in _error(load_pairs, path.rename(tmp_path / "data.csv"))


def test_csv_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", "q,a\nx,y\n")
    assert _error(load_pairs, path) == f"{path}: missing column 'question' (columns: q, a)"
    message = _error(load_pairs, path, question_field="q")
    assert message == f"{path}: missing column 'answer' (columns: q, a)"


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        ("x,y\n" * 7 + ",y\n", 9, "field 'question' is empty"),
        ("x,y\nx2,  \n", 3, "field 'answer' is empty"),
        ("x,y\nonly-question\n", 3, "missing field 'answer'"),
        ("x,y\nWhat is 1,000?,a number\n", 3, "expected 2 columns, got 3"),
        ('x,y\nx,"y"z\n', 3, "malformed CSV"),
        ('x,y\nx,"unterminated\n', 3, "malformed CSV"),
    ],
)
def test_csv_malformed(tmp_path: Path, body: str, line: int, expected: str) -> None:
    path = _write(tmp_path / "data.csv", "question,answer\n" + body)
    message = _error(load_pairs, path)
    assert message.startswith(f"{path}:{line}: ")
    assert expected in message


def test_csv_invalid_utf8_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"question,answer\nok,fine\nbad\xc3(,x\n")
    assert _error(load_pairs, path) == f"{path}: invalid UTF-8 at line 3"
    _write(path, "question,answer\n")
    assert _error(load_pairs, path) == f"{path}: no question/answer pairs found"
    _write(path, "")
    assert _error(load_pairs, path) == f"{path}: empty file (a header row is needed)"


def test_csv_duplicate_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", "question,answer,answer\nq,a,b\n")
    assert "column appears 2 times: 'answer'" in _error(load_pairs, path)


# ---------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("name", ["data.txt", "data.json", "data"])
def test_unsupported_suffix(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, '{"question": "q", "answer": "a"}\n')
    message = _error(load_pairs, path)
    assert str(path) in message
    for suffix in (".jsonl", ".ndjson", ".csv", ".tsv"):
        assert suffix in message


@pytest.mark.parametrize("name", ["nope.jsonl", "nope.csv", "nope.tsv", "nope.txt"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert _error(load_pairs, path) == f"{path}: no such file"
    assert _error(load_pairs, str(path)) == f"{path}: no such file"


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "DATA.JSONL", {"question": "q", "answer": "a"})
    assert load_pairs(path) == [QAPair("q", "a", "DATA.JSONL:1")]


def test_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    assert "dir.jsonl" in _error(load_pairs, tmp_path / "dir.jsonl")


# ---------------------------------------------------------------------------- built-ins


def test_builtin_zaragoza() -> None:
    pairs = load_builtin("zaragoza")
    assert len(pairs) == 503
    assert pairs[0].origin == "zaragoza:bygglov-001"
    assert pairs[0].question == "What is a bygglov (building permit)?"
    assert all(p.origin.startswith("zaragoza:") for p in pairs)
    assert all(p.question and p.answer for p in pairs)
    assert all(p.question == p.question.strip() and p.answer == p.answer.strip() for p in pairs)


def test_builtin_chatterbot() -> None:
    pairs = load_builtin("chatterbot")
    assert len(pairs) > 1000
    assert all(isinstance(p.question, str) and isinstance(p.answer, str) for p in pairs)
    assert all(p.question.strip() and p.answer.strip() for p in pairs)
    assert all(p.question == p.question.strip() and p.answer == p.answer.strip() for p in pairs)
    assert len({(p.question, p.answer) for p in pairs}) == len(pairs)  # duplicates dropped
    assert pairs[0] == QAPair(
        "What is AI?",
        "Artificial Intelligence is the branch of engineering and science devoted to "
        "constructing machines that think.",
        "chatterbot:ai.yml",
    )
    origins = [p.origin for p in pairs]
    assert origins == sorted(origins)  # files are read in name order
    assert "chatterbot:trivia.yml" in origins
    # Returned lists are fresh copies of the cache.
    pairs.clear()
    assert len(load_builtin("chatterbot")) > 1000


def test_builtin_chitchat() -> None:
    started = time.perf_counter()
    read = load_chitchat()  # uncached: parse the package's JSON file
    assert time.perf_counter() - started < 20  # about a second on one core
    assert len(read) == 23_914  # 3 exact repeats of a (question, answer) pair
    pairs = load_builtin("chitchat")
    assert pairs == dedupe(read)
    assert len(pairs) == 23_911
    assert pairs[0] == QAPair(
        "Hello How are you doing today?",
        "whats up MD im doing good how are you doing?",
        "chitchat:a07edb12-6b91-4138-b11e-02421888d699:0",
    )
    assert len({(p.question, p.answer) for p in pairs}) == len(pairs)  # duplicates dropped
    for p in pairs:
        assert p.question.endswith("?") and len(p.question.split()) >= 3, p.origin
        assert len(p.answer.split()) >= 3, p.origin
        assert " ".join(p.question.split()) == p.question, p.origin  # whitespace collapsed
        assert " ".join(p.answer.split()) == p.answer, p.origin
        assert re.fullmatch(r"chitchat:[0-9a-f-]{36}:\d+", p.origin), p.origin
    assert load_config(None, ["data.corpus=chitchat"]).data.corpus == "chitchat"


def test_chitchat_pairs_filter() -> None:
    def said(*texts: object) -> list[dict]:
        return [{"sender": "s", "text": t} for t in texts]

    conversation = {
        "messages": [
            said("Hi there!", " How are\nyou? "),  # 0: asks, 4 words -> pair with 1
            said("Fine thanks, you?"),  # 1: asks -> pair with 2
            said("Good, and you know what?"),  # 2: asks, but 3's reply is too short
            said("What?"),  # 3: one word: no pair
            said("Do you ski?", 7),  # 4: a non-string utterance is left out -> pair with 5
            said("Yes I do.", "Often."),  # 5: does not end in "?"
            "not a turn",  # 6: not a list: empty text
            said("Is it over?"),  # 7: the last turn has no reply
        ]
    }
    pairs = chitchat_pairs([("c", conversation), ("d", {"no": "messages"}), ("e", [])])
    assert [(p.question, p.answer, p.origin) for p in pairs] == [
        ("Hi there! How are you?", "Fine thanks, you?", "chitchat:c:0"),
        ("Fine thanks, you?", "Good, and you know what?", "chitchat:c:1"),
        ("Do you ski?", "Yes I do. Often.", "chitchat:c:4"),
    ]


def test_builtin_unknown() -> None:
    message = _error(load_builtin, "wikipedia")
    assert "wikipedia" in message
    for name in BUILTIN_CORPORA:
        assert name in message


# ---------------------------------------------------------------------------- autoencoder


def test_autoencoder_pairs() -> None:
    pairs = [
        QAPair("hi", "hello", "f:1"),
        QAPair("hello", "hey", "f:2"),
        QAPair("yo", "hi", "f:3"),
        QAPair("same", "same", "f:4"),
    ]
    assert autoencoder_pairs(pairs) == [
        QAPair("hi", "hi", "f:1"),
        QAPair("hello", "hello", "f:1"),
        QAPair("hey", "hey", "f:2"),
        QAPair("yo", "yo", "f:3"),
        QAPair("same", "same", "f:4"),
    ]
    assert autoencoder_pairs([]) == []


def test_autoencoder_pairs_on_corpus() -> None:
    pairs = load_builtin("chatterbot")
    auto = autoencoder_pairs(pairs)
    texts = {p.question for p in pairs} | {p.answer for p in pairs}
    assert all(p.question == p.answer for p in auto)
    assert len(auto) == len(texts)
    assert {p.question for p in auto} == texts


# ---------------------------------------------------------------------------- split


def _answers(pairs: list[QAPair]) -> set[str]:
    return {p.answer for p in pairs}


def _questions(pairs: list[QAPair]) -> set[str]:
    return {p.question for p in pairs}


def test_split_grouped_deterministic_and_complete() -> None:
    pairs = load_builtin("chatterbot")
    assert len(_answers(pairs)) < len(pairs)  # some answers repeat: grouping matters
    assert len(_questions(pairs)) < len(pairs)  # and some questions
    result = split(pairs, 3)
    assert isinstance(result, Split)
    assert result == split(pairs, 3)
    assert result != split(pairs, 4)

    train, val, test = _answers(result.train), _answers(result.val), _answers(result.test)
    assert not train & val and not train & test and not val & test
    train, val, test = _questions(result.train), _questions(result.val), _questions(result.test)
    assert not train & val and not train & test and not val & test

    # Union is all pairs, each exactly once, original order kept inside each split.
    position = {p: i for i, p in enumerate(pairs)}
    assert sorted(result.train + result.val + result.test, key=position.__getitem__) == pairs
    for part in (result.train, result.val, result.test):
        indices = [position[p] for p in part]
        assert indices == sorted(indices)

    # The fractions (0.7 / 0.1 / 0.2) count pairs: a held-out split takes whole groups until it
    # holds round(fraction * n) pairs, so it ends less than one group (at most 30 pairs) above.
    n = len(pairs)
    assert 0 <= len(result.test) - round(0.2 * n) < 30
    assert 0 <= len(result.val) - round(0.1 * n) < 30
    assert (len(result.train), len(result.val), len(result.test)) == (823, 118, 235)


def test_split_independent_of_input_order() -> None:
    pairs = load_builtin("zaragoza")
    forward = split(pairs, 7, val_fraction=0.15, test_fraction=0.25)
    backward = split(pairs[::-1], 7, val_fraction=0.15, test_fraction=0.25)
    assert _answers(forward.test) == _answers(backward.test)
    assert _answers(forward.val) == _answers(backward.val)
    assert backward.test == forward.test[::-1]
    assert len(forward.test) - round(0.25 * 503) in (0, 1)  # a group of 2 may end it
    assert len(forward.val) - round(0.15 * 503) in (0, 1)


def test_split_repeated_answer_group_stays_together() -> None:
    pairs = [QAPair(f"q{i}", "shared" if i % 2 else f"a{i}", f"f:{i}") for i in range(40)]
    for seed in range(5):
        result = split(pairs, seed)
        holders = [s for s in (result.train, result.val, result.test) if "shared" in _answers(s)]
        assert len(holders) == 1
        assert sum(p.answer == "shared" for p in holders[0]) == 20


@pytest.mark.parametrize("n", [3, 4, 5])
def test_split_small_gives_every_split_a_group(n: int) -> None:
    pairs = [QAPair(f"q{i}", f"a{i}", f"f:{i}") for i in range(n)]
    result = split(pairs, 0, val_fraction=0.01, test_fraction=0.01)
    assert len(result.val) == 1 and len(result.test) == 1 and len(result.train) == n - 2
    result = split(pairs, 0, val_fraction=0.4, test_fraction=0.45)
    assert result.train and result.val and result.test


def test_split_too_few_groups() -> None:
    pairs = [QAPair(f"q{i}", f"a{i % 2}", f"f:{i}") for i in range(10)]
    expected = "need at least 3 groups of pairs sharing no question or answer text to split, got 2"
    assert _error(split, pairs, 0) == expected
    # three answers, but one question joins two of them into one group
    pairs = [QAPair("q", "a0", "f:0"), QAPair("q", "a1", "f:1"), QAPair("r", "a2", "f:2")]
    assert _error(split, pairs, 0).endswith("got 2")
    assert "got 0" in _error(split, [], 0)


def test_a_negative_seed_is_a_config_error_before_any_split() -> None:
    with pytest.raises(ConfigError, match=r"^config \(with --set\): seed: "):
        load_config(None, ["seed=-1"])


def test_split_folds_partition_the_non_test_answers_with_the_test_split_fixed() -> None:
    pairs = load_builtin("zaragoza")
    plain = split(pairs, 2)
    folds = [split(pairs, 2, folds=5, fold=i) for i in range(5)]
    for result in folds:
        assert result.test == plain.test  # cross-validation never touches the test split
        assert not _answers(result.train) & _answers(result.val)
        assert len(result.train) + len(result.val) == len(plain.train) + len(plain.val)
    vals = [_answers(s.val) for s in folds]
    assert set().union(*vals) == _answers(plain.train) | _answers(plain.val)
    assert sum(len(v) for v in vals) == len(set().union(*vals))  # disjoint: each answer once
    sizes = sorted(sum(p.answer in v for p in pairs) for v in vals)
    assert sizes[-1] - sizes[0] <= 2  # (nearly) equal folds, in pairs (groups of up to 2)
    backward = split(pairs[::-1], 2, folds=5, fold=1)
    assert _answers(backward.val) == vals[1]  # independent of the input order


def test_split_folds_need_enough_answers_and_unpinned_data() -> None:
    pairs = [QAPair(f"q{i}", f"a{i}", f"f:{i}") for i in range(4)]
    assert _error(split, pairs, 0, folds=4, fold=0) == (
        "need at least 5 groups of pairs sharing no question or answer text for 4 folds, got 4"
    )
    pinned = [QAPair("q", "a", "f.jsonl:1", split="train")]
    with pytest.raises(ConfigError, match=r"f\.jsonl:1 pins its split"):
        split_dataset(pinned, DataConfig(folds=3), 0)


def test_split_numbers_are_pinned() -> None:
    """Where no text is shared (tech) the leak-free split is the former answer-grouped one."""
    pairs = load_builtin("tech")
    result = split(pairs, 0)
    assert (len(result.train), len(result.val), len(result.test)) == (230, 33, 66)
    assert [p.origin for p in result.test[:3]] == ["tech:2", "tech:10", "tech:15"]
    for name, sizes in [("chatterbot", (823, 118, 235)), ("zaragoza", (352, 50, 101))]:
        result = split(load_builtin(name), 0)
        assert (len(result.train), len(result.val), len(result.test)) == sizes, name


# ---------------------------------------------------------------------------- records


def test_a_pair_round_trips_through_its_record_with_every_field() -> None:
    pair = QAPair(
        "Why?",
        "Because.",
        "d.jsonl:3",
        domain="nlp",
        variant_of="Why so?",
        split="val",
        context=("Hi", "Hello"),
        quality=0.25,
    )
    rec = pair_to_record(pair)
    assert json.loads(json.dumps(rec)) == rec
    back = pair_from_record(rec)
    assert back == pair and back.__dict__ == pair.__dict__
    assert pair_from_record(pair_to_record(pair, "train")).split == "train"
    plain = QAPair("q", "a", "o")
    assert pair_to_record(plain) == {"question": "q", "answer": "a", "origin": "o"}
    assert pair_from_record(pair_to_record(plain)).__dict__ == plain.__dict__
    with pytest.raises(KeyError):
        pair_from_record({"question": "q", "answer": "a"})


def test_a_run_pairs_file_is_data_that_pins_its_split(tmp_path: Path) -> None:
    """pairs.jsonl records, read back through the reader stack, reproduce the split."""
    pairs = load_builtin("zaragoza")[:60]
    first = split(pairs, 1)
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps(pair_to_record(p, name)) + "\n"
            for name in ("train", "val", "test")
            for p in getattr(first, name)
        )
    )
    again, dropped = split_dataset(load_pairs(path), DataConfig(), 99)
    assert dropped == 0
    for name in ("train", "val", "test"):
        got = [(p.question, p.answer, p.domain) for p in getattr(again, name)]
        assert got == [(p.question, p.answer, p.domain) for p in getattr(first, name)]


# ---------------------------------------------------------------------------- data.max_train


def test_max_train_keeps_a_seeded_nested_subset_of_train_only() -> None:
    pairs = load_builtin("chatterbot")
    full, _ = split_dataset(pairs, DataConfig(), 0)
    small, dropped = split_dataset(pairs, DataConfig(max_train=100), 0)
    assert dropped == 0 and len(small.train) == 100
    assert small.val == full.val and small.test == full.test  # one fixed test split
    assert set(small.train) < set(full.train)
    position = {p: i for i, p in enumerate(pairs)}
    assert [position[p] for p in small.train] == sorted(position[p] for p in small.train)
    assert split_dataset(pairs, DataConfig(max_train=100), 0)[0] == small  # deterministic
    tiny, _ = split_dataset(pairs, DataConfig(max_train=40), 0)
    assert set(tiny.train) < set(small.train)  # nested sizes: a learning curve adds data
    other, _ = split_dataset(pairs, DataConfig(max_train=100), 1)
    assert set(other.train) != set(small.train)
    # independent of the input order
    assert set(subsample_train(full.train[::-1], 100, 0)) == set(small.train)
    # a size above the train split is clamped: every train pair is kept
    clamped, _ = split_dataset(pairs, DataConfig(max_train=10**6), 0)
    assert clamped == full
    assert subsample_train(full.train, None, 0) == full.train
    with pytest.raises(ConfigError, match="max_train"):
        load_config(None, ["data.max_train=0"])


def test_max_train_applies_to_pinned_splits_and_drops_the_variants_of_left_out_pairs() -> None:
    originals = [QAPair(f"q{i}", f"a{i}", f"f:{i}", split="train") for i in range(20)]
    originals += [QAPair("qv", "av", "f:v", split="val"), QAPair("qt", "at", "f:t", split="test")]
    variants = [QAPair(f"q{i} again?", f"a{i}", f"f:{i}v", variant_of=f"q{i}") for i in range(20)]
    result, dropped = split_dataset(originals + variants, DataConfig(max_train=5), 3)
    kept = [p for p in result.train if p.variant_of is None]
    assert len(kept) == 5 and dropped == 15
    assert {p.variant_of for p in result.train if p.variant_of} == {p.question for p in kept}
