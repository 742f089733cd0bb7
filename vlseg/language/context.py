"""What a follow-up took from the conversation: the record behind answer.json's
``resolved_from_context``.

The parser (``vlseg.language.parse``) resolves a follow-up against the previous question the way a
person would: "how big is it?" keeps the concepts, "and the edema?" keeps the question type (and
the places it asked about), "compare it to the whole tumor" puts the last region where "it"
stands. A :class:`FromContext` lists exactly what came from the earlier turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FromContext:
    """What a follow-up took from the conversation rather than from its own words: the concepts
    ("how big is it?"), the question type ("and the edema?"), the places ("what about the core?"
    after "how far is the tumor from the motor cortex?"), and the query they came from."""

    query: str
    targets: tuple[str, ...] = ()
    intent: str | None = None
    places: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.targets or self.intent or self.places)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "targets": list(self.targets), "intent": self.intent,
                "places": list(self.places)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "FromContext":
        return cls(query=str(obj["query"]), targets=tuple(map(str, obj.get("targets", ()))),
                   intent=obj.get("intent"), places=tuple(map(str, obj.get("places", ()))))
