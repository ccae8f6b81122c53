"""Long text cut into turns a node accepts: at most MAX_TEXT_CHARS each, cut at the last
sentence end (else the last space) inside the limit, so no turn ends mid-word."""

from __future__ import annotations

import re

#: What a node takes in one text turn.
MAX_TEXT_CHARS = 5000

_SENTENCE_END = re.compile(r"[.!?;:\u3002\uff01\uff1f]['\")\]]*\s")


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """`text` as consecutive parts of at most `limit` characters (one part when it fits)."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends else window.rfind(" ") + 1
        if cut <= 0:  # one word longer than the limit
            cut = limit
        parts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        parts.append(rest)
    return parts
