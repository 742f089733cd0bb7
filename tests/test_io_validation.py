"""vlseg.io: every bad input gets one clear InputError line naming the file and the problem."""
from __future__ import annotations

import gzip
import os
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg.errors import InputError
from vlseg.io import load_case, read_volume

SHAPE = (16, 18, 14)


def _vol(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32) + 1.0


def _save(arr, path: Path, affine=np.eye(4)) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def _patch(path: Path, **fields) -> Path:
    """Rewrite header fields of a stored file in place (plain or gzip), bypassing nibabel's checks."""
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    data = bytearray(gzip.decompress(raw) if gz else raw)
    hdr = nib.Nifti1Header(binaryblock=bytes(data[:348]), check=False)
    for k, v in fields.items():
        hdr[k] = v
    data[:348] = hdr.binaryblock
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    return path


def _error(source, **kw) -> str:
    with pytest.raises(InputError) as info:
        load_case(source, **kw)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400, msg  # one line
    return msg


def test_missing_and_unreadable(tmp_path):
    missing = tmp_path / "nope-t1n.nii.gz"
    msg = _error({"t1n": missing})
    assert str(missing) in msg and "not found" in msg
    assert "not found" in _error(tmp_path / "no_such_folder")
    folder_named_like_file = tmp_path / "dir.nii.gz"
    folder_named_like_file.mkdir()
    assert "is a folder" in _error({"t1n": folder_named_like_file})
    link = tmp_path / "dangling-t1n.nii.gz"
    link.symlink_to(tmp_path / "gone.nii.gz")
    assert "not found" in _error({"t1n": link})


def test_permission_denied(tmp_path, monkeypatch):
    p = _save(_vol(), tmp_path / "a-t1n.nii.gz")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        p.chmod(0)
    else:  # root reads anything: simulate the OS refusing
        import vlseg.io.nifti as nifti

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(nifti, "open", refuse, raising=False)
    try:
        msg = _error({"t1n": p})
        assert "cannot be read (Permission denied)" in msg and p.name in msg
    finally:
        p.chmod(0o644)


def test_not_nifti(tmp_path):
    html = tmp_path / "scan-t1n.nii.gz"
    html.write_text("<!DOCTYPE html><html><body>" + "x" * 600 + "</body></html>")
    msg = _error({"t1n": html})
    assert html.name in msg and "not a NIfTI file" in msg
    dicom = tmp_path / "scan-t2w.nii"
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 600)
    assert "DICOM" in _error({"t2w": dicom})
    tiny = tmp_path / "tiny-t1c.nii"
    tiny.write_bytes(b"abc")
    assert "not a NIfTI file" in _error({"t1c": tiny})
    analyze = _patch(_save(_vol(), tmp_path / "an-t2f.nii"), magic=b"")
    assert "ANALYZE" in _error({"t2f": analyze})


def test_content_not_name_decides_compression(tmp_path):
    """A plain .nii named .nii.gz (and a gzip named .nii) still load."""
    plain = _save(_vol(), tmp_path / "x.nii")
    renamed = tmp_path / "x-t1n.nii.gz"
    plain.rename(renamed)
    gz = _save(_vol(1), tmp_path / "y.nii.gz")
    renamed_gz = tmp_path / "y-t2w.nii"
    gz.rename(renamed_gz)
    case = load_case({"t1n": renamed, "t2w": renamed_gz})
    assert np.array_equal(case.images["t1n"], _vol()) and np.array_equal(case.images["t2w"], _vol(1))


def test_truncated_and_corrupt_gzip(tmp_path):
    good = _save(_vol(), tmp_path / "good.nii.gz").read_bytes()
    for name, blob in {
        "half": good[: len(good) // 2],
        "header_only": good[:60],
        "no_trailer": good[:-6],  # deflate data intact, CRC/size trailer cut
        "bad_crc": good[:-8] + bytes(b ^ 0x5A for b in good[-8:-4]) + good[-4:],
    }.items():
        p = tmp_path / f"{name}-t1n.nii.gz"
        p.write_bytes(blob)
        msg = _error({"t1n": p})
        assert p.name in msg and ("corrupt" in msg or "truncated" in msg), msg
    flipped = bytearray(good)
    mid = len(flipped) // 2
    flipped[mid: mid + 16] = bytes(b ^ 0xFF for b in flipped[mid: mid + 16])
    p = tmp_path / "flipped-t1n.nii.gz"
    p.write_bytes(bytes(flipped))
    assert "corrupt" in _error({"t1n": p})


def test_truncated_plain(tmp_path):
    p = _save(_vol(), tmp_path / "cut-t1n.nii")
    p.write_bytes(p.read_bytes()[:-100])
    assert "truncated" in _error({"t1n": p})


def test_dimensionality(tmp_path):
    assert "2D" in _error({"t1n": _save(np.ones((16, 18), np.float32), tmp_path / "a.nii.gz")})
    assert "2D" in _error({"t1n": _save(_vol()[:, :, :1], tmp_path / "b.nii.gz")})
    msg = _error({"t1n": _save(np.stack([_vol()] * 3, -1), tmp_path / "c.nii.gz")})
    assert "4D with 3 volumes" in msg
    ok = load_case({"t1n": _save(_vol()[..., None], tmp_path / "d.nii.gz")})  # singleton 4th dim
    assert ok.shape == SHAPE
    # An MSD-style 4D file needs exactly 4 channels, and a 3D unnamed file is not MSD.
    assert "expected 4 channels" in _error(_save(np.stack([_vol()] * 3, -1), tmp_path / "BRATS_1.nii.gz"))
    assert "expected a 4D image" in _error(_save(_vol(), tmp_path / "BRATS_2.nii.gz"))


def test_grids_must_agree(tmp_path):
    base = np.diag([1.0, 1.0, 2.0, 1.0])
    t1 = _save(_vol(), tmp_path / "a.nii.gz", base)

    def other(affine, shape=SHAPE, name="b.nii.gz"):
        return _save(np.random.default_rng(1).random(shape).astype(np.float32) + 1, tmp_path / name, affine)

    noisy = base.copy()
    noisy[:3, :] += 1e-8  # float noise is accepted
    assert load_case({"t1n": t1, "t2w": other(noisy)}).present == ("t1n", "t2w")
    shifted = base.copy()
    shifted[0, 3] += 0.01
    assert "origin" in _error({"t1n": t1, "t2w": other(shifted)})
    zoomed = base.copy()
    zoomed[2, 2] = 2.01
    assert "spacing" in _error({"t1n": t1, "t2w": other(zoomed)})
    rotated = base.copy()
    c, s = np.cos(1e-3), np.sin(1e-3)
    rotated[:2, :2] = [[c, -s], [s, c]]
    msg = _error({"t1n": t1, "t2w": other(rotated)})
    assert "direction" in msg and "b.nii.gz" in msg
    assert "shape" in _error({"t1n": t1, "t2w": other(base, (16, 18, 15))})
    # The same physical grid stored in another orientation is fine.
    flip = base @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    flipped = _save(_vol()[::-1].copy(), tmp_path / "f.nii.gz", flip)
    case = load_case({"t1n": t1, "t1c": flipped})
    assert np.array_equal(case.images["t1n"], case.images["t1c"])


def test_nan_inf_constant(tmp_path):
    v = _vol()
    v[3, 4, 5] = np.nan
    assert "NaN/Inf" in _error({"t1n": _save(v, tmp_path / "nan.nii.gz")})
    v = _vol()
    v[1, 1, 1] = np.inf
    assert "NaN/Inf" in _error({"t1n": _save(v, tmp_path / "inf.nii.gz")})
    msg = _error({"t2f": _save(np.full(SHAPE, 7, np.float32), tmp_path / "flat.nii.gz")})
    assert "constant" in msg and "flat.nii.gz" in msg
    assert "constant" in _error({"t2f": _save(np.zeros(SHAPE, np.int16), tmp_path / "zero.nii.gz")})


def test_bad_affines(tmp_path):
    p = _patch(_save(_vol(), tmp_path / "sing.nii"), qform_code=0, srow_x=[0, 0, 0, 0])
    assert "singular" in _error({"t1n": p})
    p = _patch(_save(_vol(), tmp_path / "nan.nii"), qform_code=0, srow_y=[0, np.nan, 0, 0])
    assert "non-finite" in _error({"t1n": p})
    p = _patch(_save(_vol(), tmp_path / "zero_pix.nii"), qform_code=0, sform_code=0,
               pixdim=[1, 0, 1, 1, 1, 1, 1, 1])
    assert "singular" in _error({"t1n": p})
    p = _patch(_save(_vol(), tmp_path / "conflict.nii"), srow_x=[1, 0, 0, 5.0])  # qform origin 0
    assert "qform and an sform that disagree" in _error({"t1n": p})


def test_voxel_cap_refused_before_allocating(tmp_path):
    """A ~1 KB file whose header claims 10000^3 voxels must not allocate anything large."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((10000, 10000, 10000))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    blob = hdr.binaryblock + b"\0" * 4 + b"\0" * 600
    bomb_gz = tmp_path / "bomb-t1n.nii.gz"
    bomb_gz.write_bytes(gzip.compress(blob))
    bomb = tmp_path / "bomb-t2w.nii"
    bomb.write_bytes(blob)
    assert bomb_gz.stat().st_size < 1024
    for p in (bomb_gz, bomb):
        tracemalloc.start()
        try:
            with pytest.raises(InputError, match="above the limit") as info:
                load_case({"t1n": p})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2_000_000, peak
        assert "10000x10000x10000" in str(info.value)
    small = _save(_vol(), tmp_path / "ok.nii.gz")
    with pytest.raises(InputError, match="above the limit of 1,000"):
        load_case({"t1n": small}, max_voxels=1000)  # the cap is configurable
    assert load_case({"t1n": small}).shape == SHAPE


def test_bad_data_offset_refused_unread(tmp_path):
    p = _patch(_save(_vol(), tmp_path / "off-t1n.nii.gz"), vox_offset=2.0**40)
    assert "vox_offset" in _error({"t1n": p})
    p = _patch(_save(_vol(), tmp_path / "off2-t1n.nii.gz"), vox_offset=5000.0)  # past the data
    assert "is truncated" in _error({"t1n": p})
    p = _patch(_save(_vol(), tmp_path / "off3-t1n.nii.gz"), vox_offset=0.0)  # data inside the header
    assert "vox_offset=0" in _error({"t1n": p})


def test_unsupported_dtype_and_pair_header(tmp_path):
    p = _save(np.ones(SHAPE, np.complex64) * (1 + 1j), tmp_path / "cplx.nii.gz")
    assert "unsupported voxel type" in _error({"t1n": p})
    p = _patch(_save(_vol(), tmp_path / "pair.nii"), magic=b"ni1")
    assert ".hdr/.img pair" in _error({"t1n": p})


def test_label_problems(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for k, s in enumerate(("t1n", "t1c", "t2w", "t2f")):
        _save(_vol(k), folder / f"X-{s}.nii.gz")
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:6, 2:6, 2:6] = 4  # BraTS 2021 ET value in a 2023 layout
    _save(seg, folder / "X-seg.nii.gz")
    # Named like 2023, values that fit 2024 (4 = resection cavity): read as 2024, and said.
    case = load_case(folder)
    assert case.label_convention == "brats2024" and case.labels["RC"].sum() == 64
    assert any("X-seg.nii.gz" in w and "brats2024" in w and "label_convention=" in w for w in case.warnings)
    msg = _error(folder, label_convention="brats2023")
    assert "X-seg.nii.gz" in msg and "[4]" in msg and "brats2021" in msg
    assert load_case(folder, label_convention="brats2021").labels["ET"].sum() == 64
    frac = seg.astype(np.float32)
    frac[2, 2, 2] = 1.5
    assert "non-integer" in _error(folder, label=_save(frac, tmp_path / "frac.nii.gz"))
    neg = seg.astype(np.int16)
    neg[0, 0, 0] = -1
    assert "label values from -1" in _error(folder, label=_save(neg, tmp_path / "neg.nii.gz"))
    shifted = np.eye(4)
    shifted[1, 3] = 2.0
    lab = _save(np.zeros(SHAPE, np.uint8), tmp_path / "moved.nii.gz", shifted)
    msg = _error(folder, label=lab)
    assert "label grid differs" in msg and "moved.nii.gz" in msg
    assert "unknown label convention" in _error(folder, label_convention="brats2019")


def test_folder_layout_problems(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.nii.gz").write_bytes(b"")
    msg = _error(empty)
    assert "no MRI sequence files" in msg and "*-t1n.nii.gz" in msg and "*_flair" in msg
    dup = tmp_path / "dup"
    dup.mkdir()
    _save(_vol(), dup / "A-t1n.nii.gz")
    _save(_vol(), dup / "A-t1n.nii")
    assert "several files for t1n" in _error(dup)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _save(_vol(), mixed / "A-t1n.nii.gz")
    _save(_vol(), mixed / "B-t1c.nii.gz")
    assert "different cases" in _error(mixed)
    msd_root = tmp_path / "Task01"
    (msd_root / "imagesTr").mkdir(parents=True)
    assert "MSD task folder" in _error(msd_root)
    seg_only = _save(np.zeros(SHAPE, np.uint8), tmp_path / "A-seg.nii.gz")
    assert "is a label file" in _error(seg_only)


def test_read_volume_direct(tmp_path):
    vol = read_volume(_save(_vol(), tmp_path / "v.nii.gz"))
    assert vol.data.dtype == np.float32 and vol.grid.shape == SHAPE
    assert vol.grid.qform_code == 1 and vol.grid.sform_code == 1 and vol.grid.xyz_units == "mm"


def test_nifti2_loads(tmp_path):
    p = tmp_path / "n2-t1c.nii.gz"
    nib.save(nib.Nifti2Image(_vol(), np.diag([0.5, 0.5, 1.0, 1.0])), p)
    case = load_case(p)
    assert case.present == ("t1c",) and case.spacing == pytest.approx((0.5, 0.5, 1.0))
    assert np.array_equal(case.images["t1c"], _vol())
