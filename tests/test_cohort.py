"""`vlseg segment --cases`: case discovery, tables, failures, exit codes, resuming.

The atlas registration (seconds per case, tested elsewhere) is replaced by a quick failure in
most tests here, so answers come "without location"; one test keeps it.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from vlseg.cli import main
from vlseg.cohort import find_cases, shard
from vlseg.cohort.tables import write_tables
from vlseg.errors import InputError, VlsegError
from vlseg.reasoning import AtlasLocator

QUERY = "how big is the enhancing tumor?"


@pytest.fixture
def no_atlas(monkeypatch):
    def fail(*a, **k):
        raise VlsegError("atlas registration skipped in this test")
    monkeypatch.setattr(AtlasLocator, "fit", classmethod(fail))


@pytest.fixture
def cohort(phantom_case_2mm, tmp_path):
    """A folder of 3 case folders: two good (copies of one phantom), one without scans."""
    root = tmp_path / "cohort"
    for name in ("case-a", "case-b"):
        shutil.copytree(phantom_case_2mm, root / name)
    (root / "case-c").mkdir()
    (root / "case-c" / "notes.txt").write_text("no scans here\n")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ discovery
def test_find_cases_accepts_folders_lists_and_case_folders(cohort, tmp_path):
    refs = find_cases([cohort])
    assert [r.case_id for r in refs] == ["case-a", "case-b", "case-c"]
    assert [r.case_id for r in find_cases([cohort / "case-b"])] == ["case-b"]  # one case folder
    listing = tmp_path / "cases.txt"
    listing.write_text("# my cohort\ncohort/case-b\n\n" + str(cohort / "case-a") + "\n")
    assert [r.case_id for r in find_cases([listing])] == ["case-b", "case-a"]
    # The same folder twice counts once; two different folders with one name are refused.
    assert len(find_cases([cohort / "case-a", cohort / "case-a"])) == 1
    other = tmp_path / "elsewhere" / "case-a"
    shutil.copytree(cohort / "case-a", other)
    with pytest.raises(InputError, match="two cases are named 'case-a'"):
        find_cases([cohort, other])
    with pytest.raises(InputError, match="not found"):
        find_cases([tmp_path / "missing"])
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("nowhere/\n")
    with pytest.raises(InputError, match="line 1"):
        find_cases([bad_list])


def test_shard_splits_every_case_once():
    cases = list(range(7))
    parts = [shard(cases, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == cases and [len(p) for p in parts] == [3, 2, 2]


# ------------------------------------------------------------------ arguments (exit 2, no model)
@pytest.mark.parametrize("extra, message", [
    (["--cases", "MISSING"], "not found"),
    (["--cases", "COHORT", "--case", "COHORT/case-a"], "not both"),
    (["--cases", "COHORT", "--threads", "0"], "--threads"),
    (["--cases", "COHORT", "--confidence", "1.5"], "--confidence"),
    (["--case", "COHORT/case-a", "--confidence", "0"], "--confidence"),
    (["--cases", "COHORT", "--out", "COHORT/case-a"], "input case folders"),
    (["--case", "COHORT/case-a", "--overwrite"], "--overwrite goes with --cases"),
    (["--cases", "COHORT", "--series", "t1c=7"], "--series goes with --case"),
    (["--cases", "COHORT", "--query", " "], "--query is empty"),
    (["--cases", "COHORT", "--query", "what grade is this tumor and how should it be treated?"],
     "the query is refused"),
])
def test_bad_arguments_exit_2_before_the_model_loads(cohort, tmp_path, monkeypatch, capsys, extra, message):
    from vlseg.segmenter import Segmenter

    def no_load(*a, **k):
        raise AssertionError("the model must not load for bad arguments")
    monkeypatch.setattr(Segmenter, "from_pretrained", classmethod(no_load))
    argv = ["segment", "--query", QUERY, "--out", str(tmp_path / "out")]
    argv += [a.replace("COHORT", str(cohort)).replace("MISSING", str(tmp_path / "nope")) for a in extra]
    if "--out" in extra:
        argv = [a for i, a in enumerate(argv) if i not in (3, 4)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_the_cohort_model_gets_the_parser_that_checked_the_query(cohort, tmp_path, monkeypatch):
    from vlseg.language import QueryParser
    from vlseg.segmenter import Segmenter

    got = {}

    def record(cls, *a, **k):
        got.update(k)
        raise VlsegError("stop after the checks")
    monkeypatch.setattr(Segmenter, "from_pretrained", classmethod(record))
    assert main(["segment", "--cases", str(cohort), "--query", QUERY,
                 "--out", str(tmp_path / "out")]) == 2
    assert isinstance(got["parser"], QueryParser) and got["confidence"] == 0.9


# ------------------------------------------------------------------ a run
def test_cohort_tables_failures_and_resume(random_checkpoint, cohort, tmp_path, capsys, no_atlas):
    out = tmp_path / "out"
    argv = ["segment", "--cases", str(cohort), "--query", QUERY, "--out", str(out),
            "--model", str(random_checkpoint), "--threads", "1"]
    assert main(argv) == 3  # case-c failed, the others were answered
    for case in ("case-a", "case-b"):
        doc = json.loads((out / case / "answer.json").read_text())
        assert doc["query"] == QUERY and (out / case / "ET.nii.gz").is_file()
    assert not (out / "case-c" / "answer.json").exists()

    rows = _rows(out / "measurements.csv")
    assert [(r["case_id"], r["concept"]) for r in rows] == [("case-a", "ET"), ("case-b", "ET")]
    assert list(rows[0])[:4] == ["case_id", "concept", "present", "volume_ml"]
    for col in ("n_lesions", "max_diameter_mm", "perpendicular_diameter_mm", "hemisphere",
                "crosses_midline", "lobes", "sequences_used", "model_sha256"):
        assert col in rows[0]
    assert rows[0]["sequences_used"] == "t1n;t1c;t2w;t2f" and len(rows[0]["model_sha256"]) == 64
    assert rows[0]["volume_ml"] == rows[1]["volume_ml"]  # the same scan twice

    # failures.csv holds the one line the single-case CLI prints for that case.
    failures = _rows(out / "failures.csv")
    assert [f["case"] for f in failures] == ["case-c"]
    capsys.readouterr()
    assert main(["segment", "--case", str(cohort / "case-c"), "--query", QUERY, "--out",
                 str(tmp_path / "single"), "--model", str(random_checkpoint)]) == 2
    single = capsys.readouterr().err.strip()
    assert single == f"vlseg segment: error: {failures[0]['error']}"

    # Rerun: nothing is redone; the fixed case is answered; the tables are rebuilt.
    stamp = (out / "case-a" / "answer.json").stat().st_mtime_ns
    shutil.rmtree(cohort / "case-c")
    shutil.copytree(cohort / "case-a", cohort / "case-c")
    assert main(argv) == 0
    assert (out / "case-a" / "answer.json").stat().st_mtime_ns == stamp
    assert [r["case_id"] for r in _rows(out / "measurements.csv")] == ["case-a", "case-b", "case-c"]
    assert _rows(out / "failures.csv") == []
    assert "3 already answered" not in capsys.readouterr().out  # 2 were, 1 was new

    # A different query redoes every case; --overwrite redoes them with the same query.
    assert main(argv[:4] + ["segment the edema"] + argv[5:]) == 0
    assert {r["concept"] for r in _rows(out / "measurements.csv")} == {"ED"}
    assert main(argv + ["--overwrite"]) == 0
    assert (out / "case-a" / "answer.json").stat().st_mtime_ns != stamp

    # vlseg evaluate takes the cohort folder as it is (CSV files and state folder ignored).
    assert main(["evaluate", "--pred", str(out), "--gt", str(cohort), "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert sorted(report["cases"]) == ["case-a", "case-b", "case-c"]
    assert all(list(c["concepts"]) == ["ET"] for c in report["cases"].values())
    assert report["settings"]["definition"] == "brats2023"


def test_half_written_case_is_not_done(random_checkpoint, cohort, tmp_path, no_atlas):
    """A case whose save was interrupted (masks staged or moved, no answer.json) is redone."""
    out = tmp_path / "out"
    (out / "case-a" / ".vlseg-staging-x").mkdir(parents=True)
    (out / "case-a" / "ET.nii.gz").write_bytes(b"partial")
    argv = ["segment", "--cases", str(cohort / "case-a"), "--query", QUERY, "--out", str(out),
            "--model", str(random_checkpoint), "--threads", "1"]
    assert main(argv) == 0
    assert json.loads((out / "case-a" / "answer.json").read_text())["query"] == QUERY
    assert not (out / "case-a" / ".vlseg-staging-x").exists()


def test_resume_redoes_answers_at_another_confidence():
    from vlseg.cohort.tables import is_done

    weights = {"model_sha256": "a" * 64, "adapter_sha256": None}
    answer = {"query": "q", "model": {"checkpoint_sha256": "a" * 64}, "confidence": 0.9}
    assert is_done(answer, "q", weights, 0.9)
    assert not is_done(answer, "q", weights, 0.8)
    assert is_done(dict(answer, confidence=None), "q", weights, 0.8)  # refused: no intervals


def test_tables_add_interval_columns_when_answers_have_them(tmp_path):
    from vlseg.cohort.cases import CaseRef

    model = {"checkpoint_sha256": "a" * 64, "adapter": None}
    for i, interval in enumerate(([1.5, 3.0], None)):
        target = {"concept": "ET", "present": True, "volume_ml": 2.0, "n_lesions": 1, "lobes": ["frontal"],
                  "max_diameter_mm": 20.0, "perpendicular_diameter_mm": 10.0, "hemisphere": "left",
                  "crosses_midline": False}
        if interval:
            target["volume_ml_interval"] = interval
        (tmp_path / f"c{i}").mkdir()
        (tmp_path / f"c{i}" / "answer.json").write_text(json.dumps(
            {"query": "q", "targets": [target], "sequences_used": ["t1c"], "model": model}))
    refs = [CaseRef(f"c{i}", tmp_path / f"c{i}") for i in range(3)]
    assert write_tables(tmp_path, refs, "q", {"model_sha256": "a" * 64, "adapter_sha256": None}) == (2, 1)
    rows = _rows(tmp_path / "measurements.csv")
    assert rows[0]["volume_ml_interval_low"] == "1.5" and rows[0]["volume_ml_interval_high"] == "3.0"
    assert rows[1]["volume_ml_interval_low"] == ""
    assert rows[0]["crosses_midline"] == "false" and rows[0]["adapter_sha256"] == ""
    assert _rows(tmp_path / "failures.csv") == [{"case": "c2", "error": "not run (interrupted?)"}]
    # Another model's answers do not count.
    assert write_tables(tmp_path, refs, "q", {"model_sha256": "b" * 64, "adapter_sha256": None}) == (0, 3)


def test_one_line_errors_for_the_cli_the_mcp_server_and_failures_csv():
    from vlseg.errors import one_line

    assert one_line(InputError("bad\nsecond line", "/x")) == "/x: bad"
    assert one_line(KeyError()) == "KeyError" == one_line(KeyError(), typed=True)
    assert one_line(ValueError("x" * 400)) == "x" * 300
    # failures.csv: the type of an unexpected error, never cut; a VlsegError as the CLI prints it
    assert one_line(ValueError("x" * 400), typed=True, limit=None) == "ValueError: " + "x" * 400
    assert one_line(InputError("bad", "/x"), typed=True, limit=None) == "/x: bad"


def test_tables_agree_with_the_segmenter_and_no_progress_is_an_option():
    from vlseg import segmenter
    from vlseg.cli import build_parser
    from vlseg.cohort import tables

    assert tables.ANSWER_FILE == segmenter.ANSWER_FILE
    assert tables._interval({"volume_ml_interval": [1.5, 3.0]}) == (1.5, 3.0)
    assert tables._interval({"volume_ml_interval": None}) is None and tables._interval({}) is None
    base = ["segment", "--cases", "x", "--query", "q", "--out", "o"]
    assert build_parser().parse_args(base + ["--no-progress"]).no_progress is True
    assert build_parser().parse_args(base).no_progress is False
