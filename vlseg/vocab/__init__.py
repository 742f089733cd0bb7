"""The vocabulary: the one home of every tumor concept and MRI sequence name in vlseg.

A :class:`Concept` holds everything the rest of the code needs to know about a region: its code,
display name, canonical prompt, the disjoint classes it is made of, its label value in each
label convention, the parser's synonyms / abbreviations / keywords, the training phrasings and
its display colour. The parser (``vlseg.language``), the training prompt sampler
(``vlseg.training.prompts``), the answer composer (``vlseg.reasoning``), both renderers and the
app read from here. Adding a concept is :func:`register` plus tests.

    from vlseg import vocab
    vocab.codes()                  # ('NCR', 'ED', 'ET', 'TC', 'WT')
    vocab.concept("TC").parts      # ('NCR', 'ET')
    vocab.label_convention("brats2021")  # {'NCR': 1, 'ED': 2, 'ET': 4}

Concepts the model was trained on are :data:`TUMOR_CONCEPTS`; a concept registered later is
prompted by its canonical phrase like any other (the model is text-conditioned).
"""
from __future__ import annotations

from typing import Iterator

from vlseg.vocab.concept import RGB, Concept

from vlseg.vocab.sequences import (
    SEQUENCE_ALIASES,
    SEQUENCE_TITLES,
    SEQUENCES,
    canonical_sequence,
)

class _Registry:
    """Ordered concept table; ``version`` changes on every edit so cached derivations refresh."""

    def __init__(self) -> None:
        self._items: dict[str, Concept] = {}
        self.version = 0

    def add(self, c: Concept, *, replace: bool = False) -> None:
        if c.code in self._items and not replace:
            raise ValueError(f"concept {c.code!r} is already registered")
        unknown = [p for p in c.parts if p != c.code and p not in self._items]
        if unknown:
            raise ValueError(f"concept {c.code}: unknown part(s) {unknown}; register them first")
        self._items[c.code] = c
        self.version += 1

    def remove(self, code: str) -> None:
        users = [c.code for c in self._items.values() if code in c.parts and c.code != code]
        if users:
            raise ValueError(f"concept {code!r} is a part of {users}; remove those first")
        self._items.pop(code)
        self.version += 1

    def __iter__(self) -> Iterator[Concept]:
        return iter(tuple(self._items.values()))

    def get(self, code: str) -> Concept:
        try:
            return self._items[code]
        except KeyError:
            raise ValueError(f"unknown concept {code!r}; use one of {', '.join(self._items)}") from None


_REGISTRY = _Registry()


def register(c: Concept, *, replace: bool = False) -> Concept:
    """Add a concept (its parts must already be registered). Returns it."""
    _REGISTRY.add(c, replace=replace)
    return c


def unregister(code: str) -> None:
    """Remove a concept (tests use this to undo :func:`register`)."""
    _REGISTRY.remove(code)


def version() -> int:
    """Changes whenever the table changes (key for caches derived from it)."""
    return _REGISTRY.version


def concept(code: str) -> Concept:
    """The concept with this code; a ``ValueError`` naming the valid codes otherwise."""
    return _REGISTRY.get(code)


def concepts() -> tuple[Concept, ...]:
    """Every registered concept, in registration order."""
    return tuple(_REGISTRY)


def codes() -> tuple[str, ...]:
    return tuple(c.code for c in _REGISTRY)


def base_codes() -> tuple[str, ...]:
    """The disjoint label classes (NCR, ED, ET)."""
    return tuple(c.code for c in _REGISTRY if c.is_base)


def name(code: str) -> str:
    return concept(code).name


def names() -> dict[str, str]:
    return {c.code: c.name for c in _REGISTRY}


def parts() -> dict[str, tuple[str, ...]]:
    return {c.code: c.parts for c in _REGISTRY}


def colors() -> dict[str, RGB]:
    """Concept -> RGB colour: the one colour table of every picture and the app."""
    return {c.code: c.color for c in _REGISTRY}


def draw_order() -> tuple[str, ...]:
    """Largest composites first, base classes last, so nested parts stay visible when painted."""
    return tuple(sorted(codes(), key=lambda k: -len(concept(k).parts)))


def region_chain() -> tuple[str, ...]:
    """The nested regions (concepts marked ``region``), outermost first, each one's parts
    strictly containing the next's (WT ⊃ TC ⊃ ET for the BraTS vocabulary)."""
    cs = sorted((c for c in _REGISTRY if c.region), key=lambda c: -len(c.parts))
    chain = cs[:1]
    for c in cs[1:]:
        if set(c.parts) < set(chain[-1].parts):
            chain.append(c)
    return tuple(c.code for c in chain)


def check_concept(code: str) -> str:
    concept(code)
    return code


# -- label conventions --------------------------------------------------------------------------
CONVENTIONS: tuple[str, ...] = ("brats2023", "brats2021", "msd", "brats2024")


def label_convention(convention: str) -> dict[str, int]:
    """Base class -> label value in ``convention`` (BraTS 2023/2021/2024, MSD Task01)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    return {c.code: c.labels[convention] for c in _REGISTRY if c.is_base and convention in c.labels}


def label_conventions() -> dict[str, dict[str, int]]:
    return {conv: label_convention(conv) for conv in CONVENTIONS}


# -- the bundled tumor concepts -------------------------------------------------------------
from vlseg.vocab.tumor import TUMOR_CONCEPTS  # noqa: E402

for _c in TUMOR_CONCEPTS:
    register(_c)

__all__ = [
    "Concept", "CONVENTIONS", "RGB", "SEQUENCES", "SEQUENCE_ALIASES", "SEQUENCE_TITLES",
    "TUMOR_CONCEPTS", "base_codes", "canonical_sequence", "check_concept", "codes", "colors",
    "concept", "concepts", "draw_order", "label_convention", "label_conventions", "name", "names",
    "parts", "region_chain", "register", "unregister", "version",
]
