"""Text rules of the query parser (no text encoder needed: fast)."""
from __future__ import annotations

import pytest

from vlseg.language import intents
from vlseg.language import rules


@pytest.mark.parametrize("query, expected", [
    ("Segment the Tumour!", "segment the tumor"),
    ("how big is the oedema?", "how big is the edema"),
    ("segment the necrotc core", "segment the necrotic core"),
    ("outline the enhansing tumor", "outline the enhancing tumor"),
    ("segmnt the edma", "segment the edema"),
    ("show ET and ED", "show enhancing tumor and edema"),
    ("edema/necrosis", "edema, necrosis"),
    ("the tumor without the edema", "tumor core"),
])
def test_normalize_spelling_typos_abbreviations(query, expected):
    assert rules.normalize(query).replace("the tumor core", "tumor core") == expected


def test_normalize_leaves_other_words_alone():
    # Lower-case "et"/"ed" are not abbreviations; unrelated words are not "corrected".
    assert rules.normalize("et cetera, ed") == "et cetera, ed"
    assert rules.normalize("the liver and the rumor") == "the liver and the rumor"


def _texts(query: str) -> list[str]:
    return [s.text for s in rules.split_targets(rules.normalize(query))]


@pytest.mark.parametrize("query, expected", [
    ("segment the necrotic core and the edema", ["necrotic core", "edema"]),
    ("edema, enhancing and necrotic parts", ["edema", "enhancing parts", "necrotic parts"]),
    ("the enhancing tumor as well as the swelling", ["enhancing tumor", "swelling"]),
    ("the tumor core plus the edema", ["tumor core", "edema"]),
    ("both the necrosis and the enhancing rim", ["necrosis", "enhancing rim"]),
    ("the enhancing and non-enhancing tumor", ["enhancing tumor", "non-enhancing tumor"]),
    ("the necrotic and enhancing parts of the tumor",
     ["necrotic parts of tumor", "enhancing parts of tumor"]),
    ("is the tumor in the left hemisphere?", ["tumor"]),
    ("segment the tumor but not the edema", ["tumor core"]),
])
def test_split_targets_keeps_user_order(query, expected):
    assert _texts(query) == expected


def test_reference_spans():
    spans = rules.split_targets(rules.normalize("how big is it?"))
    assert len(spans) == 1 and spans[0].is_reference and spans[0].had_pronoun
    assert rules.split_targets(rules.normalize("how big?")) == []
    (span,) = rules.split_targets(rules.normalize("where is that region"))
    assert span.is_reference


@pytest.mark.parametrize("query, intent", [
    ("segment the tumor", "segment"),
    ("how big is the edema", "volume"),
    ("how many mL is the edema?", "volume"),
    ("what is the volume of the whole tumor", "volume"),
    ("where is the necrosis", "location"),
    ("which lobe is it in", "location"),
    ("which hemisphere", "location"),
    ("does the tumor cross the midline?", "midline"),
    ("is the lesion bilateral", "midline"),
    ("what fraction of the core is necrotic?", "ratio"),
    ("ratio of edema to tumor", "ratio"),
    ("how many lesions are there?", "count"),
    ("the edema", None),
])
def test_detect_intent(query, intent):
    assert intents.detect(rules.normalize(query)) == intent


@pytest.mark.parametrize("query, expected", [
    ("what fraction of the core is necrotic", ["necrotic", "core"]),
    ("what percentage of the tumor is edema", ["edema", "tumor"]),
    ("ratio of edema to tumor", ["edema", "tumor"]),
    ("the edema to core ratio", ["edema", "core"]),
    ("necrotic fraction of the tumor core", ["necrotic", "tumor core"]),
])
def test_ratio_spans_part_then_whole(query, expected):
    spans = rules.ratio_spans(rules.normalize(query))
    assert spans is not None and [s.text for s in spans] == expected


@pytest.mark.parametrize("text, concept", [
    ("necrotic core", "NCR"), ("non-enhancing tumor core", "NCR"), ("enhancing rim", "ET"),
    ("peritumoral edema", "ED"), ("swelling", "ED"), ("tumor core", "TC"), ("core", "TC"),
    ("tumor", "WT"), ("lesions", "WT"), ("edema around tumor", "ED"),
    ("enhancing rim around necrosis", "ET"), ("fluid", None),
])
def test_keyword_tiers(text, concept):
    assert rules.keyword_concept(text) == concept
