"""Issue 25's local outputs: probability and uncertainty maps (--save-probabilities), and a
DICOM series without a Frame of Reference UID answered from its images (NIfTI masks) with the
reason no DICOM-SEG/SR was written."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from dicom_cases import phantom_images, study

pytestmark = pytest.mark.slow


def test_save_probabilities_writes_calibrated_maps_and_entropy(phantom_case_2mm, random_checkpoint,
                                                               tmp_path, capsys):
    from vlseg.cli import main
    from vlseg.segmenter.writer import binary_entropy

    out = tmp_path / "answer"
    assert main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the whole tumor and the edema",
                 "--out", str(out), "--model", str(random_checkpoint), "--threads", "1",
                 "--save-probabilities"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "answer.json").read_text())
    files = doc["probabilities"]["files"]
    assert sorted(files) == sorted(t["concept"] for t in doc["targets"])
    listed = {t["mask"] for t in doc["targets"]} | {f for m in files.values() for f in m.values()}
    assert {p.name for p in out.iterdir()} == listed | {"answer.json"}
    for concept, names in files.items():
        mask = nib.load(out / f"{concept}.nii.gz")
        prob, unc = nib.load(out / names["probability"]), nib.load(out / names["uncertainty"])
        for img in (prob, unc):  # the masks' grid, float32, compressed
            assert img.shape == mask.shape and np.allclose(img.affine, mask.affine)
            assert img.get_data_dtype() == np.float32
            assert (out / names["probability"]).read_bytes()[:2] == b"\x1f\x8b"
        p = np.asarray(prob.dataobj)
        assert p.min() >= 0.0 and p.max() <= 1.0
        assert np.allclose(np.asarray(unc.dataobj), binary_entropy(p), atol=1e-5)
        m = np.asarray(mask.dataobj) > 0
        assert (p[m] >= 0.5).all()  # the mask is p >= 0.5 less specks

    # Without the flag, a later answer in the same folder removes the maps the old one listed.
    assert main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
                 "--out", str(out), "--model", str(random_checkpoint), "--threads", "1"]) == 0
    assert {p.name for p in out.iterdir()} == {"ED.nii.gz", "answer.json"}


def test_series_without_frame_of_reference_is_answered_without_a_seg(phantom_case_2mm, tmp_path, capsys):
    from pydicom import dcmread

    from vlseg.cli import main

    images = phantom_images(phantom_case_2mm)
    with_for = study(images, tmp_path / "with", seed="for")
    without = study(images, tmp_path / "without", seed="for")
    for p in without.rglob("*"):
        if p.is_file():
            ds = dcmread(p)
            del ds.FrameOfReferenceUID
            ds.save_as(p)
    outs = {}
    for name, folder in (("with", with_for), ("without", without)):
        outs[name] = tmp_path / f"out-{name}"
        assert main(["segment", "--case", str(folder), "--query", "segment the whole tumor",
                     "--out", str(outs[name]), "--threads", "1"]) == 0, capsys.readouterr().err
    doc = json.loads((outs["without"] / "answer.json").read_text())
    assert "dicom_seg" not in doc and "dicom_sr" not in doc
    assert any("Frame of Reference UID (0020,0052)" in w and "segmentation.dcm" in w
               for w in doc["warnings"])
    assert {p.name for p in outs["without"].iterdir()} == {"WT.nii.gz", "answer.json"}
    a, b = (nib.load(outs[n] / "WT.nii.gz") for n in ("with", "without"))
    assert np.allclose(a.affine, b.affine) and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert (outs["with"] / "segmentation.dcm").is_file() and (outs["with"] / "measurements.dcm").is_file()
