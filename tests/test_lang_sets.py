"""Compound questions, negation and set phrasing (issue: answers a clinician can trust)."""
from __future__ import annotations

import pytest

from vlseg.language import Parse, QueryParser


@pytest.fixture(scope="module")
def parser():
    return QueryParser()


@pytest.mark.parametrize("query, intents, per_part", [
    ("where is the tumor, how big is it, and what fraction of the core is necrotic?",
     ("location", "volume", "ratio"), [("WT",), ("WT",), ("NCR", "TC")]),
    ("How large is the enhancing tumor and where is it located?", ("volume", "location"),
     [("ET",), ("ET",)]),
    ("how many lesions are there, and is the edema crossing the midline?", ("count", "midline"),
     [("WT",), ("ED",)]),
    ("Outline the necrosis; then tell me its volume", ("segment", "volume"), [("NCR",), ("NCR",)]),
])
def test_compound_questions_keep_every_part_in_order(parser, query, intents, per_part):
    p = parser.parse(query)
    assert p.intents == intents and p.intent == intents[0]
    assert [q.concepts for q in p.parts] == per_part
    doc = p.to_json()
    assert doc["intents"] == list(intents) and len(doc["parts"]) == len(intents)
    assert Parse.from_json(doc) == p


@pytest.mark.parametrize("query", [
    "segment the necrotic core and the edema", "edema, enhancing and necrotic parts",
    "show me the enhancing tumor as well as the swelling",
])
def test_lists_of_regions_stay_one_question(parser, query):
    p = parser.parse(query)
    assert p.parts == () and p.intents == ("segment",)


@pytest.mark.parametrize("query, concepts", [
    ("no edema, just the core", ("TC",)),
    ("not the swelling, only the enhancing part", ("ET",)),
    ("skip the necrosis and show the enhancing tumour", ("ET",)),
    ("segment the edema but not the necrotic core", ("ED",)),
    ("the core without the necrosis", ("ET",)),
    ("tumour core excluding the enhancing rim", ("NCR",)),
    ("the whole tumor minus the core", ("ED",)),
    ("the tumor without the swelling", ("TC",)),
    ("segment everything except the edema", ("NCR", "ET")),
    ("all but the necrosis", ("ED", "ET")),
    ("all regions other than the enhancing tumor", ("NCR", "ED")),
])
def test_negation_and_set_phrasing(parser, query, concepts):
    p = parser.parse(query)
    assert not p.refused, p.reason
    assert p.concepts == concepts


def test_a_refused_part_of_a_compound_question_is_kept_and_said(parser):
    p = parser.parse("how big is the tumor, and can you segment the hippocampus?")
    assert p.intents == ("volume", "refuse") and p.intent == "volume" and not p.refused
    assert p.concepts == ("WT",) and "hippocampus" in p.parts[1].reason
    from vlseg.reasoning.answer import Facts
    from vlseg.segmenter.dialogue import answer_text_parts

    text = answer_text_parts([(p.parts[1].spec, Facts(reason=p.parts[1].reason)),
                              (p.parts[1].spec, Facts(reason="x"))], sequences_used=[])
    assert text.splitlines()[0].startswith("I can't answer that: “hippocampus”")
    assert "I can segment and measure" not in text   # one line per refused part, no long list


@pytest.mark.parametrize("query", ["is it multifocal?", "Is the tumour multicentric?",
                                   "are there several separate lesions?"])
def test_multifocality_is_a_count_of_the_tumor(parser, query):
    p = parser.parse(query)
    assert (p.intent, p.concepts) == ("count", ("WT",))
