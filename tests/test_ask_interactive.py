"""``cellcube ask``: an interactive session that loads the run once, ``--file``, ``--json``, and
identity's top-1 shown beside the cube's answers when it differs; on a real small run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from _smallrun import small_run
from cellcube.cli.ask import show_text
from cellcube.cli.main import main
from cellcube.decode.answer import Answer
from cellcube.embed import teachers
from cellcube.run.rundir import RunDir


def test_identity_line_only_when_it_differs(capsys):
    same = Answer("q?", [("a", 0.9), ("b", 0.5)], ("a", 0.8))
    other = Answer("q?", [("a", 0.9), ("b", 0.5)], ("c", 0.7))
    show_text(same)
    margin = "  confidence: top-1 minus top-2 cosine 0.400\n"
    assert capsys.readouterr().out == "Q: q?\n  1. [0.900] a\n  2. [0.500] b\n" + margin
    show_text(other)
    assert capsys.readouterr().out.splitlines()[-2] == "  identity's top-1 differs: [0.700] c"
    assert same.agree and not other.agree
    assert same.margin == pytest.approx(0.4) and same.to_json()["margin"] == same.margin
    assert Answer("q?", [("a", 0.9)], ("a", 0.8)).margin is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--file", "missing.txt"], "missing.txt: no such file"),
        (["--file", "blank.txt"], "blank.txt: no questions found"),
        (["hello?", "--file", "blank.txt"], "not both"),
        (["hello?", "-k", "0"], "-k must be >= 1"),
    ],
)
def test_bad_ask_arguments_are_one_clear_error(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert main(["ask", str(tmp_path / "no-run"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


# -- on a real run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory)


@pytest.fixture
def questions(run: Path) -> list[str]:
    return list(dict.fromkeys(p.question for p in RunDir(run).read_pairs().test))[:6]


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the teacher weight loads (``load_backend``) from now on."""
    calls: list[int] = []
    real = teachers.load_backend

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(teachers, "load_backend", counting)
    return calls


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def _texts(answer: dict) -> list[str]:
    """The question, the cube's answers and identity's top-1 of a ``--json`` line."""
    return [answer["question"], *(c["text"] for c in answer["cube"]), answer["identity"]["text"]]


def _scores(answer: dict) -> list[float]:
    """Their scores (equal up to float rounding whether questions come one or many at a time)."""
    return [*(c["score"] for c in answer["cube"]), answer["identity"]["score"]]


@pytest.mark.slow
def test_interactive_session_loads_once_and_answers_every_line(run, questions, monkeypatch, capsys):
    loads = _count_loads(monkeypatch)
    typed = "\n".join([questions[0], "", "   ", *questions[1:]]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert main(["ask", str(run), "-k", "3", "--json"]) == 0
    answers = _json_lines(capsys.readouterr().out)
    assert [a["question"] for a in answers] == questions  # blank lines skipped, order kept
    assert loads == [1]  # the teacher loaded once for six questions
    for a in answers:
        scores = [c["score"] for c in a["cube"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert a["agree"] == (a["cube"][0]["text"] == a["identity"]["text"])


@pytest.mark.slow
def test_text_file_and_json_agree(run, questions, tmp_path, monkeypatch, capsys):
    """The same questions from the command line (text), from --file and interactively (JSON):
    the same answers, and the identity line exactly where identity's top-1 differs."""
    file = tmp_path / "questions.txt"
    file.write_text("\n".join(questions) + "\n\n")
    assert main(["ask", str(run), "-k", "2", "--file", str(file), "--json"]) == 0
    from_file = _json_lines(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(questions)))
    assert main(["ask", str(run), "-k", "2", "--json"]) == 0
    typed = _json_lines(capsys.readouterr().out)
    assert [_texts(a) for a in typed] == [_texts(a) for a in from_file]
    flat = [score for a in from_file for score in _scores(a)]
    assert [score for a in typed for score in _scores(a)] == pytest.approx(flat, abs=1e-5)
    assert main(["ask", str(run), "-k", "2", *questions]) == 0
    blocks = capsys.readouterr().out.split("Q: ")[1:]
    assert len(blocks) == len(questions)
    for block, a in zip(blocks, from_file, strict=True):
        lines = block.splitlines()
        assert lines[0] == a["question"]
        assert lines[1] == f"  1. [{a['cube'][0]['score']:.3f}] {a['cube'][0]['text']}"
        differs = [line for line in lines if line.startswith("  identity's top-1 differs")]
        assert len(differs) == (0 if a["agree"] else 1)


@pytest.mark.slow
def test_identity_top1_is_the_bank_phrase_nearest_the_question(run, questions, tmp_path, capsys):
    """identity's top-1 is the phrase whose teacher embedding is nearest to the question's:
    the question itself when the bank holds it as a phrase."""
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join([*questions[:3], "an unrelated phrase about rivers"]) + "\n")
    assert main(["ask", str(run), "--bank", str(bank), "--json", *questions[:3]]) == 0
    for q, a in zip(questions[:3], _json_lines(capsys.readouterr().out), strict=True):
        assert a["identity"]["text"] == q
        assert a["identity"]["score"] == pytest.approx(1.0, abs=1e-5)
