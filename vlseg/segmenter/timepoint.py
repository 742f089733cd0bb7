"""Pre- or post-treatment: which concepts a scan can hold, said by the user or decided once.

The BraTS orchestrator lets users say whether a scan is pre- or post-treatment so that an
untreated scan never gets a spurious cavity; vlseg does the same with ``timepoint``:

* ``pre``: no post-treatment concept (the resection cavity) is ever reported;
* ``post``: they are, and "all sub-regions" includes them;
* ``auto`` (the default): a model that segments the cavity decides once per case: a cavity of
  :data:`AUTO_MIN_CAVITY_ML` or more means post-treatment; a model that does not, means pre.

answer.json's ``timepoint`` says what was asked, what was assumed and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from vlseg import vocab
from vlseg.errors import InputError
from vlseg.numbers import round_ml
from vlseg.predict import Predictor

TIMEPOINTS: tuple[str, ...] = ("auto", "pre", "post")
AUTO_MIN_CAVITY_ML = 1.0  # auto: a smaller "cavity" is noise, not surgery


class TimepointJson(TypedDict):
    asked: str
    assumed: str
    reason: str


@dataclass(frozen=True)
class Timepoint:
    """What the user asked for and what the answers assume, with the reason."""

    asked: str
    assumed: str  # "pre" | "post"
    reason: str

    def to_json(self) -> TimepointJson:
        return {"asked": self.asked, "assumed": self.assumed, "reason": self.reason}

    def excludes(self, concept: str) -> bool:
        """A concept this scan cannot hold (the cavity on an untreated scan)."""
        when = vocab.concept(concept).timepoint
        return when is not None and when != self.assumed


def check_timepoint(value: object) -> str:
    if value not in TIMEPOINTS:
        raise InputError(f"timepoint must be one of {', '.join(TIMEPOINTS)}, got {value!r}")
    return str(value)


def post_concepts(predictor: Predictor) -> tuple[str, ...]:
    """The post-treatment concepts the predictor's model segments."""
    return tuple(c for c in predictor.concepts if vocab.concept(c).timepoint == "post")


def decide(asked: str, predictor: Predictor) -> Timepoint:
    """The time point the answers on the predictor's case assume (decodes the cavity for auto);
    on a scan taken as untreated the predictor's labelling leaves the cavity out."""
    tp = _decide(check_timepoint(asked), predictor)
    predictor.rule_out(post_concepts(predictor) if tp.assumed == "pre" else ())
    return tp


def _decide(asked: str, predictor: Predictor) -> Timepoint:
    if asked == "pre":
        return Timepoint(asked, "pre", "the scan was given as pre-treatment (timepoint=pre)")
    if asked == "post":
        return Timepoint(asked, "post", "the scan was given as post-treatment (timepoint=post)")
    post = post_concepts(predictor)
    if not post:
        return Timepoint(asked, "pre", "this model was trained on untreated tumors only, so it takes "
                                       "every scan as pre-treatment")
    masks = predictor.masks(post)
    affine = predictor.case.affine
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    ml = max(float(masks[c].sum()) * voxel_ml for c in post)
    if ml >= AUTO_MIN_CAVITY_ML:
        return Timepoint(asked, "post", f"a resection cavity of {round_ml(ml):g} mL was found "
                                        f"(auto reports one from {AUTO_MIN_CAVITY_ML:g} mL)")
    return Timepoint(asked, "pre", f"no resection cavity of {AUTO_MIN_CAVITY_ML:g} mL or more was found")


__all__ = ["AUTO_MIN_CAVITY_ML", "TIMEPOINTS", "Timepoint", "TimepointJson", "check_timepoint", "decide",
           "post_concepts"]
