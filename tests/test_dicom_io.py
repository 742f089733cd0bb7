"""DICOM in: studies (flat, nested, LPS, oblique, thick, multi-frame) through the reader seam,
series mapping (descriptions, acquisition tags, series=), and clear refusals."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_cases import (FILLED_TAGS, FLAIR_STEP, PHI_STRINGS, T1C_MARGIN, mixed_grid_study,
                         phantom_images, study)

from vlseg.errors import InputError
from vlseg.io import Grid, load_case, reader_for, to_ras, write_mask
from vlseg.io.dicom import DicomReader
from vlseg.io.dicom_case import load_study
from vlseg.io.dicom_study import parse_overrides, scan_study


@pytest.fixture(scope="module")
def images(phantom_case_2mm):
    return phantom_images(phantom_case_2mm)


@pytest.fixture(scope="module")
def studies(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    return {
        "flat": study(images, root / "flat", seed="flat", patient=FILLED_TAGS),
        "oblique": study(images, root / "oblique", seed="obl", orientation="oblique", layout="nested"),
        "thick": study(images, root / "thick", seed="thick", slice_step=4),
        "tags": study(images, root / "tags", seed="tags", descriptions=False),
        "enhanced": study(images, root / "enh", seed="enh", enhanced=True, layout="nested"),
    }


def _ras(img: nib.Nifti1Image):
    return to_ras(np.asarray(img.get_fdata(dtype=np.float32)), Grid(shape=img.shape, affine=img.affine))


def _same_voxels(case, images, *, tol=1e-3):
    for seq in case.present:
        ref, grid = _ras(images[seq])
        assert grid.mismatch(Grid(shape=case.shape, affine=case.affine)) is None
        scale = float(np.abs(ref).max())
        assert np.abs(case.images[seq] - ref).max() <= tol * scale, seq


def test_the_reader_seam_claims_studies_not_nifti_folders(studies, phantom_case_2mm):
    assert isinstance(reader_for(studies["flat"]), DicomReader)
    assert isinstance(reader_for(studies["oblique"] / "SE0002"), DicomReader)
    assert reader_for(phantom_case_2mm) is None  # a NIfTI case folder stays a folder


def test_flat_lps_study_maps_series_and_keeps_exact_geometry(studies, images):
    case = load_case(studies["flat"])
    assert case.present == ("t1n", "t1c", "t2w", "t2f")
    assert case.layout == "dicom" and case.case_id == "flat"
    _same_voxels(case, images)
    # Stored LPS: columns run right->left and rows anterior->posterior; the source grid says so.
    assert np.allclose(np.sign(np.diag(case.source_grid.affine)[:2]), [-1, -1])


def test_acquisition_tags_alone_tell_the_sequences_apart(studies, images):
    s = scan_study(studies["tags"])
    assert {x.sequence for x in s.series} == {"t1n", "t1c", "t2w", "t2f"}
    assert {x.evidence for x in s.series} == {"acquisition tags"}
    _same_voxels(load_case(studies["tags"]), images)


def test_oblique_nested_study_masks_go_back_voxel_exact(studies, images, tmp_path):
    case = load_case(studies["oblique"])
    rot = case.source_grid.affine[:3, :3] / 2.0
    assert np.abs(rot - np.round(rot)).max() > 0.1  # really oblique
    # The same voxels as the phantom, in the phantom's voxel order after reorientation.
    ref, _ = _ras(images["t1c"])
    assert np.abs(case.images["t1c"] - ref).max() <= 1e-3 * float(ref.max())
    seg, _ = _ras(images["seg"])
    path = write_mask((seg > 0).astype(np.uint8), case, tmp_path / "WT.nii.gz")
    out = nib.load(path)
    assert np.allclose(out.affine, case.source_grid.affine, atol=1e-4)
    assert np.array_equal(case.from_source(np.asarray(out.dataobj)), (seg > 0).astype(np.uint8))


def test_thick_slices_spacing_comes_from_positions_not_slice_thickness(studies):
    from pydicom import dcmread

    case = load_case(studies["thick"])
    assert np.allclose(sorted(case.spacing), [2.0, 2.0, 8.0], atol=1e-4)
    ds = dcmread(next(p for p in sorted(studies["thick"].iterdir()) if p.is_file()))
    assert abs(float(ds.SliceThickness) - 6.4) < 1e-3  # a gap: thickness != spacing


def test_enhanced_multiframe_series_read_like_single_frame(studies, images):
    case = load_case(studies["enhanced"])
    assert case.present == ("t1n", "t1c", "t2w", "t2f")
    _same_voxels(case, images)


def test_two_candidates_for_a_sequence_is_one_line_listing_the_series(images, tmp_path):
    folder = study(images, tmp_path / "dup", seed="dup")
    study(images, tmp_path / "dup", seed="dup2", sequences=("t1c",), study_seed="dup",
          first_number=10)  # a second T1 post series in the same study
    with pytest.raises(InputError) as e:
        load_case(folder)
    msg = str(e.value)
    assert "\n" not in msg and "look like t1c" in msg and "series=t1c=" in msg
    assert "'AX T1 SE POST GD'" in msg and "AX T2 FLAIR" in msg
    uids = {s.number: s.uid for s in scan_study(folder).series}
    case = load_study(folder, series=["t1c=3"])
    assert case.case_id == "dup" and case.present == ("t1n", "t1c", "t2w", "t2f")
    case_uid = load_study(folder, series={"t1c": uids[3]})
    assert np.array_equal(case.images["t1c"], case_uid.images["t1c"])
    with pytest.raises(InputError, match="matches no series"):
        load_study(folder, series=["t1c=42"])
    with pytest.raises(InputError, match="SEQ=SERIES"):
        parse_overrides(["t1c"])
    with pytest.raises(InputError, match="unknown|sequence"):
        parse_overrides(["dwi=3"])


def test_unrecognised_series_listed_with_the_override_hint(images, tmp_path):
    folder = study(images, tmp_path / "odd", seed="odd", sequences=("t1n",))
    from pydicom import dcmread

    for f in folder.iterdir():  # a series whose description and tags say nothing
        ds = dcmread(f)
        ds.SeriesDescription, ds.ProtocolName = "SERIES A", "PROTO A"
        for tag in ("EchoTime", "RepetitionTime"):
            delattr(ds, tag)
        ds.save_as(f)
    with pytest.raises(InputError) as e:
        load_case(folder)
    assert "not recognised" in str(e.value) and "series=" in str(e.value)
    assert load_study(folder, series=["t1n=SERIES A"]).present == ("t1n",)


def test_mixed_patients_refused_without_naming_them(images, tmp_path):
    folder = study(images, tmp_path / "mixed", seed="m1", sequences=("t1n", "t2w"), patient=FILLED_TAGS)
    study(images, tmp_path / "mixed", seed="m2", sequences=("t1c",),
          patient={"PatientID": "OTHER-1", "PatientName": "ROE^RICHARD"})
    with pytest.raises(InputError, match="2 different patients") as e:
        load_case(folder)
    assert not any(s in str(e.value) for s in PHI_STRINGS + ("ROE", "OTHER-1"))


def test_gantry_tilt_and_missing_slices_refused_clearly(images, tmp_path):
    tilted = study(images, tmp_path / "tilt", seed="tilt", sequences=("t1c",), gantry_tilt_deg=15.0)
    with pytest.raises(InputError, match=r"gantry tilt \(slices sheared by 15.0 degrees\)"):
        load_case(tilted)
    gap = study(images, tmp_path / "gap", seed="gap", sequences=("t1c",))
    files = sorted(p for p in gap.iterdir() if p.is_file())
    from pydicom import dcmread

    middle = sorted(files, key=lambda f: float(dcmread(f).ImagePositionPatient[2]))[20]
    middle.unlink()
    with pytest.raises(InputError, match="irregular slice spacing"):
        load_case(gap)


def test_non_mr_files_and_derived_series_are_ignored(studies, images, tmp_path):
    folder = tmp_path / "with-extras"
    shutil.copytree(studies["flat"], folder)
    (folder / "README.txt").write_text("exported by PACS")
    adc = study(images, tmp_path / "adc", seed="adc", sequences=("t2w",), study_seed="flat",
                patient=FILLED_TAGS, first_number=20)
    from pydicom import dcmread

    for f in adc.iterdir():
        ds = dcmread(f)
        ds.SeriesDescription, ds.ImageType = "ADC map", ["DERIVED", "PRIMARY", "ADC"]
        ds.save_as(folder / f"ADC-{f.name}")
    case = load_case(folder)
    assert case.present == ("t1n", "t1c", "t2w", "t2f")
    assert any(s.excluded for s in scan_study(folder).series)


def test_app_upload_of_a_zipped_study_maps_its_series(studies, tmp_path):
    from vlseg.app.uploads import collect_uploads

    zpath = tmp_path / "study.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(studies["oblique"].rglob("*")):
            if f.is_file():
                zf.write(f, f"export/{f.relative_to(studies['oblique'])}")
    ups = collect_uploads([zpath], tmp_path / "work")
    assert sorted(ups.sequences) == ["t1c", "t1n", "t2f", "t2w"]
    assert load_case(dict(ups.sequences)).present == ("t1n", "t1c", "t2w", "t2f")
    assert not any(s in ups.describe() for s in PHI_STRINGS)


def test_app_upload_zip_with_traversal_is_refused(studies, tmp_path):
    from vlseg.app.uploads import collect_uploads

    zpath = tmp_path / "evil.zip"
    one = next(p for p in sorted(studies["flat"].iterdir()) if p.is_file())
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(one, "IM0001")
        zf.write(one, "../../escape")
    with pytest.raises(InputError, match="unsafe path"):
        collect_uploads([zpath], tmp_path / "work")
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def test_synth_cli_writes_a_dicom_study(tmp_path, monkeypatch):
    from vlseg.cli import main

    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--spacing", "4", "--format", "dicom",
                 "--slice-step", "2"]) == 0
    folder = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    case = load_case(folder)
    assert case.present == ("t1n", "t1c", "t2w", "t2f")
    assert np.allclose(sorted(case.spacing), [4.0, 4.0, 8.0], atol=1e-4)


# ----------------------------------------------------------------------------- different grids


@pytest.fixture(scope="module")
def mixed(images, tmp_path_factory):
    return mixed_grid_study(images, tmp_path_factory.mktemp("mixed") / "mixed")


def _inside(src: nib.Nifti1Image, grid_affine: np.ndarray, shape) -> np.ndarray:
    """Voxels of a grid whose centres fall between the voxel centres of ``src`` (no border)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ grid_affine[:3, :3].T + grid_affine[:3, 3]
    vox = (world - src.affine[:3, 3]) @ np.linalg.inv(src.affine[:3, :3]).T
    ok = np.all((vox >= -1e-6) & (vox <= np.array(src.shape[:3]) - 1 + 1e-6), axis=1)
    return ok.reshape(shape)


def test_series_on_different_grids_are_resampled_onto_the_t1c_series(mixed, images):
    from nibabel.processing import resample_from_to

    folder, fine = mixed
    case = load_case(folder)
    assert case.present == ("t1n", "t1c", "t2w", "t2f") and case.case_id == "mixed"
    ref_seq, ref_path, resampled = case.study.reference, case.study.reference_path, case.study.resampled
    assert (ref_seq, resampled) == ("t1c", ("t1n", "t2w", "t2f"))
    assert isinstance(reader_for(ref_path), DicomReader)
    # The case is on the 1 mm T1c grid (its 180 mm field of view), the T1c voxels untouched.
    m = T1C_MARGIN
    t1c_nifti = fine["t1c"].slicer[m:-m, m:-m, :]
    t1c_ras, t1c_grid = _ras(t1c_nifti)
    assert t1c_grid.mismatch(Grid(shape=case.shape, affine=case.affine)) is None
    assert np.allclose(case.spacing, (1.0, 1.0, 1.0), atol=1e-4)
    assert np.abs(case.images["t1c"] - t1c_ras).max() <= 1e-3 * float(t1c_ras.max())
    # The 5 mm FLAIR agrees with the same thick NIfTI FLAIR resampled by nibabel/scipy (linear)
    # wherever both interpolate (between its slice centres): the geometry is exact.
    thick = fine["t2f"].slicer[:, :, FLAIR_STEP // 2::FLAIR_STEP]
    thick = nib.Nifti1Image(thick.get_fdata(dtype=np.float32), thick.affine)
    expected = np.asarray(resample_from_to(thick, t1c_nifti, order=1, mode="nearest").dataobj)
    inside = _inside(thick, t1c_nifti.affine, t1c_nifti.shape)
    assert 0.9 < inside.mean() < 1.0  # the slab of thick slices ends before the T1c's
    got = case.images["t2f"]
    assert np.abs(got[inside] - expected[inside]).max() <= 1e-3 * float(expected.max())
    # So does the 2 mm T1 (another resolution and field of view).
    t1n = nib.Nifti1Image(images["t1n"].get_fdata(dtype=np.float32), images["t1n"].affine)
    t1n_truth = np.asarray(resample_from_to(t1n, t1c_nifti, order=1, mode="nearest").dataobj)
    inside2 = _inside(images["t1n"], t1c_nifti.affine, t1c_nifti.shape)
    assert np.abs(case.images["t1n"][inside2] - t1n_truth[inside2]).max() <= 1e-3 * float(t1n_truth.max())


def test_reference_series_can_be_chosen(mixed, images, tmp_path):
    folder, _ = mixed
    case = load_study(folder, reference="flair")
    assert np.allclose(sorted(case.spacing), [1.0, 1.0, float(FLAIR_STEP)], atol=1e-4)
    assert case.study.reference == "t2f" and case.study.resampled == ("t1n", "t1c", "t2w")
    one = study(images, tmp_path / "one", seed="one", sequences=("t1c", "t2f"))
    with pytest.raises(InputError, match=r"reference='t2w': the study has no t2w series \(it has t1c, t2f\)"):
        load_study(one, reference="t2w")
    with pytest.raises(InputError, match="reference='dwi'"):
        load_study(one, reference="dwi")
    assert load_case(folder).study.reference == "t1c"  # loading it again plans it again


def test_series_in_another_frame_of_reference_are_refused_by_name(images, tmp_path):
    from pydicom import dcmread

    folder, _ = mixed_grid_study(images, tmp_path / "for")
    for f in folder.iterdir():
        ds = dcmread(f)
        if ds.SeriesNumber == 3:  # the FLAIR: same study, another session's frame of reference
            ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
            ds.save_as(f)
    with pytest.raises(InputError) as e:
        load_case(folder)
    msg = str(e.value)
    assert "\n" not in msg and "another frame of reference" in msg
    assert "#3 'AX T2 FLAIR'" in msg and "(t2f)" in msg and "#2 'AX T1 SE POST GD'" in msg


def test_a_study_folder_and_a_folder_of_studies_are_cases(studies, images, tmp_path):
    from vlseg.cohort import find_cases

    root = tmp_path / "cohort"
    shutil.copytree(studies["flat"], root / "flat-study")
    shutil.copytree(studies["oblique"], root / "nested-study")
    assert [r.case_id for r in find_cases([root])] == ["flat-study", "nested-study"]
    assert [r.case_id for r in find_cases([root / "flat-study"])] == ["flat-study"]
    assert [r.case_id for r in find_cases([root / "nested-study"])] == ["nested-study"]
    one = tmp_path / "one-study-cohort"
    shutil.copytree(studies["oblique"], one / "only-study")
    assert [r.case_id for r in find_cases([one])] == ["only-study"]


def test_a_nested_study_headers_are_read_once_per_load(studies, images, tmp_path, monkeypatch):
    import vlseg.io.dicom_study as dicom_study

    folder = tmp_path / "nested-once"
    shutil.copytree(studies["oblique"], folder)
    scans = []
    real = dicom_study.scan_study
    monkeypatch.setattr(dicom_study, "scan_study", lambda f: scans.append(Path(f)) or real(f))
    case = load_case(folder)
    assert case.present == ("t1n", "t1c", "t2w", "t2f")
    assert scans == [folder]  # the series folders are answered from the study's mapping
    assert load_case(folder).present == case.present and scans == [folder]


def test_one_unlistable_sub_folder_is_not_an_argument_error_for_the_cohort(studies, tmp_path,
                                                                         monkeypatch):
    import os

    from vlseg.cohort import find_cases
    from vlseg.io.dicom_study import holds_dicom, walk_files

    root = tmp_path / "cohort"
    shutil.copytree(studies["oblique"], root / "a-study")
    shutil.copytree(studies["oblique"] / "SE0002", root / "locked" / "SE0002")
    locked = root / "locked"
    real = os.scandir

    def scandir(d="."):
        if Path(d) == locked:
            raise PermissionError(13, "Permission denied")
        return real(d)

    monkeypatch.setattr(os, "scandir", scandir)
    # The two walks agree: a probe skips the folder, a study read refuses it in one line.
    assert not holds_dicom(locked) and holds_dicom(root)
    with pytest.raises(InputError, match="cannot be listed"):
        walk_files(root)
    # A folder of two cases, the unreadable one a failure of its own turn, not of the cohort.
    assert [r.case_id for r in find_cases([root])] == ["a-study", "locked"]


def test_a_cohort_root_is_decided_per_folder_never_from_some_sub_folders(studies, phantom_case_2mm,
                                                                        tmp_path):
    """Issue 26 point 3: two sub-folders holding series of one study beside NIfTI case folders
    no longer make the whole root one DICOM case (86 cases -> "1 case(s)")."""
    from vlseg.cohort import find_cases

    root = tmp_path / "mixed-root"
    for name in ("case-a", "case-b"):
        shutil.copytree(phantom_case_2mm, root / name)
    series = sorted(p for p in studies["oblique"].iterdir() if p.is_dir())
    shutil.copytree(series[0], root / "series-one")  # two folders of one study, side by side
    shutil.copytree(series[1], root / "series-two")
    shutil.copytree(studies["oblique"], root / "nested-study")  # one study, a folder per series
    refs = find_cases([root])
    assert [r.case_id for r in refs] == ["case-a", "case-b", "nested-study", "series-one",
                                         "series-two"]
    # The study spread over sub-folders is one case beside the NIfTI case folders.
    assert load_case(root / "nested-study").present == ("t1n", "t1c", "t2w", "t2f")
    # A root of nothing but one study's series folders is still that one study.
    only = tmp_path / "only-series"
    for s in series:
        shutil.copytree(s, only / s.name)
    assert [r.case_id for r in find_cases([only])] == ["only-series"]
    # Files directly in a root do not make it one case when a case folder of another kind is beside.
    shutil.copy(next(f for f in series[0].iterdir()), root / "stray.dcm")
    assert [r.case_id for r in find_cases([root])][:2] == ["case-a", "case-b"]


PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"


def test_a_malformed_file_in_a_study_is_skipped_and_named(studies, tmp_path):
    """Issue 26 point 4: badVR.dcm (NumberOfFrames '1A') in a valid study was an internal error
    that lost the study; now it is skipped and named in the case's warnings."""
    folder = tmp_path / "with-bad"
    shutil.copytree(studies["flat"], folder)
    shutil.copy(PYDICOM_FILES / "badVR.dcm", folder / "zz_badVR.dcm")
    (folder / "notes.txt").write_text("not DICOM, not reported")
    case = load_case(folder)
    assert case.present == ("t1n", "t1c", "t2w", "t2f")
    assert [w for w in case.warnings if "zz_badVR.dcm" in w] == [
        "Skipped 1 unreadable DICOM file(s) in the study: zz_badVR.dcm has a malformed header "
        "(NumberOfFrames '1A' is not a number)."]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(PYDICOM_FILES / "badVR.dcm", alone / "badVR.dcm")
    with pytest.raises(InputError, match=r"badVR.dcm: has a malformed header \(NumberOfFrames"):
        load_case(alone)


@pytest.mark.parametrize("size", [0, 132, 300])
def test_a_truncated_slice_is_named_at_load(studies, tmp_path, size):
    """A slice cut to 0, 132 or 300 bytes was dropped silently and the error blamed 'irregular
    slice spacing'; now the file is named."""
    folder = tmp_path / "truncated"
    shutil.copytree(studies["flat"], folder)
    victim = sorted(folder.iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:size])
    with pytest.raises(InputError) as e:
        load_case(folder)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{victim}: ") and "replace the file" in msg
    assert ("is empty (0 bytes)" if size == 0 else f"truncated or incomplete ({size} bytes") in msg


def test_duplicate_sop_instance_uids_are_refused_at_load(studies, tmp_path):
    folder = tmp_path / "duplicate"
    shutil.copytree(studies["flat"], folder)
    first = sorted(folder.iterdir())[3]
    shutil.copy(first, folder / "zz_copy")
    with pytest.raises(InputError, match=rf"zz_copy: has the same SOPInstanceUID as {first.name} "
                                         r"\(one image twice\); remove the duplicate"):
        load_case(folder)


def test_malformed_dicom_is_exit_2_with_one_line_never_exit_1(tmp_path, capsys):
    from vlseg.cli import main

    for name in ("badVR.dcm", "rtplan_truncated.dcm", "no_meta.dcm", "MR_truncated.dcm"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        shutil.copy(PYDICOM_FILES / name, folder / name)
        rc = main(["segment", "--case", str(folder), "--query", "segment the tumor", "--out",
                   str(tmp_path / "out")])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (name, err)


def test_a_nested_study_beside_a_folder_of_notes_is_still_one_study(studies, tmp_path):
    from vlseg.cohort import find_cases

    root = tmp_path / "export"
    shutil.copytree(studies["oblique"], root)
    (root / "VIEWER").mkdir()
    (root / "VIEWER" / "readme.txt").write_text("a viewer a PACS export ships")
    assert [r.case_id for r in find_cases([root])] == ["export"]
