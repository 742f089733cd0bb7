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

The bundled concepts are :data:`TUMOR_CONCEPTS`; a model's checkpoint names the concepts it
segments (``ModelConfig.concepts``). A concept registered later is prompted by its canonical
phrase like any other (the model is text-conditioned). Label conventions are records too
(:class:`LabelConvention`, :func:`convention`), read by layout detection, training sources,
evaluation, label I/O and DICOM-SEG.
"""
from __future__ import annotations

from typing import Iterator

from vlseg.vocab.concept import RELATION_ROLES, RGB, Concept, DicomCode
from vlseg.vocab.conventions import BUNDLED_CONVENTIONS, LabelConvention

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
    """The disjoint label classes (NCR, ED, ET, RC)."""
    return tuple(c.code for c in _REGISTRY if c.is_base)


def all_regions(timepoint: str | None = None) -> tuple[str, ...]:
    """What "all sub-regions" means on a scan of ``timepoint``: the disjoint classes that exist
    on it (None: on any scan, so NCR, ED, ET; "post" adds the resection cavity)."""
    return tuple(c.code for c in _REGISTRY if c.is_base and c.timepoint in (None, timepoint))


def name(code: str) -> str:
    return concept(code).name


def display_name(code: str, timepoint: str | None = None) -> str:
    """The name answers use on a scan of ``timepoint`` (post-treatment names where they differ)."""
    c = concept(code)
    return c.post_name if timepoint == "post" and c.post_name else c.name


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


# -- relations and ratios ------------------------------------------------------------------------
def relation_concepts() -> tuple[str, ...]:
    """Concepts the relations between sub-regions need (those with a ``relation_role``)."""
    return tuple(c.code for c in _REGISTRY if c.relation_role is not None)


def by_role(role: str) -> str | None:
    """The concept playing ``role`` in the relations (see ``RELATION_ROLES``), or None."""
    if role not in RELATION_ROLES:
        raise ValueError(f"unknown relation role {role!r}; use one of {', '.join(RELATION_ROLES)}")
    return next((c.code for c in _REGISTRY if c.relation_role == role), None)


def ratios() -> dict[str, tuple[str, str, str]]:
    """Named ratios: name -> (part, whole, the whole's other part), e.g.
    ``necrotic_fraction_of_core -> (NCR, TC, ET)``. The other part is the concept made of the
    whole's parts that are not the part's (it may be a composite: ED of WT -> TC). Ordered by
    the whole, innermost first (fractions of the core before fractions of the whole tumor)."""
    out: dict[str, tuple[str, str, str]] = {}
    for c in sorted(_REGISTRY, key=lambda c: len(concept(c.ratio_whole).parts) if c.ratio_whole else 0):
        if c.ratio_name is None or c.ratio_whole is None:
            continue
        rest = tuple(p for p in concept(c.ratio_whole).parts if p not in c.parts)
        other = next((o.code for o in _REGISTRY if set(o.parts) == set(rest)), None)
        if other is not None:
            out[c.ratio_name] = (c.code, c.ratio_whole, other)
    return out


# -- label conventions --------------------------------------------------------------------------
_CONVENTIONS: dict[str, LabelConvention] = {c.name: c for c in BUNDLED_CONVENTIONS}


def register_convention(c: LabelConvention) -> LabelConvention:
    """Add a label convention (its label values are given on the concepts)."""
    if c.name in _CONVENTIONS:
        raise ValueError(f"label convention {c.name!r} is already registered")
    _CONVENTIONS[c.name] = c
    _REGISTRY.version += 1
    return c


def unregister_convention(name: str) -> None:
    _CONVENTIONS.pop(name)
    _REGISTRY.version += 1


def convention_names() -> tuple[str, ...]:
    """Every registered label convention, the default (``brats2023``) first."""
    return tuple(_CONVENTIONS)


def conventions() -> tuple[LabelConvention, ...]:
    return tuple(_CONVENTIONS.values())


def convention(name: str) -> LabelConvention:
    """The convention record; a ``ValueError`` naming the valid ones otherwise."""
    try:
        return _CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown label convention {name!r}; use one of "
                         f"{', '.join(_CONVENTIONS)}") from None


def default_convention() -> str:
    return next(iter(_CONVENTIONS))


def naming_convention(separator: str, token: str) -> str | None:
    """The convention a file name ``<case><separator><token>`` implies (``-t1c`` -> brats2023,
    ``_t1ce`` -> brats2021), or None."""
    low = token.lower()
    for c in _CONVENTIONS.values():
        if c.implied_by_naming and c.separator and separator == c.separator and low in c.file_tokens:
            return c.name
    return None


def label_convention(name: str) -> dict[str, int]:
    """Base class -> label value in convention ``name`` (BraTS 2023/2021/2024, MSD Task01)."""
    convention(name)
    return {c.code: c.labels[name] for c in _REGISTRY if c.is_base and name in c.labels}


def label_conventions() -> dict[str, dict[str, int]]:
    return {name: label_convention(name) for name in _CONVENTIONS}


# -- the bundled tumor concepts -------------------------------------------------------------
from vlseg.vocab.tumor import PRE_TREATMENT_CODES, TUMOR_CODES, TUMOR_CONCEPTS  # noqa: E402

for _c in TUMOR_CONCEPTS:
    register(_c)

__all__ = [
    "Concept", "DicomCode", "LabelConvention", "RELATION_ROLES", "RGB", "SEQUENCES",
    "PRE_TREATMENT_CODES", "SEQUENCE_ALIASES", "SEQUENCE_TITLES", "TUMOR_CODES", "TUMOR_CONCEPTS", "all_regions", "base_codes", "display_name",
    "by_role", "canonical_sequence", "check_concept", "codes", "colors", "concept", "concepts",
    "convention", "convention_names", "conventions", "default_convention", "draw_order",
    "label_convention", "label_conventions", "name", "names", "naming_convention", "parts",
    "ratios", "region_chain", "register", "register_convention", "relation_concepts",
    "unregister", "unregister_convention", "version",
]
