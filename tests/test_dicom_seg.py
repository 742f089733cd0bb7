"""DICOM-SEG out: written with the answer for DICOM input, referencing the source series, coded
segments, algorithm identification; agrees voxel for voxel with the NIfTI masks; and no patient
data in answer.json, measurements.csv, printed output or logs."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_cases import FILLED_TAGS, PHI_STRINGS, mixed_grid_study, phantom_images, study

from vlseg.io import Grid, load_case, to_ras
from vlseg.io.dicom_geometry import grid_from
from vlseg.io.dicom_seg import read_seg_masks, write_seg
from vlseg.io.dicom_study import scan_study

pytestmark = pytest.mark.slow
QUERY = "segment the whole tumor, the necrotic core and the edema"


@pytest.fixture(scope="module")
def images(phantom_case_2mm):
    return phantom_images(phantom_case_2mm)


@pytest.fixture(scope="module")
def filled(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("phi")
    return study(images, root / "cohort" / "study-1", seed="phi", patient=FILLED_TAGS)


def _seg_equals_nifti(seg_path: Path, nifti: dict[str, Path]) -> None:
    got, aff = read_seg_masks(seg_path)
    assert sorted(got) == sorted(nifti)
    for concept, path in nifti.items():
        img = nib.load(path)
        ref, g_ref = to_ras(np.asarray(img.dataobj), Grid(shape=img.shape, affine=img.affine))
        arr, g = to_ras(got[concept].transpose(2, 1, 0), grid_from(aff, got[concept].shape))
        assert g.mismatch(g_ref) is None, concept
        assert np.array_equal(arr, ref), concept


def test_probabilities_of_a_study_come_as_a_fractional_seg_too(filled, tmp_path, capsys, phantom_case_2mm):
    """--save-probabilities on a DICOM study: beside the NIfTI maps, one FRACTIONAL SEG (type
    PROBABILITY) on the reference series, voxel for voxel the NIfTI probability to 1/255; a
    later answer without the flag removes it."""
    import highdicom as hd

    from vlseg.cli import main

    out = tmp_path / "answer"
    assert main(["segment", "--case", str(filled), "--query", QUERY, "--out", str(out), "--threads", "1",
                 "--save-probabilities"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "answer.json").read_text())
    entry = doc["dicom_probability_seg"]
    concepts = [t["concept"] for t in doc["targets"]]
    assert entry["file"] == "probabilities.dcm" and entry["segments"] == concepts
    assert (entry["segmentation_type"], entry["fractional_type"], entry["max_fractional_value"]) == \
        ("FRACTIONAL", "PROBABILITY", 255)
    assert "warnings" not in doc or not any("probabilities.dcm" in w for w in doc["warnings"])
    seg = hd.seg.segread(out / entry["file"])
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.SeriesInstanceUID != hd.seg.segread(out / doc["dicom_seg"]["file"]).SeriesInstanceUID
    assert not [s for s in PHI_STRINGS if s in str(seg.get("PatientComments", ""))]
    got, aff = read_seg_masks(out / entry["file"])
    for concept in concepts:
        img = nib.load(out / doc["probabilities"]["files"][concept]["probability"])
        ref, g_ref = to_ras(np.asarray(img.dataobj), Grid(shape=img.shape, affine=img.affine))
        arr, g = to_ras(got[concept].transpose(2, 1, 0), grid_from(aff, got[concept].shape))
        assert g.mismatch(g_ref) is None and arr.dtype == np.float32
        assert np.abs(arr - ref).max() <= 1 / 255 + 1e-6, concept
        assert ref.max() > 0.5
    assert main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
                 "--out", str(out), "--threads", "1"]) == 0
    assert {p.name for p in out.iterdir()} == {"ED.nii.gz", "answer.json"}


@pytest.mark.parametrize("style", [dict(orientation="oblique", layout="nested"),
                                   dict(enhanced=True, layout="nested")], ids=["oblique", "enhanced"])
def test_seg_agrees_with_nifti_masks_on_any_geometry(images, tmp_path, style):
    from vlseg.io import write_mask

    case = load_case(study(images, tmp_path / "s", seed="g", **style))
    seg_ras, _ = to_ras(np.asarray(images["seg"].dataobj), Grid(shape=images["seg"].shape,
                                                                 affine=images["seg"].affine))
    masks = {"NCR": (seg_ras == 1).astype(np.uint8), "WT": (seg_ras > 0).astype(np.uint8)}
    assert masks["WT"].sum() > 100
    path = write_seg(case, masks, tmp_path / "out" / "segmentation.dcm", model={"name": "x"})
    nifti = {c: write_mask(m, case, tmp_path / "out" / f"{c}.nii.gz") for c, m in masks.items()}
    _seg_equals_nifti(path, nifti)


def test_segment_writes_a_seg_with_the_answer_and_leaks_no_patient_data(filled, tmp_path, capsys,
                                                                         monkeypatch, phantom_case_2mm):
    import highdicom as hd

    from vlseg.cli import main

    monkeypatch.setenv("VLSEG_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "answer"
    assert main(["segment", "--case", str(filled), "--query", QUERY, "--out", str(out),
                 "--threads", "1"]) == 0
    printed = capsys.readouterr()
    doc = json.loads((out / "answer.json").read_text())
    # The folder holds exactly what answer.json lists: the masks, the SEG and its SR report.
    listed = {t["mask"] for t in doc["targets"]} | {doc["dicom_seg"]["file"], doc["dicom_sr"]["file"],
                                                      "answer.json"}
    assert {p.name for p in out.iterdir()} == listed
    assert doc["dicom_seg"]["segments"] == [t["concept"] for t in doc["targets"]]
    assert any(t["present"] for t in doc["targets"])

    # Voxel for voxel the same as the NIfTI masks (which are on the reference series' grid).
    seg_path = out / doc["dicom_seg"]["file"]
    _seg_equals_nifti(seg_path, {t["concept"]: out / t["mask"] for t in doc["targets"]})

    # What the standard asks of a derived SEG: references, codes, algorithm, patient/study.
    seg = hd.seg.segread(seg_path)
    src = scan_study(filled)
    t1c = next(s for s in src.series if s.sequence == "t1c")  # all on one grid: t1c is the reference
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t1c.uid
    assert doc["dicom"] == {"reference": "t1c", "resampled": []}
    assert doc["dicom_seg"]["references"] == "t1c"
    from pydicom import dcmread

    first = dcmread(t1c.files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert str(seg.PatientName) == FILLED_TAGS["PatientName"] and seg.PatientID == FILLED_TAGS["PatientID"]
    for item, target in zip(seg.SegmentSequence, doc["targets"]):
        assert item.SegmentLabel.startswith(target["concept"])
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "vlseg" and algo.AlgorithmVersion
        assert doc["model"]["checkpoint_sha256"] in str(algo.AlgorithmParameters)
    codes = {i.SegmentLabel.split()[0]: i.SegmentedPropertyTypeCodeSequence[0].CodeValue
             for i in seg.SegmentSequence}
    assert codes["NCR"] == "6574001" and codes["ED"] == "79654002" and codes["WT"] == "108369006"

    # No patient data in what vlseg itself writes or says.
    text = (out / "answer.json").read_text() + printed.out + printed.err
    logs = tmp_path / "logs"
    text += "".join(p.read_text() for p in logs.rglob("*") if p.is_file()) if logs.exists() else ""
    assert not [s for s in PHI_STRINGS if s.lower() in text.lower()]

    # A later NIfTI answer into the same folder removes the SEG the old answer.json listed.
    assert main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
                 "--out", str(out), "--threads", "1"]) == 0
    assert {p.name for p in out.iterdir()} == {"ED.nii.gz", "answer.json"}


def test_series_on_other_grids_are_answered_on_the_t1c_grid(images, tmp_path, capsys):
    """A 1 mm T1c beside a 5 mm FLAIR on another field of view and 2 mm T1/T2: answered on the
    T1c grid; the SEG references the T1c series and agrees with the NIfTI masks."""
    import highdicom as hd

    from vlseg.cli import main

    folder, fine = mixed_grid_study(images, tmp_path / "mixed", patient=FILLED_TAGS)
    out = tmp_path / "answer"
    assert main(["segment", "--case", str(folder), "--query", QUERY, "--out", str(out),
                 "--threads", "1"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "answer.json").read_text())
    assert doc["sequences_used"] == ["t1n", "t1c", "t2w", "t2f"]
    assert doc["dicom"] == {"reference": "t1c", "resampled": ["t1n", "t2w", "t2f"]}
    assert any(t["present"] for t in doc["targets"])
    masks = {t["concept"]: out / t["mask"] for t in doc["targets"]}
    t1c = next(s for s in scan_study(folder).series if s.sequence == "t1c")
    for path in masks.values():  # NIfTI masks on the T1c series grid (1 mm, 180 mm across)
        img = nib.load(path)
        assert img.shape == (180, 180, 80) and np.allclose(img.header.get_zooms(), 1.0)
    seg_path = out / doc["dicom_seg"]["file"]
    assert hd.seg.segread(seg_path).ReferencedSeriesSequence[0].SeriesInstanceUID == t1c.uid
    _seg_equals_nifti(seg_path, masks)
    assert not [s for s in PHI_STRINGS if s.lower() in (out / "answer.json").read_text().lower()]


def test_cohort_measurements_have_no_patient_data(filled, tmp_path, capsys):
    from vlseg.cli import main

    out = tmp_path / "cohort-out"
    # A study folder given directly is one case, like the folder of studies it sits in.
    status = main(["segment", "--cases", str(filled), "--query", "how big is the whole tumor",
                   "--out", str(tmp_path / "one-study"), "--threads", "1"])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "one-study" / "study-1").is_dir()
    status = main(["segment", "--cases", str(filled.parent), "--query", "how big is the whole tumor",
                   "--out", str(out), "--threads", "1"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    texts = [p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file() and p.suffix in
             (".csv", ".json", ".jsonl", ".log", ".txt")]
    assert any("study-1" in t for t in texts)  # the case is there, named by its folder
    blob = "".join(texts) + printed.out + printed.err
    assert not [s for s in PHI_STRINGS if s.lower() in blob.lower()]


def test_dicom_seg_exporter_reads_the_case_study_and_nifti_cases_open_no_file(images, tmp_path,
                                                                              monkeypatch, phantom_case_2mm):
    import vlseg.io.dicom_seg as dicom_seg
    import vlseg.io.dicom_study as dicom_study
    import vlseg.segmenter.writer as writer

    case = load_case(study(images, tmp_path / "s", seed="once", layout="nested"))
    assert case.study is not None and case.study.reference == "t1c"
    seg_ras, _ = to_ras(np.asarray(images["seg"].dataobj), Grid(shape=images["seg"].shape,
                                                                 affine=images["seg"].affine))
    scans = []
    real = dicom_study.scan_study
    monkeypatch.setattr(dicom_study, "scan_study", lambda f: scans.append(f) or real(f))
    files = writer.AnswerFiles(case=case, masks_ras={"WT": (seg_ras > 0).astype(np.uint8)},
                               model={"name": "x"})
    stage = tmp_path / "stage"
    stage.mkdir()
    out = writer.DicomSeg().write(files, stage)
    assert out["dicom_seg"]["references"] == out["dicom"]["reference"] == "t1c"
    assert scans == [] and (stage / dicom_seg.SEG_FILE).is_file()  # no study scanned again

    def no_open(*a, **k):
        raise AssertionError(f"opened {a}")

    monkeypatch.setattr(dicom_seg, "read_datasets", no_open)
    nifti = load_case(phantom_case_2mm)
    assert nifti.study is None
    assert writer.DicomSeg().names(writer.AnswerFiles(case=nifti, masks_ras={"WT": seg_ras}, model={})) == []
    assert writer.DicomSeg().write(writer.AnswerFiles(case=nifti, masks_ras={}, model={}), stage) == {}
