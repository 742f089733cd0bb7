"""A concept registered at run time goes end to end with no other edit: parse -> a model whose
checkpoint config names it -> the one labelling -> measurement (volume, location) -> NIfTI mask
and label map in its own convention -> DICOM-SEG segment with its coded type -> the app legend."""
from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_cases import phantom_images, study

from vlseg import vocab

pytestmark = pytest.mark.slow

TOY = vocab.Concept(
    code="CAL", name="calcification", parts=("CAL",), color=(250, 250, 250),
    labels={"toy2030": 9},
    synonyms=("calcification", "calcified focus", "tumor calcification"),
    phrases=("calcium deposits",),
    keywords=(r"\bcalcif\w*",),
    abbreviations=(("CAL", "calcification"),),
    dicom_type=("18115005", "SCT", "Pathologic calcification"),
)
TOY_CONVENTION = vocab.LabelConvention(name="toy2030", title="toy convention (9 calcification)")


@pytest.fixture(scope="module")
def toy():
    vocab.register(TOY)
    vocab.register_convention(TOY_CONVENTION)
    try:
        yield TOY
    finally:
        vocab.unregister_convention("toy2030")
        vocab.unregister("CAL")


def _toy_segmenter(box_world_mm: tuple[np.ndarray, np.ndarray], monkeypatch):
    """A `tiny` model whose config names CAL; its decoder (the toy part) puts CAL, with
    probability 0.9, on a box given in world mm, and nothing of the tumor anywhere."""
    from vlseg import Segmenter
    from vlseg.model import build_model, inference

    torch.manual_seed(0)
    model = build_model("tiny")
    model.config = dataclasses.replace(model.config, concepts=(*model.config.concepts, "CAL"),
                                       bias_correction="none")  # N4 is not under test
    monkeypatch.setattr(model, "embed_prompts", lambda texts: list(texts))
    seg = Segmenter(model=model)

    def decode(m, prepared, prompts):
        affine = seg.case.affine
        ijk = np.indices(prepared.input_shape).reshape(3, -1).T
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        lo, hi = box_world_mm
        inside = np.all((world >= lo) & (world <= hi), axis=1).reshape(prepared.input_shape)
        return np.stack([np.where(inside, 0.9, 0.0).astype(np.float32) if p == TOY.canonical_prompt
                         else np.zeros(prepared.input_shape, np.float32) for p in prompts])

    monkeypatch.setattr(inference, "decode", decode)
    return seg


def test_a_registered_concept_goes_end_to_end(toy, phantom_case_2mm, tmp_path, monkeypatch):
    from vlseg.app.render import render_overlay
    from vlseg.io import load_case, write_label_map
    from vlseg.io.dicom_seg import read_seg_masks
    from vlseg.language import QueryParser

    # Parse: the new concept's words reach the parser.
    assert QueryParser().parse("segment the calcification").concepts == ("CAL",)

    # A DICOM study of the phantom, so the answer writer also exports DICOM-SEG.
    folder = study(phantom_images(phantom_case_2mm), tmp_path / "study", seed="toy")
    # A 10 x 10 x 10 mm box in the left hemisphere (RAS x < 0), mid-head front to back and up.
    case = load_case(folder)
    centre = case.affine[:3, :3] @ (np.asarray(case.shape) / 2) + case.affine[:3, 3]
    lo = np.array([-30.0, centre[1] - 5, centre[2] - 5])
    hi = lo + 10.0
    seg = _toy_segmenter((lo, hi), monkeypatch)
    seg.set_case(folder)
    case = seg.case

    ans = seg.ask("segment the calcification")
    doc = ans.to_json()
    assert doc["refused"] is False and [t["concept"] for t in doc["targets"]] == ["CAL"]
    target = doc["targets"][0]
    voxel_ml = abs(np.linalg.det(case.affine[:3, :3])) / 1000.0
    expected_ml = float(np.prod(hi - lo)) / 1000.0
    assert target["present"] and abs(target["volume_ml"] - expected_ml) <= 0.35 * expected_ml + voxel_ml
    assert target["hemisphere"] == "left"
    assert "Calcification" in doc["text"] or "calcification" in doc["text"]

    # Masks and the label map in the toy convention.
    out = tmp_path / "out"
    saved = json.loads(ans.save(out).read_text())
    mask = np.asarray(nib.load(out / saved["targets"][0]["mask"]).dataobj)
    assert mask.sum() * voxel_ml == pytest.approx(target["volume_ml"], rel=0.02)
    masks = seg.predictor.masks(("CAL",))
    lab = write_label_map(masks, case, tmp_path / "labels.nii.gz", convention="toy2030")
    assert set(np.unique(np.asarray(nib.load(lab).dataobj))) == {0, 9}

    # DICOM-SEG: one segment for the concept, with its coded type.
    import highdicom as hd

    seg_files = list(out.rglob("segmentation.dcm"))   # beside it the SR report, measurements.dcm
    assert len(seg_files) == 1 and (seg_files[0].parent / "measurements.dcm").is_file()
    dcm = hd.seg.segread(seg_files[0])
    (desc,) = dcm.SegmentSequence
    assert str(desc.SegmentLabel).startswith("CAL")
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "18115005"
    got, _ = read_seg_masks(seg_files[0])
    assert int(got["CAL"].sum()) == int(mask.sum())

    # The app's picture: a legend entry in the concept's colour with its volume.
    png = render_overlay({"t1c": case.images["t1c"]}, masks, case.spacing, tmp_path / "cal.png",
                         volumes_ml={"CAL": target["volume_ml"]})
    from PIL import Image

    im = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert (np.abs(im - np.array(TOY.color)).sum(-1) < 20).sum() > 20


def test_a_concept_the_model_does_not_name_is_refused_plainly(toy, phantom_case_2mm, monkeypatch):
    from vlseg import Segmenter
    from vlseg.model import build_model

    model = build_model("tiny")  # config: the five untreated-tumor concepts
    model.config = dataclasses.replace(model.config, bias_correction="none")
    seg = Segmenter(model=model)
    seg.set_case(phantom_case_2mm)
    ans = seg.ask("segment the calcification")
    assert ans.to_json()["refused"] and "does not segment the calcification" in ans.text
    assert "(CAL)" not in ans.text   # the capabilities line lists this model's concepts only

