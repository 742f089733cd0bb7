"""Where a target is, in words: side and lobes, reach, distance to named structures, midline.

Each function takes a target's answer-JSON dict (``measurement_to_json``) and returns one
sentence built only from its values (every share and distance quoted is in that dict).

Rules (docs/reasoning.md, "Location"):

* the main lobes are those holding >= 10 % of the target (``lobes_involved``; the largest lobe
  when none does), with their share; the other lobes holding >= ``ALSO_REACHING_MIN`` (5 %) are
  added as "also reaching X and Y", at most ``ALSO_REACHING_MAX`` of them, largest first; smaller
  shares stay in the JSON only;
* a distance is said in mm whenever the target does not meet the structure; "touches" only when
  the masks meet (0 mm) and "overlaps" when a structure point lies inside the target.
"""
from __future__ import annotations

from typing import Any

from vlseg import vocab
from vlseg.numbers import fmt_number, fmt_pct
from vlseg.reasoning.location import reaches
from vlseg.vocab.places import structure

ALSO_REACHING_MIN = 0.05  # a lobe named as "also reaching" holds at least this share
ALSO_REACHING_MAX = 2     # and at most this many are named
SIDE_WORDS = {"left": "in the left hemisphere", "right": "in the right hemisphere",
              "bilateral": "in both hemispheres"}
_LOBE_WORD = frozenset({"frontal", "parietal", "temporal", "occipital", "limbic"})
_NO_ATLAS = "(the scan could not be matched to the brain atlas)"


def name_of(j: dict) -> str:
    """A measured target's name as answered (its post-treatment name on such scans)."""
    return j.get("name") or vocab.name(j["concept"])


def join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def lobe_words(name: str) -> str:
    return f"{name} lobe" if name in _LOBE_WORD else name


def absent(j: dict) -> str:
    return f"I could not find any {name_of(j)} in this scan."


def foci(j: dict) -> str | None:
    """The tiny separate foci a target's reading leaves out (measure.FOCUS_* rule), said once:
    "Also a tiny separate focus (0.05 mL, right temporal), possibly spurious." None without."""
    items = j.get("foci") or []
    if not items:
        return None
    each = []
    for f in items[:3]:
        place = ", ".join(x for x in (f.get("hemisphere") if f.get("hemisphere") != "bilateral" else None,
                                      f.get("main_lobe")) if x)
        each.append(f"{fmt_number(f['volume_ml'])} mL" + (f", {place}" if place else ""))
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    what = "a tiny separate focus" if len(items) == 1 else f"{len(items)} tiny separate foci"
    return (f"Also {what} ({'; '.join(each)}{more}), possibly spurious: not counted as a lesion "
            "and not used for the location.")


def unreliable(j: dict) -> str:
    if j.get("location_reliable") is False:
        return " The atlas registration looks implausible, so treat the location as approximate."
    return ""


def _ranked_lobes(j: dict) -> tuple[list[str], list[str]]:
    """(main lobes, lobes it also reaches), each largest first (rules in the module doc)."""
    fr: dict[str, float] = {k: v for k, v in (j.get("lobe_fractions") or {}).items() if v is not None}
    main = list(j.get("lobes_involved", j.get("lobes", [])))
    if not main and fr:
        main = [max(fr, key=lambda k: fr[k])]
    rest = sorted((k for k in fr if k not in main and fr[k] >= ALSO_REACHING_MIN),
                  key=lambda k: -fr[k])
    return main, rest[:ALSO_REACHING_MAX]


def where(j: dict, *, shares: bool = False) -> str | None:
    """Side and main lobes in words ("in the left hemisphere, mainly the temporal lobe"); with
    ``shares`` each lobe's share and the lobes it also reaches. None when there is no location."""
    if j.get("hemisphere") is None:
        return None
    side = SIDE_WORDS[j["hemisphere"]]
    main, also = _ranked_lobes(j)
    if not main:
        return side
    fr = j.get("lobe_fractions") or {}

    def named(lobe: str) -> str:
        share = fr.get(lobe)
        return f"{lobe_words(lobe)} ({fmt_pct(share)})" if shares and share is not None else lobe_words(lobe)

    text = f"{side}, mainly the {join([named(k) for k in main])}"
    if shares and also:
        text += f", also reaching the {join([named(k) for k in also])}"
    return text


def location(j: dict) -> str:
    if not j["present"]:
        return absent(j)
    w = where(j, shares=True)
    if w is None:  # coordinates stay in the JSON (centroid_ras_mm); no jargon in the text
        return f"The {name_of(j)} was found, but its brain region is unknown {_NO_ATLAS}."
    mid = "crosses" if j["crosses_midline"] else "does not cross"
    return f"The {name_of(j)} is {w}; it {mid} the midline." + unreliable(j)


def reach(j: dict, asked: list[dict[str, Any]]) -> str:
    """Yes/no for "does it reach the (left) occipital lobe?" / "is it in the left hemisphere?",
    with the share of the target there (``vlseg.reasoning.location.reaches``)."""
    if not j["present"]:
        return absent(j)
    name = name_of(j)
    sides = [p["key"] for p in asked if p["kind"] == "side"]
    lobes = [p["key"] for p in asked if p["kind"] == "lobe"] or [None]
    side = sides[0] if sides else None
    if j["hemisphere"] is None:
        return f"Where the {name} lies is unknown {_NO_ATLAS}."
    out = []
    for lobe in lobes:
        r = reaches(j, lobe=lobe, hemisphere=side)
        place = (f"the {side + ' ' if side else ''}{lobe_words(lobe)}" if lobe is not None
                 else f"the {side} hemisphere")
        share = fmt_pct(r.fraction) if r.fraction >= 0.005 else "less than 1%"
        if r.answer:
            out.append(f"Yes: {share} of the {name} is in {place}.")
        elif r.fraction > 0:
            out.append(f"Only marginally: {share} of the {name} is in {place}.")
        else:
            out.append(f"No: the {name} does not reach {place}; it is {where(j)}.")
    return " ".join(out) + unreliable(j)


def distance(j: dict, keys: list[str]) -> str:
    """How far the target is from each named structure: mm unless the masks meet. Without a
    structure named, where the target is (never an empty answer)."""
    if not j["present"]:
        return absent(j)
    if not keys:
        return location(j)
    name = name_of(j)
    dist = j.get("distances_mm") or {}
    overlapping = set(j.get("structures_overlapping") or ())
    said, unknown = [], []
    for key in keys:
        s, d = structure(key), dist.get(key)
        if d is None:
            unknown.append(f"the {s.name}")
        elif key == "midline":
            said.append("crosses the midline" if d == 0 else f"is {fmt_number(d)} mm from the midline")
        elif d == 0:
            said.append(f"{'overlaps' if key in overlapping else 'touches'} the {s.name}")
        else:
            said.append(f"is {fmt_number(d)} mm from the {s.name} at its closest point")
    text = f"The {name} {join(said)}." if said else ""
    if unknown:
        text += (" " if text else "") + f"The distance to {join(unknown)} is unknown {_NO_ATLAS}."
    return text + unreliable(j)


def midline(j: dict) -> str:
    if not j["present"]:
        return absent(j)
    name = name_of(j)
    if j["hemisphere"] is None:
        return f"Whether the {name} crosses the midline is unknown (no atlas registration)."
    if j["crosses_midline"]:
        return f"The {name} crosses the midline." + unreliable(j)
    side = {"left": "it lies in the left hemisphere",
            "right": "it lies in the right hemisphere",
            "bilateral": "it has separate parts in both hemispheres"}[j["hemisphere"]]
    return f"The {name} does not cross the midline; {side}." + unreliable(j)
