"""`vlseg evaluate` end to end on small label maps written to tmp folders."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg.cli import main
from vlseg.errors import InputError
from vlseg.metrics.evaluate import evaluate_folders
from vlseg.vocab.labels import concepts_to_labels
from vlseg.metrics import HD95_EMPTY

SHAPE = (24, 26, 20)
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])


def _labels(shift: int = 0) -> np.ndarray:
    """A tumour: ED shell, NCR core, ET rim piece (BraTS 2023 values 2/1/3)."""
    wt = np.zeros(SHAPE, bool)
    wt[6 + shift:18 + shift, 6:20, 5:15] = True
    ncr = np.zeros(SHAPE, bool)
    ncr[9 + shift:13 + shift, 10:15, 8:12] = True
    et = np.zeros(SHAPE, bool)
    et[13 + shift:16 + shift, 10:15, 8:12] = True  # 60 voxels: above the lesion-size limit
    return concepts_to_labels({"WT": wt, "NCR": ncr, "ET": et}, "brats2023")


def _save(arr: np.ndarray, path: Path, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


@pytest.fixture()
def dirs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i, case in enumerate(["case1", "case2", "case3", "case4"]):
        _save(_labels().astype(np.uint8), gt / case / f"{case}-seg.nii.gz")
        _save(np.full(SHAPE, 100.0 + i, np.float32), gt / case / f"{case}-t1n.nii.gz")  # an image
    _save(_labels().astype(np.uint8), pred / "case1.nii.gz")                 # perfect
    _save(_labels(shift=2).astype(np.uint8), pred / "case2-seg.nii.gz")     # shifted 2 voxels
    # case3: per-concept masks as `vlseg segment` writes them (ET only, perfect).
    _save((_labels() == 3).astype(np.uint8), pred / "case3" / "ET.nii.gz")
    (pred / "case3" / "answer.json").write_text("{}")
    _save(_labels().astype(np.uint8), pred / "extra.nii.gz")                 # no ground truth
    return gt, pred                                                          # case4: missing


def test_evaluate_end_to_end(dirs, tmp_path, capsys):
    gt, pred = dirs
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for concept in ("NCR", "ED", "ET", "TC", "WT"):
        assert f"\n{concept} " in printed
    assert "case4" in printed and "extra" in printed  # missing / unmatched are reported

    report = json.loads((out / "metrics.json").read_text())
    assert report["missing_predictions"] == ["case4"]
    assert report["unmatched_predictions"] == ["extra"]
    cases = report["cases"]
    assert set(cases) == {"case1", "case2", "case3", "case4"}
    assert all(s["dice"] == 1.0 and s["hd95"] == 0.0 for s in cases["case1"]["concepts"].values())
    assert list(cases["case3"]["concepts"]) == ["ET"]  # only the concept the folder holds
    assert cases["case4"]["prediction"] is None
    for s in cases["case4"]["concepts"].values():      # missing -> scored as empty prediction
        assert (s["dice"], s["hd95"], s["lesion_dice"], s["lesion_hd95"]) == (0.0, HD95_EMPTY, 0.0, HD95_EMPTY)
    wt2 = cases["case2"]["concepts"]["WT"]
    assert 0.5 < wt2["dice"] < 1.0 and wt2["hd95"] == pytest.approx(4.0)  # 2 voxels x 2 mm
    assert cases["case2"]["spacing_mm"] == [2.0, 2.0, 2.5]

    summary = report["summary"]
    assert summary["WT"]["n"] == 3 and summary["ET"]["n"] == 4
    wt_dice = [cases[c]["concepts"]["WT"]["dice"] for c in ("case1", "case2", "case4")]
    assert summary["WT"]["dice"]["mean"] == pytest.approx(np.mean(wt_dice))
    assert summary["WT"]["dice"]["sd"] == pytest.approx(np.std(wt_dice, ddof=1))

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 5 + 1
    row = next(r for r in rows if r["case_id"] == "case2" and r["concept"] == "WT")
    assert float(row["dice"]) == pytest.approx(wt2["dice"], rel=1e-5)
    assert float(row["gt_ml"]) == pytest.approx(12 * 14 * 10 * 2 * 2 * 2.5 / 1000)
    assert {r["prediction"] for r in rows if r["case_id"] == "case4"} == {"missing"}
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temp files


def test_prediction_in_another_orientation_and_default_out(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels().astype(np.uint8), gt / "a.nii.gz")
    # Same grid stored LPS: flip x and y of the data and of the affine.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = SHAPE[0] - 1, SHAPE[1] - 1
    lps_affine = AFFINE @ flip
    _save(_labels()[::-1, ::-1].astype(np.uint8), pred / "a.nii.gz", affine=lps_affine)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 0
    report = json.loads((pred / "metrics.json").read_text())  # --out defaults to --pred
    assert all(s["dice"] == 1.0 for s in report["cases"]["a"]["concepts"].values())


def test_brats2021_gt_convention_detected_from_names(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    lab2023 = _labels()
    lab2021 = np.where(lab2023 == 3, 4, lab2023).astype(np.uint8)
    _save(lab2021, gt / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    _save(lab2023.astype(np.uint8), pred / "BraTS2021_00001.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 0
    report = json.loads((pred / "metrics.json").read_text())
    case = report["cases"]["BraTS2021_00001"]
    assert case["gt_convention"] == "brats2021" and case["concepts"]["ET"]["dice"] == 1.0


def _fails(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def test_errors_are_one_line_and_write_nothing(dirs, tmp_path, capsys):
    gt, pred = dirs
    out = tmp_path / "out"
    # No case in common.
    other = tmp_path / "other"
    _save(_labels().astype(np.uint8), other / "zzz.nii.gz")
    _fails(["evaluate", "--pred", str(other), "--gt", str(gt), "--out", str(out)], capsys,
           "no prediction matches")
    # Missing folder.
    _fails(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt), "--out", str(out)],
           capsys, "not found")
    # A prediction on another grid.
    _save(np.zeros((10, 10, 10), np.uint8), pred / "case4.nii.gz")
    _fails(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys,
           "case4.nii.gz", "grid differs")
    # Labels outside the convention, with a hint.
    _save(np.where(_labels() == 3, 4, _labels()).astype(np.uint8), pred / "case4.nii.gz")
    _fails(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys,
           "[4]", "--pred-convention brats2021")
    with pytest.raises(InputError, match="pass pred_convention=brats2021"):  # the library's words
        evaluate_folders(pred, gt)
    # Not a NIfTI file.
    (pred / "case4.nii.gz").write_bytes(b"<html>not a scan</html>")
    _fails(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys,
           "case4.nii.gz", "not a NIfTI")
    # Non-integer labels.
    _save((_labels() * 0.5).astype(np.float32), pred / "case4.nii.gz")
    _fails(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys,
           "not integer labels")
    # --out is a file.
    (pred / "case4.nii.gz").unlink()
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    _fails(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(blocker)], capsys,
           "--out must be a folder")
    assert blocker.read_text() == "keep me"
    assert not out.exists()  # nothing half-written by any failed run


def test_msd_labels_tr_and_ambiguous_case_folder(tmp_path, capsys):
    gt, pred = tmp_path / "Task01" / "labelsTr", tmp_path / "pred"
    lab = _labels()
    msd = np.select([lab == 2, lab == 1, lab == 3], [1, 2, 3], 0).astype(np.uint8)  # ED 1, NCR 2, ET 3
    _save(msd, gt / "BRATS_001.nii.gz")
    _save(lab.astype(np.uint8), pred / "BRATS_001.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 0
    case = json.loads((pred / "metrics.json").read_text())["cases"]["BRATS_001"]
    assert case["gt_convention"] == "msd"
    assert all(s["dice"] == 1.0 for s in case["concepts"].values())
    # A case folder with two label files is refused rather than guessed.
    _save(lab.astype(np.uint8), pred / "BRATS_001.nii.gz")
    amb = tmp_path / "amb" / "BRATS_001"
    _save(lab.astype(np.uint8), amb / "x-seg.nii.gz")
    _save(lab.astype(np.uint8), amb / "y_seg.nii.gz")
    _fails(["evaluate", "--pred", str(amb.parent), "--gt", str(gt)], capsys, "several label files")


def _post_treatment(shift: int = 0) -> np.ndarray:
    """A post-treatment map in BraTS 2024 values: the tumour (1 NETC, 2 SNFH, 3 ET) and a cavity 4."""
    lab = _labels(shift).astype(np.uint8)
    lab[1 + shift:5 + shift, 2:8, 2:6] = 4
    return lab


def test_brats2024_detected_scored_and_named_as_the_challenge(tmp_path, capsys):
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    _save(_post_treatment(), gt / "BraTS-GLI-00001-100" / "BraTS-GLI-00001-100-seg.nii.gz")
    _save(_post_treatment(shift=1), pred / "BraTS-GLI-00001-100.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out),
                 "--definition", "brats2025"]) == 0
    printed = capsys.readouterr().out
    for label in ("NETC (NCR)", "SNFH (ED)", "\nET ", "\nTC ", "\nWT ", "\nRC "):
        assert label in printed
    doc = json.loads((out / "metrics.json").read_text())
    case = doc["cases"]["BraTS-GLI-00001-100"]
    assert case["gt_convention"] == "brats2024" and set(case["concepts"]) == {"NCR", "ED", "ET", "TC", "WT", "RC"}
    rc = case["concepts"]["RC"]
    assert (rc["n_tp"], rc["n_fp"], rc["n_fn"]) == (1, 0, 0) and 0 < rc["dice"] < 1 and 0 < rc["nsd"] <= 1
    assert doc["summary"]["NCR"]["region"] == "NETC" and doc["summary"]["ED"]["region"] == "SNFH"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["region"] for r in rows} == {"NETC", "SNFH", "ET", "TC", "WT", "RC"}
    # TC and WT leave the cavity out.
    gt_rc = (_post_treatment() == 4).sum()
    assert case["concepts"]["WT"]["gt_voxels"] == (_post_treatment() > 0).sum() - gt_rc


def test_brats2025_nan_regions_and_json_strings(tmp_path):
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    _save(_labels().astype(np.uint8), gt / "c1.nii.gz")
    _save(_labels().astype(np.uint8), pred / "c1.nii.gz")
    _save(np.zeros(SHAPE, np.uint8), gt / "c2.nii.gz")                       # tumour-free
    _save(np.zeros(SHAPE, np.uint8), pred / "c2.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out),
                 "--definition", "brats2025"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["cases"]["c2"]["concepts"]["ET"]["dice"] == "nan"
    assert doc["summary"]["ET"]["dice"]["mean"] == 1.0  # NaN skipped, as the official report


def test_label_4_under_brats2023_is_one_line_naming_it(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_post_treatment(), gt / "case1-seg.nii.gz")
    _save(_post_treatment(), pred / "case1.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--gt-convention", "brats2023"]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]  # the progress bar aside
    assert len(err) == 1 and "label values [4]" in err[0] and "--gt-convention brats2024" in err[0]
