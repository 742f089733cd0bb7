"""bench/robustness.py: seeded shift families, their geometry, the cache, and the side-by-side report."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg.benchmarks import robustness as rb
from vlseg.synth import shifts

REPO = Path(__file__).resolve().parent.parent
SPACING = 2.5  # tiny phantoms (96x96x62); 2 thin slices make one 5 mm slice


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_robustness_cli", REPO / "bench" / "robustness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def clean_case():
    return rb.make_case("clean", 0, spacing_mm=SPACING)


# ----------------------------------------------------------------------------- seeds
def test_seed_namespace_is_outside_training_seeds():
    seeds = [rb.phantom_seed(i) for i in range(50)]
    assert len(set(seeds)) == 50
    assert all(s >= 2 ** 127 for s in seeds)  # four 32-bit entropy words; training seeds have <= 2
    assert all(s.bit_length() == 128 and np.random.SeedSequence(s).entropy == s for s in seeds)
    assert rb.phantom_seed(3) == rb.phantom_seed(3)


# ----------------------------------------------------------------------------- shifts
@pytest.mark.parametrize("family", rb.FAMILIES)
def test_each_family_is_deterministic_and_shifts(family, clean_case):
    a = rb.make_case(family, 0, spacing_mm=SPACING)
    b = rb.make_case(family, 0, spacing_mm=SPACING)
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]), k
        assert a[0][k].dtype == np.int16
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[3] == b[3]
    assert set(a[3]["steps"]) == set(rb.STEPS[family])
    if family != "clean":
        # the shift changed the images (shapes differ for thick slices, voxels otherwise)
        assert any(a[0][k].shape != clean_case[0][k].shape or not np.array_equal(a[0][k], clean_case[0][k])
                   for k in a[0])
    other = rb.make_case(family, 1, spacing_mm=SPACING)
    assert not np.array_equal(other[0]["t1c"], a[0]["t1c"]) or other[0]["t1c"].shape != a[0]["t1c"].shape


def test_warp_moves_images_and_labels_identically():
    rng = np.random.default_rng(0)
    shape = (64, 64, 48)
    idx = np.indices(shape).astype(np.float32)
    r = np.sqrt(((idx - np.array([32, 30, 24])[:, None, None, None]) ** 2).sum(0))
    seg = np.where(r < 6, 3, np.where(r < 10, 1, np.where(r < 16, 2, 0))).astype(np.uint8)
    brain = (r < 22).astype(np.int16) * 100
    images = {"t1c": brain + (seg > 0) * 900, "t2f": brain.copy()}
    warped, seg_w, rec = shifts.anatomy_warp(rng, images, seg, (2.0, 2.0, 2.0))
    assert 5.0 <= rec["warp_p95_mm"] <= 7.0
    assert not np.array_equal(seg_w, seg)                         # it moved ...
    assert _dice(seg_w > 0, seg > 0) < 0.98
    assert _dice(warped["t1c"] > 550, seg_w > 0) > 0.97           # ... images and labels together
    for lab in (1, 2, 3):
        assert _dice(seg_w == lab, seg == lab) > 0.5              # a smooth deformation, not a shuffle
    # no folding: the Jacobian determinant of x -> x + u(x) stays positive
    disp, _ = shifts.warp_field(np.random.default_rng(1), shape, (2.0, 2.0, 2.0), brain > 0)
    jac = np.stack([np.stack(np.gradient(disp[i]), 0) for i in range(3)], 0)  # (3, 3, X, Y, Z)
    jac += np.eye(3)[:, :, None, None, None]
    assert np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1))).min() > 0


def test_thick_slices_grid_and_labels(clean_case):
    images, seg, affine, _ = clean_case
    out, seg_t, aff_t, rec = shifts.thick_slices(np.random.default_rng(5), images, seg, affine)
    ax = rec["axis"]
    zooms = np.linalg.norm(aff_t[:3, :3], axis=0)
    assert zooms[ax] == pytest.approx(5.0) and rec["slice_mm"] == pytest.approx(5.0)
    assert all(zooms[a] == pytest.approx(SPACING) for a in range(3) if a != ax)
    assert seg_t.shape[ax] == -(-seg.shape[ax] // 2) and out["t1c"].shape == seg_t.shape
    # a thick voxel's centre is the centre of its two thin voxels
    thin = affine @ np.r_[np.eye(3)[ax] * 0.5, 1.0]
    assert np.allclose(aff_t @ np.array([0, 0, 0, 1.0]), thin)
    # labels keep the BraTS 2023 values and roughly the volume
    assert set(np.unique(seg_t)) <= {0, 1, 2, 3}
    thin_ml = np.count_nonzero(seg) * SPACING ** 3
    thick_ml = np.count_nonzero(seg_t) * SPACING ** 2 * 5.0
    assert thick_ml == pytest.approx(thin_ml, rel=0.15)


def test_thick_slice_family_is_stored_on_its_coarse_grid(tmp_path):
    from vlseg.io import load_case

    folder = rb.write_case(tmp_path, "thick_slices", 0, spacing_mm=SPACING)
    rec = json.loads((folder / f"{folder.name}-shift.json").read_text())
    ax = rec["steps"]["thick_slices"]["axis"]
    for f in folder.glob("*.nii.gz"):
        zooms = nib.load(f).header.get_zooms()[:3]
        assert zooms[ax] == pytest.approx(5.0), f.name
        assert sorted(zooms) == pytest.approx([SPACING, SPACING, 5.0]), f.name
    case = load_case(folder)
    assert sorted(case.spacing) == pytest.approx([SPACING, SPACING, 5.0])
    assert case.labels is not None and case.labels["WT"].shape == case.shape


def test_contrast_tables_keep_label_relations():
    from vlseg.synth import DEFAULT_RANGES

    base = DEFAULT_RANGES.base_means
    rng = np.random.default_rng(0)
    tables = [shifts.contrast_table(rng, base) for _ in range(20)]
    for t in tables:
        others = (t["t1n"]["ET"], t["t1c"]["WM"], t["t1c"]["GM"], t["t1c"]["ED"], t["t1c"]["NCR"])
        assert t["t1c"]["ET"] >= shifts.CONTRAST_MARGIN * max(others)
        assert t["t2f"]["ED"] > t["t2f"]["WM"] and t["t2w"]["ED"] > t["t2w"]["WM"]
    assert tables[0] != tables[1] and tables[0] != base


def test_bias_field_spans_its_range(clean_case):
    images = {k: v.astype(np.float32) for k, v in clean_case[0].items()}
    out, _ = shifts.bias_field(np.random.default_rng(2), images, (SPACING,) * 3)
    brain = shifts.brain_mask(images)
    ratio = out["t2w"][brain] / images["t2w"][brain]
    assert ratio.min() == pytest.approx(0.7, abs=1e-3) and ratio.max() == pytest.approx(1.4, abs=1e-3)
    assert np.array_equal(out["t2w"][~brain], images["t2w"][~brain])


# ----------------------------------------------------------------------------- cache
def test_regeneration_is_identical_and_cache_is_reused(tmp_path):
    a = rb.write_case(tmp_path / "a", "combined", 0, spacing_mm=SPACING)
    b = rb.write_case(tmp_path / "b", "combined", 0, spacing_mm=SPACING)
    for fa in sorted(a.glob("*.nii.gz")):
        ia, ib = nib.load(fa), nib.load(b / fa.name)
        assert np.array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj)), fa.name
        assert ia.get_data_dtype() == ib.get_data_dtype()
        assert np.array_equal(ia.affine, ib.affine)
    stamp = {f.name: f.stat().st_mtime_ns for f in a.iterdir()}
    assert rb.write_case(tmp_path / "a", "combined", 0, spacing_mm=SPACING) == a
    assert {f.name: f.stat().st_mtime_ns for f in a.iterdir()} == stamp


def test_first_case_draws_fresh_cases(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(rb, "write_case", lambda root, family, i, spacing_mm: made.append((family, i)) or
                        Path(root) / family / rb.case_id(family, i))
    out = rb.build_testset(tmp_path, cases_per_family=2, families=("clean", "noise"), spacing_mm=SPACING,
                           first_case=12, log=lambda m: None)
    assert made == [("clean", 12), ("clean", 13), ("noise", 12), ("noise", 13)]
    assert [p.name for p in out["clean"]] == ["ROB-clean-012", "ROB-clean-013"]
    assert len({rb.phantom_seed(i) for i in range(24)}) == 24          # every index its own phantom
    assert rb.testset_description(2, SPACING, ("clean",), 12)["first_case"] == 12


# ----------------------------------------------------------------------------- CLI and report
def test_two_checkpoints_side_by_side(tmp_path, random_checkpoint, capsys):
    mod = _bench_module()
    out = tmp_path / "out"
    rc = mod.main(["--model", str(random_checkpoint), "--model", "default", "--cases-per-family", "1",
                   "--families", "thick_slices", "clean", "--spacing", str(SPACING), "--threads", "2",
                   "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "robustness.json").read_text())
    assert {"benchmark", "command", "test_set", "models", "summary", "per_case", "runtime_s", "machine"} <= set(result)
    labels = [m["label"] for m in result["models"]]
    # The bundled default has a refinement stage: its first stage alone is scored too (--fast),
    # from the same encodings
    assert labels == [random_checkpoint.name, "default", "default --fast"]
    assert [m["argument"] for m in result["models"]] == [str(random_checkpoint), "default", "default"]
    assert result["models"][2]["first_stage_of"] == "default"
    assert all("first_stage" in r for r in result["per_case"]["default"])
    assert not any("first_stage" in r for r in result["per_case"][random_checkpoint.name])
    expected = ["clean", "thick_slices", "clean/flair_t1c", "thick_slices/flair_t1c", "clean/t1c_only"]
    assert result["test_set"]["conditions"] == expected
    for lab in labels:
        assert list(result["summary"][lab]) == expected
        for cond in expected:
            entry = result["summary"][lab][cond]
            assert entry["n_cases"] == 1
            for c in ("NCR", "ED", "ET", "TC", "WT"):
                assert 0.0 <= entry[c]["dice"] <= 1.0 and entry[c]["hd95"] >= 0.0
        if lab in result["per_case"]:
            assert len(result["per_case"][lab]) == len(expected)
            assert result["runtime_s"][lab] > 0
    assert result["models"][1]["checkpoint_sha256"] != result["models"][0]["checkpoint_sha256"]
    thick = next(r for r in result["test_set"]["records"].values() if r["family"] == "thick_slices")
    assert sorted(thick["spacing_mm"]) == pytest.approx([SPACING, SPACING, 5.0])
    table = capsys.readouterr().out
    assert f"{labels[0]} WT" in table and "default ET" in table and "| clean | t1c |" in table
    assert (out / "robustness.md").read_text().strip() == table.strip()
    png = (out / "robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--families", "clean", "blur"], "unknown family 'blur'"),
    (["--cases-per-family", "0"], "--cases-per-family must be between"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--first-case", "-1"], "--first-case must be between"),
])
def test_bad_arguments_give_one_line(argv, message, capsys):
    mod = _bench_module()
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    mod = _bench_module()
    rc = mod.main(["--model", str(tmp_path / "nope"), "--cases-per-family", "1", "--families", "clean",
                   "--spacing", str(SPACING), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "nope" in err[-1]


def test_labelling_rules_compares_both_core_evidence_rules(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_labelling_rules", REPO / "bench" / "labelling_rules.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "rules.json"
    rc = mod.main(["--cases-per-family", "1", "--families", "clean", "--spacing", str(SPACING),
                   "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["subset"] for r in rows] == ["all4", "flair_t1c", "t1c_only"]
    for r in rows:
        for rule in ("cleaned", "raw"):
            assert set(r[rule]) == {"WT", "TC", "ET"} and all(0.0 <= v <= 1.0 for v in r[rule].values())
        assert r["raw"]["WT"] > 0 or r["cleaned"]["WT"] == 0   # raw evidence keeps at least what cleaned keeps
    printed = capsys.readouterr().out
    assert "clean/flair_t1c:" in printed and "vs" in printed


def test_ventricle_zoom_enlarges_the_ventricles_and_moves_labels_with_images():
    from vlseg.synth import shifts

    shape = (64, 64, 48)
    idx = np.indices(shape).astype(np.float32)
    r = np.sqrt(((idx - np.array([32, 32, 24])[:, None, None, None]) ** 2).sum(0))
    rt = np.sqrt(((idx - np.array([32, 50, 24])[:, None, None, None]) ** 2).sum(0))
    brain = r < 28
    ventricles = r < 5                              # bright on T2, at the brain's centre
    seg = np.where(brain & (rt < 4), 3, 0).astype(np.uint8)
    t2 = (brain * 300 + ventricles * 900 + (seg > 0) * 400).astype(np.int16)
    images = {"t2w": t2, "t1c": (brain * 200 + (seg > 0) * 800).astype(np.int16)}
    out, seg_out, rec = shifts.ventricle_zoom(np.random.default_rng(0), images, seg, (2.0, 2.0, 2.0))
    assert rec["scale"] >= shifts.VENTRICLE_SCALE[0]
    assert np.allclose(rec["centre_vox"], [32, 32, 24], atol=1.5)
    grown = int((out["t2w"] > 1000).sum())
    assert grown > 1.5 * int(ventricles.sum())     # the ventricles are larger (volume ~ scale^3)
    assert out["t2w"].dtype == np.int16 and seg_out.dtype == np.uint8
    tumor = seg_out == 3
    assert tumor.any() and (out["t1c"][tumor] > 600).mean() > 0.95  # labels moved with the images
