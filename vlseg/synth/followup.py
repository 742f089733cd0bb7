"""A follow-up of a phantom: the same head and tumor some months later, with a known change.

A :class:`FollowUp` edits the baseline's drawn tumor (lesions grown or shrunk, enhancement lost,
edema widened, a new lesion added) and moves the head rigidly in the scanner (a known rotation
and shift); the contrast is drawn afresh, so intensities differ too. ``vlseg.synth.pairs`` draws
one per scenario and writes the pair with its truth.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

from vlseg.synth.anatomy import Pose, Template
from vlseg.synth.tumor import Lesion, TumorSpec

SCENARIOS: tuple[str, ...] = ("progression", "new_lesion", "partial_response", "complete_response",
                              "stable", "edema_only")


@dataclass(frozen=True)
class FollowUp:
    """What changes between baseline and follow-up, and the head's rigid motion."""

    scenario: str
    radius_factor: float = 1.0                    # every existing lesion's radius times this
    edema_factor: float = 1.0                     # edema extent times this
    enhancing: bool = True                        # False: no enhancing tumor left
    new_lesion_mm: tuple[float, float, float] | None = None  # MNI centre of a new lesion
    new_radius_mm: float = 10.0
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # rotation vector, degrees
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    contrast_seed: int = 0                        # the follow-up's own intensities

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")

    @property
    def rotation(self) -> np.ndarray:
        return Rotation.from_rotvec(np.deg2rad(self.rotation_deg)).as_matrix()

    @property
    def matrix(self) -> np.ndarray:
        """4x4: baseline scanner RAS mm -> follow-up scanner RAS mm (the truth of registration)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.shift_mm
        return m

    def describe(self) -> dict:
        return {"scenario": self.scenario, "radius_factor": self.radius_factor,
                "edema_factor": self.edema_factor, "enhancing": self.enhancing,
                "new_lesion_mni_mm": None if self.new_lesion_mm is None else list(self.new_lesion_mm),
                "new_radius_mm": self.new_radius_mm if self.new_lesion_mm is not None else None,
                "rotation_deg": list(self.rotation_deg), "shift_mm": list(self.shift_mm),
                "baseline_to_followup_ras": self.matrix.round(6).tolist()}


def draw_followup(rng: np.random.Generator, scenario: str, spec: TumorSpec, tpl: Template) -> FollowUp:
    """A follow-up of ``scenario`` for the baseline tumor ``spec``: change sizes drawn well inside
    each category (RANO 2.0 thresholds: SPD +25 % / -50 %), a motion of up to 6 degrees and 6 mm."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = tuple(float(v) for v in axis * rng.uniform(2.0, 6.0))
    shift = tuple(float(v) for v in rng.uniform(-6.0, 6.0, size=3))
    common = {"rotation_deg": rot, "shift_mm": shift, "contrast_seed": int(rng.integers(2**31))}
    if scenario == "progression":
        return FollowUp(scenario, radius_factor=float(rng.uniform(1.25, 1.45)), **common)
    if scenario == "partial_response":
        return FollowUp(scenario, radius_factor=float(rng.uniform(0.55, 0.68)), **common)
    if scenario == "complete_response":
        return FollowUp(scenario, radius_factor=float(rng.uniform(0.5, 0.7)), enhancing=False, **common)
    if scenario == "stable":
        return FollowUp(scenario, radius_factor=float(rng.uniform(0.97, 1.03)), **common)
    if scenario == "edema_only":
        return FollowUp(scenario, edema_factor=float(rng.uniform(1.6, 2.2)), **common)
    # new_lesion: far from every existing lesion, in deep supratentorial white matter
    existing = np.array([les.centre_mm for les in spec.lesions])
    pool = tpl.centres_supra
    far = pool[np.min(np.linalg.norm(pool[:, None] - existing[None], axis=2), axis=1) >= 40.0]
    pick = far[rng.integers(len(far))] if len(far) else pool[rng.integers(len(pool))]
    return FollowUp(scenario, radius_factor=float(rng.uniform(0.97, 1.03)),
                    new_lesion_mm=tuple(float(v) for v in pick), new_radius_mm=float(rng.uniform(9.0, 12.0)),
                    **common)


def followup_spec(spec: TumorSpec, fu: FollowUp) -> TumorSpec:
    """The baseline tumor as it is at follow-up."""
    lesions = tuple(replace(les, radius_mm=les.radius_mm * fu.radius_factor) for les in spec.lesions)
    if fu.new_lesion_mm is not None:
        model = spec.lesions[0]
        lesions += (Lesion(centre_mm=fu.new_lesion_mm, radius_mm=fu.new_radius_mm, axes=(1.0, 1.0, 1.0),
                           rotation=(0.0, 0.0, 0.0), irregularity=model.irregularity,
                           rim_mm=max(model.rim_mm, 2.5), push_mm=0.0, push_decay_mm=model.push_decay_mm),)
    return replace(spec, lesions=lesions, edema_mm=spec.edema_mm * fu.edema_factor,
                   enhancement=spec.enhancement if fu.enhancing else "none",
                   variant="multifocal" if len(lesions) > 1 else spec.variant)


def baseline_spec(spec: TumorSpec) -> TumorSpec:
    """A baseline of a pair always enhances (response is judged on enhancing tumor)."""
    return spec if spec.enhancement != "none" else replace(spec, enhancement="rim")


def moved_pose(pose: Pose, fu: FollowUp) -> Pose:
    """The baseline pose after the head moved by ``fu`` (world_f = R world_b + t)."""
    rt = fu.rotation.T
    matrix = pose.matrix @ rt
    offset = pose.offset - pose.matrix @ rt @ np.asarray(fu.shift_mm, float)
    return replace(pose, matrix=matrix, offset=offset)


__all__ = ["FollowUp", "SCENARIOS", "draw_followup", "followup_spec", "baseline_spec", "moved_pose"]
