"""Synthetic phantoms: determinism, labels, anatomy-aware edema, MRI contrasts, storage, CLI."""
from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from vlseg.vocab import SEQUENCES
from vlseg.synth import SynthRanges, generate_case, generate_case_with_info, write_case
from vlseg.synth.cli import case_name, case_seed
from vlseg.synth.cli import run as synth_run

SP = 2.0  # all tests at 2 mm (120 x 120 x 78)


@pytest.fixture(scope="module")
def cases():
    return {seed: generate_case_with_info(seed, spacing_mm=SP) for seed in (11, 21)}


@pytest.fixture(scope="module")
def case_a(cases):
    return cases[11]


def _ras(img: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(img).dataobj)


def test_shape_dtype_layout(case_a):
    imgs, info = case_a
    assert set(imgs) == {*SEQUENCES, "seg"}
    for k, img in imgs.items():
        assert img.shape == (120, 120, 78)
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), [SP] * 3)
        assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
        assert img.get_data_dtype() == (np.uint8 if k == "seg" else np.int16)
    # Same grid for all five files.
    for img in imgs.values():
        np.testing.assert_array_equal(img.affine, imgs["seg"].affine)


def test_deterministic_per_seed(cases):
    imgs, _ = cases[11]
    again = generate_case(11, spacing_mm=SP)
    other = cases[21][0]
    for k in imgs:
        np.testing.assert_array_equal(np.asarray(imgs[k].dataobj), np.asarray(again[k].dataobj))
    assert not np.array_equal(np.asarray(imgs["t1c"].dataobj), np.asarray(other["t1c"].dataobj))
    assert not np.array_equal(np.asarray(imgs["seg"].dataobj), np.asarray(other["seg"].dataobj))


def test_labels_tumor_and_skull_strip(case_a):
    imgs, info = case_a
    seg = _ras(imgs["seg"])
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert (seg > 0).sum() > 50                        # a tumor is present
    brain = _ras(imgs["t1n"]) > 0
    assert not (seg[~brain] > 0).any()                 # labels only inside the brain
    for s in SEQUENCES:                                # skull-stripped: same zero background
        np.testing.assert_array_equal(_ras(imgs[s]) > 0, brain)
    assert info["label_voxels"]["ED"] == int((seg == 2).sum())


def test_edema_avoids_csf(cases):
    """CSF (bright on T2, dark on FLAIR) is never labelled edema."""
    csf_share = []
    for imgs, info in cases.values():
        seg = _ras(imgs["seg"])
        t2, flair = _ras(imgs["t2w"]).astype(float), _ras(imgs["t2f"]).astype(float)
        brain = flair > 0
        # CSF: bright on T2, dark on FLAIR, outside the tumor.
        csf = brain & (seg == 0) & (t2 > np.percentile(t2[brain], 97)) & (flair < np.percentile(flair[brain], 20))
        ed = seg == 2
        if ed.sum() < 20:
            continue
        csf_share.append((ed & csf).sum() / ed.sum())
    assert csf_share and max(csf_share) < 0.01


@pytest.mark.parametrize("seed", [11, 21])
def test_mri_contrasts(seed, cases):
    imgs, info = cases[seed]
    seg = _ras(imgs["seg"])
    img = {s: _ras(imgs[s]).astype(np.float64) for s in SEQUENCES}
    brain = img["t1n"] > 0
    normal = brain & (seg == 0)
    # Normal WM: bright on T1, outside the tumor; CSF: the darkest T1 voxels.
    t1 = img["t1n"]
    wm = normal & (t1 > np.percentile(t1[normal], 80))
    csf = normal & (t1 < np.percentile(t1[normal], 5))
    ed, ncr, et = seg == 2, seg == 1, seg == 3
    assert img["t2f"][ed].mean() > img["t2f"][wm].mean() * 1.3        # FLAIR: edema bright
    assert img["t2f"][csf].mean() < img["t2f"][wm].mean()             # FLAIR: CSF dark
    assert img["t2w"][csf].mean() > img["t2w"][wm].mean() * 1.3       # T2: CSF bright
    tc = ncr | et
    assert img["t1n"][tc].mean() < img["t1n"][wm].mean()              # T1: tumor hypointense
    if et.sum() > 20 and ncr.sum() > 20:
        assert img["t1c"][et].mean() > img["t1c"][ncr].mean() * 1.5   # T1c: rim bright, necrosis dark
        assert img["t2w"][ncr].mean() > img["t2w"][wm].mean()         # T2: necrosis bright


def test_variants_follow_their_definition():
    r = SynthRanges(p_no_enhancement=1.0, p_no_necrosis=0.0, p_multifocal=0.0, p_small=0.0)
    imgs, info = generate_case_with_info(4, spacing_mm=SP, ranges=r)
    seg = _ras(imgs["seg"])
    assert info["enhancement"] == "none" and not (seg == 3).any() and (seg == 1).any()
    r = SynthRanges(p_no_enhancement=0.0, p_no_necrosis=1.0, p_multifocal=1.0, p_small=0.0)
    imgs, info = generate_case_with_info(4, spacing_mm=SP, ranges=r)
    seg = _ras(imgs["seg"])
    assert info["variant"] == "multifocal" and 2 <= len(info["lesions"]) <= 3
    assert (seg == 3).any()


def test_non_ras_case_loads_aligned(tmp_path):
    """A case stored LPS/LAS loads through vlseg.io with its seg aligned to the images."""
    from vlseg.io import load_case

    r = SynthRanges(p_non_ras=1.0)
    folder = write_case(tmp_path, 5, spacing_mm=SP, ranges=r)
    info = json.loads(next(folder.glob("*-synth.json")).read_text())
    assert info["orientation"] in ("LPS", "LAS")
    seg_img = nib.load(next(folder.glob("*-seg.nii.gz")))
    assert nib.aff2axcodes(seg_img.affine) != ("R", "A", "S")
    case = load_case(folder)
    assert case.present == SEQUENCES and case.labels is not None
    # Same phantom stored RAS: identical arrays after reorientation.
    ras = generate_case(5, spacing_mm=SP, ranges=SynthRanges(p_non_ras=0.0))
    np.testing.assert_array_equal(case.labels["WT"], np.asarray(ras["seg"].dataobj) > 0)
    np.testing.assert_array_equal(case.images["t1c"], np.asarray(ras["t1c"].dataobj).astype(np.float32))
    # Enhancing rim is bright in the loaded (RAS) image where the loaded labels say so.
    if case.labels["ET"].sum() > 20:
        assert case.images["t1c"][case.labels["ET"]].mean() > case.images["t1c"][case.labels["NCR"] | ~case.labels["WT"]].mean()


def test_write_case_never_overwrites_and_resumes(tmp_path):
    folder = write_case(tmp_path, 9, case_id="X1", spacing_mm=SP)
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == sorted(
        [f"X1-{k}.nii.gz" for k in (*SEQUENCES, "seg")] + ["X1-synth.json"])
    assert all(f.stat().st_mode & 0o044 for f in files)                # readable by others (umask)
    # Interrupted run: one file missing, another replaced by the user -> only the missing one is made.
    (folder / "X1-t2w.nii.gz").unlink()
    (folder / "X1-synth.json").unlink()
    t1n = folder / "X1-t1n.nii.gz"
    t1n.write_bytes(b"user data")
    write_case(tmp_path, 9, case_id="X1", spacing_mm=SP)
    assert t1n.read_bytes() == b"user data"
    assert (folder / "X1-t2w.nii.gz").exists() and (folder / "X1-synth.json").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError):
        write_case(tmp_path, 9, case_id="../evil", spacing_mm=SP)


def test_cli_seeds_names_and_skip(tmp_path, capsys):
    args = argparse.Namespace(out=str(tmp_path), n=2, seed=3, start=4, workers=1, spacing=SP)
    assert synth_run(args) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [case_name(3, 4), case_name(3, 5)] == ["BraTS-SYN-0003-00004", "BraTS-SYN-0003-00005"]
    info = json.loads((tmp_path / names[0] / f"{names[0]}-synth.json").read_text())
    assert info["seed"] == case_seed(3, 4) != case_seed(3, 5) != case_seed(4, 4)
    mtime = (tmp_path / names[0] / f"{names[0]}-t1n.nii.gz").stat().st_mtime_ns
    assert synth_run(args) == 0
    assert "already complete" in capsys.readouterr().out
    assert (tmp_path / names[0] / f"{names[0]}-t1n.nii.gz").stat().st_mtime_ns == mtime


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from vlseg.cli import main

    f = tmp_path / "file"
    f.write_text("x")
    assert main(["synth", "--out", str(f), "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a folder" in err
    assert main(["synth", "--out", str(tmp_path / "o"), "--n", "0"]) == 2
    assert main(["synth", "--out", str(tmp_path / "o"), "--spacing", "0"]) == 2


def test_dicom_case_matches_study_from_written_nifti(tmp_path):
    """``write_dicom_case`` renders the phantom in memory: the study is byte-for-byte the one
    written from the phantom's NIfTI files (same voxels, orientation and affine), none are left."""
    from vlseg.synth.dicom import DicomStyle, write_dicom_case, write_dicom_study

    seed = 11  # stored LPS (non-RAS): the flip travels with the in-memory images too
    assert generate_case_with_info(seed, spacing_mm=4.0)[1]["orientation"] != "RAS"
    study, done = write_dicom_case(tmp_path / "a", "S", seed, spacing_mm=4.0, oblique=True)
    assert not done and write_dicom_case(tmp_path / "a", "S", seed, spacing_mm=4.0, oblique=True) == (study, True)
    assert not list((tmp_path / "a").glob("**/*.nii.gz"))
    ref = write_dicom_study(write_case(tmp_path / "nifti", seed, case_id="S", spacing_mm=4.0), tmp_path / "b",
                            style=DicomStyle(orientation="oblique"), seed=f"S:{seed}",
                            patient={"PatientID": "S", "StudyID": "S"})
    got = sorted(p.name for p in study.iterdir() if not p.name.startswith("."))
    assert got == sorted(p.name for p in ref.iterdir()) and len(got) > 4
    for name in got:
        assert (study / name).read_bytes() == (ref / name).read_bytes(), name


def test_post_treatment_case_is_the_same_head_after_surgery(cases):
    """Post: the pre-treatment tumor's centre is a cavity (BraTS 2024 label 4) with fluid
    physics; residual enhancing wall only where drawn; blood products are not enhancement."""
    r = SynthRanges(p_no_residual=0.0, p_residual_rim=1.0, p_blood=1.0, p_multifocal=0.0, p_small=0.0)
    imgs, info = generate_case_with_info(11, spacing_mm=SP, ranges=r, timepoint="post")
    pre_seg = _ras(cases[11][0]["seg"])
    seg = _ras(imgs["seg"])
    assert info["timepoint"] == "post" and info["label_convention"] == "brats2024"
    assert set(np.unique(seg)) <= {0, 1, 2, 3, 4} and (seg == 4).sum() > 50
    assert info["label_voxels"]["RC"] == int((seg == 4).sum())
    # The cavity lies where the untreated tumor was (same pose and tumor draw).
    assert (pre_seg[seg == 4] > 0).mean() > 0.9
    img = {s: _ras(imgs[s]).astype(np.float64) for s in SEQUENCES}
    normal = (img["t1n"] > 0) & (seg == 0) & (pre_seg == 0)
    wm = normal & (img["t1n"] > np.percentile(img["t1n"][normal], 80))
    rc = seg == 4
    assert img["t1n"][rc].mean() < img["t1n"][wm].mean() * 0.8        # fluid: T1 dark
    assert img["t2w"][rc].mean() > img["t2w"][wm].mean() * 1.5        # T2 bright
    assert img["t2f"][rc].mean() < img["t2f"][seg == 2].mean()        # FLAIR below the SNFH
    assert info["postop"]["blood_products"] and info["postop"]["residual_enhancing"]
    # Blood: bright on T1n too, so its T1c/T1n ratio stays low; the enhancing wall's is high.
    et = seg == 3
    if et.sum() > 10:
        ratio_et = (img["t1c"][et] / img["t1n"][et]).mean()
        bright_t1n = rc & (img["t1n"] > np.percentile(img["t1n"][wm], 50))
        if bright_t1n.sum() > 5:
            assert (img["t1c"][bright_t1n] / img["t1n"][bright_t1n]).mean() < ratio_et


def test_post_treatment_without_residual_tumor():
    r = SynthRanges(p_no_residual=1.0, p_multifocal=0.0, p_small=0.0)
    imgs, info = generate_case_with_info(21, spacing_mm=SP, ranges=r, timepoint="post")
    seg = _ras(imgs["seg"])
    assert (seg == 4).any() and not (seg == 3).any() and not (seg == 1).any()
    assert not info["postop"]["residual_enhancing"] and not info["postop"]["residual_nodules"]


def test_healthy_case_has_no_tumor_and_a_normal_brain(cases):
    imgs, info = generate_case_with_info(11, spacing_mm=SP, healthy=True)
    assert not np.asarray(imgs["seg"].dataobj).any()
    assert info["variant"] == "healthy" and info["lesions"] == []
    # Same head: the brain mask is that of the tumor case up to the mass effect.
    a, b = _ras(imgs["t1n"]) > 0, _ras(cases[11][0]["t1n"]) > 0
    assert (a & b).sum() / (a | b).sum() > 0.95


def test_cli_post_and_healthy(tmp_path, capsys):
    args = argparse.Namespace(out=str(tmp_path / "p"), n=1, seed=3, start=0, workers=1, spacing=SP,
                              format="nifti", timepoint="post", healthy=False)
    assert synth_run(args) == 0
    info = json.loads(next((tmp_path / "p").rglob("*-synth.json")).read_text())
    assert info["timepoint"] == "post"
    bad = argparse.Namespace(**{**vars(args), "out": str(tmp_path / "h"), "healthy": True})
    from vlseg.errors import InputError
    with pytest.raises(InputError, match="--healthy"):
        synth_run(bad)
