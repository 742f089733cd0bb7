"""A cohort's state on disk and the two tables made from it.

The output folder is the only state, so a rerun, a resumed run and a multi-process run all
read the same thing:

  OUT/<case_id>/answer.json (+ masks)   the case is *done* when answer.json is there (it is
                                         published last, ``Answer.save``) and names the same
                                         query and the same weights (checkpoint + adapter sha256)
  OUT/.vlseg-cohort/failed/<case_id>.json   the last failure of a case (removed when it succeeds)
  OUT/.vlseg-cohort/stored/<case_id>.json   with ``--store``: the DICOM-SEG and SR of the answer
                                         were sent to the server (a case is done only then)
  OUT/.vlseg-cohort/log-rank<r>.jsonl   per-case status and stage times of process r

``measurements.csv`` and ``failures.csv`` are rebuilt from these after every run, in the
cohort's case order, so one process or many write byte-identical tables.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from vlseg.cohort.cases import CaseRef
from vlseg.fileio import write_bytes_atomic, write_json_atomic

# vlseg.segmenter.ANSWER_FILE; not imported from there, which would load torch before the
# cohort's argument checks (a test keeps the two equal).
ANSWER_FILE = "answer.json"
STATE_DIR = ".vlseg-cohort"
MEASUREMENTS = "measurements.csv"
FAILURES = "failures.csv"

BASE_COLUMNS = ("case_id", "concept", "present", "volume_ml")
INTERVAL_COLUMNS = ("volume_ml_interval_low", "volume_ml_interval_high")
MEASURE_COLUMNS = ("n_lesions", "max_diameter_mm", "perpendicular_diameter_mm", "hemisphere",
                   "crosses_midline", "lobes", "sequences_used", "model_sha256", "adapter_sha256")
FAILURE_COLUMNS = ("case", "error")


def weights_id(model_info: Mapping[str, Any]) -> dict[str, str | None]:
    """What identifies the weights of an answer: base checkpoint sha256 and adapter sha256."""
    adapter = model_info.get("adapter")
    return {"model_sha256": model_info.get("checkpoint_sha256"),
            "adapter_sha256": adapter.get("sha256") if isinstance(adapter, Mapping) else None}


def read_answer(out: Path, case_id: str) -> dict[str, Any] | None:
    """The case's answer.json, or None if there is none (or it cannot be read)."""
    try:
        doc = json.loads((out / case_id / ANSWER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_done(answer: Mapping[str, Any] | None, query: str, weights: Mapping[str, str | None],
            confidence: float | None = None) -> bool:
    """An answer counts for this run only if it answered the same query with the same weights
    (and, for measured answers, at the same interval confidence)."""
    if answer is None or answer.get("query") != query or not isinstance(answer.get("model"), Mapping):
        return False
    if confidence is not None and answer.get("confidence") not in (None, confidence):
        return False
    return weights_id(answer["model"]) == dict(weights)


# ----------------------------------------------------------------------- failure records
def _failure_path(out: Path, case_id: str) -> Path:
    return out / STATE_DIR / "failed" / f"{case_id}.json"


def _stored_path(out: Path, case_id: str) -> Path:
    return out / STATE_DIR / "stored" / f"{case_id}.json"


def record_stored(out: Path, case_id: str, instance_uids: Iterable[str]) -> None:
    write_json_atomic(_stored_path(out, case_id), {"case": case_id, "instances": list(instance_uids)})


def is_stored(out: Path, case_id: str) -> bool:
    """The case's DICOM-SEG and SR report were sent to the server (``--store``)."""
    return _stored_path(out, case_id).is_file()


def record_failure(out: Path, case_id: str, error: str, *, query: str) -> None:
    write_json_atomic(_failure_path(out, case_id), {"case": case_id, "error": error, "query": query})


def clear_failure(out: Path, case_id: str) -> None:
    _failure_path(out, case_id).unlink(missing_ok=True)


def read_failure(out: Path, case_id: str) -> str | None:
    try:
        return str(json.loads(_failure_path(out, case_id).read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def append_log(out: Path, rank: int, record: Mapping[str, Any]) -> None:
    """One JSON line per case to ``log-rank<r>.jsonl`` (stage times for ``bench/cohort.py``)."""
    path = out / STATE_DIR / f"log-rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(record)) + "\n")


# ----------------------------------------------------------------------- tables
def _interval(target: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """A target's ``volume_ml_interval`` (answer.json writes ``[low, high]`` or nothing)."""
    iv = target.get("volume_ml_interval")
    return tuple(iv) if iv else None


def measurement_rows(case_id: str, answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per target of an answer.json (a question with no target gives no row)."""
    w = weights_id(answer.get("model") or {})
    rows = []
    for t in answer.get("targets") or []:
        if not isinstance(t, Mapping):
            continue
        row: dict[str, Any] = {"case_id": case_id, "concept": t.get("concept"), "present": t.get("present"),
                               "volume_ml": t.get("volume_ml")}
        iv = _interval(t)
        if iv is not None:
            row["volume_ml_interval_low"], row["volume_ml_interval_high"] = iv
        for k in ("n_lesions", "max_diameter_mm", "perpendicular_diameter_mm", "hemisphere",
                  "crosses_midline"):
            row[k] = t.get(k)
        row["lobes"] = ";".join(map(str, t.get("lobes") or []))
        row["sequences_used"] = ";".join(map(str, answer.get("sequences_used") or []))
        row.update(w)
        rows.append(row)
    return rows


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _csv(columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue().encode()


def write_tables(out: Path, cases: list[CaseRef], query: str,
                 weights: Mapping[str, str | None], confidence: float | None = None, *,
                 store: bool = False) -> tuple[int, int]:
    """Rebuild ``measurements.csv`` and ``failures.csv`` for ``cases`` from the output folder.

    A case is answered when its answer.json matches the query and weights (and, with ``store``,
    its results were sent: :func:`is_stored`); otherwise it is a failure (its recorded error, or
    "not run" when no process reached it). Returns (answered, failed).
    """
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for ref in cases:
        answer = read_answer(out, ref.case_id)
        if is_done(answer, query, weights, confidence) and (not store or is_stored(out, ref.case_id)):
            rows.extend(measurement_rows(ref.case_id, answer))  # type: ignore[arg-type]
        else:
            failures.append({"case": ref.case_id,
                             "error": read_failure(out, ref.case_id) or "not run (interrupted?)"})
    with_interval = any("volume_ml_interval_low" in r for r in rows)
    columns = BASE_COLUMNS + (INTERVAL_COLUMNS if with_interval else ()) + MEASURE_COLUMNS
    write_bytes_atomic(out / MEASUREMENTS, _csv(columns, rows))
    write_bytes_atomic(out / FAILURES, _csv(FAILURE_COLUMNS, failures))
    return len(cases) - len(failures), len(failures)
