"""The bundled concepts as plain constants, for code that needs a fixed layout (the model's
channel and bit order, label I/O, metrics). Everything is derived from :mod:`vlseg.vocab`, the
one place concepts are defined; code that should follow concepts registered at run time (the
parser, prompt sampler, renderers) calls ``vlseg.vocab`` functions instead.
"""
from __future__ import annotations

from vlseg import vocab
from vlseg.vocab import SEQUENCE_ALIASES, SEQUENCES, canonical_sequence
from vlseg.vocab.labels import concepts_to_labels, labels_to_concepts

CONCEPTS: tuple[str, ...] = tuple(c.code for c in vocab.TUMOR_CONCEPTS)
BASE_CONCEPTS: tuple[str, ...] = tuple(c.code for c in vocab.TUMOR_CONCEPTS if c.is_base)
CONCEPT_NAMES: dict[str, str] = {c.code: c.name for c in vocab.TUMOR_CONCEPTS}
CONCEPT_PARTS: dict[str, tuple[str, ...]] = {c.code: c.parts for c in vocab.TUMOR_CONCEPTS}
LABEL_CONVENTIONS: dict[str, dict[str, int]] = vocab.label_conventions()


def check_convention(convention: str) -> dict[str, int]:
    return vocab.label_convention(convention)


__all__ = [
    "BASE_CONCEPTS", "CONCEPTS", "CONCEPT_NAMES", "CONCEPT_PARTS", "LABEL_CONVENTIONS",
    "SEQUENCES", "SEQUENCE_ALIASES", "canonical_sequence", "check_convention",
    "concepts_to_labels", "labels_to_concepts",
]
