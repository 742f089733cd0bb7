"""Answer sentences from measurements only (templates, no language model), plus the JSON the
numbers in those sentences come from.

Every number in the text is formatted from the rounded values that ``measurement_to_json`` /
``relations_to_json`` put in the answer JSON (percentages are those fractions x 100), and every
place named (hemisphere, lobes) is a value of those dicts.

One composer per kind of answer (``segment_lines``, ``volume_lines``, ...), each taking the
:class:`Facts` of one question; which intent uses which composer is declared in the intent table
(``vlseg.language.intents``). ``finish`` adds the closing lines every answer shares.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vlseg import vocab
from vlseg.numbers import fmt_number, fmt_pct, round_fraction, round_ml, round_mm
from vlseg.vocab import SEQUENCES
from vlseg.reasoning.measure import FOCUS_MAX_ML, FOCUS_MIN_MEAN_P, FOCUS_NEAR_MM, TargetMeasurement
from vlseg.reasoning.relations import Relations
from vlseg.reasoning import wording

DISCLAIMER = "This is a research tool output, not a diagnosis."
DEFAULT_RATIO = ("NCR", "TC")


@dataclass(frozen=True)
class Facts:
    """What one answer may say: rounded target measurements and relations (the answer JSON's
    values), the user's phrases, and for refusals the parser's reason."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    relations: dict[str, Any] | None = None
    phrases: list[str] = field(default_factory=list)
    reason: str | None = None
    help_text: str | None = None
    places: list[dict[str, Any]] = field(default_factory=list)  # lobes/sides/structures named
    confidence: float | None = None  # level of the targets' volume_ml_interval / ratio intervals
    companions: dict[str, dict[str, Any]] = field(default_factory=dict)  # other measured concepts
    case: dict[str, Any] = field(default_factory=dict)  # case-level facts (midline shift)
    asks: tuple[str, ...] = ()  # relations the question names ("rim", "edema_extent")

    @classmethod
    def of(cls, targets: list[TargetMeasurement], relations: Relations | None = None,
           **kwargs: Any) -> "Facts":
        return cls(targets=[measurement_to_json(t) for t in targets],
                   relations=relations_to_json(relations), **kwargs)


# ---------------------------------------------------------------- rounding (text == JSON)
_num = fmt_number
_pct = fmt_pct


def measurement_to_json(t: TargetMeasurement) -> dict[str, Any]:
    """The rounded, JSON-ready measurement (the answer text quotes exactly these values)."""
    return {
        "concept": t.concept,
        "present": bool(t.present),
        "presence_score": round_fraction(t.presence_score),
        "volume_ml": round_ml(t.volume_ml),
        "volume_ml_range": [round_ml(t.volume_ml_range[0]), round_ml(t.volume_ml_range[1])],
        "n_lesions": int(t.n_lesions),
        "lesion_volumes_ml": [round_ml(v) for v in t.lesion_volumes_ml],
        "centroid_ras_mm": None if t.centroid_ras_mm is None else [round_mm(v) for v in t.centroid_ras_mm],
        "centroid_mni_mm": None if t.centroid_mni_mm is None else [round_mm(v) for v in t.centroid_mni_mm],
        "max_diameter_mm": round_mm(t.max_diameter_mm),
        "perpendicular_diameter_mm": round_mm(t.perpendicular_diameter_mm),
        "hemisphere": t.hemisphere,
        "crosses_midline": bool(t.crosses_midline),
        "lobes": list(t.lobes),
        "lobe_fractions": {k: round_fraction(v) for k, v in t.lobe_fractions},
        "location_reliable": t.location_reliable,
        "min_lesion_ml": t.min_lesion_ml,
        # Lesions as counted (n_lesions of them, largest first), and the counting rule.
        "lesions": [{
            "volume_ml": round_ml(d.volume_ml),
            "centroid_ras_mm": [round_mm(v) for v in d.centroid_ras_mm],
            "centroid_mni_mm": None if d.centroid_mni_mm is None else [round_mm(v) for v in d.centroid_mni_mm],
            "hemisphere": d.hemisphere, "crosses_midline": bool(d.crosses_midline),
            "main_lobe": d.main_lobe,
        } for d in t.lesion_details],
        "lesion_merge_mm": t.merge_mm,
        # Tiny separate foci, possibly spurious (not counted, not in the location), and the rule.
        "foci": [{"volume_ml": round_ml(d.volume_ml), "centroid_ras_mm": [round_mm(v) for v in d.centroid_ras_mm],
                  "hemisphere": d.hemisphere, "main_lobe": d.main_lobe} for d in t.foci],
        "focus_rule": {"max_ml": FOCUS_MAX_ML, "near_mm": FOCUS_NEAR_MM, "min_mean_p": FOCUS_MIN_MEAN_P},
        "uncounted_ml": round_ml(t.uncounted_ml),
        # Location, ranked: involved (>= 10 %) and minor-extension (1-10 %) lobes.
        "lobes_involved": list(t.lobes_involved),
        "lobes_minor": list(t.lobes_minor),
        "lobe_fractions_by_side": {k: {"left": round_fraction(lf), "right": round_fraction(rf)}
                                   for k, lf, rf in t.lobe_sides},
        "left_fraction": round_fraction(t.left_fraction),
        "right_fraction": round_fraction(t.right_fraction),
        "midline_method": t.midline_method,
        "distances_mm": {k: round_mm(v) for k, v in t.distances_mm},
        "structures_overlapping": list(t.structures_overlapping),
    }


def relations_to_json(r: Relations | None) -> dict[str, Any] | None:
    """The rounded, JSON-ready relations (answer.json's ``relations``)."""
    if r is None:
        return None
    out: dict[str, Any] = {
        "volumes_ml": {k: round_ml(v) for k, v in r.volumes_ml.items()},
        "fractions": {k: round_fraction(v) for k, v in r.fractions.items()},
    }
    for key in (*vocab.ratios(), "necrosis_rim_fraction"):
        out[key] = round_fraction(getattr(r, key))
    out["necrosis_surrounded_by_enhancing_rim"] = r.necrosis_surrounded_by_enhancing_rim
    for key in ("edema_extent_beyond_core_mm", "edema_max_extent_beyond_core_mm"):
        out[key] = round_mm(getattr(r, key))
    return out


# ---------------------------------------------------------------- sentences
def _name(concept: str) -> str:
    return vocab.name(concept)


def _jname(j: dict) -> str:
    """A measured target's name as answered (its post-treatment name on such scans)."""
    return j.get("name") or _name(j["concept"])


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _lesions(n: int) -> str:
    return f"{n} lesion" if n == 1 else f"{n} lesions"


def possibly_none(iv: list[float] | tuple[float, float] | None) -> bool:
    """Whether an interval (as rounded in answer.json) says the region may be absent: its lower
    bound is 0. The one rule the text and the app's table share."""
    return iv is not None and float(iv[0]) <= 0.0


def _volume(j: dict, q: float | None = None) -> str:
    """"61 mL (90% interval 55–68 mL)": one interval, the calibrated one, around the estimate;
    a lower bound of 0 is said as "possibly none". Without an interval, the volume alone (the
    boundary-reading ``volume_ml_range`` stays in answer.json, not in the text)."""
    iv = j.get("volume_ml_interval")
    if iv is None or q is None:
        return f"{_num(j['volume_ml'])} mL"
    if possibly_none(iv):
        return f"{_num(j['volume_ml'])} mL ({_interval_phrase(q)}0–{_num(iv[1])} mL: possibly none)"
    return f"{_num(j['volume_ml'])} mL ({_interval_phrase(q)}{_num(iv[0])}–{_num(iv[1])} mL)"


def _interval_phrase(q: float) -> str:
    """How a sentence quotes an interval ("90% interval"); ``finish`` explains it once."""
    return f"{_pct(q)} interval "


def interval_note(q: float, *, calibrated: bool) -> str:
    """The one sentence that explains the intervals of an answer."""
    if calibrated:
        return (f"Intervals: the true value lies inside a {_pct(q)} interval about "
                f"{_num(round(q * 10, 1))} times in 10 (calibrated on validation phantoms, not on "
                "real scans).")
    return ("Intervals: this model has no calibration file, so the intervals are rough "
            "probability ranges without a coverage guarantee.")


def _segment(j: dict, q: float | None = None) -> str:
    if not j["present"]:
        return wording.absent(j)
    where = wording.where(j)
    return (f"{_cap(_jname(j))}: {_volume(j, q)}, {_lesions(j['n_lesions'])}"
            + (f", {where}." if where else "."))


def _volume_sentence(j: dict, q: float | None = None) -> str:
    if not j["present"]:
        return wording.absent(j)
    s = f"The {_jname(j)} measures {_volume(j, q)}."
    if j["max_diameter_mm"] is not None:
        s += (f" Longest axial diameter {_num(j['max_diameter_mm'])} mm, "
              f"perpendicular {_num(j['perpendicular_diameter_mm'])} mm.")
    return s


def _count(j: dict) -> str:
    """The number of lesions as counted (pieces within a few mm are one lesion; sub-regions per
    lesion of their parent), then each lesion's volume and place."""
    if not j["present"]:
        return wording.absent(j)
    name, n = _jname(j), j["n_lesions"]
    lesions = j.get("lesions") or []
    if n == 1:
        text = {"WT": f"The {name} is a single contiguous lesion.",
                "TC": f"The {name} is a single lesion (not multifocal)."}.get(
                    j["concept"], f"The {name} is a single lesion.")
    else:
        text = f"The {name} consists of {n} separate lesions" + (
            " (multifocal)." if j["concept"] in ("WT", "TC") else ".")
    if n > 1 and lesions:
        each = []
        for k, les in enumerate(lesions, start=1):
            where = ""
            if les.get("hemisphere"):
                where = f" {wording.SIDE_WORDS[les['hemisphere']]}"
                if les.get("main_lobe"):
                    where += f", {wording.lobe_words(les['main_lobe'])}"
            each.append(f"{k}) {_num(les['volume_ml'])} mL{where}")
        text += " " + "; ".join(each) + "."
    merge = j.get("lesion_merge_mm")
    if merge is not None and n > 1:
        text += f" Parts closer than {_num(merge)} mm are counted as one lesion."
    return text


def _relation_sentences(r: dict, asks: tuple[str, ...]) -> list[str]:
    """The relations the question asked about ("rim", "edema_extent"); unasked, none."""
    out = []
    if "rim" in asks and r.get("necrosis_surrounded_by_enhancing_rim") is not None:
        ring = "is" if r["necrosis_surrounded_by_enhancing_rim"] else "is not"
        out.append(f"The necrosis {ring} surrounded by an enhancing rim "
                   f"({_pct(r['necrosis_rim_fraction'])} of its border is enhancing tumor).")
    if "edema_extent" in asks and r.get("edema_extent_beyond_core_mm") is not None:
        out.append(f"Edema extends about {_num(r['edema_extent_beyond_core_mm'])} mm beyond the "
                   f"tumor core (farthest point {_num(r['edema_max_extent_beyond_core_mm'])} mm).")
    return out


def _ratio(js: list[dict[str, Any]], r: dict[str, Any] | None, q: float | None = None,
           asks: tuple[str, ...] = ()) -> list[str]:
    concepts = [j["concept"] for j in js]
    if len(concepts) >= 2:
        part, whole = concepts[0], concepts[1]
    elif concepts:  # "how necrotic is it?": a part of the core, else of the whole tumor
        part = concepts[0]
        whole = vocab.concept(part).ratio_whole or "WT"
    else:
        part, whole = DEFAULT_RATIO
    lines = []
    fractions = (r or {}).get("fractions", {})
    key = f"{part}/{whole}" if f"{part}/{whole}" in fractions else f"{whole}/{part}"
    if key in fractions and fractions[key] is not None:
        a, b = key.split("/")
        vols = r["volumes_ml"]
        iv = ((r or {}).get("fraction_intervals") or {}).get(key)  # every PART/WHOLE phrasing
        interval = (f"; {_interval_phrase(q)}{_pct(iv[0])[:-1]}–{_pct(iv[1])}"
                    + (": possibly none" if possibly_none(iv) else "")
                    if iv is not None and q is not None else "")
        lines.append(f"The {_name(a)} makes up {_pct(fractions[key])} of the {_name(b)} "
                     f"({_num(vols[a])} of {_num(vols[b])} mL{interval}).")
    else:
        for j in js:
            lines.append(_volume_sentence(j, q))
        if r is None:
            lines.append("The ratio needs both regions; one of them was not measured.")
        else:
            lines.append(f"No ratio of {_name(part)} to {_name(whole)} can be given "
                         f"(the {_name(whole)} is empty).")
    if r is not None:
        lines += _relation_sentences(r, asks)
    return lines


def _clean_phrase(p: str) -> str:
    p = re.sub(r"\s+", " ", str(p)).strip().strip("\"'“”")
    return p[:60] + ("…" if len(p) > 60 else "")


# ---------------------------------------------------------------- composers (one per answer kind)
def _with_foci(lines: list[str], targets: list[dict[str, Any]]) -> list[str]:
    """The lines, then each target's tiny separate foci said once (wording.foci)."""
    extra = [s for s in (wording.foci(j) for j in targets if j.get("present")) if s]
    return lines + [s for i, s in enumerate(extra) if s not in extra[:i]]


def segment_lines(f: Facts) -> list[str]:
    return _with_foci([_segment(j, f.confidence) for j in f.targets]
                      + (_relation_sentences(f.relations, f.asks) if f.relations else []), f.targets)


PRESENCE_MIN_ML = 0.1  # "is there ...?": less than this is said as none found
RANO_MEASURABLE_MM = 10.0  # RANO 2.0: a lesion is measurable from 10 mm in both diameters


def _presence(j: dict, q: float | None = None) -> str:
    """Yes or no first, then the volume with its interval and place; for the enhancing tumor,
    whether it is measurable by RANO 2.0."""
    name = _jname(j)
    if not j["present"] or j["volume_ml"] < PRESENCE_MIN_ML:
        if j["concept"] == "WT":
            return "No: I found no tumor in this scan."
        seen = f" ({_num(j['volume_ml'])} mL, below {_num(PRESENCE_MIN_ML)} mL)" if j["present"] else ""
        return f"No: I found no {'measurable ' if j['concept'] == 'ET' else ''}{name}{seen}."
    where = wording.where(j)
    s = f"Yes: {name}, {_volume(j, q)}, {_lesions(j['n_lesions'])}" + (f", {where}." if where else ".")
    if j["concept"] == "ET" and j.get("max_diameter_mm") is not None:
        a, b = j["max_diameter_mm"], j["perpendicular_diameter_mm"] or 0.0
        measurable = min(a, b) >= RANO_MEASURABLE_MM
        s += (f" Largest lesion {_num(a)} × {_num(b)} mm: {'' if measurable else 'not '}measurable by "
              f"RANO 2.0 (both diameters {_num(RANO_MEASURABLE_MM)} mm or more).")
    return s


def presence_lines(f: Facts) -> list[str]:
    return [_presence(j, f.confidence) for j in f.targets]


def volume_lines(f: Facts) -> list[str]:
    return [_volume_sentence(j, f.confidence) for j in f.targets]


def count_lines(f: Facts) -> list[str]:
    lines = _with_foci([_count(j) for j in f.targets], f.targets)
    wt = next((j for j in f.targets if j["concept"] == "WT"), None)
    tc = f.companions.get("TC")
    if wt is not None and tc is not None and wt["present"] and tc["present"]:
        if tc["n_lesions"] > wt["n_lesions"]:
            lines.append(f"Within it there are {tc['n_lesions']} separate tumor cores, so the tumor "
                         "is multifocal (the cores share one area of edema).")
        elif wt["n_lesions"] == 1:
            lines.append("It has one tumor core (not multifocal).")
    return lines


def location_lines(f: Facts) -> list[str]:
    return _with_foci([wording.location(j) for j in f.targets], f.targets)


def midline_lines(f: Facts) -> list[str]:
    return [wording.midline(j) for j in f.targets]


def ratio_lines(f: Facts) -> list[str]:
    return _ratio(f.targets, f.relations, f.confidence, f.asks)


def location_or_reach_lines(f: Facts) -> list[str]:
    """Where the target is; or, when the question names lobes or a side ("does it reach the
    occipital lobe?"), a yes/no answer with the share of the target there."""
    asked = [p for p in f.places if p["kind"] in ("lobe", "side")]
    if not asked:
        return location_lines(f)
    return [wording.reach(j, asked) for j in f.targets]


def distance_lines(f: Facts) -> list[str]:
    keys = [p["key"] for p in f.places if p["kind"] == "structure"]
    return [wording.distance(j, keys) for j in f.targets]


MIDLINE_SHIFT_REPORT_MM = 2.0  # a midline shift is reported from this size on


def shift_lines(f: Facts) -> list[str]:
    shift = f.case.get("midline_shift")
    if not shift:
        why = f.case.get("midline_shift_error") or "the scan could not be matched to the brain atlas"
        return [f"The midline shift could not be measured: {why}."]
    mm = shift["midline_shift_mm"]
    if mm < MIDLINE_SHIFT_REPORT_MM:
        line = (f"No midline shift: the midline structures lie {_num(mm)} mm from the brain's "
                f"midline (a shift counts from {_num(MIDLINE_SHIFT_REPORT_MM)} mm).")
    else:
        side = shift.get("midline_shift_direction")
        towards = f" towards the patient's {side}" if side else ""
        line = f"The midline is shifted by {_num(mm)} mm{towards}."
    if shift.get("midline_shift_reliable") is False:
        line += " The match of the midline structures is weak, so treat this as approximate."
    return [line]


def help_lines(f: Facts, capabilities: str) -> list[str]:
    return [f.help_text or capabilities]


def refuse_lines(f: Facts, capabilities: str) -> list[str]:
    """The parser's reason first ("'ventricles' is not a tumor region I can segment"), then
    what can be asked instead."""
    if f.reason:
        reason = f.reason.rstrip(".")
        return [f"I can't answer that: {reason}.", f.help_text or capabilities]
    asked = [_clean_phrase(p) for p in f.phrases if str(p).strip()]
    what = f" “{asked[0]}”" if asked else " that"
    return [f"Sorry, I can't help with{what}: I only analyse brain-tumor regions on MRI.",
            f.help_text or capabilities]


def finish(lines: list[str], *, sequences_used: list[str], grounded: bool,
           notes: tuple[str, ...] = (), confidence: float | None = None,
           calibrated: bool = True) -> str:
    """Close an answer: which sequences it rests on (for measured answers), caller notes (e.g.
    "Location unavailable: ..."), the line explaining the intervals when a sentence quotes one
    (at ``confidence``), and the disclaimer, always last."""
    bad = [s for s in sequences_used if s not in SEQUENCES]
    if bad:
        raise ValueError(f"unknown sequence(s) {bad}; use {', '.join(SEQUENCES)}")
    lines = list(lines)
    if grounded:
        used = [s for s in SEQUENCES if s in sequences_used]
        missing = [s for s in SEQUENCES if s not in sequences_used]
        seq = f"Based on {', '.join(used) if used else 'no'} MRI sequences"
        if missing:
            seq += f" ({_join(missing)} not given, so results may be less reliable)"
        lines.append(seq + ".")
    lines += [str(n).strip() for n in notes if str(n).strip()]
    if confidence is not None and any(_interval_phrase(confidence) in line for line in lines):
        lines.append(interval_note(confidence, calibrated=calibrated))
    lines.append(DISCLAIMER)
    return "\n".join(lines)
