"""Which runs show the current default: the headline's rows, matched by the config they ran.

A results row records the whole config its run used. The headline (README block and the study
page's first section) shows, per corpus, the full-size runs whose config equals today's
``Config()`` on every key that changes what is trained -- not the run-specific keys
(:data:`RUN_KEYS`). When the defaults change, older rows drop out of the headline by themselves;
a corpus with no run under today's defaults shows its closest runs with the differing keys named
(:func:`headline_selection`).

A row written before a key existed ran with the behaviour the key's :data:`LEGACY` value names
(a key whose default changed after it was added); every other missing key takes its default,
which is the behaviour from before the key.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import ValidationError

from benchmarks.study_tables import HEADLINE_VARIANTS
from cellcube.config import Config

RUN_KEYS = (
    "seed",
    "data.corpus",
    "data.fold",
    "data.folds",
    "cache.path",
    "cache.enabled",
    "train.progress",
    "train.keep_freed_memory",
    "eval.finetune_teacher",
)
"""Keys that name the run (which data, which seed, where the cache is) or only add a baseline."""

LEGACY = {"train.select_window": 1}
"""Keys whose default changed after they were added: the value a row without the key ran with."""

ONLY_WHEN = {"data.denoise": ("mode", "denoise")}
"""Keys that change training only when another key has a value (else they are not compared)."""


def _get(tree: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str] | None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.get(p)
        if not isinstance(tree, dict):
            return None
    return tree, leaf


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "train.models":
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def protocol(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The training-relevant keys of a recorded config (flattened, validated, legacy keys
    filled, run keys dropped); None when it no longer validates."""
    if not isinstance(config, dict):
        return None
    filled = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for dotted, value in LEGACY.items():
        found = _get(filled, dotted)
        if found is not None and found[1] not in found[0]:
            found[0][found[1]] = value
    try:
        flat = _flat(Config.model_validate(filled).to_dict())
    except ValidationError:
        return None
    unused = {k for k, (key, value) in ONLY_WHEN.items() if flat.get(key) != value}
    return {k: v for k, v in flat.items() if k not in RUN_KEYS and k not in unused}


def differing(config: dict[str, Any] | None, default: dict[str, Any]) -> list[str]:
    """The keys where a recorded config differs from the default protocol (``["config"]`` when
    it no longer validates)."""
    own = protocol(config)
    if own is None:
        return ["config"]
    return sorted(k for k in default if own.get(k) != default[k])


def full_size_default_candidates(row: dict[str, Any]) -> bool:
    """A full-size, unfolded run of a headline variant (``finetune`` only adds a baseline to
    ``default``), whatever its config."""
    return (
        row.get("train_size") == "all"
        and row.get("fold") is None
        and row.get("variant") in HEADLINE_VARIANTS
    )


def headline_selection(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The headline's rows, and per corpus shown under other settings, the keys that differ.

    Per corpus: the candidate rows under today's default protocol; with none, the rows of the
    candidates' protocol closest to it (fewest differing keys, then the most runs).
    """
    default = protocol(Config().to_dict())
    assert default is not None
    by_corpus: dict[str, dict[tuple[str, ...], list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        if full_size_default_candidates(row):
            keys = tuple(differing(row.get("config"), default))
            by_corpus[row["corpus"]][keys].append(row)
    chosen: list[dict[str, Any]] = []
    notes: dict[str, list[str]] = {}
    for corpus, groups in sorted(by_corpus.items()):
        keys = min(groups, key=lambda k: (len(k), -len(groups[k])))
        chosen += groups[keys]
        if keys:
            notes[corpus] = list(keys)
    return chosen, notes


def notes_lines(notes: dict[str, list[str]]) -> list[str]:
    """One line per corpus shown under other settings than today's defaults."""
    return [
        f"- {corpus}: no run under today's defaults yet; shown: its runs with other "
        f"{', '.join(f'`{k}`' for k in keys)} (the config each row records)."
        for corpus, keys in notes.items()
    ]
