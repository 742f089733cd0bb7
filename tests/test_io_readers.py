"""vlseg.io.readers: a new format is one Reader registered in one place; callers need no edit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlseg.app.uploads import collect_uploads, sniff
from vlseg.errors import InputError
from vlseg.io import (
    DEFAULT_MAX_VOXELS,
    READERS,
    Grid,
    Header,
    NiftiReader,
    Reader,
    Volume,
    classify,
    load_case,
    read_volume,
    reader_for,
    register_reader,
    write_mask,
)

SHAPE = (10, 12, 8)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


class ToyReader:
    """A format no one uses: a bare ``.toy.npy`` array on a fixed 2x2x3 mm grid."""

    name = "toy"
    hint = "toy arrays (.toy.npy)"
    suffixes = (".toy.npy",)

    def __init__(self) -> None:
        self.reads: list[Path] = []

    def can_read(self, path: Path) -> bool:
        return path.name.endswith(".toy.npy") and not path.is_dir()

    def read_header(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return Header(grid=Grid(shape=arr.shape[:3], affine=AFFINE),
                      channels=arr.shape[3] if arr.ndim == 4 else 1)

    def read(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
             channels: int | None = None) -> Volume:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != (3 if channels is None else 4):
            raise InputError(f"is {arr.ndim}D; a 3D toy array is needed", str(path))
        self.reads.append(path)
        return Volume(data=arr.astype(np.float32), grid=Grid(shape=arr.shape[:3], affine=AFFINE),
                      path=path)

    def study(self, path: Path, overrides=None, *, reference=None) -> None:
        return None  # toy arrays are files, never studies

    def study_of(self, images) -> None:
        return None

    def is_one_case(self, path: Path) -> bool:
        return False


@pytest.fixture
def toy_reader():
    reader = ToyReader()
    register_reader(reader)
    yield reader
    READERS.remove(reader)


def _toy(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return path


def _img(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) * 500 + 10).astype(np.float32)


def test_nifti_is_the_first_reader():
    assert isinstance(READERS[0], NiftiReader) and isinstance(READERS[0], Reader)
    assert reader_for("a-t1c.nii.gz") is READERS[0]
    assert reader_for("a-t1c.toy.npy") is None


def test_registered_toy_reader_used_by_load_case(toy_reader, tmp_path):
    folder = tmp_path / "P7"
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:6, 3:7, 2:5] = 2
    seg[3:5, 4:6, 3:4] = 3
    _toy(_img(1), folder / "P7-t1c.toy.npy")
    _toy(_img(2), folder / "P7-t2f.toy.npy")
    _toy(seg, folder / "P7-seg.toy.npy")
    (folder / "README.txt").write_text("not a scan")

    # The classifier and the layout know the new format's names and contents ...
    fc = classify(folder / "P7-t1c.toy.npy")
    assert (fc.role, fc.sequence, fc.case_id, fc.stem) == ("sequence", "t1c", "P7", "P7-t1c")
    assert classify(folder / "P7-seg.toy.npy").role == "label"
    # ... so load_case reads the folder through it, with no edit anywhere else.
    case = load_case(folder)
    assert case.present == ("t1c", "t2f") and case.case_id == "P7" and case.layout == "brats2023"
    assert case.spacing == pytest.approx((2.0, 2.0, 3.0))
    assert np.array_equal(case.images["t1c"], _img(1))
    assert case.labels["ET"].sum() == (seg == 3).sum() and case.labels["WT"].sum() == (seg > 0).sum()
    assert {p.name for p in toy_reader.reads} == {"P7-t1c.toy.npy", "P7-t2f.toy.npy", "P7-seg.toy.npy"}
    # Mappings and single files too; masks are still written as NIfTI on the toy grid.
    assert load_case({"flair": folder / "P7-t2f.toy.npy"}).present == ("t2f",)
    assert load_case(folder / "P7-t1c.toy.npy").present == ("t1c",)
    out = write_mask(case.labels["ET"], case, tmp_path / "ET.nii.gz")
    assert read_volume(out).grid.shape == SHAPE


def test_toy_reader_reaches_the_app_uploads(toy_reader, tmp_path):
    t1c = _toy(_img(3), tmp_path / "up-t1c.toy.npy")
    assert sniff(t1c) == "scan"
    ups = collect_uploads([t1c], tmp_path / "work")
    assert ups.sequences == {"t1c": t1c}


def test_without_the_reader_the_format_is_refused(tmp_path):
    p = _toy(_img(4), tmp_path / "P-t1c.toy.npy")
    with pytest.raises(InputError, match=r"not a file vlseg can read; give NIfTI \(\.nii or \.nii\.gz\)"):
        load_case({"t1c": p})
    assert classify(p).role == "not_scan"


def test_register_reader_checks_the_interface():
    before = list(READERS)
    with pytest.raises(TypeError, match="Reader members"):
        register_reader(object())  # type: ignore[arg-type]
    assert READERS == before
