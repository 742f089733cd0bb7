"""Cohorts at scale: flat memory over 30 cases, and 2 processes (accelerate, gloo) writing the
same tables as one."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from vlseg.cohort import find_cases
from vlseg.cohort.runner import run_cases
from vlseg.errors import VlsegError
from vlseg.reasoning import AtlasLocator

QUERY = "how big is the enhancing tumor?"


@pytest.fixture(scope="module")
def small_cases(tmp_path_factory):
    """Three 3-mm phantoms (80x80x52), each behind 10 case folders of symlinks: 30 cases."""
    from vlseg.synth import write_case

    src = tmp_path_factory.mktemp("src")
    made = [write_case(src, seed=s, spacing_mm=3.0) for s in range(3)]
    root = tmp_path_factory.mktemp("cases")
    for i in range(30):
        folder = root / f"case-{i:02d}"
        folder.mkdir()
        for f in Path(made[i % 3]).iterdir():
            (folder / f.name).symlink_to(f)
    return root


def test_memory_stays_flat_over_30_cases(small_cases, tmp_path, monkeypatch):
    """RSS after the last case within 200 MB of RSS after the third (a 4-mm random tiny model)."""
    from vlseg.model import build_model
    from vlseg.model.config import load_named_config
    from vlseg.segmenter import Segmenter

    def no_atlas(*a, **k):
        raise VlsegError("atlas skipped in this test")
    monkeypatch.setattr(AtlasLocator, "fit", classmethod(no_atlas))
    torch.manual_seed(0)
    cfg = load_named_config("tiny").to_dict() | {"spacing_mm": 4.0, "channels": [4, 8, 16, 32], "bias_correction": "none"}
    seg = Segmenter(model=build_model(cfg))
    rss: list[int] = []
    summary = run_cases(seg, find_cases([small_cases]), query=QUERY, out=tmp_path / "out",
                        progress=False, after_case=lambda ref, rec: rss.append(psutil.Process().memory_info().rss))
    assert summary.answered == 30 and not summary.failed
    grown_mb = (rss[-1] - rss[2]) / 2**20
    assert grown_mb < 200, f"RSS grew {grown_mb:.0f} MB from case 3 to case 30"


def test_two_processes_write_the_tables_one_process_writes(phantom_case_2mm, tmp_path):
    """accelerate launch, 2 CPU processes over gloo: same measurements.csv and failures.csv."""
    cohort = tmp_path / "cohort"
    for name in ("a", "b", "c"):
        shutil.copytree(phantom_case_2mm, cohort / name)
    (cohort / "d").mkdir()  # a case that fails
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "vlseg", "segment", "--cases", str(cohort), "--query", QUERY]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 3, one.stderr[-2000:]
    accelerate = Path(sys.executable).with_name("accelerate")
    two = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", *common,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode != 0  # the launcher reports the failed case (its own exit status)
    logs = sorted((tmp_path / "two" / ".vlseg-cohort").glob("log-rank*.jsonl"))
    assert [p.name for p in logs] == ["log-rank0.jsonl", "log-rank1.jsonl"], two.stderr[-2000:]
    for name in ("measurements.csv", "failures.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
