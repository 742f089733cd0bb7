"""Location, distance and midline-shift questions: places are named, not taken as targets."""
from __future__ import annotations

import pytest

from vlseg.language import QueryParser


@pytest.fixture(scope="module")
def parser():
    return QueryParser()


@pytest.mark.parametrize("query, intent, concepts, places", [
    ("does it reach the occipital lobe?", "location", ("WT",), [("lobe", "occipital")]),
    ("Does the enhancing tumour extend into the left temporal lobe?", "location", ("ET",),
     [("side", "left"), ("lobe", "temporal")]),
    ("is the oedema in the right hemisphere?", "location", ("ED",), [("side", "right")]),
    ("which lobes does the tumor involve?", "location", ("WT",), []),
    ("how far is the tumor from the motor cortex?", "distance", ("WT",), [("structure", "motor_cortex")]),
    ("is the enhancing part close to Broca's area", "distance", ("ET",), [("structure", "broca_area")]),
    ("distance between the necrosis and the lateral ventricles", "distance", ("NCR",),
     [("structure", "lateral_ventricles")]),
    ("does the edema touch the thalamus or the brain stem?", "distance", ("ED",),
     [("structure", "thalamus"), ("structure", "brainstem")]),
    ("how many mm is the lesion from the midline", "distance", ("WT",), [("structure", "midline")]),
    ("near the precentral gyrus?", "distance", ("WT",), [("structure", "motor_cortex")]),
    ("Which hemisphere is involved?", "location", ("WT",), []),
    ("Does the lesion extend across the corpus callosum?", "distance", ("WT",),
     [("structure", "corpus_callosum")]),
    ("Is there involvement of the motor strip?", "distance", ("WT",), [("structure", "motor_cortex")]),
    ("is there midline shift?", "shift", ("WT",), []),
    ("any mass effect on the midline?", "shift", ("WT",), []),
])
def test_places_are_not_targets(parser, query, intent, concepts, places):
    p = parser.parse(query)
    assert not p.refused, p.reason
    assert (p.intent, p.concepts) == (intent, concepts)
    assert [(x.kind, x.key) for x in p.places] == places


def test_anatomy_as_a_target_is_still_refused(parser):
    p = parser.parse("segment the ventricles")
    assert p.refused and "ventricles" in p.reason


def test_distance_follow_up_keeps_the_previous_target(parser):
    first = parser.parse("segment the enhancing tumor")
    p = parser.parse("how far is it from the motor cortex?", previous=first)
    assert (p.intent, p.concepts, p.refers_to_previous) == ("distance", ("ET",), True)
