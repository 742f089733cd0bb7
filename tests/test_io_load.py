"""vlseg.io: loading every layout, RAS+ reorientation, label conventions, voxel-exact write-back."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.vocab.labels import labels_to_concepts

CONCEPTS = vocab.PRE_TREATMENT_CODES
LABEL_CONVENTIONS = vocab.label_conventions()
from vlseg.errors import InputError
from vlseg.io import Grid, load_case, write_label_map, write_mask

SHAPE = (20, 22, 18)
LPS = np.array([[-1.0, 0, 0, 12], [0, -1.0, 0, 30], [0, 0, 1.5, -7], [0, 0, 0, 1]])


def _oblique() -> np.ndarray:
    """Rotation (no shear) about two axes, anisotropic spacing, axes also permuted."""
    a, b = np.deg2rad(25), np.deg2rad(-15)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    perm = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)  # stored roughly as "SRP"
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ perm @ np.diag([1.2, 0.9, 2.0])
    aff[:3, 3] = [-20.0, 15.0, 8.0]
    return aff


def _images(seed: int = 0) -> dict[str, np.ndarray]:
    """Distinct per-sequence volumes: sequence k has values in [10k, 10k+1)."""
    rng = np.random.default_rng(seed)
    return {s: (10.0 * (k + 1) + rng.random(SHAPE)).astype(np.float32) for k, s in enumerate(SEQUENCES)}


def _seg(convention: str) -> np.ndarray:
    v = LABEL_CONVENTIONS[convention]
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:14, 5:15, 3:13] = v["ED"]
    seg[6:12, 7:13, 5:11] = v["NCR"]
    seg[8:10, 9:11, 7:9] = v["ET"]
    return seg


def _save(arr: np.ndarray, affine: np.ndarray, path: Path, **hdr_fields) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    for k, v in hdr_fields.items():
        img.header[k] = v
    nib.save(img, path)
    return path


def _brats2023(folder: Path, affine=np.eye(4), cid: str = "BraTS-GLI-00001-000", seg=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s, arr in _images().items():
        _save(arr, affine, folder / f"{cid}-{s}.nii.gz")
    if seg:
        _save(_seg("brats2023"), affine, folder / f"{cid}-seg.nii.gz")
    return folder


def test_brats2023_folder(tmp_path):
    case = load_case(_brats2023(tmp_path / "c"))
    assert case.present == SEQUENCES and case.shape == SHAPE
    assert case.case_id == "BraTS-GLI-00001-000" and case.layout == "brats2023"
    assert case.label_convention == "brats2023"
    for k, s in enumerate(SEQUENCES):
        assert case.images[s].dtype == np.float32
        assert 10 * (k + 1) <= case.images[s].min() and case.images[s].max() < 10 * (k + 1) + 1
    want = labels_to_concepts(_seg("brats2023"), "brats2023")
    assert set(case.labels) == set(CONCEPTS)
    for c in CONCEPTS:
        assert np.array_equal(case.labels[c], want[c]) and case.labels[c].any()
    assert case.spacing == pytest.approx((1.0, 1.0, 1.0))


def test_brats2021_folder_t1_vs_t1ce_and_uncompressed(tmp_path):
    names = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}
    imgs = _images()
    for s, n in names.items():
        _save(imgs[s], np.eye(4), tmp_path / f"BraTS2021_00042_{n}.nii")  # plain .nii
    _save(_seg("brats2021"), np.eye(4), tmp_path / "BraTS2021_00042_seg.nii.gz")
    case = load_case(tmp_path)
    assert case.layout == "brats2021" and case.case_id == "BraTS2021_00042"
    assert case.label_convention == "brats2021"
    for s in SEQUENCES:
        assert np.array_equal(case.images[s], imgs[s])  # _t1 and _t1ce did not clash
    assert np.array_equal(case.labels["ET"], _seg("brats2021") == 4)


def test_subset_folder_any_names(tmp_path):
    imgs = _images()
    _save(imgs["t1c"], np.eye(4), tmp_path / "sub-01_T1gd.nii.gz")
    _save(imgs["t2f"], np.eye(4), tmp_path / "sub-01_FLAIR.nii.gz")
    (tmp_path / "notes.txt").write_text("ignored")
    case = load_case(tmp_path)
    assert case.present == ("t1c", "t2f") and case.labels is None
    assert np.array_equal(case.images["t2f"], imgs["t2f"])


def test_msd_4d_with_sibling_label(tmp_path):
    imgs = _images()
    stack = np.stack([imgs[s] for s in ("t2f", "t1n", "t1c", "t2w")], axis=-1)  # FLAIR,T1w,T1gd,T2w
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    img_path = _save(stack, np.eye(4), tmp_path / "imagesTr" / "BRATS_007.nii.gz")
    _save(_seg("msd"), np.eye(4), tmp_path / "labelsTr" / "BRATS_007.nii.gz")
    case = load_case(img_path)
    assert case.layout == "msd" and case.case_id == "BRATS_007" and case.present == SEQUENCES
    for s in SEQUENCES:
        assert np.array_equal(case.images[s], imgs[s])
    want = labels_to_concepts(_seg("brats2023"), "brats2023")  # same regions, other numbering
    for c in CONCEPTS:
        assert np.array_equal(case.labels[c], want[c])


def test_mapping_aliases_and_label_override(tmp_path):
    imgs = _images()
    p1 = _save(imgs["t1n"], np.eye(4), tmp_path / "a.nii.gz")
    p2 = _save(imgs["t2f"], np.eye(4), tmp_path / "b.nii.gz")
    lab = _save(_seg("brats2021"), np.eye(4), tmp_path / "lab.nii.gz")
    case = load_case({"T1": p1, "flair": str(p2), "t2": None}, label=lab, label_convention="brats2021")
    assert case.present == ("t1n", "t2f")
    assert np.array_equal(case.labels["ET"], _seg("brats2021") == 4)
    with pytest.raises(InputError, match="unknown MRI sequence"):
        load_case({"dwi": p1})
    with pytest.raises(InputError, match="given twice"):
        load_case({"t1": p1, "t1n": p2})
    with pytest.raises(InputError, match="no image files"):
        load_case({"t1": None})


def test_single_named_file(tmp_path):
    p = _save(_images()["t1c"], np.eye(4), tmp_path / "case-t1c.nii.gz")
    case = load_case(p)
    assert case.present == ("t1c",) and case.case_id == "case"


@pytest.mark.parametrize("slope,inter", [(2.5, 0.0), (2.5, -3.0), (0.0, 0.0), (1.0, 0.0)])
def test_int16_scaling(tmp_path, slope, inter):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 1000 + 1
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_data_dtype(np.int16)
    p = tmp_path / "x-t1n.nii.gz"
    nib.save(img, p)
    # Patch scl_slope/inter in the stored header (0 means "no scaling" in NIfTI).
    data = bytearray(gzip.decompress(p.read_bytes()))
    hdr = nib.Nifti1Header(binaryblock=bytes(data[:348]), check=False)
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    data[:348] = hdr.binaryblock
    p.write_bytes(gzip.compress(bytes(data)))
    case = load_case({"t1n": p})
    eff = slope if slope != 0 else 1.0
    np.testing.assert_allclose(case.images["t1n"], raw * eff + (inter if slope != 0 else 0), rtol=1e-6)


def test_lps_is_reoriented_to_ras(tmp_path):
    imgs = _images()
    for s, arr in imgs.items():
        _save(arr, LPS, tmp_path / f"c-{s}.nii.gz")
    case = load_case(tmp_path)
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    assert np.array_equal(case.images["t1n"], imgs["t1n"][::-1, ::-1, :])
    # The same world point maps to the same value in both voxel orders.
    ijk = np.array([3, 4, 5, 1.0])
    world = LPS @ ijk
    ras_ijk = np.round(np.linalg.solve(case.affine, world)[:3]).astype(int)
    assert case.images["t1n"][tuple(ras_ijk)] == imgs["t1n"][3, 4, 5]
    assert case.source_grid == Grid(shape=SHAPE, affine=LPS)
    assert np.array_equal(case.from_source(imgs["t2w"]), case.images["t2w"])
    assert np.array_equal(case.to_source(case.images["t2w"]), imgs["t2w"])


def _world_ball(affine: np.ndarray, shape, center, radius) -> np.ndarray:
    """Voxels whose world position lies inside a ball: computable in any voxel order."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(xyz - center, axis=1) < radius).reshape(shape)


@pytest.mark.parametrize("affine", [LPS, _oblique()], ids=["lps", "oblique"])
def test_round_trip_voxel_exact(tmp_path, affine):
    folder = tmp_path / "c"
    folder.mkdir()
    for s, arr in _images().items():
        _save(arr, affine, folder / f"c-{s}.nii.gz", descrip=b"Jane Doe 1970-01-01",
              aux_file=b"secret", db_name=b"hospital", intent_name=b"phi")
    # Add a header extension (PHI often lives there) to one input.
    src = nib.load(folder / "c-t1n.nii.gz")
    src.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"patient id 12345"))
    nib.save(src, folder / "c-t1n.nii.gz")
    case = load_case(folder)
    center = affine[:3, :3] @ (np.array(SHAPE) / 2 - 1.3) + affine[:3, 3]

    mask_ras = _world_ball(case.affine, case.shape, center, 6.0)
    assert 30 < mask_ras.sum() < mask_ras.size // 2
    out = write_mask(mask_ras, case, tmp_path / "out" / "mask.nii.gz")

    img = nib.load(out)
    want = _world_ball(affine, SHAPE, center, 6.0)
    got = np.asanyarray(img.dataobj)
    assert got.dtype == np.uint8 and got.shape == SHAPE
    assert np.array_equal(got, want.astype(np.uint8))
    assert np.allclose(img.header.get_sform(), src.header.get_sform(), atol=0, rtol=0)
    assert np.allclose(img.header.get_qform(), src.header.get_qform(), atol=1e-5)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    raw = nib.Nifti1Header(binaryblock=gzip.decompress(out.read_bytes())[:348], check=False)
    for f in ("descrip", "aux_file", "db_name", "intent_name"):
        assert bytes(raw[f]).strip(b"\x00 ") == b""
    assert float(raw["scl_slope"]) == 1.0 and float(raw["scl_inter"]) == 0.0
    assert len(img.header.extensions) == 0


@pytest.mark.parametrize("convention", sorted(LABEL_CONVENTIONS))
def test_label_map_round_trip_each_convention(tmp_path, convention):
    folder = _brats2023(tmp_path / "c", affine=LPS)
    case = load_case(folder)
    out = write_label_map(case.labels, case, tmp_path / f"lab_{convention}.nii", convention=convention)
    written = np.asanyarray(nib.load(out).dataobj)
    assert written.dtype == np.uint8
    assert set(np.unique(written)) == {0, *(v for c, v in LABEL_CONVENTIONS[convention].items() if c in CONCEPTS)}
    back = labels_to_concepts(written, convention)  # source order
    for c in CONCEPTS:
        assert np.array_equal(back[c], case.to_source(case.labels[c]))
    # Re-reading the written map in its own convention gives the same concepts.
    again = load_case(folder, label=out, label_convention=convention)
    for c in CONCEPTS:
        assert np.array_equal(again.labels[c], case.labels[c])


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    case = load_case(_brats2023(tmp_path / "c", seg=False))
    out = tmp_path / "mask.nii.gz"
    write_mask(np.zeros(case.shape, bool), case, out)
    before = out.read_bytes()

    def broken_save(img, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_mask(np.ones(case.shape, bool), case, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "mask.nii.gz"]  # no temp left


def test_write_refuses_bad_targets_and_masks(tmp_path):
    folder = _brats2023(tmp_path / "c", seg=False)
    case = load_case(folder)
    t1n = folder / "BraTS-GLI-00001-000-t1n.nii.gz"
    before = t1n.read_bytes()
    with pytest.raises(InputError, match="input files"):
        write_mask(np.zeros(case.shape, bool), case, t1n)
    assert t1n.read_bytes() == before
    with pytest.raises(InputError, match=r"\.nii or \.nii\.gz"):
        write_mask(np.zeros(case.shape, bool), case, tmp_path / "mask.png")
    with pytest.raises(ValueError, match="binary"):
        write_mask(np.full(case.shape, 0.7), case, tmp_path / "m.nii.gz")
    with pytest.raises(ValueError, match="shape"):
        write_mask(np.zeros((3, 3, 3), bool), case, tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match="convention"):
        write_label_map({"WT": np.zeros(case.shape, bool)}, case, tmp_path / "m.nii.gz", convention="x")
    assert not (tmp_path / "m.nii.gz").exists()


def test_xform_codes_kept_and_shear_round_trips(tmp_path):
    img = nib.Nifti1Image(_images()["t1n"], LPS)
    img.set_qform(LPS, code=1)
    img.set_sform(LPS, code=2)  # "aligned"
    nib.save(img, tmp_path / "a-t1n.nii.gz")
    case = load_case(tmp_path / "a-t1n.nii.gz")
    out = nib.load(write_mask(np.ones(case.shape, bool), case, tmp_path / "m.nii.gz"))
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2

    sheared = LPS.copy()
    sheared[0, 1] = 0.3  # sform-only shear: a qform cannot hold it
    img = nib.Nifti1Image(_images()["t2w"], sheared)
    img.set_qform(None, code=0)
    img.set_sform(sheared, code=1)
    nib.save(img, tmp_path / "s-t2w.nii.gz")
    case = load_case(tmp_path / "s-t2w.nii.gz")
    out_path = write_mask(case.images["t2w"] > 10.5, case, tmp_path / "s-mask.nii.gz")
    out = nib.load(out_path)
    assert np.array_equal(out.affine, img.affine) and int(out.header["qform_code"]) == 0
    assert np.array_equal(np.asanyarray(out.dataobj), (_images()["t2w"] > 10.5).astype(np.uint8))
    load_case({"t2w": tmp_path / "s-t2w.nii.gz"}, label=out_path)  # our own output reloads


def test_grid_equality_and_hash():
    a = Grid(shape=(2, 3, 4), affine=np.eye(4))
    b = Grid(shape=(2, 3, 4), affine=np.eye(4))
    assert a == b and hash(a) == hash(b) and a.spacing == (1.0, 1.0, 1.0)
    assert a.mismatch(Grid(shape=(2, 3, 4), affine=np.diag([1, 1, 1.01, 1]))) is not None
    assert not a.affine.flags.writeable


def test_a_post_treatment_label_map_named_like_2023_is_read_as_brats2024(tmp_path):
    """A BraTS 2024 folder (named like 2023, label 4 = resection cavity) is never refused for its
    label map; an explicit brats2023 still names the label."""
    folder = _brats2023(tmp_path / "c", seg=False)
    seg = _seg("brats2023")
    seg[0, 0, :2] = 4
    _save(seg, np.eye(4), folder / "BraTS-GLI-00001-000-seg.nii.gz")
    case = load_case(folder)
    assert case.label_convention == "brats2024" and case.labels["RC"].sum() == 2
    assert not (case.labels["RC"] & case.labels["WT"]).any()
    with pytest.raises(InputError, match=r"label values \[4\] outside the brats2023"):
        load_case(folder, label_convention="brats2023")


def test_sequences_read_two_at_a_time_fail_in_reading_order(tmp_path, monkeypatch):
    """load_case reads two sequence files at once; what it returns and the error a bad file gives
    are those of reading them one by one, in SEQUENCES order."""
    import vlseg.io.case as case_module

    folder = _brats2023(tmp_path / "c", affine=LPS)
    together = load_case(folder)
    monkeypatch.setattr(case_module, "READ_THREADS", 1)
    alone = load_case(folder)
    assert together.present == alone.present == SEQUENCES
    for s in SEQUENCES:
        assert np.array_equal(together.images[s], alone.images[s])
    assert np.allclose(together.affine, alone.affine)
    monkeypatch.setattr(case_module, "READ_THREADS", 2)
    cid = "BraTS-GLI-00001-000"
    for s in ("t1c", "t2f"):  # two bad files: the error names the one read first
        (folder / f"{cid}-{s}.nii.gz").write_bytes(gzip.compress(b"not a nifti image" * 40))
    with pytest.raises(InputError) as err:
        load_case(folder)
    assert f"{cid}-t1c.nii.gz" in str(err.value) and "t2f" not in str(err.value)
