"""Two time points of one patient: the comparison report beside the two answers.

``Segmenter.compare(baseline, followup)`` opens both scans, checks they can be compared (the
same sequences; the rigid registration lines the brains up: ``vlseg.reasoning.registration``),
answers each with the one predictor (one model load), and measures the change
(``vlseg.reasoning.change``). This module holds what that produces and the one writer of its
folder:

    OUT/comparison.json              regions, spd_mm2, lesions, new_lesions, rano_category, registration
    OUT/baseline/                    the baseline's answer folder (answer.json + masks, its own grid)
    OUT/followup/                    the follow-up's answer folder (its own grid)
    OUT/followup_on_baseline/        the follow-up masks resampled onto the baseline grid, and
                                     change.nii.gz (1 unchanged, 2 grown, 3 shrunk, 4 new lesion)
    OUT/registration.tfm             the ITK transform (baseline LPS -> follow-up LPS)

comparison.json is written last and removed first, so a folder with one is complete.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlseg import vocab
from vlseg.errors import InputError
from vlseg.fileio import write_json_atomic
from vlseg.io import Case, write_mask, write_uint8
from vlseg.reasoning import DISCLAIMER
from vlseg.reasoning.change import Labelled, change_lines, compare_labellings
from vlseg.reasoning.registration import RigidRegistration, register_rigid, resample_to_grid
from vlseg.segmenter.answer import Answer

COMPARISON_FILE = "comparison.json"
TRANSFORM_FILE = "registration.tfm"
CHANGE_FILE = "change.nii.gz"
REGISTERED_DIR = "followup_on_baseline"
# Values of change.nii.gz (whole tumor on the baseline grid; a new enhancing lesion wins).
CHANGE_LABELS = {"unchanged": 1, "grown": 2, "shrunk": 3, "new": 4}
# How the app's viewer colours them (distinct from the concepts' colours).
CHANGE_COLORS = {"unchanged": (150, 150, 150), "grown": (255, 40, 120), "shrunk": (40, 110, 255),
                 "new": (0, 255, 200)}
CHANGE_NAMES = {"unchanged": "whole tumor at both time points", "grown": "whole tumor at follow-up only (grown)",
                "shrunk": "whole tumor at baseline only (shrunk)", "new": "new enhancing lesion"}
# Sequences to register on, best first: native T1 changes least between time points.
REGISTRATION_SEQUENCES = ("t1n", "t2w", "t1c", "t2f")


def check_pair(baseline: Case, followup: Case) -> str:
    """The sequence both scans are registered on; one clear error when they cannot be compared."""
    b, f = set(baseline.present), set(followup.present)
    if b != f:
        raise InputError(f"the follow-up has sequences {', '.join(sorted(f))} but the baseline has "
                         f"{', '.join(sorted(b))}; give both time points the same sequences")
    return next(s for s in REGISTRATION_SEQUENCES if s in b)


def register_pair(baseline: Case, followup: Case, *, threads: int = 2) -> RigidRegistration:
    """Rigid registration of the follow-up onto the baseline; refused when the brains do not
    line up (different patients or anatomies). ``threads``: ITK's, 1 when it runs beside a model."""
    seq = check_pair(baseline, followup)
    reg = register_rigid(baseline.images[seq], baseline.affine, followup.images[seq], followup.affine,
                         sequence=seq, threads=threads)
    if not reg.ok:
        raise InputError(f"cannot compare these scans: {reg.warning}")
    return reg


def on_baseline(masks: dict[str, np.ndarray], followup: Case, baseline: Case,
                reg: RigidRegistration) -> dict[str, np.ndarray]:
    """The follow-up masks (bool, RAS+ of the follow-up) pulled onto the baseline's RAS+ grid."""
    return {c: resample_to_grid(np.asarray(m, bool), followup.affine, baseline.shape, baseline.affine,
                                reg.matrix, order=0) for c, m in masks.items()}


def change_map(base: dict[str, np.ndarray], follow: dict[str, np.ndarray], new: np.ndarray) -> np.ndarray:
    """uint8 on the baseline grid: whole tumor unchanged / grown / shrunk, new enhancing lesions."""
    core = vocab.by_role("core")
    whole = vocab.concept(core).ratio_whole if core is not None else None
    b = np.asarray(base.get(whole, np.zeros_like(new)), bool)
    f = np.asarray(follow.get(whole, np.zeros_like(new)), bool)
    out = np.zeros(new.shape, np.uint8)
    out[b & f] = CHANGE_LABELS["unchanged"]
    out[f & ~b] = CHANGE_LABELS["grown"]
    out[b & ~f] = CHANGE_LABELS["shrunk"]
    out[new] = CHANGE_LABELS["new"]
    return out


@dataclass
class Comparison:
    """Two answers, the registration, and the change between them (``doc`` is comparison.json)."""

    baseline: Answer
    followup: Answer
    registration: RigidRegistration
    doc: dict
    baseline_case: Case
    followup_case: Case
    followup_on_baseline: dict[str, np.ndarray]  # concept -> bool, RAS+ on the baseline grid
    change: np.ndarray  # uint8 RAS+ on the baseline grid (CHANGE_LABELS)

    @property
    def text(self) -> str:
        return " ".join(change_lines(self.doc))

    def to_json(self) -> dict:
        return self.doc

    def save(self, out_dir: str | Path) -> Path:
        """Write the comparison folder (see the module docstring); returns comparison.json's path."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError("is a file, not a folder; comparisons are saved into a folder", str(out))
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPARISON_FILE).unlink(missing_ok=True)  # a folder with one is complete
        self.baseline.save(out / "baseline")
        self.followup.save(out / "followup")
        reg_dir = out / REGISTERED_DIR
        for concept, mask in self.followup_on_baseline.items():
            write_mask(mask, self.baseline_case, reg_dir / f"{concept}.nii.gz")
        write_uint8(self.baseline_case.to_source(self.change), self.baseline_case.source_grid,
                    reg_dir / CHANGE_FILE)
        self.registration.save(out / TRANSFORM_FILE)
        write_json_atomic(out / COMPARISON_FILE, self.doc)
        return out / COMPARISON_FILE


def build_comparison(*, baseline: Answer, followup: Answer, base_case: Case, follow_case: Case,
                     base: Labelled, follow: Labelled, reg: RigidRegistration, calibration,
                     confidence: float, timing: dict[str, float], started: float | None = None) -> Comparison:
    """Measure the change between two labelled time points and assemble comparison.json.
    ``timing``: seconds of the steps so far; this step is added as ``compare`` and, from the
    ``time.perf_counter()`` value ``started``, the whole as ``total``."""
    t0 = time.perf_counter()
    regions = tuple(c.code for c in vocab.concepts() if c.code in base.masks and c.code in follow.masks)
    registered = on_baseline(dict(follow.masks), follow_case, base_case, reg)
    result = compare_labellings(base, follow, registered, calibration=calibration, confidence=confidence,
                                regions=regions)
    doc = {
        "baseline": {"case_id": base_case.case_id, "answer": "baseline/answer.json",
                     "sequences": list(base_case.present)},
        "followup": {"case_id": follow_case.case_id, "answer": "followup/answer.json",
                     "sequences": list(follow_case.present),
                     "registered_masks": f"{REGISTERED_DIR}/", "change_map": f"{REGISTERED_DIR}/{CHANGE_FILE}",
                     "change_labels": dict(CHANGE_LABELS)},
        **result.doc,
        "registration": {**reg.to_json(), "transform_file": TRANSFORM_FILE},
        "calibration": calibration.describe(confidence),
        "model": dict(baseline.model),
        "timing_s": {k: round(v, 3) for k, v in {
            **timing, "compare": time.perf_counter() - t0,
            **({} if started is None else {"total": time.perf_counter() - started})}.items()},
        "disclaimer": DISCLAIMER,
    }
    doc["text"] = " ".join(change_lines(doc))
    return Comparison(baseline=baseline, followup=followup, registration=reg, doc=doc,
                      baseline_case=base_case, followup_case=follow_case, followup_on_baseline=registered,
                      change=change_map(dict(base.masks), registered, result.new_lesions))


__all__ = ["Comparison", "COMPARISON_FILE", "TRANSFORM_FILE", "CHANGE_FILE", "CHANGE_LABELS", "CHANGE_COLORS",
           "CHANGE_NAMES", "REGISTERED_DIR",
           "check_pair", "register_pair", "on_baseline", "change_map", "build_comparison"]
