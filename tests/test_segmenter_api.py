"""Segmenter: set a case once, ask many questions; answer JSON and masks in the input grid."""
from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from vlseg.errors import VlsegError

ANSWER_KEYS = {"query", "text", "refused", "intent", "targets", "model", "timing_s"}
TARGET_KEYS = {"concept", "phrase", "mask", "present", "volume_ml", "volume_ml_range", "n_lesions",
               "centroid_ras_mm", "hemisphere", "crosses_midline", "lobes", "max_diameter_mm",
               "perpendicular_diameter_mm"}


@pytest.fixture(scope="module")
def segmenter(random_checkpoint):
    from vlseg import Segmenter

    return Segmenter.from_pretrained(random_checkpoint)


def test_ask_before_set_case_fails_clearly(random_checkpoint):
    from vlseg import Segmenter

    seg = Segmenter.from_pretrained(random_checkpoint)
    with pytest.raises(VlsegError, match="set_case"):
        seg.ask("segment the edema")


def test_segment_answer_schema_and_masks_in_input_grid(segmenter, phantom_case_2mm, tmp_path):
    info = segmenter.set_case(phantom_case_2mm)
    assert info["sequences"] == ["t1n", "t1c", "t2w", "t2f"]
    ans = segmenter.ask("segment the necrotic core and the edema")
    doc = ans.to_json()
    assert ANSWER_KEYS <= set(doc)
    assert doc["intent"] == "segment" and doc["refused"] is False
    assert [t["concept"] for t in doc["targets"]] == ["NCR", "ED"]
    for t in doc["targets"]:
        assert TARGET_KEYS <= set(t)
        assert t["volume_ml_range"][0] <= t["volume_ml_range"][1]
    assert doc["model"]["checkpoint_sha256"] and len(doc["model"]["checkpoint_sha256"]) == 64
    assert "not a diagnosis" in doc["text"]

    out = tmp_path / "out"
    ans.save(out)
    saved = json.loads((out / "answer.json").read_text())
    assert saved["targets"][0]["mask"] == "NCR.nii.gz"
    src = nib.load(next(phantom_case_2mm.glob("*-t2f.nii.gz")))
    for concept in ("NCR", "ED"):
        img = nib.load(out / f"{concept}.nii.gz")
        assert img.shape == src.shape
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
        data = np.asarray(img.dataobj)
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
        # The written mask is the measured one: its volume is the reported volume.
        vox_ml = abs(np.linalg.det(src.affine[:3, :3])) / 1000.0
        reported = next(t for t in saved["targets"] if t["concept"] == concept)["volume_ml"]
        assert data.sum() * vox_ml == pytest.approx(reported, abs=0.05 + 0.01 * reported)


def test_follow_ups_reuse_the_encoding_and_context(segmenter, phantom_case_2mm, monkeypatch):
    import vlseg.model.inference as inference

    segmenter.set_case(phantom_case_2mm)
    calls = {"prepare": 0}
    real_prepare = inference.prepare

    def counting(*a, **k):
        calls["prepare"] += 1
        return real_prepare(*a, **k)

    monkeypatch.setattr(inference, "prepare", counting)
    first = segmenter.ask("segment the enhancing tumor")
    follow = segmenter.ask("how big is it?")
    where = segmenter.ask("and the edema?")
    assert calls["prepare"] == 0  # encoded once, in set_case
    assert [t["concept"] for t in first.targets] == ["ET"]
    assert follow.intent == "volume" and [t["concept"] for t in follow.targets] == ["ET"]
    assert [t["concept"] for t in where.targets] == ["ED"]


def test_out_of_scope_is_refused_without_masks(segmenter, phantom_case_2mm):
    segmenter.set_case(phantom_case_2mm)
    ans = segmenter.ask("segment the liver")
    assert ans.refused and ans.intent == "refuse"
    assert ans.targets == [] and ans.masks == {}
    assert "edema" in ans.text.lower()  # lists what it can segment


def test_numbers_in_text_appear_in_json(segmenter, phantom_case_2mm):
    segmenter.set_case(phantom_case_2mm)
    ans = segmenter.ask("what fraction of the core is necrotic?")
    doc = json.dumps(ans.to_json())
    numbers = re.findall(r"\d+(?:\.\d+)?", ans.text)
    for n in numbers:
        if n in {"1", "2"} and ("t1" in ans.text or "t2" in ans.text):
            continue  # sequence names such as t1n / t2f
        value = float(n)
        assert (n in doc or f"{value}" in doc or f"{value / 100:.2f}".rstrip("0") in doc
                or str(round(value / 100, 3)) in doc), f"{n} from the text is not in the JSON"


def test_subset_of_sequences_is_reported(segmenter, phantom_case_2mm):
    files = {"t2f": next(phantom_case_2mm.glob("*-t2f.nii.gz")),
             "t1c": next(phantom_case_2mm.glob("*-t1c.nii.gz"))}
    segmenter.set_case(files)
    ans = segmenter.ask("segment the whole tumor")
    assert ans.sequences_used == ["t1c", "t2f"]
    assert "t1c" in ans.text and "t2f" in ans.text


def test_sub_regions_are_one_labelling(phantom_case_2mm, tmp_path):
    """All five asked: masks nest voxel-exactly and volumes add up (bundled model, real masks)."""
    from vlseg import Segmenter

    seg = Segmenter.from_pretrained()
    seg.set_case(phantom_case_2mm)
    ans = seg.ask("segment the necrotic core, the edema, the enhancing tumor, the tumor core "
                  "and the whole tumor")
    assert [t["concept"] for t in ans.targets] == ["NCR", "ED", "ET", "TC", "WT"]
    m = {c: ans.masks_ras[c].astype(bool) for c in ans.masks_ras}
    assert m["WT"].sum() > 0 and m["TC"].sum() > 0            # a trained model finds the tumor
    assert np.array_equal(m["NCR"] | m["ET"], m["TC"]) and not (m["NCR"] & m["ET"]).any()
    assert np.array_equal(m["NCR"] | m["ED"] | m["ET"], m["WT"])
    assert not (m["ED"] & m["TC"]).any() and not (m["TC"] & ~m["WT"]).any()
    vol = {t["concept"]: t["volume_ml"] for t in ans.targets}
    assert vol["NCR"] + vol["ET"] == pytest.approx(vol["TC"], abs=0.11)       # JSON rounding only
    assert vol["NCR"] + vol["ED"] + vol["ET"] == pytest.approx(vol["WT"], abs=0.16)
    vox_ml = 8.0 / 1000.0
    for c in m:  # the measured volume is the written mask's volume
        assert m[c].sum() * vox_ml == pytest.approx(ans.measurements[list(m).index(c)].volume_ml)
    # A later single question reuses the same labelling.
    again = seg.ask("how big is the necrotic core?")
    assert np.array_equal(again.masks_ras["NCR"].astype(bool), m["NCR"])


def test_calibrated_intervals_in_json_and_text(phantom_case_2mm):
    """Volume and ratio intervals at the asked confidence, in answer.json and said in the text."""
    from vlseg import Segmenter

    seg = Segmenter.from_pretrained(confidence=0.9)
    assert seg.calibration.calibrated        # the bundled model ships its calibration
    seg.set_case(phantom_case_2mm)
    ans = seg.ask("how big is the tumor core and what fraction of it is necrotic?")
    doc = ans.to_json()
    assert doc["confidence"] == 0.9 and doc["calibration"]["calibrated"] is True
    widths = {}
    for t in doc["targets"]:
        lo, hi = t["volume_ml_interval"]
        assert lo <= t["volume_ml"] <= hi
        widths[t["concept"]] = hi - lo
    lo, hi = doc["relations"]["necrotic_fraction_of_core_interval"]
    assert lo <= doc["relations"]["necrotic_fraction_of_core"] <= hi
    assert "90% interval" in ans.text and ans.text.count("Intervals:") == 1
    wide = seg.ask("how big is the tumor core?", confidence=0.99).to_json()
    lo99, hi99 = wide["targets"][0]["volume_ml_interval"]
    assert wide["confidence"] == 0.99 and hi99 - lo99 >= widths["TC"]
    with pytest.raises(Exception, match="between 0 and 1"):
        seg.ask("how big is it?", confidence=1.5)
    where = seg.ask("where is the tumor?")
    assert "Intervals:" not in where.text     # explained only where an interval is shown
    # Issue 22: every ratio phrasing has its interval, around the estimate, in JSON and text.
    whole = seg.ask("what fraction of the whole tumor is necrotic?").to_json()
    lo, hi = whole["relations"]["fraction_intervals"]["NCR/WT"]
    assert lo <= whole["relations"]["fractions"]["NCR/WT"] <= hi
    assert "of the whole tumor" in whole["text"] and "90% interval" in whole["text"]
    assert "range" not in whole["text"]
