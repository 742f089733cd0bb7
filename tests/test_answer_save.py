"""An answer's folder holds exactly what its answer.json lists, even across reruns and kills."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vlseg.errors import InputError
from vlseg.io import load_case
from vlseg.segmenter import Answer


def _answer(case, concepts, value=1):
    masks_ras = {}
    for k, c in enumerate(concepts):
        m = np.zeros(case.shape, np.uint8)
        m[10 + k:20 + k, 10:20, 10:20] = value
        masks_ras[c] = m
    return Answer(query="q", text="t", refused=False, intent="segment",
                  targets=[{"concept": c, "mask": f"{c}.nii.gz"} for c in concepts],
                  masks={c: case.to_source(m) for c, m in masks_ras.items()}, masks_ras=masks_ras,
                  relations=None, sequences_used=list(case.present), model={}, timing_s={},
                  case=case)


def _consistent(out):
    """No answer.json, or one whose listed masks all exist beside it and nothing else of ours."""
    if not (out / "answer.json").exists():
        return True
    listed = {t["mask"] for t in json.loads((out / "answer.json").read_text())["targets"]}
    present = {p.name for p in out.glob("*.nii.gz")}
    return listed <= present and not ({"NCR.nii.gz", "ED.nii.gz", "WT.nii.gz"} & present - listed)


def test_rerun_leaves_only_what_the_new_answer_lists(phantom_case_2mm, tmp_path):
    case = load_case(phantom_case_2mm)
    out = tmp_path / "out"
    _answer(case, ["NCR", "ED"]).save(out)
    (out / "notes.txt").write_text("mine")          # the user's own files stay
    (out / "ET.nii.gz").write_bytes(b"mine too")      # not listed by any answer: untouched
    _answer(case, ["WT"]).save(out)
    names = sorted(p.name for p in out.iterdir())  # no staging folder or journal left
    assert names == ["ET.nii.gz", "WT.nii.gz", "answer.json", "notes.txt"]
    assert [t["mask"] for t in json.loads((out / "answer.json").read_text())["targets"]] == ["WT.nii.gz"]
    assert (out / "ET.nii.gz").read_bytes() == b"mine too"


def test_out_that_is_a_file_is_refused(phantom_case_2mm, tmp_path):
    case = load_case(phantom_case_2mm)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        _answer(case, ["WT"]).save(f)
    assert f.read_text() == "x"


# os.replace calls of the second save: 3 atomic writes into the staging folder (WT, ET,
# answer.json), the publish journal, then the publish: WT, ET, answer.json. Kill during staging,
# at the journal, and during the publish.
@pytest.mark.parametrize("kill_after", [1, 3, 4, 5, 6])
def test_killed_between_files_never_disagrees(phantom_case_2mm, tmp_path, kill_after):
    """A process killed after the k-th file moved into place leaves no answer.json that
    disagrees with the masks; the next save cleans up its staging folder."""
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(sys.path[0])!r})
        from tests.test_answer_save import _answer
        from vlseg.io import load_case
        import vlseg.fileio as fileio
        case = load_case({str(phantom_case_2mm)!r})
        _answer(case, ["NCR", "ED"]).save({str(out)!r})
        real, n = os.replace, [0]
        def replace(a, b):
            if n[0] == {kill_after}:
                os._exit(9)          # a kill: no cleanup, no finally
            n[0] += 1
            real(a, b)
        fileio.os.replace = replace
        _answer(case, ["WT", "ET"]).save({str(out)!r})
    """)
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert _consistent(out)
    if kill_after >= 4:   # publishing had begun: the old answer was withdrawn first
        assert not (out / "answer.json").exists()
    else:                 # still staging: the old answer and its masks are intact
        assert [t["mask"] for t in json.loads((out / "answer.json").read_text())["targets"]] == \
            ["NCR.nii.gz", "ED.nii.gz"]
    case = load_case(phantom_case_2mm)
    _answer(case, ["TC"]).save(out)
    assert _consistent(out) and not list(out.glob(".vlseg-*"))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["TC.nii.gz"]


class _BrokenExporter:
    """An exporter that stages part of its file and then fails (like highdicom on bad input)."""

    def names(self, files):
        return ["broken.dcm"]

    def write(self, files, stage):
        (stage / "broken.dcm").write_bytes(b"half")
        raise ValueError("duplicate SOP Instance UID")


def test_failing_exporter_publishes_the_masks_with_a_warning(phantom_case_2mm, tmp_path):
    """Issue 26 point 4: an exporter's failure never loses the NIfTI masks and answer.json."""
    from vlseg.segmenter.writer import AnswerFiles, NiftiMasks, write_answer

    case = load_case(phantom_case_2mm)
    ans = _answer(case, ["NCR", "ED"])
    out = tmp_path / "out"
    doc = {**ans.to_json(), "warnings": ["Thick slices."]}
    write_answer(out, doc, AnswerFiles(case=case, masks_ras=ans.masks_ras, model={}),
                 exporters=(NiftiMasks(), _BrokenExporter()))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ED.nii.gz", "NCR.nii.gz", "answer.json"]  # the half-written file is gone
    warnings = json.loads((out / "answer.json").read_text())["warnings"]
    assert warnings[0] == "Thick slices."
    assert "broken.dcm could not be written (ValueError: duplicate SOP Instance UID)" in warnings[1]
    assert _consistent(out)
