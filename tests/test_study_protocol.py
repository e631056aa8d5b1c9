"""The headline's rows: matched by the config each run recorded, not by its name."""

from __future__ import annotations

import copy

from benchmarks.study_protocol import differing, headline_selection, protocol

from cellcube.config import Config


def _row(corpus: str, seed: int, config: dict) -> dict:
    return {"corpus": corpus, "seed": seed, "fold": None, "train_size": "all",
            "variant": "default", "config": config}  # fmt: skip


def test_rows_under_other_defaults_leave_the_headline_or_are_named():
    today = Config().to_dict()
    before = copy.deepcopy(today)  # a row written before train.select_window existed ran with 1
    del before["train"]["select_window"]
    other_decay = copy.deepcopy(today)
    other_decay["train"]["models"] = {}
    run_keys = copy.deepcopy(today)  # seed, corpus and cache path name the run only
    run_keys["data"]["corpus"], run_keys["seed"] = "tech", 4
    rows = [
        _row("tech", 0, today), _row("tech", 1, before), _row("tech", 4, run_keys),
        _row("zaragoza", 0, other_decay), _row("zaragoza", 1, other_decay),
    ]  # fmt: skip
    chosen, notes = headline_selection(rows)
    assert [(r["corpus"], r["seed"]) for r in chosen] == [("tech", 0), ("tech", 4), ("zaragoza", 0),
                                                          ("zaragoza", 1)]  # fmt: skip
    assert notes == {"zaragoza": ["train.models"]}
    assert differing(before, protocol(today)) == ["train.select_window"]
    # a key that only matters in another mode is not compared
    denoise = copy.deepcopy(today)
    denoise["data"]["denoise"] = ["typo:0.1"]
    assert differing(denoise, protocol(today)) == []
    assert differing({"train": {"no_such_key": 1}}, protocol(today)) == ["config"]
