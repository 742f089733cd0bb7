"""Location questions answered from a measurement: "does it reach lobe L / hemisphere H?".

``reaches`` takes a :class:`TargetMeasurement` or its answer-JSON dict (``measurement_to_json``)
and returns a :class:`Reach` (yes/no, the share of the target there, and the side). Rules
(docs/reasoning.md, "Location"):

* a lobe is reached when it holds >= ``REACH_MIN_FRACTION`` (1 %) of the target, the same floor
  below which a lobe is not named as minor extension; lobes holding >= 10 % are "involved";
* a hemisphere is reached when the target lies in it or is bilateral (a lesion crossing the
  midline by the stated amount, or lesions on both sides: ``AtlasLocator.locate``), so the
  answer always agrees with ``hemisphere`` / ``crosses_midline``;
* a lobe in a hemisphere is reached when that hemisphere is reached and the lobe's part on that
  side holds >= 1 % of the target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vlseg.vocab.places import LOBES
from vlseg.reasoning.measure import MINOR_FRACTION, TargetMeasurement

REACH_MIN_FRACTION = MINOR_FRACTION
SIDE_SHARE = 0.10  # a lobe's part is on both sides when the smaller side holds >= 10 % of it
HEMISPHERES = ("left", "right")


@dataclass(frozen=True)
class Reach:
    answer: bool
    fraction: float          # share of the target in the asked lobe / hemisphere / both
    side: str | None         # "left" | "right" | "bilateral" where that part lies; None if none
    lobe: str | None = None
    hemisphere: str | None = None


def _lobe_name(lobe: str) -> str:
    low = " ".join(str(lobe).lower().split())
    for suffix in (" lobes", " lobe"):
        if low.endswith(suffix):
            low = low[: -len(suffix)]
    if low not in LOBES:
        raise ValueError(f"unknown lobe {lobe!r}; use one of {', '.join(LOBES)}")
    return low


def _facts(m: TargetMeasurement | Mapping[str, Any]) -> tuple[str | None, dict, dict, dict]:
    """(hemisphere, lobe fractions, lobe -> {left, right}, {left, right} of the target)."""
    if isinstance(m, TargetMeasurement):
        fr = dict(m.lobe_fractions)
        sides = {k: {"left": lf, "right": rf} for k, lf, rf in m.lobe_sides}
        hemi = {"left": m.left_fraction or 0.0, "right": m.right_fraction or 0.0}
        return m.hemisphere, fr, sides, hemi
    fr = dict(m.get("lobe_fractions") or {})
    sides = dict(m.get("lobe_fractions_by_side") or {})
    hemi = {"left": m.get("left_fraction") or 0.0, "right": m.get("right_fraction") or 0.0}
    return m.get("hemisphere"), fr, sides, hemi


def _side_of(left: float, right: float) -> str | None:
    if left + right <= 0:
        return None
    if min(left, right) >= SIDE_SHARE * (left + right):
        return "bilateral"
    return "left" if left > right else "right"


def reaches(m: TargetMeasurement | Mapping[str, Any], *, lobe: str | None = None,
            hemisphere: str | None = None) -> Reach:
    """Does the target reach ``lobe`` (one of ``LOBES``; "occipital lobe" works), ``hemisphere``
    ("left" / "right"), or that lobe on that side? Rules in the module doc."""
    if lobe is None and hemisphere is None:
        raise ValueError("ask about a lobe, a hemisphere or both")
    hemi_asked = None
    if hemisphere is not None:
        hemi_asked = str(hemisphere).lower().strip()
        if hemi_asked not in HEMISPHERES:
            raise ValueError(f"hemisphere must be 'left' or 'right', got {hemisphere!r}")
    lobe_asked = _lobe_name(lobe) if lobe is not None else None
    target_hemi, fractions, lobe_sides, hemi_fr = _facts(m)
    if target_hemi is None:  # absent target, or no location available
        return Reach(False, 0.0, None, lobe_asked, hemi_asked)
    hemi_ok = hemi_asked is None or target_hemi in (hemi_asked, "bilateral")
    if lobe_asked is None:
        return Reach(hemi_ok, float(hemi_fr.get(hemi_asked, 0.0)), hemi_asked, None, hemi_asked)
    split = lobe_sides.get(lobe_asked, {})
    left, right = float(split.get("left", 0.0)), float(split.get("right", 0.0))
    if hemi_asked is None:
        frac = float(fractions.get(lobe_asked, left + right))
        return Reach(frac >= REACH_MIN_FRACTION, frac, _side_of(left, right), lobe_asked, None)
    frac = left if hemi_asked == "left" else right
    return Reach(hemi_ok and frac >= REACH_MIN_FRACTION, frac,
                 hemi_asked if frac > 0 else None, lobe_asked, hemi_asked)
