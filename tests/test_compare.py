"""Two time points: RANO 2.0 rules, lesion matching, change intervals, registration, phantom
pairs with known truth, `vlseg compare` (one pair and --pairs), and the change questions."""
from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from vlseg.cli import main
from vlseg.io import open_case
from vlseg.reasoning.calibration import Calibration
from vlseg.reasoning.change import (
    Labelled,
    compare_labellings,
    enhancing_lesions,
    match_lesions,
    rano_category,
    spd_mm2,
    volume_change,
)
from vlseg.reasoning.registration import register_rigid, resample_to_grid

EYE = np.eye(4)


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


# ----------------------------------------------------------------------------- rules (no model)


def test_axial_diameters_decide_measurability_and_spd():
    # 1 mm grid: a 21 x 13 x 5 voxel block -> in-plane 21 x 13 mm edge to edge (diagonal 24.7 mm)
    m = box((60, 60, 30), (5, 5, 5), (26, 18, 10)) | box((60, 60, 30), (40, 40, 5), (46, 48, 10))
    _, les = enhancing_lesions(m, EYE)
    assert len(les) == 2
    big, small = les
    assert big.longest_mm == pytest.approx(np.hypot(21, 13), abs=1.0)
    assert big.measurable and big.perpendicular_mm >= 10
    assert not small.measurable  # 5 mm across: not measurable, no product
    assert spd_mm2(les) == pytest.approx(big.longest_mm * big.perpendicular_mm)


@pytest.mark.parametrize("kw, category", [
    (dict(base_spd=400, follow_spd=520, new_measurable=0, base_et_ml=5, follow_et_ml=6), "PD"),   # +30 %
    (dict(base_spd=400, follow_spd=480, new_measurable=0, base_et_ml=5, follow_et_ml=6), "SD"),   # +20 %
    (dict(base_spd=400, follow_spd=200, new_measurable=0, base_et_ml=5, follow_et_ml=2), "PR"),   # -50 %
    (dict(base_spd=400, follow_spd=390, new_measurable=1, base_et_ml=5, follow_et_ml=6), "PD"),   # new lesion
    (dict(base_spd=400, follow_spd=0, new_measurable=0, base_et_ml=5, follow_et_ml=0), "CR"),
    (dict(base_spd=0, follow_spd=0, new_measurable=0, base_et_ml=1.0, follow_et_ml=1.6), "PD"),   # volume +60 %
    (dict(base_spd=0, follow_spd=0, new_measurable=0, base_et_ml=1.0, follow_et_ml=1.2), "SD"),
])
def test_rano_category_rules(kw, category):
    cat, basis = rano_category(**kw)
    assert cat == category and basis
    if kw["base_spd"] == 0 and cat != "CR":
        assert "volume" in basis  # says when the enhancing volume decided


def test_lesions_match_by_overlap_then_distance():
    shape = (80, 80, 30)
    base = box(shape, (5, 5, 5), (20, 20, 15)) | box(shape, (50, 5, 5), (62, 17, 15))
    follow = (box(shape, (8, 8, 5), (24, 24, 15))          # overlaps lesion 1: grown
              | box(shape, (60, 60, 5), (74, 74, 15)))     # far from both: new; lesion 2 gone
    bl, bles = enhancing_lesions(base, EYE)
    fl, fles = enhancing_lesions(follow, EYE)
    m = match_lesions(bl, bles, fl, fles)
    assert len(m.pairs) == 1 and len(m.new) == 1 and len(m.disappeared) == 1
    # A lesion that moved a little without overlap is the same lesion (centroids within 15 mm)
    fl1, fles1 = enhancing_lesions(box(shape, (5, 5, 5), (15, 15, 15)), EYE)
    ml, mles = enhancing_lesions(box(shape, (5, 16, 5), (15, 26, 15)), EYE)
    assert not (fl1 & ml).any()
    assert match_lesions(fl1, fles1, ml, mles).pairs == ((1, 1),)
    far, fles_far = enhancing_lesions(box(shape, (5, 40, 5), (15, 50, 15)), EYE)
    assert match_lesions(fl1, fles1, far, fles_far).new == (1,)


def test_change_interval_contains_the_change_and_is_bonferroni():
    r = volume_change(10.0, 15.0, (9.0, 11.0), (14.0, 16.5))
    assert r["change_pct"] == 50.0
    lo, hi = r["change_pct_interval"]
    assert lo <= 50.0 <= hi and lo == pytest.approx(100 * (14 - 11) / 11, abs=0.1)
    shape = (40, 40, 20)
    b = box(shape, (5, 5, 5), (20, 20, 15))
    f = box(shape, (5, 5, 5), (24, 24, 15))
    masks_b = {"ET": b, "TC": b, "WT": b}
    masks_f = {"ET": f, "TC": f, "WT": f}
    probs = lambda ms: {c: np.where(m, 0.99, 0.2 * ndimage.binary_dilation(m)).astype(np.float32)  # noqa: E731
                        for c, m in ms.items()}
    res = compare_labellings(Labelled(probs(masks_b), masks_b, EYE), Labelled(probs(masks_f), masks_f, EYE),
                             masks_f, calibration=Calibration.identity("test"), confidence=0.9,
                             regions=("ET", "TC", "WT"))
    doc = res.doc
    assert doc["per_scan_interval_level"] == 0.95
    et = doc["regions"]["ET"]
    assert et["change_pct_interval"][0] <= et["change_pct"] <= et["change_pct_interval"][1]
    assert doc["rano_category"] == "PD" and doc["new_lesions"] == 0 and not res.new_lesions.any()


# ----------------------------------------------------------------------------- registration


def _moved(case, rot_deg, shift_mm):
    """The case's t1n moved by a known rigid motion; returns (image, matrix baseline->moved)."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.deg2rad(rot_deg)).as_matrix()
    m[:3, 3] = shift_mm
    # moved(x) = base(m^-1 x): pull the baseline through the inverse motion
    img = resample_to_grid(case.images["t1n"], case.affine, case.shape, case.affine, np.linalg.inv(m), order=1)
    return img, m


def test_rigid_registration_recovers_a_known_motion_and_refuses_other_anatomy(phantom_case_2mm):
    case = open_case(phantom_case_2mm)
    img, truth = _moved(case, (2.0, -3.0, 4.0), (4.0, -3.0, 2.0))
    reg = register_rigid(case.images["t1n"], case.affine, img, case.affine, sequence="t1n")
    assert reg.ok and reg.warning is None and reg.brain_dice > 0.95
    probe = np.array([[20.0, 30.0, 10.0, 1.0], [-30.0, -20.0, 30.0, 1.0]])
    err = np.linalg.norm((probe @ reg.matrix.T - probe @ truth.T)[:, :3], axis=1)
    assert err.max() < 1.5, err  # mm
    # Another anatomy: the same brain squashed to 70 % along one axis
    squashed = ndimage.zoom(case.images["t1n"], (1.0, 0.7, 1.0), order=1)
    pad = np.zeros_like(case.images["t1n"])
    pad[:, :squashed.shape[1]] = squashed
    bad = register_rigid(case.images["t1n"], case.affine, pad, case.affine, sequence="t1n")
    assert not bad.ok and "same patient" in bad.warning


# ----------------------------------------------------------------------------- phantom pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Three pairs at 2 mm: progression (0), a new lesion (1), complete response (3)."""
    from vlseg.synth.pairs import write_pair, write_pairs_csv

    out = tmp_path_factory.mktemp("pairs")
    folders = [write_pair(out, 0, i) for i in (0, 1, 3)]
    write_pairs_csv(out, folders[:1])
    return out, folders


def test_pairs_carry_truth_that_matches_their_scenario(pairs):
    from vlseg.synth.pairs import pair_cases

    _, folders = pairs
    truths = [json.loads((f / "truth.json").read_text()) for f in folders]
    assert [t["scenario"] for t in truths] == ["progression", "new_lesion", "complete_response"]
    assert [t["rano_category"] for t in truths] == ["PD", "PD", "CR"]
    assert truths[1]["new_lesions"] >= 1 and truths[0]["regions"]["ET"]["change_pct"] > 25
    assert truths[2]["regions"]["ET"]["followup_ml"] == 0
    b, f = (open_case(p) for p in pair_cases(folders[0]))
    assert b.present == f.present
    moved = np.array(truths[0]["followup"]["baseline_to_followup_ras"])
    assert not np.allclose(moved, np.eye(4))  # the head moved between the scans


def _run(argv):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vlseg", *argv], capture_output=True, text=True, timeout=600)


def test_compare_cli_writes_the_report_and_both_answers(random_checkpoint, pairs, tmp_path, capsys):
    from vlseg.synth.pairs import pair_cases

    b, f = pair_cases(pairs[1][0])
    out = tmp_path / "cmp"
    rc = main(["compare", "--baseline", str(b), "--followup", str(f), "--out", str(out),
               "--model", str(random_checkpoint), "--threads", "2"])
    assert rc == 0
    doc = json.loads((out / "comparison.json").read_text())
    for key in ("regions", "spd_mm2", "lesions", "new_lesions", "rano_category", "rano_basis",
                "rano_outside", "registration"):
        assert key in doc
    for c in ("ET", "TC", "WT"):
        r = doc["regions"][c]
        for k in ("baseline_ml", "followup_ml", "change_ml", "change_pct", "change_pct_interval"):
            assert k in r
    assert doc["rano_category"] in ("CR", "PR", "SD", "PD")
    assert doc["registration"]["ok"] and doc["registration"]["residual"]["brain_dice"] > 0.9
    assert (out / "registration.tfm").read_text().startswith("#Insight Transform File")
    # Each answer in its own grid; the registered follow-up on the baseline's
    b_img = nib.load(next(b.glob("*-t1n.nii.gz")))
    f_img = nib.load(next(f.glob("*-t1n.nii.gz")))
    for folder, ref in (("baseline", b_img), ("followup", f_img), ("followup_on_baseline", b_img)):
        img = nib.load(out / folder / "ET.nii.gz")
        assert img.shape == ref.shape
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    assert json.loads((out / "baseline" / "answer.json").read_text())["targets"]
    change = np.asarray(nib.load(out / "followup_on_baseline" / "change.nii.gz").dataobj)
    assert set(np.unique(change)) <= {0, 1, 2, 3, 4}
    assert "RANO 2.0" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["sequences", "patient", "unreadable"])
def test_compare_bad_pairs_exit_2_with_one_line_and_write_nothing(random_checkpoint, pairs, tmp_path, problem):
    from vlseg.synth.pairs import pair_cases

    b, f = pair_cases(pairs[1][0])
    follow = tmp_path / "follow"
    shutil.copytree(f, follow)
    if problem == "sequences":
        next(follow.glob("*-t2w.nii.gz")).unlink()
        expect = "same sequences"
    elif problem == "patient":  # another anatomy: the head squashed along y
        for p in follow.glob("*-t*.nii.gz"):
            img = nib.load(p)
            arr = np.asarray(img.dataobj)
            sq = ndimage.zoom(arr, (1.0, 0.7, 1.0), order=0)
            new = np.zeros_like(arr)
            new[:, :sq.shape[1]] = sq
            nib.save(nib.Nifti1Image(new, img.affine), p)
        expect = "same patient"
    else:
        next(follow.glob("*-t1c.nii.gz")).write_text("<html>not a scan</html>")
        expect = "t1c"
    out = tmp_path / "out"
    proc = _run(["compare", "--baseline", str(b), "--followup", str(follow), "--out", str(out),
                 "--model", str(random_checkpoint)])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expect in lines[0]
    assert not (out / "comparison.json").exists() and not (out / "baseline").exists()


@pytest.mark.slow
def test_compare_pairs_cohort_is_resumable(random_checkpoint, pairs, tmp_path):
    src, _ = pairs
    out = tmp_path / "cohort"
    argv = ["compare", "--pairs", str(src / "pairs.csv"), "--out", str(out), "--model", str(random_checkpoint)]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "changes.csv").open()))
    assert len(rows) == 1 and rows[0]["rano_category"] in ("CR", "PR", "SD", "PD")
    assert "ET_change_pct" in rows[0] and "ET_change_pct_lo" in rows[0]
    stamp = (out / rows[0]["pair_id"] / "comparison.json").stat().st_mtime_ns
    assert main(argv) == 0  # done pairs are skipped
    assert (out / rows[0]["pair_id"] / "comparison.json").stat().st_mtime_ns == stamp
    bad = tmp_path / "bad.csv"
    bad.write_text("id,before,after\nx,a,b\n")
    assert main(["compare", "--pairs", str(bad), "--out", str(tmp_path / "o2")]) == 2


# ----------------------------------------------------------------------------- dialogue


def test_change_questions_after_compare(random_checkpoint, pairs, phantom_case_2mm):
    from vlseg.segmenter import Segmenter
    from vlseg.synth.pairs import pair_cases

    seg = Segmenter.from_pretrained(str(random_checkpoint))
    seg.set_case(phantom_case_2mm)
    single = seg.ask("did the enhancing tumor grow?")
    assert single.intent == "change" and "Only one scan is set" in single.text
    b, f = pair_cases(pairs[1][0])
    cmp = seg.compare(b, f)
    for q in ("did it grow?", "what changed since the last scan?", "is there a new lesion?",
              "how much did the enhancing tumor shrink?", "RANO assessment"):
        ans = seg.ask(q)
        assert ans.intent == "change", q
        assert "RANO 2.0" in ans.text and cmp.doc["rano_category"] in ans.text, q
    edema = seg.ask("did the edema grow since the last scan?")
    assert "peritumoral edema" in edema.text
    whole = seg.ask("did the whole tumor grow?")
    if cmp.doc["regions"]["WT"]["baseline_ml"] > 0:
        assert "interval" in whole.text and "whole tumor" in whole.text


@pytest.mark.slow
def test_mcp_tool_and_app_session_compare(random_checkpoint, pairs, tmp_path):
    from vlseg.app.sessions import AskRequest, CompareRequest, SessionStore
    from vlseg.mcp_server import CaseTools
    from vlseg.segmenter import Segmenter
    from vlseg.synth.pairs import pair_cases

    b, f = pair_cases(pairs[1][0])
    seg = Segmenter.from_pretrained(str(random_checkpoint))
    tools = CaseTools(segmenter=seg, out_root=tmp_path / "mcp")
    got = tools.compare(str(b), str(f))
    assert got["rano_category"] in ("CR", "PR", "SD", "PD") and "RANO 2.0" in got["text"]
    assert json.loads(open(got["comparison_json"]).read())["rano_category"] == got["rano_category"]
    assert tools.ask("is there a new lesion?")["text"].count("RANO 2.0") == 1
    with pytest.raises(Exception, match="same sequences"):
        tools.compare(str(b), str(next(f.glob("*-t1c.nii.gz"))))

    store = SessionStore(base=seg, output_dir=tmp_path / "app")
    sid = store.new_session()
    resp = store.compare(CompareRequest(session_id=sid, baseline=b, followup=f))
    assert resp.files[0].name == "comparison.json" and any(p.name == "change.nii.gz" for p in resp.files)
    ans = store.ask(AskRequest(session_id=sid, query="did it grow?", pictures=False))
    assert ans.intent == "change" and resp.comparison_json["rano_category"] in ans.text


def test_mask_resampling_in_its_box_equals_the_whole_grid():
    """``resample_to_grid`` pulls a mask only into the box it can reach: the same voxels as
    resampling the whole grid, for random grids, spacings, rotations and (empty) masks."""
    from scipy.spatial.transform import Rotation

    from vlseg.reasoning.registration import resample_to_grid

    rng = np.random.default_rng(0)
    for trial in range(40):
        shape = tuple(int(v) for v in rng.integers(16, 32, 3))
        src = np.zeros(tuple(int(v) for v in rng.integers(16, 32, 3)), bool)
        if trial % 5:
            centre, radius = rng.integers(0, np.array(src.shape)), rng.integers(1, 5)
            grid = np.indices(src.shape)
            src[((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius * radius] = True
        m_aff, aff = (np.diag([*rng.uniform(0.8, 2.5, 3), 1.0]) for _ in range(2))
        m_aff[:3, 3], aff[:3, 3] = rng.uniform(-20, 20, 3), rng.uniform(-20, 20, 3)
        matrix = np.eye(4)
        matrix[:3, :3] = Rotation.from_euler("xyz", rng.uniform(-20, 20, 3), degrees=True).as_matrix()
        matrix[:3, 3] = rng.uniform(-5, 5, 3)
        vox = np.linalg.inv(m_aff) @ matrix @ aff
        for order in (0, 1):
            whole = ndimage.affine_transform(src.astype(np.float32), vox[:3, :3], vox[:3, 3],
                                             output_shape=shape, order=order) > 0.5
            assert np.array_equal(resample_to_grid(src, m_aff, shape, aff, matrix, order=order), whole)


def test_fill_holes_equals_scipys():
    """``fill_holes`` (label the background once, in the mask's box) gives scipy's
    ``binary_fill_holes`` voxel for voxel: 2D and 3D, sparse and dense, full and empty masks,
    masks touching the array's border."""
    from vlseg.reasoning.midplane import fill_holes

    rng = np.random.default_rng(1)
    for trial in range(120):
        shape = tuple(int(v) for v in rng.integers(3, 20, 3 if trial % 3 else 2))
        m = rng.random(shape) < rng.uniform(0.2, 0.8)
        if trial % 4 == 0:
            m = ndimage.binary_dilation(m, iterations=2)
        if trial % 17 == 0:
            m[:] = True
        if trial % 19 == 0:
            m[:] = False
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    ring = np.zeros((9, 9, 9), bool)
    ring[2:7, 2:7, 2:7] = True
    ring[4, 4, 4] = False  # one enclosed hole
    assert fill_holes(ring)[4, 4, 4] and fill_holes(ring).sum() == 125
