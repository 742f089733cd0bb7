"""`vlseg segment` / `vlseg serve` check everything that needs no model first (issue 10, point 4),
and every unexpected exception at the CLI boundary is one line plus a log file (point 3)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from vlseg.cli import main
from vlseg.segmenter import Segmenter


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything tries to load a model."""
    calls = []

    def refuse(cls, *a, **k):
        calls.append(a)
        raise AssertionError("the model was loaded before the cheap checks")

    monkeypatch.setattr(Segmenter, "from_pretrained", classmethod(refuse))
    return calls


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _segment(case, out, *extra):
    return main(["segment", "--case", str(case), "--query", "segment the edema", "--out", str(out),
                 *extra])


def test_out_is_a_file_fails_fast_without_loading_the_model(phantom_case_2mm, tmp_path, capsys, no_model):
    out = tmp_path / "answer.txt"
    out.write_text("not a folder")
    t0 = time.perf_counter()
    rc = _segment(phantom_case_2mm, out)
    took = time.perf_counter() - t0
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and no_model == [] and took < 3.0, took
    assert "--out" in line and "is a file, not a folder" in line
    assert out.read_text() == "not a folder"
    print(f"\n--out is a file: exit 2 in {took * 1000:.0f} ms (in process)")


@pytest.mark.slow
def test_out_is_a_file_in_a_fresh_process(phantom_case_2mm, tmp_path):
    out = tmp_path / "answer.txt"
    out.write_text("x")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vlseg", "segment", "--case", str(phantom_case_2mm),
                           "--query", "segment the edema", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert proc.returncode == 2 and "is a file" in _one_line(proc.stderr)
    assert took < 30.0, took  # generous: measured ~0.5 s on a quiet 2-core machine
    print(f"\n--out is a file: exit 2 in {took:.2f} s (fresh python process, imports included)")


@pytest.mark.parametrize("make_out, message", [
    (lambda tmp: tmp / "file.txt" / "sub", "is a file, not a folder"),  # under a file
    (lambda tmp: "/proc/vlseg-out", "cannot be written"),  # a read-only place, even for root
    (lambda tmp: "/proc/vlseg/deeper/out", "cannot be written"),
])
def test_unwritable_outputs_fail_before_the_model(phantom_case_2mm, tmp_path, capsys, no_model,
                                                  make_out, message):
    (tmp_path / "file.txt").write_text("x")
    rc = _segment(phantom_case_2mm, make_out(tmp_path))
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and no_model == [] and message in line


def test_writable_output_check_leaves_nothing_behind(tmp_path):
    from vlseg.io import check_output_dir

    assert check_output_dir(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"
    assert check_output_dir(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no probe, nothing created


def test_bad_inputs_fail_before_the_model(tmp_path, capsys, no_model):
    import nibabel as nib
    import numpy as np

    html = tmp_path / "scan-t1n.nii.gz"
    html.write_text("<html>not a scan</html>")
    tiny = tmp_path / "tiny-t1n.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32) + 1,
                             np.eye(4)), tiny)
    for argv, message in ((["--t1n", str(html)], "not a NIfTI file"),
                          (["--t1n", str(tmp_path / "missing-t1n.nii.gz")], "not found"),
                          (["--t1n", str(tiny)], "too small for a brain MRI"),
                          (["--case", str(tmp_path / "nowhere")], "nowhere")):
        rc = main(["segment", *argv, "--query", "segment the edema", "--out", str(tmp_path / "o")])
        line = _one_line(capsys.readouterr().err)
        assert rc == 2 and message in line, (argv, line)
    assert no_model == [] and not (tmp_path / "o").exists()


def test_bad_arguments_fail_before_the_model(phantom_case_2mm, tmp_path, capsys, no_model):
    rc = _segment(phantom_case_2mm, tmp_path / "o", "--threads", "0")
    assert rc == 2 and "--threads" in _one_line(capsys.readouterr().err) and no_model == []


def test_library_errors_name_parameters_the_cli_shows_its_flags(phantom_case_2mm, tmp_path, capsys, no_model):
    from vlseg.cli import in_flag_words
    from vlseg.errors import InputError
    from vlseg.io.dicom_case import resolve_study

    with pytest.raises(InputError, match="series= overrides go with a DICOM study folder"):
        resolve_study(phantom_case_2mm, {"t1c": "7"})
    rc = _segment(phantom_case_2mm, tmp_path / "o", "--series", "t1c=7")
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "--series overrides go with a DICOM study folder" in line and "series=" not in line
    for problem, shown in (
            ("device='cuda' was asked for but no CUDA GPU is available; use device='cpu'",
             "--device cuda was asked for but no CUDA GPU is available; use --device cpu"),
            ("series='AX FLAIR' matches 2 series", "--series 'AX FLAIR' matches 2 series"),
            ("pick one with series=t1c=NUMBER; the study holds: #3 'AX T1'",
             "pick one with --series t1c=NUMBER; the study holds: #3 'AX T1'"),
            ("threads=0: must be at least 1", "--threads 0: must be at least 1")):
        assert in_flag_words(InputError(problem, "study")) == f"study: {shown}"


def test_unexpected_errors_are_one_line_and_logged(phantom_case_2mm, tmp_path, capsys, monkeypatch):
    def boom(cls, *a, **k):
        raise RuntimeError("Sigma must be greater than zero.\nITK ERROR: deep inside")

    monkeypatch.setattr(Segmenter, "from_pretrained", classmethod(boom))
    monkeypatch.setenv("VLSEG_LOG_DIR", str(tmp_path / "logs"))
    rc = _segment(phantom_case_2mm, tmp_path / "o")
    line = _one_line(capsys.readouterr().err)
    assert rc == 1 and "internal error (RuntimeError: Sigma must be greater than zero.)" in line
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in line
    text = logs[0].read_text()
    assert "Traceback" in text and "ITK ERROR: deep inside" in text and "boom" in text


def test_serve_checks_folders_and_port_before_the_model(tmp_path, capsys, no_model):
    import socket

    (tmp_path / "file").write_text("x")
    rc = main(["serve", "--outputs", str(tmp_path / "file"), "--samples", str(tmp_path / "s")])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "--outputs" in line and "is a file" in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = main(["serve", "--outputs", str(tmp_path / "o"), "--samples", str(tmp_path / "s"),
                   "--port", str(port)])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and f"cannot listen on 127.0.0.1:{port}" in line
    rc = main(["serve", "--outputs", str(tmp_path / "o"), "--allowed-host", "http://evil/"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "--allowed-host 'http://evil/': not a host name" in line
    assert no_model == []
