"""`vlseg segment`: the CLI contract other tools depend on."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from vlseg.cli import main


def test_segment_writes_answer_and_masks(random_checkpoint, phantom_case_2mm, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema and the tumor core",
               "--out", str(out), "--model", str(random_checkpoint), "--threads", "1"])
    assert rc == 0
    answer = json.loads((out / "answer.json").read_text())
    for key in ("query", "text", "refused", "intent", "targets", "model", "timing_s"):
        assert key in answer
    assert [t["concept"] for t in answer["targets"]] == ["ED", "TC"]
    src = nib.load(next(phantom_case_2mm.glob("*-t1n.nii.gz")))
    for t in answer["targets"]:
        img = nib.load(out / t["mask"])
        assert img.shape == src.shape and np.asarray(img.dataobj).dtype == np.uint8
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    assert answer["text"] in capsys.readouterr().out


def test_segment_with_sequence_files(random_checkpoint, phantom_case_2mm, tmp_path):
    t2f = next(phantom_case_2mm.glob("*-t2f.nii.gz"))
    out = tmp_path / "out"
    rc = main(["segment", "--t2f", str(t2f), "--query", "segment the whole tumor", "--out", str(out),
               "--model", str(random_checkpoint)])
    assert rc == 0
    answer = json.loads((out / "answer.json").read_text())
    assert answer["sequences_used"] == ["t2f"]


@pytest.mark.slow
@pytest.mark.parametrize("argv_tail, message", [
    (["--case", "/nonexistent/case"], "nonexistent"),
    (["--t1n", "{bad}"], "NIfTI"),
    ([], "no scan given"),
])
def test_bad_input_exits_2_with_one_line(random_checkpoint, tmp_path, argv_tail, message):
    bad = tmp_path / "scan-t1n.nii.gz"
    bad.write_text("<html>not a scan</html>")
    argv_tail = [a.replace("{bad}", str(bad)) for a in argv_tail]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "vlseg", "segment", *argv_tail, "--query", "segment the edema",
         "--out", str(out), "--model", str(random_checkpoint)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0]
    assert not (out / "answer.json").exists()


def test_missing_model_is_a_clear_error(phantom_case_2mm, tmp_path, capsys):
    rc = main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
               "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-such-model")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "Traceback" not in err


def test_segment_writes_a_brats2024_label_map_when_asked(random_checkpoint, phantom_case_2mm, tmp_path):
    out = tmp_path / "out"
    argv = ["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema and the tumor core",
            "--out", str(out), "--model", str(random_checkpoint), "--threads", "1"]
    assert main(argv + ["--label-convention", "brats2024"]) == 0
    answer = json.loads((out / "answer.json").read_text())
    entry = answer["label_map"]
    assert entry["file"] == "labels.nii.gz" and entry["convention"] == "brats2024"
    assert entry["labels"] == {"NETC": 1, "SNFH": 2, "ET": 3, "RC": 4} and entry["left_out"] == []
    src = nib.load(next(phantom_case_2mm.glob("*-t1n.nii.gz")))
    img = nib.load(out / "labels.nii.gz")
    labels = np.asarray(img.dataobj)
    assert img.shape == src.shape and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    masks = {t["concept"]: np.asarray(nib.load(out / t["mask"]).dataobj) > 0 for t in answer["targets"]}
    np.testing.assert_array_equal(labels > 0, masks["ED"] | masks["TC"])
    np.testing.assert_array_equal(labels == 2, masks["ED"] & ~masks["TC"])  # the core paints over edema
    # Answering again without it removes the label map the earlier answer listed.
    assert main(argv) == 0
    assert not (out / "labels.nii.gz").exists() and "label_map" not in json.loads((out / "answer.json").read_text())
