"""Phrase-bank decoder: nearest neighbours by cosine, and bank files."""

from __future__ import annotations

import pytest
import torch

from cellcube.decode.bank import PhraseBank, read_bank_file
from cellcube.errors import DataError


def test_search_returns_nearest_phrases_best_first():
    bank = PhraseBank(["x", "y", "z"], torch.eye(3) * 5)  # scale is irrelevant: cosine
    result = bank.search(torch.tensor([[0.1, 1.0, 0.5], [0.0, 0.0, -1.0]]), k=2)
    assert [p for p, _ in result[0]] == ["y", "z"]
    assert result[0][0][1] == pytest.approx(1.0 / (1.0 + 0.25 + 0.01) ** 0.5)
    assert result[1][0][0] in {"x", "y"}  # both score 0, z scores -1
    assert len(bank.search(torch.ones(1, 3), k=10)[0]) == 3  # k larger than the bank


def test_bank_files(tmp_path):
    txt = tmp_path / "bank.txt"
    txt.write_text("first\n\n  second  \nfirst\n")
    assert read_bank_file(txt) == ["first", "second"]
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": "a1"}\n')
    assert read_bank_file(jsonl) == ["a1"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match=r"empty\.txt: no phrases"):
        read_bank_file(tmp_path / "empty.txt")
    with pytest.raises(DataError, match=r"missing\.txt: no such file"):
        read_bank_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"bad\.txt: invalid UTF-8"):
        read_bank_file(tmp_path / "bad.txt")
