"""Two time points of one patient: volume change with intervals, RANO 2.0 bidimensional
products, lesion matching and the RANO imaging category.

Everything here is numpy on masks that are already segmented; the follow-up's masks come in
twice: on its own grid (volumes: a resampling would blur them) and pulled onto the baseline grid
by the rigid registration (``vlseg.reasoning.registration``; lesion matching and diameters, so
both scans are measured on the same axial plane).

Rules, as written into comparison.json (``RULES``):

* **Measurable enhancing lesion** (RANO 2.0): an enhancing-tumor lesion (``vlseg.reasoning.grouping``:
  pieces <= 5 mm apart are one lesion) whose longest axial diameter and the longest diameter
  perpendicular to it on that slice are both >= 10 mm. SPD: the sum of their products, over all
  measurable lesions (no target-lesion selection).
* **Matching**: a follow-up lesion is the baseline lesion it overlaps most after registration;
  one that overlaps none is the baseline lesion whose centroid is nearest, when that is within
  ``MATCH_MM``; else it is new. A baseline lesion no follow-up lesion matches has disappeared.
* **Category** (imaging only): CR no enhancing tumor left (and some at baseline); PD a new
  measurable enhancing lesion, or SPD +25 % or more; PR SPD -50 % or less; else SD. Without a
  measurable lesion at baseline the enhancing volume decides (RANO 2.0 volumetric: +40 % PD,
  -65 % PR, with at least ``MIN_VOLUME_CHANGE_ML`` of absolute change), and ``rano_basis`` says so.
* **Change interval**: each scan's calibrated volume interval at level (1 + q) / 2, so both hold
  together with probability >= q whatever their dependence (Bonferroni); the change interval is
  the range of follow-up minus baseline over the two intervals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from vlseg import vocab
from vlseg.numbers import round_ml
from vlseg.reasoning.answer import Facts, volume_lines
from vlseg.reasoning.atlas import apply_affine
from vlseg.reasoning.calibration import Calibration
from vlseg.reasoning.grouping import MERGE_MM, group_lesions, voxel_volume_ml
from vlseg.reasoning.measure import axial_diameters

MEASURABLE_MM = 10.0      # both perpendicular diameters at least this: measurable (RANO 2.0)
MATCH_MM = 15.0           # a non-overlapping lesion this close (centroids) is the same lesion
PD_SPD_PCT, PR_SPD_PCT = 25.0, -50.0
PD_VOLUME_PCT, PR_VOLUME_PCT = 40.0, -65.0
MIN_VOLUME_CHANGE_ML = 0.2
CATEGORIES = ("CR", "PR", "SD", "PD")
OUTSIDE = ("Only the imaging rules are applied: steroid dose, clinical status, non-enhancing "
           "(FLAIR) progression judged by a reader and confirmation scans are outside what vlseg "
           "can know, so this is not a RANO response assessment.")
RULES = {
    "measurable": f"enhancing lesion with both perpendicular axial diameters >= {MEASURABLE_MM:g} mm "
                  "on the baseline grid (the follow-up registered to it)",
    "spd": "sum of longest axial diameter x longest perpendicular diameter over all measurable lesions",
    "matching": f"largest overlap after registration, else nearest centroid within {MATCH_MM:g} mm; "
                f"lesion pieces <= {MERGE_MM:g} mm apart are one lesion",
    "category": f"CR: no enhancing tumor left; PD: a new measurable enhancing lesion or SPD >= "
                f"+{PD_SPD_PCT:g} %; PR: SPD <= {PR_SPD_PCT:g} %; else SD; without a measurable "
                f"baseline lesion the enhancing volume: >= +{PD_VOLUME_PCT:g} % PD, <= {PR_VOLUME_PCT:g} % PR "
                f"(and >= {MIN_VOLUME_CHANGE_ML:g} mL of change)",
    "interval": "each scan's calibrated volume interval at level (1 + q) / 2 (Bonferroni: both hold "
                "together with probability >= q); change = follow-up minus baseline over both intervals",
    "reference": "baseline (RANO compares with the smallest SPD so far; only two scans are known here)",
}


@dataclass(frozen=True)
class RanoLesion:
    """One enhancing lesion on a grid: volume, centroid and its two axial diameters."""

    label: int                  # 1..n in the lesion label volume, largest first
    volume_ml: float
    centroid_ras_mm: tuple[float, float, float]
    longest_mm: float
    perpendicular_mm: float

    @property
    def measurable(self) -> bool:
        return self.longest_mm >= MEASURABLE_MM and self.perpendicular_mm >= MEASURABLE_MM

    @property
    def product_mm2(self) -> float:
        return self.longest_mm * self.perpendicular_mm if self.measurable else 0.0

    def to_json(self) -> dict:
        return {"volume_ml": round_ml(self.volume_ml),
                "centroid_ras_mm": [round(v, 1) for v in self.centroid_ras_mm],
                "longest_mm": round(self.longest_mm, 1), "perpendicular_mm": round(self.perpendicular_mm, 1),
                "measurable": self.measurable, "product_mm2": round(self.product_mm2, 1)}


def enhancing_lesions(mask: np.ndarray, affine: np.ndarray, *, min_lesion_ml: float = 0.05,
                      merge_mm: float = MERGE_MM) -> tuple[np.ndarray, list[RanoLesion]]:
    """Lesions of a mask (X, Y, Z) as counted by ``group_lesions``: their label volume (0 =
    none or uncounted) and each one's volume, centroid and RANO axial diameters."""
    affine = np.asarray(affine, dtype=np.float64)
    groups = group_lesions(np.asarray(mask, dtype=bool), affine, min_lesion_ml=min_lesion_ml, merge_mm=merge_mm)
    out = []
    for k, box in enumerate(ndimage.find_objects(groups.labels), start=1):
        if box is None:
            continue
        sub = (groups.labels[box] == k).astype(np.int32)
        crop = affine.copy()
        crop[:3, 3] = apply_affine(affine, np.array([[s.start for s in box]], dtype=np.float64))[0]
        d1, d2 = axial_diameters(sub, crop)
        idx = np.argwhere(sub).astype(np.float64).mean(axis=0)
        c = apply_affine(crop, idx[None])[0]
        out.append(RanoLesion(label=k, volume_ml=groups.volumes_ml[k - 1],
                              centroid_ras_mm=(float(c[0]), float(c[1]), float(c[2])),
                              longest_mm=float(d1 or 0.0), perpendicular_mm=float(d2 or 0.0)))
    return groups.labels, out


def spd_mm2(lesions: list[RanoLesion]) -> float:
    """Sum of the products of perpendicular diameters of the measurable lesions."""
    return float(sum(les.product_mm2 for les in lesions))


@dataclass(frozen=True)
class LesionMatch:
    pairs: tuple[tuple[int, int], ...]   # (baseline label, follow-up label)
    new: tuple[int, ...]                 # follow-up labels matching no baseline lesion
    disappeared: tuple[int, ...]         # baseline labels no follow-up lesion matches


def match_lesions(base_labels: np.ndarray, base: list[RanoLesion], follow_labels: np.ndarray,
                  follow: list[RanoLesion], *, max_mm: float = MATCH_MM) -> LesionMatch:
    """Match lesions of two label volumes on one grid (the follow-up registered to the
    baseline): largest overlap, else the nearest baseline centroid within ``max_mm``."""
    if base_labels.shape != follow_labels.shape:
        raise ValueError(f"label volumes differ in shape: {base_labels.shape} vs {follow_labels.shape}")
    nb, nf = len(base), len(follow)
    both = (base_labels > 0) & (follow_labels > 0)
    overlap = np.zeros((nb + 1, nf + 1), dtype=np.int64)
    np.add.at(overlap, (base_labels[both], follow_labels[both]), 1)
    pairs, new = [], []
    for j, les in enumerate(follow, start=1):
        col = overlap[1:, j]
        if nb and col.max() > 0:
            pairs.append((int(np.argmax(col)) + 1, j))
            continue
        if nb:
            d = [float(np.linalg.norm(np.subtract(b.centroid_ras_mm, les.centroid_ras_mm))) for b in base]
            i = int(np.argmin(d))
            if d[i] <= max_mm:
                pairs.append((i + 1, j))
                continue
        new.append(j)
    seen = {i for i, _ in pairs}
    return LesionMatch(pairs=tuple(pairs), new=tuple(new),
                       disappeared=tuple(i for i in range(1, nb + 1) if i not in seen))


def percent(before: float, after: float) -> float | None:
    return None if before <= 0 else 100.0 * (after - before) / before


def volume_change(base_ml: float, follow_ml: float, base_iv: tuple[float, float],
                  follow_iv: tuple[float, float]) -> dict:
    """One region's change with its interval (both scans' intervals at the Bonferroni level)."""
    lo_b, hi_b = base_iv
    lo_f, hi_f = follow_iv
    pct = percent(base_ml, follow_ml)
    pct_iv = None
    if hi_b > 0:
        pct_iv = [round(100.0 * (lo_f - hi_b) / hi_b, 1),
                  round(100.0 * (hi_f - lo_b) / lo_b, 1) if lo_b > 0 else None]  # None: unbounded
    return {"baseline_ml": round_ml(base_ml), "followup_ml": round_ml(follow_ml),
            "change_ml": round_ml(follow_ml - base_ml),
            "change_ml_interval": [round_ml(lo_f - hi_b), round_ml(hi_f - lo_b)],
            "change_pct": None if pct is None else round(pct, 1), "change_pct_interval": pct_iv,
            "baseline_ml_interval": [round_ml(lo_b), round_ml(hi_b)],
            "followup_ml_interval": [round_ml(lo_f), round_ml(hi_f)]}


def rano_category(*, base_spd: float, follow_spd: float, new_measurable: int, base_et_ml: float,
                  follow_et_ml: float) -> tuple[str, str]:
    """The RANO 2.0 imaging category and which rule fired (see the module docstring)."""
    if follow_et_ml <= 0 and base_et_ml > 0 and new_measurable == 0:
        return "CR", "no enhancing tumor is left at follow-up (there was some at baseline)"
    if new_measurable:
        return "PD", f"{new_measurable} new measurable enhancing lesion{'s' if new_measurable > 1 else ''}"
    if base_spd > 0:
        pct = percent(base_spd, follow_spd)
        assert pct is not None
        if pct >= PD_SPD_PCT:
            return "PD", f"the SPD rose {pct:.0f} % (>= +{PD_SPD_PCT:g} %)"
        if pct <= PR_SPD_PCT:
            return "PR", f"the SPD fell {-pct:.0f} % (a fall of {-PR_SPD_PCT:g} % or more)"
        return "SD", f"the SPD changed {pct:+.0f} % (between {PR_SPD_PCT:g} % and +{PD_SPD_PCT:g} %)"
    # No measurable lesion at baseline: the enhancing volume decides.
    if base_et_ml <= 0:
        if follow_et_ml >= MIN_VOLUME_CHANGE_ML:
            return "PD", (f"no enhancing tumor at baseline and {follow_et_ml:.1f} mL at follow-up "
                          "(no measurable baseline lesion: enhancing volume used)")
        return "SD", "no enhancing tumor at either time point (no measurable lesion: enhancing volume used)"
    pct = percent(base_et_ml, follow_et_ml)
    assert pct is not None
    big = abs(follow_et_ml - base_et_ml) >= MIN_VOLUME_CHANGE_ML
    basis = f"the enhancing volume changed {pct:+.0f} % (no measurable lesion at baseline: volume used)"
    if pct >= PD_VOLUME_PCT and big:
        return "PD", basis
    if pct <= PR_VOLUME_PCT and big:
        return "PR", basis
    return "SD", basis


# ----------------------------------------------------------------------------- whole comparison


@dataclass(frozen=True)
class Labelled:
    """One time point's labelling: probabilities and masks (concept -> (X, Y, Z)) on ``affine``."""

    probs: Mapping[str, np.ndarray]
    masks: Mapping[str, np.ndarray]
    affine: np.ndarray
    refined: bool = False  # made by the refinement stage (its own calibration, when fitted)


@dataclass(frozen=True)
class ChangeResult:
    """comparison.json's measured part (``doc``) and the new enhancing lesions' voxels (bool,
    on the baseline grid)."""

    doc: dict
    new_lesions: np.ndarray


def compare_labellings(base: Labelled, follow: Labelled, follow_on_base: Mapping[str, np.ndarray], *,
                       calibration: Calibration, confidence: float, regions: tuple[str, ...],
                       min_lesion_ml: float = 0.05) -> ChangeResult:
    """comparison.json's measured part: ``regions``, ``spd_mm2``, ``lesions``, ``new_lesions``,
    ``rano_category`` / ``rano_basis``. ``follow_on_base``: the follow-up masks on the baseline
    grid; ``regions``: the concepts whose volumes are compared (present in both labellings)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    each = (1.0 + confidence) / 2.0
    out: dict = {"confidence": confidence, "per_scan_interval_level": round(each, 4), "regions": {}}
    for c in regions:
        b_iv = calibration.for_stage(base.refined).volume_interval(c, base.probs[c], base.masks[c], base.affine, each)
        f_iv = calibration.for_stage(follow.refined).volume_interval(c, follow.probs[c], follow.masks[c],
                                                                     follow.affine, each)
        vb = float(np.count_nonzero(base.masks[c])) * voxel_volume_ml(base.affine)
        vf = float(np.count_nonzero(follow.masks[c])) * voxel_volume_ml(follow.affine)
        out["regions"][c] = {"name": vocab.name(c), **volume_change(vb, vf, b_iv, f_iv)}

    # Enhancing lesions on the baseline grid, matched.
    et = vocab.by_role("enhancing")
    b_lab, b_les = enhancing_lesions(base.masks[et], base.affine, min_lesion_ml=min_lesion_ml)
    f_lab, f_les = enhancing_lesions(follow_on_base[et], base.affine, min_lesion_ml=min_lesion_ml)
    match = match_lesions(b_lab, b_les, f_lab, f_les)
    b_spd, f_spd = spd_mm2(b_les), spd_mm2(f_les)
    new_measurable = [j for j in match.new if f_les[j - 1].measurable]
    out["spd_mm2"] = {"baseline": round(b_spd, 1), "followup": round(f_spd, 1),
                      "change_pct": None if percent(b_spd, f_spd) is None else round(percent(b_spd, f_spd), 1),
                      "baseline_lesions": [les.to_json() for les in b_les if les.measurable],
                      "followup_lesions": [les.to_json() for les in f_les if les.measurable]}
    out["lesions"] = {
        "concept": et,
        "matched": [{"baseline": b_les[i - 1].to_json(), "followup": f_les[j - 1].to_json(),
                     "change_ml": round_ml(f_les[j - 1].volume_ml - b_les[i - 1].volume_ml)}
                    for i, j in match.pairs],
        "new": [f_les[j - 1].to_json() for j in match.new],
        "disappeared": [b_les[i - 1].to_json() for i in match.disappeared],
    }
    out["new_lesions"] = len(new_measurable)
    vb_et = float(np.count_nonzero(base.masks[et])) * voxel_volume_ml(base.affine)
    vf_et = float(np.count_nonzero(follow.masks[et])) * voxel_volume_ml(follow.affine)
    cat, basis = rano_category(base_spd=b_spd, follow_spd=f_spd, new_measurable=len(new_measurable),
                               base_et_ml=vb_et, follow_et_ml=vf_et)
    out["rano_category"], out["rano_basis"] = cat, basis
    out["rano_uses_volume"] = b_spd <= 0
    out["rano_outside"] = OUTSIDE
    out["rules"] = dict(RULES)
    return ChangeResult(doc=out, new_lesions=np.isin(f_lab, match.new) & (f_lab > 0))


# ----------------------------------------------------------------------------- sentences

_CATEGORY_WORDS = {"CR": "complete response", "PR": "partial response", "SD": "stable disease",
                   "PD": "progression"}


def default_regions() -> tuple[str, ...]:
    """The enhancing tumor and the whole tumor (the core's whole): what "did it grow?" reports."""
    et, core = vocab.by_role("enhancing"), vocab.by_role("core")
    whole = vocab.concept(core).ratio_whole if core is not None else None
    return tuple(c for c in (et, whole) if c is not None)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.0f} %"


def region_sentence(region: dict, confidence: float) -> str:
    """"The enhancing tumor grew from 4.1 mL to 6.0 mL (+46 %, 90 % interval +31 to +62 %)"."""
    name, b, f = region["name"], region["baseline_ml"], region["followup_ml"]
    iv = region.get("change_pct_interval")
    lo_ml, hi_ml = region["change_ml_interval"]
    if b == 0 and f == 0:
        return f"No {name} was found at either time point."
    if b == 0:
        return f"The {name} is new: none at baseline, {f:g} mL at follow-up."
    level = f"{confidence * 100:.0f} % interval"
    if iv is None:
        span = f"{level} {lo_ml:+g} to {hi_ml:+g} mL"
    else:
        span = f"{level} {iv[0]:+.0f} to " + ("unbounded" if iv[1] is None else f"{iv[1]:+.0f} %")
    if lo_ml > 0 or hi_ml < 0:  # the interval excludes no change
        verb = "grew" if lo_ml > 0 else "shrank"
        return f"The {name} {verb} from {b:g} mL to {f:g} mL ({_pct(region['change_pct'])}, {span})."
    return (f"The {name} went from {b:g} mL to {f:g} mL ({_pct(region['change_pct'])}, {span}: "
            "no change beyond the uncertainty).")


def change_lines(doc: dict, concepts: tuple[str, ...] = ()) -> list[str]:
    """The answer to "did it grow?" from comparison.json's content: the asked regions' change
    (the enhancing tumor and whole tumor when none is asked), new lesions, the RANO category."""
    conf = float(doc.get("confidence", 0.9))
    shown = [c for c in concepts if c in doc["regions"]] or [
        c for c in default_regions() if c in doc["regions"]]
    lines = [region_sentence(doc["regions"][c], conf) for c in shown]
    spd = doc["spd_mm2"]
    n_new = int(doc["new_lesions"])
    if n_new:
        lines.append(f"There {'is' if n_new == 1 else 'are'} {n_new} new measurable enhancing "
                     f"lesion{'s' if n_new > 1 else ''}.")
    elif doc["lesions"]["new"]:
        k = len(doc["lesions"]["new"])
        lines.append(f"No new measurable enhancing lesion ({k} new enhancing "
                     f"{'focus' if k == 1 else 'foci'} below 10 x 10 mm).")
    else:
        lines.append("No new enhancing lesion.")
    cat = doc["rano_category"]
    spd_text = (f" (SPD {spd['baseline']:g} -> {spd['followup']:g} mm²)" if spd["baseline"] or spd["followup"] else "")
    lines.append(f"By RANO 2.0 imaging rules this is {_CATEGORY_WORDS[cat]} ({cat}): {doc['rano_basis']}{spd_text}.")
    warn = (doc.get("registration") or {}).get("warning")
    if warn:
        lines.append(f"Note: {warn}.")
    lines.append(OUTSIDE)
    return lines


__all__ = ["RanoLesion", "LesionMatch", "Labelled", "ChangeResult", "enhancing_lesions", "spd_mm2", "match_lesions",
           "volume_change", "rano_category", "compare_labellings", "change_lines", "region_sentence",
           "default_regions", "change_answer_lines", "COMPARISON",
           "CATEGORIES", "RULES", "OUTSIDE", "MEASURABLE_MM", "MATCH_MM"]


# ----------------------------------------------------------------------------- the "change" intent

COMPARISON = "comparison"  # the case fact a compared follow-up carries (comparison.json's content)


def change_answer_lines(f: Facts) -> list[str]:
    """Composer of the ``change`` intent: the comparison when two scans were compared, else
    what can be said about the one scan and how to give the second."""
    doc = f.case.get(COMPARISON)
    if isinstance(doc, dict):
        return change_lines(doc, tuple(t["concept"] for t in f.targets))
    return ["Only one scan is set, so I cannot say what changed: compare it with an earlier scan "
            "first (vlseg compare --baseline B --followup F, or Segmenter.compare(baseline, followup)).",
            *volume_lines(f)]
