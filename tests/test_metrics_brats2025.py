"""vlseg's BraTS 2025 rule reproduces the official package's figures (brats-evaluation 0.0.10,
panoptica, glioma config), stored by bench/brats_official_figures.py in tests/data.

Tolerance: 1e-9 relative (the arithmetic is the same: counts, EDT distances, np.percentile).
Lesion-wise figures are compared with the official run on arrays with the spacing given in
x-y-z order; on isotropic pairs that equals the run on NIfTI files (checked too). The global
HD95 of an anisotropic pair is compared at unit spacing: the official package ignores the
spacing there (vlseg measures mm; see vlseg/metrics/panoptic.py).
"""
from __future__ import annotations

import base64
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from vlseg import vocab
from vlseg.metrics.panoptic import panoptic
from vlseg.vocab.labels import labels_to_concepts

DATA = json.loads((Path(__file__).parent / "data" / "brats2025_official.json").read_text())
SHAPE = tuple(DATA["shape"])
REGION_CONCEPT = {"netc": "NCR", "snfh": "ED", "et": "ET", "rc": "RC", "tc": "TC", "wt": "WT"}


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8).reshape(SHAPE)


def _close(ours: float, official, what: str, rel: float = 1e-9) -> None:
    want = float(official)  # "nan"/"inf" are stored as strings
    if math.isnan(want):
        assert math.isnan(ours), f"{what}: {ours} != nan"
    elif math.isinf(want):
        assert ours == want, f"{what}: {ours} != {want}"
    else:
        assert ours == pytest.approx(want, rel=rel, abs=1e-12), what


def _masks(pair: dict, role: str) -> dict[str, np.ndarray]:
    return labels_to_concepts(_decode(pair[role]), "brats2024")


@pytest.mark.parametrize("name", sorted(DATA["pairs"]))
def test_reproduces_official_figures(name):
    pair = DATA["pairs"][name]
    spacing = tuple(pair["spacing"])
    isotropic = len(set(spacing)) == 1
    pred, gt = _masks(pair, "prediction"), _masks(pair, "ground_truth")
    for region, concept in REGION_CONCEPT.items():
        want = pair["arrays"][region]
        if isotropic:
            assert pair["files"][region] == want
        r = panoptic(pred[concept], gt[concept], spacing)
        what = f"{name}/{region}"
        assert (r.tp, r.fp, r.fn) == (want["tp"], want["fp"], want["fn"]), what
        assert (r.n_ref, r.n_pred) == (want["n_ref_instances"], want["n_pred_instances"]), what
        for ours, key in ((r.lesion_dice, "sq_dsc"), (r.lesion_nsd, "sq_nsd"), (r.lesion_hd95, "sq_hd95"),
                          (r.lesion_dice_std, "sq_dsc_std"), (r.lesion_nsd_std, "sq_nsd_std"),
                          (r.lesion_hd95_std, "sq_hd95_std"), (r.dice, "global_bin_dsc"),
                          (r.nsd, "global_bin_nsd")):
            _close(ours, want[key], f"{what} {key}")
        if isotropic:
            _close(r.hd95, want["global_bin_hd95"], f"{what} global_bin_hd95")
        else:  # the official global HD95 is in voxels whatever the spacing
            _close(panoptic(pred[concept], gt[concept], (1.0, 1.0, 1.0)).hd95, want["global_bin_hd95"],
                   f"{what} global_bin_hd95 at unit spacing")


def test_official_file_reading_swaps_anisotropic_spacing():
    """Through NIfTI files the official lesion-wise HD95 is the one with the spacing reversed
    (to 1e-6: the header stores the spacing as float32, 0.8 -> 0.800000011920929)."""
    pair = DATA["pairs"]["anisotropic"]
    pred, gt = _masks(pair, "prediction"), _masks(pair, "ground_truth")
    spacing = tuple(pair["spacing"])
    for region, concept in REGION_CONCEPT.items():
        want = pair["files"][region]
        # the array axes transposed (SimpleITK's z-y-x) with the spacing left in x-y-z order
        r = panoptic(pred[concept].transpose(2, 1, 0), gt[concept].transpose(2, 1, 0), spacing)
        _close(r.lesion_hd95, want["sq_hd95"], f"{region} sq_hd95 through files", 1e-6)
        _close(r.lesion_nsd, want["sq_nsd"], f"{region} sq_nsd through files", 1e-6)


def test_every_region_of_the_convention_is_covered():
    assert set(REGION_CONCEPT.values()) == set(vocab.label_convention("brats2024")) | {"TC", "WT"}
