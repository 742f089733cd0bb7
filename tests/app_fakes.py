"""Test doubles for the app tests: a keyword 'Segmenter' that returns real ``Answer`` objects.

It answers from the case's own labels when it has them (sample cases) and from a bright-voxel
threshold otherwise, so answers differ between cases: enough to test the app, not the model.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from vlseg import vocab
from vlseg.vocab import SEQUENCES

CONCEPT_NAMES = vocab.names()
from vlseg.errors import VlsegError
from vlseg.io import Case, load_case
from vlseg.segmenter import Answer

KEYWORDS = (("enhancing", "ET"), ("edema", "ED"), ("necro", "NCR"), ("core", "TC"), ("tumor", "WT"))


class FakeSegmenter:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s  # simulated model time per question (load tests)
        self._case: Case | None = None
        self.n_encodes = 0
        self.queries: list[str] = []
        self.confidences: list[float | None] = []

    def set_case(self, source: Any, *, timepoint: str | None = None) -> dict[str, Any]:
        case = source if isinstance(source, Case) else load_case(source)
        self._case = case
        self.n_encodes += 1
        self.timepoint = timepoint or "auto"
        return {"case_id": case.case_id, "sequences": list(case.present), "timepoint": self.timepoint}

    def set_timepoint(self, timepoint: str) -> None:
        self.timepoint = timepoint

    @property
    def case(self) -> Case:
        if self._case is None:
            raise VlsegError("No case is set: call set_case(...) with a scan before asking questions.")
        return self._case

    def reset(self) -> None:
        self._case = None

    def set_timepoint(self, timepoint: str) -> None:
        self.timepoint = timepoint

    def ask(self, query: str, *, confidence: float | None = None) -> Answer:
        case = self.case
        self.queries.append(query)
        self.confidences.append(confidence)
        if self.delay_s:
            time.sleep(self.delay_s)
        q = query.lower()
        concept = next((c for k, c in KEYWORDS if k in q), None)
        model = {"name": "fake", "checkpoint": None}
        if concept is None or "liver" in q:
            return Answer(query=query, text="I can segment NCR, ED, ET, TC and WT only.", refused=True,
                          intent="refuse", targets=[], masks={}, masks_ras={}, relations=None,
                          sequences_used=list(case.present), model=model, timing_s={"total": 0.0},
                          case_id=case.case_id, case=case)
        if case.labels is not None:
            mask = case.labels[concept].astype(np.uint8)
        else:
            img = next(case.images[s] for s in ("t1c", "t2f", "t1n", "t2w") if s in case.images)
            lo, hi = float(img.min()), float(img.max())
            mask = (img > lo + 0.75 * (hi - lo)).astype(np.uint8)  # the brightest part
        vol_ml = float(mask.sum() * np.prod(case.spacing) / 1000.0)
        target = {"concept": concept, "phrase": query, "mask": f"{concept}.nii.gz",
                  "present": bool(mask.any()), "volume_ml": round(vol_ml, 2),
                  "volume_ml_range": [round(vol_ml * 0.9, 2), round(vol_ml * 1.1, 2)],
                  "n_lesions": 1, "centroid_ras_mm": [0.0, 0.0, 0.0], "hemisphere": "left",
                  "crosses_midline": False, "lobes": ["frontal"], "max_diameter_mm": 10.0,
                  "perpendicular_diameter_mm": 5.0}
        text = f"{CONCEPT_NAMES[concept]} of case {case.case_id}: {vol_ml:.2f} mL."
        return Answer(query=query, text=text, refused=False, intent="segment", targets=[target],
                      masks={concept: case.to_source(mask)}, masks_ras={concept: mask},
                      relations=None, sequences_used=list(case.present), model=model,
                      timing_s={"total": 0.0}, case_id=case.case_id, case=case)


def fake_fork(base: Any) -> FakeSegmenter:
    return FakeSegmenter(delay_s=getattr(base, "delay_s", 0.0))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_case_writer(source_case_dir: Path):
    """A sample writer that copies an already generated case (renaming files to the sample name)."""
    source_case_dir = Path(source_case_dir)
    src_id = source_case_dir.name

    def write(out_dir: Path, seed: int, *, case_id: str, spacing_mm: float) -> Path:
        dst = Path(out_dir) / case_id
        dst.mkdir(parents=True, exist_ok=True)
        for key in (*SEQUENCES, "seg"):
            shutil.copyfile(source_case_dir / f"{src_id}-{key}.nii.gz", dst / f"{case_id}-{key}.nii.gz")
        return dst

    return write


def small_case(root: Path, case_id: str, *, shift: int, size: int = 4) -> Path:
    """A BraTS-2023-layout case of 32^3 voxels of 2 mm (a field of view ``open_case`` accepts)
    with a cubic 'tumor' at an offset."""
    folder = root / case_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(shift)
    seg = np.zeros((32, 32, 32), np.uint8)
    seg[shift:shift + size, 8:8 + size, 8:8 + size] = 3  # ET
    seg[shift:shift + size, 8:8 + size, 8 + size:10 + size] = 2  # ED
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    for seq in ("t1n", "t1c", "t2w", "t2f"):
        img = rng.random(seg.shape).astype(np.float32) * 10 + 50 + seg * 40
        nib.save(nib.Nifti1Image(img, aff), folder / f"{case_id}-{seq}.nii.gz")
    nib.save(nib.Nifti1Image(seg, aff), folder / f"{case_id}-seg.nii.gz")
    return folder


GRADIO_ENV = ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE")


def save_gradio_env() -> dict[str, str | None]:
    """The Gradio variables ``point_gradio_at`` sets, to put back with ``restore_env`` after a test."""
    return {k: os.environ.get(k) for k in GRADIO_ENV}


def point_gradio_at(cfg) -> None:  # noqa: ANN001 - an AppConfig
    """What ``vlseg serve`` does before ``create_app``: Gradio's caches inside the app's output root."""
    from vlseg.app.server import gradio_environment

    os.environ.update(gradio_environment(cfg))


def restore_env(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
