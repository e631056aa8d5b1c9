"""Hostile-input fuzzing of everything that reads user files: data loaders and the config loader.

Contract under test: any input ends in success or in exactly one :class:`CellcubeError` whose
message is a single line naming the file (no other exception, no traceback, no hang). When
loading succeeds the result must be usable downstream: texts are non-empty, stripped and valid
UTF-8 (they are written back to ``pairs.jsonl``), and a config round-trips through its YAML dump.
Example counts are reported to the reliability report (see ``_reliability.py``).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import _reliability
from cellcube.config import Config, DataConfig, dump_config, load_config
from cellcube.data import QAPair, read_path
from cellcube.errors import ConfigError, DataError

pytestmark = pytest.mark.fuzz

EXAMPLES = 120
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples in CI every time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its raw example
)

# Adversarial fragments mixed into generated files.
HOSTILE_LINES = [
    "",
    " ",
    "\ufeff",
    "null",
    "[]",
    "{}",
    '{"question": NaN, "answer": Infinity}',
    '{"question": "q", "answer": -Infinity}',
    '{"question": "q", "question": "again", "answer": "a"}',
    '{"question": "\\ud800", "answer": "lone surrogate"}',
    '{"question": "q\\u0000", "answer": "nul"}',
    '{"question": "q\\u2028", "answer": "line separator"}',
    '{"question": 1e999, "answer": "a"}',
    '{"question": "q", "answer": ' + "9" * 5000 + "}",
    "[" * 50_000 + "]" * 50_000,
    '{"a":' * 20_000 + "1" + "}" * 20_000,
    '{"question": "' + "x" * 300_000 + '", "answer": "huge"}',
    '{"question": "ok", "answer": "fine"}',
    '{"question": "  ", "answer": "blank"}',
    '{"question": ["a"], "answer": {"b": 1}}',
    '"just a string"',
    "{'single': 'quotes'}",
]
HOSTILE_BYTES = [b"\xff\xfe", b"\x80abc", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\r", b"\r\n"]


def _check_error(exc: BaseException, path: Path) -> None:
    """A user-facing error: one non-empty line that names the file."""
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg[:200])
    assert str(path) in msg or path.name in msg, msg[:200]
    assert len(msg) < 2000, len(msg)


def _check_pairs(pairs: list[QAPair]) -> None:
    assert pairs
    for p in pairs:
        for text in (p.question, p.answer):
            assert isinstance(text, str) and text and text == text.strip()
            text.encode("utf-8")  # must be writable to pairs.jsonl / hashable by the cache
        json.dumps({"q": p.question}, ensure_ascii=False).encode("utf-8")


def _load(directory: Path, name: str, content: bytes) -> None:
    path = directory / name
    path.write_bytes(content)
    try:
        pairs, _ = read_path(path)
    except DataError as exc:
        _check_error(exc, path)
    else:
        _check_pairs(pairs)
    try:  # skip mode: every malformed record is skipped, never raised
        pairs, report = read_path(path, DataConfig(skip_invalid=True))
    except DataError as exc:
        _check_error(exc, path)
        assert "no question/answer pairs found" in str(exc) or "unsupported" in str(exc), exc
    else:
        _check_pairs(pairs)
        for skip in report.skipped:
            assert "\n" not in skip.message and skip.message.startswith(skip.where), skip


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
records = st.dictionaries(
    st.sampled_from(["question", "answer", "Question", "", "answer "]) | st.text(max_size=8),
    json_values,
    max_size=4,
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    """Lines of JSON records (some valid), hostile lines and raw hostile bytes, joined."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            rec = draw(records)
            text = json.dumps(rec, ensure_ascii=draw(st.booleans()))
            parts.append(text.encode("utf-8", "surrogatepass"))
        elif kind == 1:
            q, a = draw(st.text(min_size=0, max_size=20)), draw(st.text(max_size=20))
            parts.append(json.dumps({"question": q, "answer": a}).encode())
        elif kind == 2:
            parts.append(draw(st.sampled_from(HOSTILE_LINES)).encode("utf-8", "surrogatepass"))
        else:
            parts.append(draw(st.sampled_from(HOSTILE_BYTES)) + draw(st.binary(max_size=20)))
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    return sep.join(parts)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A CSV/TSV header (sometimes wrong) and rows of random, quoted or hostile fields."""
    suffix, delim = draw(st.sampled_from([(".csv", ","), (".tsv", "\t")]))
    header = draw(
        st.sampled_from(
            [["question", "answer"], ["answer", "question", "x"], ["question"], ["q", "a"], []]
        )
        | st.lists(st.text(max_size=8), max_size=4)
    )
    field = st.text(max_size=20) | st.sampled_from(['"', '""', '"a,b"', "\x00", "x" * 200_000])
    rows = draw(st.lists(st.lists(field, max_size=4), max_size=8))
    lines = [delim.join(header), *(delim.join(r) for r in rows)]
    body = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        body += draw(st.sampled_from(HOSTILE_BYTES))
    return suffix, body


def test_data_loaders_survive_hostile_files() -> None:
    counts = {"jsonl": 0, "csv": 0, "bytes": 0}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)

        @FUZZ
        @given(jsonl_files())
        def jsonl(content: bytes) -> None:
            counts["jsonl"] += 1
            _load(directory, "data.jsonl", content)

        @FUZZ
        @given(csv_files())
        def csv(case: tuple[str, bytes]) -> None:
            counts["csv"] += 1
            _load(directory, "data" + case[0], case[1])

        @FUZZ
        @given(st.binary(max_size=300), st.sampled_from([".jsonl", ".csv", ".tsv", ".txt"]))
        def raw(content: bytes, suffix: str) -> None:
            counts["bytes"] += 1
            _load(directory, "data" + suffix, content)

        jsonl()
        csv()
        raw()
    assert all(n >= EXAMPLES // 2 for n in counts.values()), counts
    _reliability.record("fuzz_data_loaders", examples=sum(counts.values()), **counts)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"question": "q", "question": "r", "answer": "a"}\n', "duplicate key 'question'"),
        (b'{"question": "\\ud83d", "answer": "a"}\n', "field 'question'"),
        (b'{"question": "q", "answer": NaN}\n', "field 'answer' must be a string, got float"),
        (b"[" * 100_000 + b"\n", "nested too deeply"),
        (b'{"question": "q", "answer": "a"}\n\xff\n', ":2: invalid UTF-8"),
    ],
)
def test_jsonl_adversarial_cases_are_named(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_path(path)
    _check_error(info.value, path)
    assert fragment in str(info.value), str(info.value)
    assert f"{path}:" in str(info.value)


def test_data_path_with_nul_byte_is_a_data_error() -> None:
    with pytest.raises(DataError, match="invalid"):
        read_path("bad\x00name.jsonl")


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

SECTION_KEYS = {
    name: list(field.annotation.model_fields)  # type: ignore[union-attr]
    for name, field in Config.model_fields.items()
    if hasattr(field.annotation, "model_fields")
}
config_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["cpu", "faces", "plain", "zaragoza", "32-true", "[2, 2, 2]", ""]),
)
config_values = st.recursive(
    config_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-real section/key names with random values, plus unknown keys now and then."""
    raw: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTION_KEYS, "seed", "mode", "bogus"]))):
        if section in SECTION_KEYS:
            keys = draw(st.lists(st.sampled_from(SECTION_KEYS[section]), max_size=3))
            raw[section] = {k: draw(config_values) for k in keys}
            if draw(st.integers(0, 9)) == 0:
                raw[section][draw(st.text(max_size=6))] = draw(config_values)
        else:
            raw[section] = draw(config_values)
    return raw


HOSTILE_YAML = [
    "",
    "~",
    "- a\n- b\n",
    "train: [1, 2\n",
    "train:\n  epochs: 1\n  epochs: 2\n",
    "train: {lr: .nan}\n",
    "train: {lr: .inf}\n",
    "cube: {lattice: [.inf, 2, 2]}\n",
    "seed: 1e999\n",
    "a: &x [*x]\n",
    "x: !!python/object:os.system ls\n",
    "[" * 20_000,
    "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 300)),
    "train: {epochs: " + "9" * 5000 + "}\n",
    "'\x00'",
    "\t",
    "? [a, b]\n: c\n",
    "key: " + "v" * 300_000 + "\n",
]


def _check_config(path: Path | None, overrides: list[str]) -> None:
    try:
        cfg = load_config(path, overrides)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg[:200])
        assert len(msg) < 2000, len(msg)
        if path is not None:
            assert str(path) in msg, msg[:200]
        return
    # Success: a complete, finite config that survives its own YAML dump.
    for section in cfg.to_dict().values():
        for value in section.values() if isinstance(section, dict) else [section]:
            if isinstance(value, float):
                assert math.isfinite(value)
    assert load_config(None, [f"seed={cfg.seed}"]).seed == cfg.seed
    round_trip = Path(tempfile.mkdtemp()) / "rt.yaml"
    round_trip.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(round_trip) == cfg


def test_config_loader_survives_hostile_yaml() -> None:
    counts = {"structured": 0, "text": 0, "overrides": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"

        @FUZZ
        @given(config_dicts())
        def structured(raw: dict[str, Any]) -> None:
            counts["structured"] += 1
            path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
            _check_config(path, [])

        @FUZZ
        @given(
            st.text(max_size=200)
            | st.sampled_from(HOSTILE_YAML)
            | st.binary(max_size=100).map(lambda b: b.decode("latin-1"))
        )
        def text(content: str) -> None:
            counts["text"] += 1
            path.write_bytes(content.encode("utf-8", "surrogatepass"))
            _check_config(path, [])

        override = st.tuples(
            st.sampled_from([f"{s}.{k}" for s, ks in SECTION_KEYS.items() for k in ks])
            | st.sampled_from(["seed", "mode", "train", "a.b.c", "", ".", "cube..x"])
            | st.text(max_size=10),
            st.sampled_from(["=", ":", "=="]),
            st.text(max_size=20) | st.sampled_from(HOSTILE_YAML[:12]),
        ).map("".join)

        @FUZZ
        @given(st.lists(override, max_size=4))
        def overrides(items: list[str]) -> None:
            counts["overrides"] += 1
            _check_config(None, items)

        structured()
        text()
        overrides()
    assert all(n >= EXAMPLES // 2 for n in counts.values()), counts
    _reliability.record("fuzz_config", examples=sum(counts.values()), **counts)


def test_duplicate_config_key_names_key_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\n  lr: 0.01\n  epochs: 50\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:4: duplicate key 'epochs' (first at line 2)"


def test_duplicate_section_is_an_error_too(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cube:\n  steps: 4\ntrain:\n  lr: 0.01\ncube:\n  steps: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: duplicate key 'cube' \(first at line 1\)"):
        load_config(path)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
def test_non_finite_numbers_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(None, [f"train.lr={value}"])


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
