"""Every malformed input ends in one clear line on stderr, exit status 2, and no output left.

Each case runs the real CLI entry point in a fresh process-like call (``main``) and checks: the
message names the file/line/field, there is no traceback, and the run directory was not created
(or, for evaluation, that the existing report was not touched).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellcube.cli.main import main

FAST = ["--set", "train.progress=false"]


def _train(tmp_path: Path, *sets: str) -> tuple[int, Path]:
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--set", f"cache.path={tmp_path / 'c.sqlite'}", *FAST]
    for s in sets:
        args += ["--set", s]
    return main(args), out


def _assert_one_clear_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    for frag in fragments:
        assert frag in err, (frag, err)


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        (
            "bad.jsonl",
            '{"question": "a", "answer": "b"}\n{"question": "c", "answer"\n',
            ["bad.jsonl:2", "not valid JSON"],
        ),
        (
            "empty.jsonl",
            '{"question": "a", "answer": "b"}\n{"question": "  ", "answer": "d"}\n',
            ["empty.jsonl:2", "'question'", "empty"],
        ),
        ("nocol.csv", "question,reply\nwhat,that\n", ["nocol.csv", "missing column 'answer'"]),
        ("emptyans.csv", "question,answer\nwhat,that\nwho,\n", ["emptyans.csv:3", "'answer'"]),
    ],
)
def test_malformed_data_file(tmp_path, capsys, name, content, fragments):
    data = tmp_path / name
    data.write_text(content)
    code, out = _train(tmp_path, f"data.path={data}")
    assert code == 2
    _assert_one_clear_line(capsys, *fragments)
    assert not out.exists()


def test_missing_data_file(tmp_path, capsys):
    code, out = _train(tmp_path, f"data.path={tmp_path / 'nope.jsonl'}")
    assert code == 2
    _assert_one_clear_line(capsys, "nope.jsonl", "no such file")
    assert not out.exists()


def test_wrong_lattice_shape(tmp_path, capsys):
    code, out = _train(
        tmp_path,
        "cube.reshaper=plain",
        "cube.lattice=[4,4,4]",
        "cube.channels=5",
        "data.corpus=zaragoza",
    )
    assert code == 2
    _assert_one_clear_line(capsys, "cube.lattice", "4x4x4", "384")
    assert not out.exists()


def test_missing_model_path(tmp_path, capsys):
    code, out = _train(tmp_path, f"teacher.model={tmp_path / 'no_model'}")
    assert code == 2
    _assert_one_clear_line(capsys, "teacher.model", "no_model")
    assert not out.exists()


def test_unknown_config_key(tmp_path, capsys):
    code, out = _train(tmp_path, "cube.colour=red")
    assert code == 2
    _assert_one_clear_line(capsys, "unknown key 'cube.colour'")
    assert not out.exists()


def test_bad_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: many\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    _assert_one_clear_line(capsys, "c.yaml", "train.epochs")


def test_not_a_run_directory(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    _assert_one_clear_line(capsys, "config.yaml", "run directory")


def _fake_run(tmp_path: Path) -> Path:
    """A run directory whose cube checkpoint is truncated, with a report that must survive."""
    run = tmp_path / "run"
    (run / "models" / "cube" / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"cache:\n  path: {tmp_path / 'c.sqlite'}\ntrain:\n  progress: false\neval:\n"
        "  baselines: false\n"
    )
    rows = [
        {"split": s, "question": f"q{i}{s}", "answer": f"a{i}{s}", "origin": "x"}
        for s in ("train", "val", "test")
        for i in range(3)
    ]
    (run / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "models" / "cube" / "checkpoints" / "best.ckpt").write_bytes(b"PK\x03\x04trunc")
    (run / "report.json").write_text('{"keep": true}\n')
    return run


def test_corrupt_checkpoint_on_evaluate_and_ask(tmp_path, capsys):
    run = _fake_run(tmp_path)
    assert main(["evaluate", str(run)]) == 2
    _assert_one_clear_line(capsys, "best.ckpt", "corrupt or truncated checkpoint")
    assert (run / "report.json").read_text() == '{"keep": true}\n'
    assert main(["ask", str(run), "hello?"]) == 2
    _assert_one_clear_line(capsys, "best.ckpt", "corrupt or truncated checkpoint")


def test_corrupt_run_pairs(tmp_path, capsys):
    run = _fake_run(tmp_path)
    with (run / "pairs.jsonl").open("a") as fh:
        fh.write("{not json\n")
    assert main(["evaluate", str(run)]) == 2
    _assert_one_clear_line(capsys, "pairs.jsonl:10", "corrupt")


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    _assert_one_clear_line(capsys, "config.yaml")


class _Evil:
    """A pickle that creates a file when unpickled (a stand-in for arbitrary code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.target), "w"))


def test_a_run_directory_holding_a_malicious_pickle_is_refused(tmp_path, capsys):
    """``evaluate`` and ``ask`` on a run someone sent: its checkpoint's pickle is not executed."""
    import torch

    run = _fake_run(tmp_path)
    sentinel = tmp_path / "pwned"
    evil = {"state_dict": {}, "cellcube": {"rng": _Evil(sentinel)}}
    torch.save(evil, run / "models" / "cube" / "checkpoints" / "best.ckpt")
    for command in (["evaluate", str(run)], ["ask", str(run), "hello?"]):
        assert main(command) == 2
        _assert_one_clear_line(capsys, "best.ckpt", "refused")
        assert not sentinel.exists()
    assert (run / "report.json").read_text() == '{"keep": true}\n'
