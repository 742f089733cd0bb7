"""The measurements table, its CSV and the downloads named by case."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import nibabel as nib
import numpy as np

from vlseg.app import results

TARGET = {"concept": "ET", "mask": "ET.nii.gz", "present": True, "volume_ml": 61.0,
          "volume_ml_range": [52.43, 70.0], "n_lesions": 2, "max_diameter_mm": 40.04,
          "perpendicular_diameter_mm": 31.0, "hemisphere": "left", "crosses_midline": True,
          "lobes": ["temporal", "limbic"]}


def test_table_headers_units_one_format_and_location_words():
    html = results.table_html({"targets": [TARGET, {**TARGET, "concept": "NCR", "present": False,
                                                    "volume_ml": 0.0, "volume_ml_range": [0, 0.35]}]})
    for header in ("Volume<br>", "(mL)", "Size<br>", "(mm)", "Lesions", "Location"):
        assert header in html
    assert "61<" in html and "61.0" not in html  # one number format (vlseg.numbers)
    # Issue 22: the boundary-reading range is not a second interval in the table
    assert "Range" not in html and "52.4–70" not in html
    assert "40 × 31" in html
    assert "left hemisphere, crosses the midline; temporal, limbic" in html
    assert "not found" in html and 'class="absent"' in html
    assert "CI" not in html  # no interval in the answer: no interval column
    assert results.table_html({"targets": []}) == ""


def test_interval_column_when_present():
    t = {**TARGET, "volume_ml_interval": [50.0, 72.56]}
    html = results.table_html({"targets": [t], "confidence": 0.9})
    assert "90% CI<br>" in html and "50–72.6" in html and "holds the true volume in 90%" in html
    # Another level, as the Segmenter writes it (a float) with its [lo, hi] interval.
    t2 = {**TARGET, "volume_ml_interval": [1, 2]}
    html2 = results.table_html({"targets": [t2], "confidence": 0.8})
    assert "80% CI" in html2 and "1–2" in html2
    assert "possibly none" not in html2


def test_interval_reaching_zero_says_possibly_none():
    t = {**TARGET, "volume_ml": 0.4, "volume_ml_interval": [0.0, 1.2]}
    html = results.table_html({"targets": [t], "confidence": 0.9})
    assert "0–1.2 (possibly none)" in html and "may be absent" in html


def test_csv_rows_match_table():
    text = results.measurements_csv({"targets": [TARGET]})
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["concept", "name", "volume_ml"]
    assert rows[1][:4] == ["ET", "enhancing tumor", "61", "2"]  # volume, then lesions


def test_case_ids_are_file_safe():
    assert results.safe_case_id("BraTS-GLI-00001-000") == "BraTS-GLI-00001-000"
    assert results.safe_case_id("../../etc/pass wd") == "etc_pass_wd"
    assert results.safe_case_id("") == "case" and len(results.safe_case_id("x" * 300)) == 64


def test_named_downloads_and_zip(tmp_path):
    img = nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4))
    nib.save(img, tmp_path / "ET.nii.gz")
    answer = {"query": "q", "targets": [TARGET]}
    files = results.named_downloads(tmp_path, answer, "BraTS-GLI-7")
    assert [f.name for f in files] == ["BraTS-GLI-7_ET.nii.gz", "BraTS-GLI-7_all.zip"]
    with zipfile.ZipFile(files[-1]) as z:
        assert set(z.namelist()) == {"BraTS-GLI-7_ET.nii.gz", "BraTS-GLI-7_answer.json",
                                     "BraTS-GLI-7_measurements.csv"}
        assert json.loads(z.read("BraTS-GLI-7_answer.json"))["targets"][0]["mask"] == "BraTS-GLI-7_ET.nii.gz"
        assert z.getinfo("BraTS-GLI-7_ET.nii.gz").compress_type == zipfile.ZIP_STORED  # gzip already
    assert answer["targets"][0]["mask"] == "ET.nii.gz"  # the caller's answer is untouched
    assert results.named_downloads(tmp_path, {"targets": []}, "x") == []


def test_location_ranked_like_the_answer_and_merge_distance_from_the_target():
    t = {**TARGET, "lobes": ["frontal", "temporal", "limbic"], "lobes_involved": ["temporal", "limbic"],
         "lobes_minor": ["frontal"], "lesion_merge_mm": 4.0}
    assert results.location_words(t) == ("left hemisphere, crosses the midline; temporal, limbic; "
                                         "minor extension into frontal")
    assert results.location_words({**t, "lobes_involved": [], "hemisphere": None,
                                   "crosses_midline": False}) == "minor extension into frontal"
    html = results.table_html({"targets": [t]})
    assert "pieces within 4 mm count as one" in html and "5 mm" not in html
