"""The case-fact table: facts about a whole scan (not a region) that intents report.

An intent names the facts it reports (``Intent.case_facts``); the dialogue computes each once per
case through :func:`compute` and keeps ``{name: value}`` or ``{"<name>_error": why}`` (a failure
is said in the answer, never raised). A fact's value joins answer.json's top level. Adding a fact
is one entry here (plus the composer that says it).

    facts = compute(MIDLINE_SHIFT, FactInputs(images=case.images, affine=case.affine, locator=loc))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

import numpy as np

from vlseg.errors import VlsegError
from vlseg.reasoning.atlas import AtlasLocator
from vlseg.reasoning.midline import case_midline_shift

Json = Union[str, int, float, bool, None, list["Json"], dict[str, "Json"]]


@dataclass(frozen=True)
class FactInputs:
    """What a case fact may be computed from: the scan, its registration, the labelling."""

    images: Mapping[str, np.ndarray]  # sequence -> (X, Y, Z) RAS+
    affine: np.ndarray  # (4, 4)
    locator: AtlasLocator | None = None  # None: the atlas registration failed
    locator_failed: str | None = None  # why it failed
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)  # concept -> bool (X, Y, Z)


@dataclass(frozen=True)
class CaseFact:
    """One case-level fact: its name (the key composers read) and how it is computed."""

    name: str
    compute: Callable[[FactInputs], dict[str, Json]]  # its answer.json fields; raises on failure
    needs_locator: bool = True


def _midline_shift(inputs: FactInputs) -> dict[str, Json]:
    shift = case_midline_shift(inputs.images, inputs.affine, locator=inputs.locator,
                               exclude=inputs.masks.get("WT"))
    return shift.to_json()


MIDLINE_SHIFT = CaseFact("midline_shift", _midline_shift)
TABLE: tuple[CaseFact, ...] = (MIDLINE_SHIFT,)


def compute(fact: CaseFact, inputs: FactInputs) -> dict[str, Json]:
    """``{fact.name: fields}``, or ``{"<name>_error": one line}`` when it cannot be computed."""
    if fact.needs_locator and inputs.locator is None:
        return {f"{fact.name}_error": inputs.locator_failed or "no atlas registration"}
    try:
        return {fact.name: fact.compute(inputs)}
    except (VlsegError, ValueError, RuntimeError) as e:
        return {f"{fact.name}_error": str(e).splitlines()[0] if str(e) else type(e).__name__}


def answer_fields(facts: Mapping[str, Json]) -> dict[str, Json]:
    """What the computed facts add to answer.json's top level (errors are said in the text)."""
    out: dict[str, Json] = {}
    for fact in TABLE:
        value = facts.get(fact.name)
        if isinstance(value, dict):
            out.update(value)
    return out


__all__ = ["CaseFact", "FactInputs", "Json", "MIDLINE_SHIFT", "TABLE", "compute", "answer_fields"]
