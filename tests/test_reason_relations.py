"""Sub-region relations on constructed masks: fractions, enhancing rim, edema extent."""
from __future__ import annotations

import numpy as np
import pytest

from vlseg.reasoning.relations import RIM_FRACTION, relations

SPACING = (1.0, 1.0, 2.0)
AFFINE = np.diag([*SPACING, 1.0])


def _shells(rim_half: bool = False):
    """Concentric balls (world mm): NCR r<8, ET 8<=r<12, ED 12<=r<20 on a 1x1x2 mm grid."""
    shape = (60, 60, 30)
    w = (np.indices(shape).transpose(1, 2, 3, 0) - [30, 30, 15]) * SPACING
    r = np.linalg.norm(w, axis=-1)
    ncr = r < 8
    et = (r >= 8) & (r < 12)
    if rim_half:  # enhancing only on the right half: half the necrosis border is bare
        ncr = ncr | ((r >= 8) & (r < 12) & (w[..., 0] < 0))
        et = et & (w[..., 0] >= 0)
    ed = (r >= 12) & (r < 20)
    return {"NCR": ncr, "ET": et, "ED": ed}


def test_fractions_match_voxel_counts():
    m = _shells()
    rel = relations(m, AFFINE)
    n_ncr, n_et, n_ed = (int(m[c].sum()) for c in ("NCR", "ET", "ED"))
    assert rel.necrotic_fraction_of_core == pytest.approx(n_ncr / (n_ncr + n_et))
    assert rel.enhancing_fraction_of_core == pytest.approx(n_et / (n_ncr + n_et))
    assert rel.edema_fraction_of_whole == pytest.approx(n_ed / (n_ncr + n_et + n_ed))
    assert rel.fractions["TC/WT"] == pytest.approx((n_ncr + n_et) / (n_ncr + n_et + n_ed))
    assert rel.volumes_ml["WT"] == pytest.approx((n_ncr + n_et + n_ed) * 2.0 / 1000)
    # Analytic check: (8/12)^3 of the core is necrotic.
    assert rel.necrotic_fraction_of_core == pytest.approx((8 / 12) ** 3, abs=0.03)


def test_enhancing_rim_detected_and_broken_rim_rejected():
    full = relations(_shells(), AFFINE)
    assert full.necrosis_surrounded_by_enhancing_rim is True
    assert full.necrosis_rim_fraction == pytest.approx(1.0)
    half = relations(_shells(rim_half=True), AFFINE)
    assert half.necrosis_surrounded_by_enhancing_rim is False
    assert 0.3 < half.necrosis_rim_fraction < RIM_FRACTION


def test_edema_extent_beyond_core_in_mm():
    rel = relations(_shells(), AFFINE)
    # Edema reaches r = 20 mm from a core of radius 12 mm: about 8 mm beyond it.
    assert 6.0 <= rel.edema_extent_beyond_core_mm <= 8.5
    assert 7.0 <= rel.edema_max_extent_beyond_core_mm <= 9.0


def test_composites_only_are_resolved_and_unknowns_are_none():
    m = _shells()
    rel = relations({"TC": m["NCR"] | m["ET"], "ET": m["ET"], "WT": m["NCR"] | m["ET"] | m["ED"]}, AFFINE)
    assert rel.necrosis_surrounded_by_enhancing_rim is True  # NCR = TC minus ET
    assert rel.edema_extent_beyond_core_mm is not None       # ED = WT minus TC
    only_wt = relations({"WT": m["ED"]}, AFFINE)
    assert only_wt.necrotic_fraction_of_core is None
    assert only_wt.necrosis_surrounded_by_enhancing_rim is None
    assert only_wt.edema_extent_beyond_core_mm is None
    empty = relations({c: np.zeros((8, 8, 8), bool) for c in ("NCR", "ET", "ED")}, np.eye(4))
    assert empty.necrotic_fraction_of_core is None and empty.volumes_ml["WT"] == 0.0


def test_bad_masks_raise():
    with pytest.raises(ValueError):
        relations({"LIVER": np.zeros((4, 4, 4), bool)}, np.eye(4))
    with pytest.raises(ValueError):
        relations({"NCR": np.zeros((4, 4, 4), bool), "ET": np.zeros((5, 4, 4), bool)}, np.eye(4))
    with pytest.raises(ValueError):
        relations({"NCR": np.zeros((4, 4, 4), bool)}, np.zeros((4, 4)))
