"""vlseg.io.classify: one classifier for every caller, by name and by content; *_mask is a label map."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg.app.uploads import collect_uploads, sequence_from_name
from vlseg.errors import InputError
from vlseg.io import FileClass, classify, label_values, load_case
from vlseg.metrics.sources import discover

SHAPE = (12, 14, 10)


def _image(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) * 900 + 100).astype(np.float32)


def _labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:8, 2:8, 2:8] = 2
    lab[3:6, 3:6, 3:6] = 1
    lab[4, 4, 4] = 3
    return lab


def _save(arr: np.ndarray, path: Path, intent: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.eye(4))
    if intent:
        img.header.set_intent(intent)
    nib.save(img, path)
    return path


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name,role,seq,case_id,style", [
    ("BraTS-GLI-00001-000-t1c.nii.gz", "sequence", "t1c", "BraTS-GLI-00001-000", "brats2023"),
    ("BraTS-GLI-00001-000-t2f.nii.gz", "sequence", "t2f", "BraTS-GLI-00001-000", "brats2023"),
    ("BraTS2021_00001_t1.nii.gz", "sequence", "t1n", "BraTS2021_00001", "brats2021"),
    ("BraTS2021_00001_t1ce.nii.gz", "sequence", "t1c", "BraTS2021_00001", "brats2021"),
    ("BraTS2021_00001_t2.nii", "sequence", "t2w", "BraTS2021_00001", "brats2021"),
    ("BraTS2021_00001_flair.nii.gz", "sequence", "t2f", "BraTS2021_00001", "brats2021"),
    ("sub-01_T1gd.nii.gz", "sequence", "t1c", "sub-01", "other"),
    ("x-t1c.NII.GZ", "sequence", "t1c", "x", "brats2023"),
    ("t2w.nii.gz", "sequence", "t2w", "", "other"),
    ("BraTS-GLI-00001-000-seg.nii.gz", "label", None, "BraTS-GLI-00001-000", "brats2023"),
    ("BraTS2021_00001_seg.nii.gz", "label", None, "BraTS2021_00001", "brats2021"),
    ("case_label.nii.gz", "label", None, "case", "other"),
    ("case-labels.nii", "label", None, "case", "other"),
    ("my_scan_mask.nii.gz", "label", None, "my_scan", "other"),
    ("ET.nii.gz", "concept_mask", None, "", "other"),
    ("brain.nii.gz", "unknown", None, "", "other"),
    ("notes.txt", "unknown", None, "notes", "other"),
])
def test_names(name, role, seq, case_id, style):
    fc = classify(name, depth="name")
    assert isinstance(fc, FileClass)
    assert (fc.role, fc.sequence, fc.case_id, fc.style) == (role, seq, case_id, style)
    assert fc.named == role  # at depth "name" the name alone decides
    assert fc.concept == ("ET" if role == "concept_mask" else None)


def test_t1_and_t1ce_never_clash():
    assert classify("a_t1.nii.gz", depth="name").sequence == "t1n"
    assert classify("a_t1ce.nii.gz", depth="name").sequence == "t1c"


# ----------------------------------------------------------------------------- content


def test_4d_file_is_multi(tmp_path):
    stack = np.stack([_image(k) for k in range(4)], axis=-1)
    fc = classify(_save(stack, tmp_path / "BRATS_001.nii.gz"))
    assert fc.role == "multi" and fc.channels == 4 and fc.stem == "BRATS_001"
    named = classify(_save(stack, tmp_path / "x-t1n.nii.gz"), depth="header")
    assert named.role == "multi" and named.named == "sequence" and "4 volumes" in named.reason


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_integer_label_volume_named_like_a_sequence(tmp_path, dtype):
    p = _save(_labels().astype(dtype), tmp_path / "case-t1c.nii.gz")
    fc = classify(p)
    assert fc.role == "label" and fc.named == "sequence" and fc.sequence is None
    assert "named like t1c" in fc.reason and "[0, 1, 2, 3]" in fc.reason
    assert classify(p, depth="header").role == "sequence"  # a header cannot tell
    with pytest.raises(InputError, match="like a label map") as info:
        load_case({"t1c": p})  # load_case applies the same content rule on the voxels it reads
    assert "\n" not in str(info.value) and p.name in str(info.value)


def test_integer_mri_image_is_a_sequence(tmp_path):
    p = _save(_image().astype(np.int16), tmp_path / "case-t1n.nii.gz")
    fc = classify(p)
    assert fc.role == "sequence" and fc.sequence == "t1n" and fc.reason == ""


def test_label_intent_in_header(tmp_path):
    fc = classify(_save(_labels(), tmp_path / "atlas.nii.gz", intent="label"), depth="header")
    assert fc.role == "label" and "header" in fc.reason


def test_named_label_holding_an_image(tmp_path):
    fc = classify(_save(_image(), tmp_path / "case-seg.nii.gz"))
    assert fc.role == "unknown" and fc.named == "label" and "image intensities" in fc.reason


@pytest.mark.parametrize("make,expect", [
    (lambda p: _save(np.ones((16, 18), np.float32), p), "2D"),
    (lambda p: _save(np.ones(SHAPE, np.complex64), p), "unsupported voxel type"),
    (lambda p: _save(np.ones((*SHAPE, 1, 3), np.float32), p), "dimensions"),
    (lambda p: p.write_text("<html>not a scan</html>") and p, "not a NIfTI"),
    (lambda p: p, "not found"),
])
def test_non_image_files_are_not_scans(tmp_path, make, expect):
    p = tmp_path / "thing-t2w.nii.gz"
    make(p)
    fc = classify(p)  # never raises
    assert fc.role == "not_scan" and expect in fc.reason and fc.named == "sequence"
    assert "\n" not in fc.reason


def test_unknown_name_and_unreadable_format(tmp_path):
    fc = classify(_save(_image(), tmp_path / "brain.nii.gz"))
    assert fc.role == "unknown" and fc.sequence is None
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    fc = classify(notes)
    assert fc.role == "not_scan" and "NIfTI (.nii or .nii.gz)" in fc.reason


def test_label_values_rule():
    assert label_values(_labels()) == [0, 1, 2, 3]
    assert label_values(_labels() > 0) == [0, 1]
    assert label_values(_image()) is None  # non-integer intensities
    assert label_values(np.arange(1000, dtype=np.int16).reshape(10, 10, 10)) is None  # many values
    assert label_values(np.zeros(SHAPE)) is None  # constant
    # at any range (issue 26): codes above 255 and below 0 are label codes too
    assert label_values(_labels().astype(np.int32) * 1000) == [0, 1000, 2000, 3000]
    assert label_values(-_labels().astype(np.int16)) == [-3, -2, -1, 0]


# ----------------------------------------------------------------------------- *_mask everywhere


def test_mask_suffix_is_a_label_map_everywhere(tmp_path):
    """A user's ``*_mask.nii.gz`` is a label map for load_case, the app and vlseg evaluate alike."""
    case = tmp_path / "case"
    t1c = _save(_image(1), case / "P01_t1c.nii.gz")
    _save(_image(2), case / "P01_flair.nii.gz")
    mask = _save(_labels(), case / "P01_mask.nii.gz")
    # load_case: the mask is the case's label file.
    loaded = load_case(case)
    assert loaded.present == ("t1c", "t2f") and loaded.sources["seg"] == mask
    assert loaded.labels is not None and loaded.labels["WT"].sum() == (_labels() > 0).sum()
    # The app: the mask is the upload's label, not a sequence.
    ups = collect_uploads([t1c, mask], tmp_path / "work")
    assert set(ups.sequences) == {"t1c"} and ups.label == mask and ups.ignored == [mask.name]
    assert sequence_from_name(mask.name) == "seg"
    # vlseg evaluate: the mask is the case folder's label map; the images beside it are skipped.
    found, skipped = discover(tmp_path, "ground truth")
    assert found["case"].label_file == mask and not skipped
    found, _ = discover(case, "prediction")
    assert set(found) == {"P01"} and found["P01"].label_file == mask
