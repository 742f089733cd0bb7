"""Places a question may name: lobes, hemispheres and brain structures (for location and
distance questions). The lobe names, the structures and the words for each come from the
vocabulary (``vlseg.vocab.places``); here only finding them in a question.

    find_places("does it reach the left occipital lobe?")
    # [Place(kind='side', key='left', ...), Place(kind='lobe', key='occipital', ...)]
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from vlseg.vocab.places import ALIASES, LOBE_ALIASES, LOBES, STRUCTURE_KEYS

_SIDE = re.compile(r"\b(left|right)( (hemisphere|side|half|brain))?\b")


@dataclass(frozen=True)
class Place:
    """A place named in a question: ``kind`` is lobe, side or structure; ``key`` its table key."""

    kind: str
    key: str
    phrase: str
    start: int = 0
    end: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "phrase": self.phrase}


@functools.lru_cache(maxsize=1)
def _pattern() -> tuple[re.Pattern[str], dict[str, tuple[str, str]]]:
    words: dict[str, tuple[str, str]] = {}
    for lobe in LOBES:
        words[lobe] = ("lobe", lobe)
    for alias, lobe in LOBE_ALIASES.items():
        words[alias] = ("lobe", lobe)
    for alias, key in ALIASES.items():
        words.setdefault(alias, ("structure", key))
    alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alt})\b"), words


def structure_alternation() -> str:
    """Regex alternation of every structure alias (for the distance intent's pattern)."""
    return "|".join(re.escape(a) for a in sorted(ALIASES, key=len, reverse=True))


def find_places(text: str, *, prefer_structures: bool = False) -> list[Place]:
    """Lobes, sides and structures named in normalized ``text``, in order. A word that is both a
    lobe and a structure (brainstem) is a structure when ``prefer_structures``."""
    pattern, words = _pattern()
    out: list[Place] = []
    for m in pattern.finditer(text):
        kind, key = words[m.group(1)]
        if kind == "lobe" and prefer_structures and key in STRUCTURE_KEYS:
            kind = "structure"
        elif kind == "lobe" and prefer_structures and m.group(1) in ALIASES:
            kind, key = "structure", ALIASES[m.group(1)]
        out.append(Place(kind, key, m.group(0), m.start(), m.end()))
    for m in _SIDE.finditer(text):
        out.append(Place("side", m.group(1), m.group(0), m.start(), m.end()))
    return sorted(out, key=lambda p: p.start)


def without_places(text: str, places: list[Place]) -> str:
    """The text with each place phrase (and the preposition and "lobe" words around it)
    removed, so that "how far is the tumor from the motor cortex" names only the tumor."""
    for p in sorted(places, key=lambda p: -p.start):
        text = text[:p.start] + " " + text[p.end:]
    text = re.sub(r"\b(from|to|near|into|in|of|on|toward|towards|the|a)\s+(the\s+)?(lobes?|hemispheres?|"
                  r"sides?)?\s*(?=,|$|\?)", " ", text)
    text = re.sub(r"\b(lobes?|hemispheres?)\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()
