"""Reading a config: the duplicate-key-safe YAML loader, ``--set`` overrides, one-line errors.

:func:`load_config` turns a YAML file (or the built-in defaults) plus ``section.key=value``
overrides into a validated :class:`~cellcube.config.schema.Config`, raising one
:class:`~cellcube.errors.ConfigError` line that names the file and the key;
:func:`dump_config` writes it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cellcube.config.schema import Config
from cellcube.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error.

    PyYAML silently keeps the last of duplicate keys, so ``epochs: 5`` followed later by
    ``epochs: 50`` would train for 50 epochs without a word; here it is a ConfigError naming the
    key and both lines.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_short(key)} (first at line {first})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text: str) -> Any:
    """Parse YAML with :class:`_UniqueKeyLoader`; absurd nesting becomes a YAMLError."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's 4300-digit limit
        raise yaml.YAMLError(f"invalid value ({_short(str(exc)).strip(chr(39))})") from None


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (error messages stay readable)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    msg = " ".join(str(msg).split())
    return f"{source}: {key}: {msg} (got {_short(err.get('input'))}){more}"


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {_short(item)}: expected key=value, e.g. cube.steps=8")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {_short(item)}: empty key segment")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars/lists) to a raw dict."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {_short(item)}: {_short(p)} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or the built-in defaults when ``path`` is None) and validate it.

    Raises :class:`ConfigError` with one line naming the file and the offending key.
    """
    raw: dict[str, Any] = Config().to_dict()  # --set changes single keys of the defaults
    source = "config"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        try:
            loaded = _yaml_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc) or "invalid YAML"
            raise ConfigError(f"{path}{where}: {' '.join(problem.split())}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        raw = loaded
    raw = apply_overrides(raw, overrides)
    if overrides:
        source += " (with --set)"
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def dump_config(cfg: Config) -> str:
    """YAML text of a config, in section order, that :func:`load_config` reads back identically."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
