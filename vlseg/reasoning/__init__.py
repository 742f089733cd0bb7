"""Grounded reasoning: measurements, atlas location, sub-region relations and answer text."""
from vlseg.reasoning.answer import (
    DISCLAIMER, INTENTS, capabilities_text, compose_answer, measurement_to_json, relations_to_json,
)
from vlseg.reasoning.atlas import LOBES, AtlasLocator
from vlseg.reasoning.measure import TargetMeasurement, clean_mask, measure_target
from vlseg.reasoning.relations import relations

__all__ = [
    "AtlasLocator", "DISCLAIMER", "INTENTS", "LOBES", "TargetMeasurement", "capabilities_text",
    "clean_mask", "compose_answer", "measure_target", "measurement_to_json", "relations",
    "relations_to_json",
]
