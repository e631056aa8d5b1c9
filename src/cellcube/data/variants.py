"""Rule-based rephrasings of a question: the candidate variants of ``cellcube data expand``.

:func:`template_variants` turns an English question into grammatical rewrites, from several
strategies -- a lead-in before the unchanged question (``prefix``), an adverb after the question
word (``adverb``: "What exactly is ..."), an indirect question (``embedded``: "Can you tell me
what X is?"), an instruction (``imperative``: "Explain X."), a different question word
(``question word``: "Why is X useful?" -> "What makes X useful?"), contractions and safe phrase
synonyms (``wording``). It only proposes; the teacher chooses which to keep
(:func:`cellcube.data.expand.expand_pairs`).
"""

from __future__ import annotations

import re

__all__ = ["template_variants"]

_WH = ("what", "how", "why", "when", "which", "where", "who")
_LEAD_INS = ("Quick question: ", "I was wondering, ", "In simple terms, ")
_WORDING = (
    (r"\bWhat is\b", "What's"),
    (r"\bWhat's\b", "What is"),
    (r"\bHow do I\b", "How can I"),
    (r"\bHow can I\b", "How do I"),
    (r"\bdifference between\b", "distinction between"),
    (r"\bis used for\b", "is useful for"),
    (r"\bmachine learning\b", "ML"),
    (r"\bnatural language processing\b", "NLP"),
)
_WHAT_IS = re.compile(r"^(?:What is|What's|What are) (?P<x>[^?]+?)\?$")
_WHAT_ARE = re.compile(r"^What are (?P<x>[^?]+?)\?$")
_DIFFERENCE = re.compile(
    r"^(?:What is|What's) the difference between (?P<a>[^?]+?) and (?P<b>[^?]+?)\?$"
)
_HOW_WORK = re.compile(r"^How (?P<aux>does|do) (?P<x>[^?]+?) work\?$")
# A "What is X?" topic that is really a clause ("X used for", "X and how ...", "meant by X").
_NOT_A_TOPIC = re.compile(
    r"\b(?:and|or) (?:how|why|what|when|which|does|do|is|are|can|should)\b"
    r"|\b(?:for|of|to|in|on|with|about|from|at|by|like|mean|do)$|^(?:meant|it|that|this|there)\b"
)
# Question-word rewrites: (pattern, replacement) on the whole question, grammatical by form.
_SWAPS = (
    (r"^Why is (?P<x>[^?]+)\?$", r"What makes \g<x>?"),
    (r"^Why are (?P<x>[^?]+)\?$", r"What makes \g<x>?"),
    (r"^Why do (?P<x>[^?]+)\?$", r"What is the reason \g<x>?"),
    (r"^When should (?P<x>[^?]+)\?$", r"In which situations should \g<x>?"),
    (r"^How do I (?P<x>[^?]+)\?$", r"What is the best way to \g<x>?"),
    (r"^How can I (?P<x>[^?]+)\?$", r"What is a good way to \g<x>?"),
    (r"^What does (?P<x>[^?]+) do\?$", r"What is the role of \g<x>?"),
    (r"^What is (?P<x>[^?]+) used for\?$", r"What are the uses of \g<x>?"),
    (r"^How does (?P<x>[^?]+) work\?$", r"What is the mechanism behind \g<x>?"),
    (
        r"^(?:What is|What's) the difference between (?P<x>[^?]+) and (?P<y>[^?]+)\?$",
        r"How do \g<x> and \g<y> differ?",
    ),
)


def _lower_first(text: str) -> str:
    """``text`` with its first letter lowered, unless the first word looks like a name/acronym."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or (len(first) > 1 and first[1:2].isupper()):
        return text
    return text[:1].lower() + text[1:]


def template_variants(question: str) -> list[tuple[str, str]]:
    """Rule-based rephrasings of ``question`` as ``(strategy, text)``, distinct, source excluded.

    Only English questions ending in ``?`` get variants (other texts, e.g. chat turns or
    instructions, return ``[]``). The rules only move or add whole phrases around the question,
    so each variant is grammatical when the source is.
    """
    q = " ".join(question.split())
    if not q.endswith("?") or len(q) < 4:
        return []
    out: list[tuple[str, str]] = []
    first, _, rest = q.partition(" ")
    low = _lower_first(q)
    for lead in _LEAD_INS:
        out.append(("prefix", lead + low))
    if first.lower() in _WH and rest:
        out.append(("adverb", f"{first} exactly {rest}"))
    if m := _DIFFERENCE.match(q):
        a, b = m["a"], m["b"]
        out.append(("imperative", f"Explain the difference between {a} and {b}."))
        out.append(("embedded", f"Can you tell me how {a} and {b} differ?"))
        out.append(("imperative", f"Compare {a} and {b}."))
    elif (m := _WHAT_IS.match(q)) and not _NOT_A_TOPIC.search(m["x"]):
        x = m["x"]
        verb = "are" if _WHAT_ARE.match(q) else "is"
        out.append(("imperative", f"Explain {x}."))
        out.append(("imperative", f"Tell me about {x}."))
        out.append(("embedded", f"Can you tell me what {x} {verb}?"))
    elif m := _HOW_WORK.match(q):
        x = m["x"]
        verb = "works" if m["aux"] == "does" else "work"
        out.append(("imperative", f"Explain how {x} {verb}."))
        out.append(("embedded", f"Can you tell me how {x} {verb}?"))
    for pattern, repl in _SWAPS:
        new = re.sub(pattern, repl, q)
        if new != q:
            out.append(("question word", new))
    for pattern, repl in _WORDING:
        new = re.sub(pattern, repl, q, count=1)
        if new != q:
            out.append(("wording", new))
    return _distinct(q, out)


def _distinct(source: str, variants: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``variants`` without repeats (first kept) and without the source itself."""
    seen = {source}
    unique = []
    for strategy, text in variants:
        if text not in seen:
            seen.add(text)
            unique.append((strategy, text))
    return unique
