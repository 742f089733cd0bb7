"""Answer text is grounded: every number and place in it is in the JSON measurements."""
from __future__ import annotations

import re

import numpy as np
import pytest

from vlseg.vocab import PRE_TREATMENT_CODES as CONCEPTS
from vlseg.language.intents import INTENTS, get
from vlseg.reasoning import (
    DISCLAIMER, LOBES, AtlasLocator, Facts, measure_target, measurement_to_json,
    relations, relations_to_json,
)
from vlseg.segmenter.dialogue import answer_text_parts
from vlseg.reasoning.atlas import MNI_2MM_AFFINE, MNI_2MM_SHAPE, apply_affine

def compose_answer(*, intent, targets, phrases, relations, sequences_used, refused=False,
                   help_text=None, notes=()):
    """The answer text of one question, through the dialogue's composition of intent parts."""
    facts = Facts.of(targets, relations, phrases=list(phrases), help_text=help_text)
    return answer_text_parts([(get("refuse" if refused else intent), facts)],
                             sequences_used=sequences_used, notes=notes)


NUMBER = re.compile(r"(?<![A-Za-z0-9.])(-?\d+(?:\.\d+)?)(%?)")


def _numbers_in(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _numbers_in(v)]
    return [n for v in obj for n in _numbers_in(v)]


def _strings_in(obj) -> set[str]:
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set(obj) | {s for v in obj.values() for s in _strings_in(v)}
    if isinstance(obj, (list, tuple)):
        return {s for v in obj for s in _strings_in(v)}
    return set()


def _assert_grounded(text: str, facts: dict) -> None:
    known = _numbers_in(facts)
    for value, pct in NUMBER.findall(text):
        v = float(value) / (100 if pct else 1)
        assert any(abs(v - k) < 1e-9 for k in known), f"{value}{pct} in {text!r} not in JSON"
    places = _strings_in(facts)
    for lobe in LOBES:
        if re.search(rf"\b{lobe}\b", text):
            assert lobe in places, f"{lobe} named but not in the JSON"
    for side, key in (("left hemisphere", "left"), ("right hemisphere", "right"),
                      ("both hemispheres", "bilateral")):
        if side in text:
            assert key in places
    assert text.rstrip().endswith(DISCLAIMER)


@pytest.fixture(scope="module")
def case():
    """Soft probability maps on the MNI grid: a left frontal tumor with a ringed necrotic core."""
    w = apply_affine(MNI_2MM_AFFINE, np.indices(MNI_2MM_SHAPE).reshape(3, -1).T.astype(float))
    r = np.linalg.norm(w - [-35, 25, 28], axis=1).reshape(MNI_2MM_SHAPE)
    soft = lambda lo, hi: np.clip(np.minimum(r - lo + 0.5, hi - r + 0.5) / 2 + 0.5, 0, 1)  # noqa: E731
    probs = {"NCR": soft(-99, 7), "ET": soft(7, 12), "ED": soft(12, 22), "TC": soft(-99, 12),
             "WT": soft(-99, 22), "ET_absent": np.zeros(MNI_2MM_SHAPE)}
    probs = {k: v.astype(np.float32) for k, v in probs.items()}
    loc = AtlasLocator.identity()
    meas = {c: measure_target(c, probs[c], MNI_2MM_AFFINE, locator=loc) for c in CONCEPTS}
    meas["ET_absent"] = measure_target("ET", probs["ET_absent"], MNI_2MM_AFFINE, locator=loc)
    rel = relations({c: probs[c] >= 0.5 for c in ("NCR", "ET", "ED")}, MNI_2MM_AFFINE)
    return meas, rel


QUERIES = [
    ("segment", ["NCR", "ED"]), ("segment", ["WT"]), ("volume", ["TC"]), ("volume", ["ET", "ED"]),
    ("location", ["WT"]), ("midline", ["WT"]), ("ratio", ["NCR", "TC"]), ("ratio", ["NCR"]),
    ("count", ["ET"]), ("help", []), ("refuse", []),
]


@pytest.mark.parametrize("intent, concepts", QUERIES)
def test_every_number_and_place_is_in_the_json(case, intent, concepts):
    meas, rel = case
    targets = [meas[c] for c in concepts]
    text = compose_answer(intent=intent, targets=targets, phrases=[c.lower() for c in concepts],
                          relations=rel, sequences_used=["t1n", "t1c", "t2f"])
    facts = {"targets": [measurement_to_json(t) for t in targets],
             "relations": relations_to_json(rel), "sequences_used": ["t1n", "t1c", "t2f"]}
    _assert_grounded(text, facts)
    if intent not in ("help", "refuse"):
        assert "t2w not given" in text


def test_measured_numbers_actually_appear(case):
    meas, rel = case
    t = meas["WT"]
    j = measurement_to_json(t)
    assert t.present and t.hemisphere == "left" and "frontal" in t.lobes
    text = compose_answer(intent="volume", targets=[t], phrases=["the tumor"], relations=None,
                          sequences_used=["t1n"])
    assert f"{j['volume_ml']:g} mL" in text and f"{j['max_diameter_mm']:g} mm" in text
    loc = compose_answer(intent="location", targets=[t], phrases=["it"], relations=None,
                         sequences_used=["t1n"])
    assert "left hemisphere" in loc and "frontal" in loc and "does not cross the midline" in loc
    ratio = compose_answer(intent="ratio", targets=[meas["NCR"], meas["TC"]], phrases=["a", "b"],
                           relations=rel, sequences_used=["t1n"])
    pct = round(relations_to_json(rel)["necrotic_fraction_of_core"] * 100)
    assert f"{pct}% of the tumor core" in ratio and "rim" not in ratio  # not asked
    rim = answer_text_parts([(get("ratio"), Facts.of([meas["NCR"], meas["TC"]], rel, asks=("rim",)))],
                            sequences_used=["t1n"])
    assert "surrounded by an enhancing rim" in rim and "Edema extends" not in rim


def test_absent_enhancing_tumor_is_said_plainly(case):
    meas, _ = case
    for intent in ("segment", "volume", "location", "midline", "count"):
        text = compose_answer(intent=intent, targets=[meas["ET_absent"]], phrases=["enhancing"],
                              relations=None, sequences_used=["t1n", "t1c", "t2w", "t2f"])
        assert text.splitlines()[0] == "I could not find any enhancing tumor in this scan."
        assert "not given" not in text


def test_refusal_and_help_list_what_can_be_segmented():
    text = compose_answer(intent="refuse", targets=[], phrases=["the liver"], relations=None,
                          sequences_used=[], refused=True)
    assert "the liver" in text and "enhancing tumor (ET)" in text and "whole tumor (WT)" in text
    text = compose_answer(intent="help", targets=[], phrases=[], relations=None, sequences_used=[],
                          help_text="Custom help.", notes=("A caller note.",))
    assert text.splitlines() == ["Custom help.", "A caller note.", DISCLAIMER]


def test_unknown_intent_or_sequence_raises():
    with pytest.raises(ValueError):
        compose_answer(intent="diagnose", targets=[], phrases=[], relations=None, sequences_used=[])
    with pytest.raises(ValueError):
        compose_answer(intent="help", targets=[], phrases=[], relations=None, sequences_used=["dwi"])
    assert set(INTENTS) == {"change", "segment", "volume", "location", "midline", "ratio", "count", "help", "refuse",
                            "distance", "shift", "presence"}


def test_count_answer_names_each_lesion_and_multifocal_cores():
    from vlseg.reasoning.answer import Facts, count_lines

    wt = {"concept": "WT", "present": True, "n_lesions": 1, "lesion_merge_mm": 5.0,
          "lesions": [{"volume_ml": 40.0, "hemisphere": "left", "main_lobe": "frontal"}]}
    tc = {"concept": "TC", "present": True, "n_lesions": 2, "lesion_merge_mm": 5.0,
          "lesions": [{"volume_ml": 12.0, "hemisphere": "left", "main_lobe": "frontal"},
                      {"volume_ml": 3.5, "hemisphere": "left", "main_lobe": "parietal"}]}
    lines = count_lines(Facts(targets=[wt], companions={"TC": tc}))
    assert lines[0] == "The whole tumor is a single contiguous lesion."
    assert "2 separate tumor cores" in lines[1] and "multifocal" in lines[1]
    one_core = dict(tc, n_lesions=1, lesions=tc["lesions"][:1])
    assert count_lines(Facts(targets=[wt], companions={"TC": one_core}))[1] == \
        "It has one tumor core (not multifocal)."
    (line,) = count_lines(Facts(targets=[tc]))
    assert line.startswith("The tumor core consists of 2 separate lesions (multifocal).")
    assert "1) 12 mL in the left hemisphere, frontal lobe; 2) 3.5 mL in the left hemisphere, parietal lobe." in line
    assert "closer than 5 mm are counted as one lesion" in line


def test_presence_says_yes_or_no_first_and_whether_the_enhancing_tumor_is_measurable(case):
    from vlseg.reasoning.answer import presence_lines

    meas, _ = case
    et = measurement_to_json(meas["ET"])
    (line,) = presence_lines(Facts(targets=[et], confidence=None))
    assert line.startswith("Yes: enhancing tumor") and "measurable by RANO 2.0" in line
    absent = measurement_to_json(meas["ET_absent"])
    assert presence_lines(Facts(targets=[absent]))[0] == "No: I found no measurable enhancing tumor."
    wt = dict(measurement_to_json(meas["WT"]), present=False, volume_ml=0.0)
    assert presence_lines(Facts(targets=[wt]))[0] == "No: I found no tumor in this scan."


def test_location_names_main_lobes_and_at_most_two_it_also_reaches():
    from vlseg.reasoning import wording

    ed = {"concept": "ED", "present": True, "hemisphere": "right", "crosses_midline": False,
          "location_reliable": True, "lobes_involved": ["temporal", "frontal"],
          "lobe_fractions": {"temporal": 0.62, "frontal": 0.12, "parietal": 0.08, "insula": 0.06,
                             "limbic": 0.05, "occipital": 0.03, "deep grey matter": 0.02}}
    assert wording.location(ed) == (
        "The peritumoral edema is in the right hemisphere, mainly the temporal lobe (62%) and "
        "frontal lobe (12%), also reaching the parietal lobe (8%) and insula (6%); it does not "
        "cross the midline.")
    assert wording.where(ed) == "in the right hemisphere, mainly the temporal lobe and frontal lobe"


def test_distance_in_mm_unless_the_masks_meet():
    from vlseg.reasoning import wording

    wt = {"concept": "WT", "present": True, "location_reliable": True,
          "distances_mm": {"motor_cortex": 14.2, "broca_area": 0.0, "thalamus": 0.0, "midline": 21.0},
          "structures_overlapping": ["thalamus"]}
    text = wording.distance(wt, ["motor_cortex", "broca_area", "thalamus", "midline"])
    assert text.startswith("The whole tumor is 14.2 mm from the motor cortex")
    assert "touches the Broca's area" in text and "overlaps the thalamus" in text and "21 mm from the midline" in text
    # No structure named (an old follow-up): where it is, never an empty answer.
    assert wording.distance(dict(wt, hemisphere=None), []).startswith("The whole tumor was found")


def test_one_interval_per_quantity_every_ratio_phrasing_and_possibly_none(case):
    """Issue 22 point 4: the text quotes one interval (no boundary 'range'), says 'possibly none'
    exactly when the interval reaches 0, and a fraction of the whole tumor has its interval too."""
    meas, rel = case
    tj = {c: measurement_to_json(meas[c]) for c in ("NCR", "ET", "WT")}
    for c, j in tj.items():
        v = j["volume_ml"]
        j["volume_ml_interval"] = [0.0, v + 1] if c == "ET" else [round(v * 0.8, 1), round(v * 1.2, 1)]
    r = relations_to_json(rel)
    f = r["fractions"]["NCR/WT"]
    r["fraction_intervals"] = {"NCR/WT": [round(f - 0.05, 4), round(f + 0.05, 4)]}
    text = answer_text_parts([(get("ratio"), Facts(targets=[tj["NCR"], tj["WT"]], relations=r,
                                                   confidence=0.9))], sequences_used=["t1n"])
    assert f"of the whole tumor ({tj['NCR']['volume_ml']:g} of {tj['WT']['volume_ml']:g} mL; 90% interval" in text
    for iv, says_none in (([round(f / 2, 4), round(f + 0.05, 4)], False), ([0.0, round(f + 0.05, 4)], True)):
        r["fraction_intervals"] = {"NCR/WT": iv}     # a fraction's interval says "possibly none" at 0 only
        t = answer_text_parts([(get("ratio"), Facts(targets=[tj["NCR"], tj["WT"]], relations=r,
                                                     confidence=0.9))], sequences_used=["t1n"])
        assert ("possibly none" in t) is says_none and ("90% interval 0–" in t) is says_none
    vol = answer_text_parts([(get("volume"), Facts(targets=[tj["ET"], tj["WT"]], confidence=0.9))],
                            sequences_used=["t1n"])
    et_line, wt_line = vol.splitlines()[:2]
    assert "possibly none" in et_line and "possibly none" not in wt_line
    assert "range" not in vol and "range" not in text
    _assert_grounded(vol, {"targets": list(tj.values()), "confidence": 0.9, "times": [9, 10]})
