"""Small HTML helpers of the report page: escaping, tables, sections, numbers."""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence


def esc(value: object) -> str:
    """``value`` as text safe inside HTML (quotes escaped too)."""
    return html.escape(str(value))


def table(
    head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Collection[int] | None = None
) -> str:
    """An HTML table; ``head`` is plain text (escaped here; all empty: no header row), ``rows``
    hold ready HTML cells. The columns ``numeric`` (default: all but the first) are
    right-aligned."""
    right = set(range(1, len(head)) if numeric is None else numeric)
    header = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>"
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in right else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{header if any(head) else ''}<tbody>{body}</tbody></table>"


def section(anchor: str, title: str, *parts: str) -> str:
    """A titled ``<section>`` with the id ``anchor`` (the page's table of contents links it)."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def para(text: str) -> str:
    """A paragraph of ready HTML."""
    return f"<p>{text}</p>"


def number(value: float | None, fmt: str = "{:.3f}") -> str:
    """``value`` formatted, or a dash when it does not apply."""
    return "-" if value is None else fmt.format(value)


def with_interval(value: float, ci: Sequence[float] | None) -> str:
    """``0.529 <small>[0.478, 0.580]</small>``, or the value alone."""
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} <small>[{ci[0]:.3f}, {ci[1]:.3f}]</small>"
