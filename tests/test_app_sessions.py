"""SessionStore: per-session isolation, cached encodings (LRU), re-encoding, query checks, logs."""
from __future__ import annotations

import json
import logging
import threading

import nibabel as nib
import numpy as np
import pytest

from app_fakes import FakeSegmenter, fake_fork, small_case
from vlseg.errors import InputError
from vlseg.app.sessions import AskRequest, CaseRequest, SessionStore


@pytest.fixture
def store(tmp_path):
    return SessionStore(base=FakeSegmenter(), output_dir=tmp_path / "sessions", max_cached=2,
                        max_sessions=10, fork=fake_fork)


def test_sessions_are_isolated(tmp_path, store):
    a_dir = small_case(tmp_path, "CASE-A", shift=2, size=4)
    b_dir = small_case(tmp_path, "CASE-B", shift=12, size=6)
    a, b = store.new_session(), store.new_session()
    assert a != b
    store.set_case(CaseRequest(session_id=a, source=a_dir, label="A"))
    store.set_case(CaseRequest(session_id=b, source=b_dir, label="B"))
    ra = store.ask(AskRequest(session_id=a, query="segment the enhancing tumor"))
    rb = store.ask(AskRequest(session_id=b, query="segment the enhancing tumor"))
    # Each answer is about its own case, with its own volume, in its own folder.
    assert "CASE-A" in ra.text and "CASE-B" not in ra.text
    assert "CASE-B" in rb.text and "CASE-A" not in rb.text
    assert ra.answer_json["targets"][0]["volume_ml"] == pytest.approx(64 * 8 / 1000, abs=0.01)
    assert rb.answer_json["targets"][0]["volume_ml"] == pytest.approx(216 * 8 / 1000, abs=0.01)
    assert ra.answer_dir.is_relative_to(store.output_dir / a)
    assert rb.answer_dir.is_relative_to(store.output_dir / b)
    ma = nib.load(ra.mask_files[0]).get_fdata()
    assert ma.sum() == 64 and ma[2:6, 8:12, 8:12].all()
    # The viewers show each session's own mask.
    va, vb = store.viewer_slice(a, 10, None), store.viewer_slice(b, 10, None)
    assert not np.array_equal(va, vb)
    # A session id that was never issued gets nothing.
    assert store.viewer_slice("not-a-session", 10, None) is None


def test_concurrent_sessions_never_mix(tmp_path, store):
    dirs = [small_case(tmp_path, f"CASE-{i}", shift=2 + 5 * i) for i in range(3)]
    sids = [store.new_session() for _ in dirs]
    store.max_cached = 3
    for sid, d in zip(sids, dirs):
        store.set_case(CaseRequest(session_id=sid, source=d, label=d.name))
    results: dict[str, list[str]] = {sid: [] for sid in sids}

    def worker(sid):
        for _ in range(4):
            results[sid].append(store.ask(AskRequest(session_id=sid, query="the edema")).text)

    threads = [threading.Thread(target=worker, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sid, d in zip(sids, dirs):
        assert len(results[sid]) == 4 and all(d.name + ":" in t for t in results[sid])


def test_lru_eviction_reencodes_and_same_upload_reuses(tmp_path, store):
    dirs = [small_case(tmp_path, f"CASE-{i}", shift=2 + 5 * i) for i in range(3)]
    sids = [store.new_session() for _ in dirs]
    for sid, d in zip(sids, dirs):
        store.set_case(CaseRequest(session_id=sid, source=d, label=d.name, fingerprint=d.name))
    assert store.n_encoded == 2  # max_cached
    first = store.get(sids[0])
    assert first.segmenter is None and first.display is None  # evicted, memory freed
    r = store.ask(AskRequest(session_id=sids[0], query="segment the edema"))
    assert r.reencoded and "CASE-0" in r.text
    seg = store.get(sids[0]).segmenter
    assert isinstance(seg, FakeSegmenter) and seg.n_encodes == 1
    again = store.set_case(CaseRequest(session_id=sids[0], source=dirs[0], label="x",
                                       fingerprint="CASE-0"))
    assert again.reused and seg.n_encodes == 1
    r2 = store.ask(AskRequest(session_id=sids[0], query="and the enhancing tumor"))
    assert not r2.reencoded and seg.n_encodes == 1


def test_bad_queries_and_missing_case(tmp_path, store):
    sid = store.new_session()
    with pytest.raises(InputError, match="no scan is loaded"):
        store.ask(AskRequest(session_id=sid, query="segment the enhancing tumor"))
    with pytest.raises(InputError, match="empty"):
        store.ask(AskRequest(session_id=sid, query="   "))
    with pytest.raises(InputError, match="longer than"):
        store.ask(AskRequest(session_id=sid, query="x" * 501))
    store.set_case(CaseRequest(session_id=sid, source=small_case(tmp_path, "C", shift=3), label="C"))
    r = store.ask(AskRequest(session_id=sid, query="segment the liver"))
    assert r.refused and r.overlay_png is None and r.mask_files == []
    assert json.loads((r.answer_dir / "answer.json").read_text())["refused"] is True


def test_session_records_are_bounded(tmp_path, store):
    ids = [store.new_session() for _ in range(15)]
    assert len(store) == 10
    assert store.ensure(ids[0]) != ids[0]  # expired -> a fresh session
    store.drop(ids[-1])
    assert len(store) == 9 and ids[-1] not in store._sessions


def test_logs_carry_ids_and_timings_not_content(tmp_path, store, caplog):
    folder = small_case(tmp_path, "PATIENT-SMITH-1234", shift=4)
    secret_query = "segment the enhancing tumor of Mr Smith DOB 1950"
    caplog.set_level(logging.DEBUG)
    sid = store.new_session()
    store.set_case(CaseRequest(session_id=sid, source=folder, label="upload"))
    store.ask(AskRequest(session_id=sid, query=secret_query))
    with pytest.raises(InputError):
        store.set_case(CaseRequest(session_id=sid, source=tmp_path / "PATIENT-JONES", label="x"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    app_lines = [r.getMessage() for r in caplog.records if r.name == "vlseg.app"]
    assert any("op=ask" in m and "status=ok" in m and " s=" in m for m in app_lines)
    assert any("op=set_case" in m and "error=InputError" in m for m in app_lines)
    assert all(m.startswith("req=") and len(m.split()[0]) == 12 for m in app_lines)
    for secret in ("Smith", "SMITH", "JONES", "1950", str(tmp_path), ".nii"):
        assert secret not in text
