"""Upload checks by content, safe zip extraction, sequence names, and the TTL janitor."""
from __future__ import annotations

import gzip
import os
import stat
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg.errors import InputError
from vlseg.app.uploads import Janitor, collect_uploads, safe_extract_zip, sequence_from_name, sniff


def _nifti(path: Path, shape=(8, 9, 10), seed=0) -> Path:
    data = np.random.default_rng(seed).random(shape).astype(np.float32) + 1.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_sniff_by_content_not_extension(tmp_path):
    assert sniff(_nifti(tmp_path / "a-t1n.nii")) == "nifti"
    assert sniff(_nifti(tmp_path / "a-t1n.nii.gz")) == "nifti_gz"
    # A real NIfTI named .zip is still a NIfTI; a gzip'd NIfTI named .nii is still gzip.
    gz_named_nii = tmp_path / "b-t2w.nii"
    gz_named_nii.write_bytes((tmp_path / "a-t1n.nii.gz").read_bytes())
    assert sniff(gz_named_nii) == "nifti_gz"
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.write(tmp_path / "a-t1n.nii.gz", "case/a-t1n.nii.gz")
    assert sniff(tmp_path / "c.zip") == "zip"
    nifti2 = tmp_path / "n2-t1n.nii"
    nib.save(nib.Nifti2Image(np.ones((4, 4, 4), np.float32), np.eye(4)), nifti2)
    assert sniff(nifti2) == "nifti"


@pytest.mark.parametrize("content,expect", [
    (b"<html><script>alert(1)</script></html>", "not a NIfTI"),
    (gzip.compress(b"<svg onload=alert(1)>" * 40), "does not hold a NIfTI"),
    (b"", "empty"),
])
def test_sniff_rejects_disguised_files(tmp_path, content, expect):
    p = tmp_path / "scan-t1c.nii.gz"
    p.write_bytes(content)
    with pytest.raises(InputError, match=expect) as ei:
        sniff(p)
    assert "scan-t1c.nii.gz" in str(ei.value) and str(tmp_path) not in str(ei.value)


def test_sniff_rejects_truncated_gzip(tmp_path):
    good = _nifti(tmp_path / "x-t1n.nii.gz")
    bad = tmp_path / "y-t1n.nii.gz"
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(InputError, match="corrupt or truncated"):
        sniff(bad)


@pytest.mark.parametrize("name,seq", [
    ("BraTS-GLI-00000-000-t2f.nii.gz", "t2f"), ("BraTS2021_00000_flair.nii.gz", "t2f"),
    ("BraTS2021_00000_t1ce.nii.gz", "t1c"), ("BraTS2021_00000_t1.nii.gz", "t1n"),
    ("case_T2.nii", "t2w"), ("x-t1c.NII.GZ", "t1c"), ("BraTS-GLI-00000-000-seg.nii.gz", "seg"),
    ("upload_mask.nii.gz", "seg"), ("case_label.nii", "seg"),
    ("brain.nii.gz", None), ("notes.txt", None),
])
def test_sequence_from_name(name, seq):
    assert sequence_from_name(name) == seq


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("evil", ["../evil-t1n.nii.gz", "/etc/evil-t1n.nii.gz",
                                  "case/../../evil-t1n.nii.gz", "..\\evil-t1n.nii.gz",
                                  "C:/evil-t1n.nii.gz"])
def test_zip_refuses_unsafe_paths(tmp_path, evil):
    z = _zip(tmp_path / "case.zip", {"case/ok-t1n.nii.gz": b"x", evil: b"y"})
    dest = tmp_path / "out"
    with pytest.raises(InputError, match="unsafe path"):
        safe_extract_zip(z, dest)
    assert not (tmp_path / "evil-t1n.nii.gz").exists()
    assert list(dest.rglob("*")) == []  # partial extraction removed


def test_zip_refuses_symlinks_and_too_many_members(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("case/a-t1n.nii.gz")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="link"):
        safe_extract_zip(z, tmp_path / "o1")
    many = _zip(tmp_path / "many.zip", {f"f{i}-t1n.nii.gz": b"x" for i in range(40)})
    with pytest.raises(InputError, match="entries"):
        safe_extract_zip(many, tmp_path / "o2")


def test_zip_bomb_stopped_while_decompressing(tmp_path):
    # 80 MB of zeros compresses to ~80 KB: ratio ~1000, stopped after the ratio-free allowance.
    z = _zip(tmp_path / "bomb.zip", {"case/bomb-t1n.nii.gz": bytes(80 * 1024 * 1024)})
    assert z.stat().st_size < 1024 * 1024
    with pytest.raises(InputError, match="zip bomb"):
        safe_extract_zip(z, tmp_path / "o")
    assert not any((tmp_path / "o").iterdir())
    # Total uncompressed cap (counted while reading, not from the header).
    z2 = _zip(tmp_path / "big.zip", {f"c/{i}-t1n.nii.gz": os.urandom(300_000) for i in range(4)})
    with pytest.raises(InputError, match="expands to more than"):
        safe_extract_zip(z2, tmp_path / "o3", max_total_bytes=1_000_000)


def test_zip_of_case_folder_collected(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    members = {}
    for seq in ("t1n", "t1c", "t2w", "t2f", "seg"):
        members[f"BraTS-GLI-00001-000/BraTS-GLI-00001-000-{seq}.nii.gz"] = \
            _nifti(src / f"{seq}.nii.gz").read_bytes()
    members["BraTS-GLI-00001-000/README.txt"] = b"hello"
    members["__MACOSX/._junk-t1n.nii.gz"] = b"junk"
    z = _zip(tmp_path / "case.zip", members)
    ups = collect_uploads([z], tmp_path / "work")
    assert sorted(ups.sequences) == ["t1c", "t1n", "t2f", "t2w"]
    assert ups.label is not None and ups.ignored == ["BraTS-GLI-00001-000-seg.nii.gz"]
    assert all(p.parent.is_relative_to(tmp_path / "work") for p in ups.sequences.values())


def test_collect_uploads_errors(tmp_path):
    a = _nifti(tmp_path / "one-t1n.nii.gz")
    b = _nifti(tmp_path / "two_t1.nii.gz")
    with pytest.raises(InputError, match="two files hold the t1n"):
        collect_uploads([a, b], tmp_path / "w")
    with pytest.raises(InputError, match="which sequence"):
        collect_uploads([_nifti(tmp_path / "brain.nii.gz")], tmp_path / "w")
    with pytest.raises(InputError, match="no file"):
        collect_uploads([], tmp_path / "w")
    ups = collect_uploads([a, _nifti(tmp_path / "x_flair.nii.gz")], tmp_path / "w")
    assert set(ups.sequences) == {"t1n", "t2f"}
    four_d = _nifti(tmp_path / "BRATS_001.nii.gz", shape=(8, 9, 10, 4))
    with pytest.raises(InputError, match="4D image with 4 volumes; upload one 3D file per sequence"):
        collect_uploads([four_d], tmp_path / "w")


def test_janitor_deletes_only_old_entries(tmp_path):
    old, new = tmp_path / "old-session", tmp_path / "new-session"
    for d in (old, new):
        (d / "answer-001").mkdir(parents=True)
        (d / "answer-001" / "ET.nii.gz").write_bytes(b"x")
    past = time.time() - 7200
    for p in [old, *old.rglob("*")]:
        os.utime(p, (past, past))
    j = Janitor(root=tmp_path, ttl_s=3600, interval_s=1)
    assert j.sweep() == 1
    assert not old.exists() and new.exists()


def test_a_zipped_dicom_study_is_named_after_its_description(tmp_path, phantom_case_2mm):
    """Issue 22: not after its first file ('IM020001'); without a description, the upload's name."""
    from dicom_cases import phantom_images, study

    folder = study(phantom_images(phantom_case_2mm), tmp_path / "study", seed="name", sequences=("t1c", "t2f"))
    z = tmp_path / "export from pacs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    ups = collect_uploads([z], tmp_path / "work")
    assert ups.name == "MRI BRAIN W/WO CONTRAST" and set(ups.sequences) == {"t1c", "t2f"}
    from vlseg.app.uploads import _upload_stem

    assert _upload_stem(z) == "export from pacs"


def test_the_dicom_seg_of_an_answer_is_offered(tmp_path):
    import json

    import nibabel as nib
    import numpy as np

    from vlseg.app import results

    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4)), tmp_path / "ET.nii.gz")
    (tmp_path / "segmentation.dcm").write_bytes(b"DICM")
    answer = {"targets": [{"concept": "ET", "mask": "ET.nii.gz"}],
              "dicom_seg": {"file": "segmentation.dcm", "segments": ["ET"]}}
    files = results.named_downloads(tmp_path, answer, "MRI_BRAIN")
    assert [f.name for f in files] == ["MRI_BRAIN_ET.nii.gz", "MRI_BRAIN_segmentation.dcm", "MRI_BRAIN_all.zip"]
    with zipfile.ZipFile(files[-1]) as z:
        assert "MRI_BRAIN_segmentation.dcm" in z.namelist()
        assert json.loads(z.read("MRI_BRAIN_answer.json"))["dicom_seg"]["file"] == "MRI_BRAIN_segmentation.dcm"
    # with the probability maps asked for: the fractional SEG too
    (tmp_path / "probabilities.dcm").write_bytes(b"DICM")
    answer["dicom_probability_seg"] = {"file": "probabilities.dcm", "segments": ["ET"]}
    answer["dicom_seg"]["file"] = "segmentation.dcm"
    files = results.named_downloads(tmp_path, answer, "MRI_BRAIN")
    assert [f.name for f in files][1:3] == ["MRI_BRAIN_segmentation.dcm", "MRI_BRAIN_probabilities.dcm"]
