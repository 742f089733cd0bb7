"""Grounded reasoning: measurements, atlas location, sub-region relations and answer sentences."""
from vlseg.reasoning.answer import DISCLAIMER, Facts, finish, measurement_to_json, relations_to_json
from vlseg.reasoning.atlas import AtlasLocator
from vlseg.reasoning.measure import TargetMeasurement, clean_mask, measure_target
from vlseg.reasoning.relations import Relations, relations
from vlseg.vocab.places import LOBES

__all__ = [
    "AtlasLocator", "DISCLAIMER", "Facts", "LOBES", "Relations", "TargetMeasurement", "clean_mask",
    "finish", "measure_target", "measurement_to_json", "relations", "relations_to_json",
]
