"""SessionStore: per-session isolation, cached encodings (LRU), re-encoding, query checks, logs,
the chat queue (questions kept in order), downloads named by case, and the viewer's data."""
from __future__ import annotations

import json
import logging
import threading

import nibabel as nib
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
    # The viewers show each session's own mask (their own sheets, centred on their own tumour).
    va, vb = store.viewer_payload(a), store.viewer_payload(b)
    assert va["key"] != vb["key"] and va["planes"][0]["mask"] != vb["planes"][0]["mask"]
    assert str(store.output_dir / a) in va["planes"][0]["mask"]
    assert [c + o for c, o in zip(va["center"], va["offset"])] != [c + o for c, o in zip(vb["center"], vb["offset"])]
    # A session id that was never issued gets nothing.
    assert store.viewer_payload("not-a-session") is None


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
    assert first.segmenter is None and first.viewer is None  # evicted, memory freed
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


def test_chat_queue_keeps_every_question_in_order(tmp_path, store):
    sid = store.new_session()
    store.set_case(CaseRequest(session_id=sid, source=small_case(tmp_path, "Q", shift=3), label="Q"))
    assert store.submit(sid, "   ") is None  # empty: nothing recorded
    t1 = store.submit(sid, "segment the enhancing tumor")
    t2 = store.submit(sid, "segment  the\nedema")
    assert [t.question for t in store.turns(sid)] == ["segment the enhancing tumor", "segment the edema"]
    assert all(t.answer is None and t.state == "queued" for t in store.turns(sid))
    first = store.next_pending(sid)
    assert first.id == t1.id and store.turns(sid)[0].state == "answering"
    second = store.next_pending(sid)  # a second worker takes the next one, never the same
    assert second.id == t2.id and store.next_pending(sid) is None
    store.finish(second, "answer 2")
    store.finish(first, "answer 1")
    assert [(t.question, t.answer) for t in store.turns(sid)] == [
        ("segment the enhancing tumor", "answer 1"), ("segment the edema", "answer 2")]
    note = store.submit(sid, "Load X", kind="note", answer="Loaded X")
    assert note.state == "done" and store.next_pending(sid) is None


def test_downloads_named_by_case_and_refusals_bring_no_result(tmp_path, store):
    sid = store.new_session()
    up = small_case(tmp_path, "BraTS-GLI-00007-000", shift=3)
    files = {p.name.rsplit("-", 1)[1].split(".")[0]: p for p in up.glob("*-t*.nii.gz")}
    resp = store.set_case(CaseRequest(session_id=sid, source=files, label=None))
    assert resp.case_id == "BraTS-GLI-00007-000" and resp.label == "BraTS-GLI-00007-000"
    plain = store.ask(AskRequest(session_id=sid, query="segment the enhancing tumor"))
    assert [p.name for p in plain.downloads] == ["BraTS-GLI-00007-000_ET.nii.gz", "BraTS-GLI-00007-000_all.zip"]
    r = store.ask(AskRequest(session_id=sid, query="segment the enhancing tumor", probability_maps=True))
    assert r.has_result and [p.name for p in r.downloads] == [
        "BraTS-GLI-00007-000_ET.nii.gz", "BraTS-GLI-00007-000_ET_probability.nii.gz",
        "BraTS-GLI-00007-000_ET_uncertainty.nii.gz", "BraTS-GLI-00007-000_all.zip"]
    assert [p.name for p in r.mask_files] == ["ET.nii.gz"]  # the API keeps answer.json's names
    assert "<table>" in r.table_html and r.overlay_png is not None
    refused = store.ask(AskRequest(session_id=sid, query="segment the liver"))
    assert not refused.has_result and refused.downloads == [] and refused.table_html == ""


def test_viewer_survives_eviction_and_switches_sequence(tmp_path, store):
    dirs = [small_case(tmp_path, f"V-{i}", shift=2 + 5 * i) for i in range(3)]
    sids = [store.new_session() for _ in dirs]
    store.set_case(CaseRequest(session_id=sids[0], source=dirs[0], label="V-0"))
    store.ask(AskRequest(session_id=sids[0], query="segment the enhancing tumor"))
    before = store.viewer_payload(sids[0])
    assert [c["code"] for c in before["concepts"]] == ["ET"] and before["seq"] == "t1c"
    for sid, d in zip(sids[1:], dirs[1:]):  # two more cases push the first out of the LRU
        store.set_case(CaseRequest(session_id=sid, source=d, label=d.name))
    assert store.get(sids[0]).viewer is None and store.get(sids[0]).masks_ras == {}
    after = store.viewer_payload(sids[0], "t2f")  # re-read from disk; masks unpacked
    assert [c["code"] for c in after["concepts"]] == ["ET"] and after["seq"] == "t2f"
    assert after["planes"][0]["mask"] == before["planes"][0]["mask"]
    assert store.viewer_sequences(sids[0]) == (["t1n", "t1c", "t2w", "t2f"], "t2f")


def test_evicted_viewer_is_not_kept_and_masks_stay_packed(tmp_path, store, monkeypatch):
    import vlseg.io

    dirs = [small_case(tmp_path, f"W-{i}", shift=2 + 5 * i) for i in range(3)]
    sids = [store.new_session() for _ in dirs]
    store.set_case(CaseRequest(session_id=sids[0], source=dirs[0], label="W-0"))
    store.ask(AskRequest(session_id=sids[0], query="segment the enhancing tumor"))
    for sid, d in zip(sids[1:], dirs[1:]):
        store.set_case(CaseRequest(session_id=sid, source=d, label=d.name))
    first = store.get(sids[0])
    packed = dict(first.packed_masks)
    assert first.segmenter is None and packed and first.masks_ras == {}
    for seq in (None, "t2f"):  # drawing the evicted session holds nothing past the call
        p = store.viewer_payload(sids[0], seq)
        assert [c["code"] for c in p["concepts"]] == ["ET"]
        assert first.viewer is None and first.masks_ras == {} and first.packed_masks == packed
    assert store.n_encoded == 2
    # Re-encoding reads the scan once and keeps the masks found before the eviction.
    reads = []
    real = vlseg.io.open_case
    monkeypatch.setattr(vlseg.io, "open_case", lambda src: reads.append(src) or real(src))
    r = store.ask(AskRequest(session_id=sids[0], query="segment the edema"))
    assert r.reencoded and len(reads) == 1 and first.viewer is not None
    assert sorted(first.masks_ras) == ["ED", "ET"] and first.packed_masks == {}
    # The legend shows the latest answer's regions only (issue 22); the earlier masks are kept.
    assert [c["code"] for c in store.viewer_payload(sids[0])["concepts"]] == ["ED"]
    assert len(reads) == 1


def test_reencode_reuses_an_existing_viewer(tmp_path, store):
    d = small_case(tmp_path, "R-0", shift=3)
    sid = store.new_session()
    store.set_case(CaseRequest(session_id=sid, source=d, label="R-0"))
    s = store.get(sid)
    viewer = s.viewer
    s.segmenter = None  # the encoding dropped, the viewer still held
    r = store.ask(AskRequest(session_id=sid, query="segment the edema"))
    assert r.reencoded and s.viewer is viewer


def test_ask_without_pictures_skips_the_ui_work(tmp_path, store):
    sid = store.new_session()
    store.set_case(CaseRequest(session_id=sid, source=small_case(tmp_path, "P-0", shift=3), label="P-0"))
    r = store.ask(AskRequest(session_id=sid, query="segment the edema", pictures=False))
    assert [p.name for p in r.mask_files] == ["ED.nii.gz"] and r.answer_json["targets"]
    assert r.overlay_png is None and r.table_html == "" and r.downloads == [] and r.center is None
    assert not (r.answer_dir / "overlay.png").exists() and not (r.answer_dir / "download").exists()
    assert store.get(sid).masks() == {}  # the viewer's masks are the UI's too
    r2 = store.ask(AskRequest(session_id=sid, query="segment the edema"))
    assert r2.overlay_png is not None and r2.table_html and r2.downloads


def test_evictions_and_quiet_spells_give_memory_back(tmp_path, store, monkeypatch):
    from vlseg.app import sessions

    trims: list[int] = []
    monkeypatch.setattr(sessions, "release_memory", lambda: trims.append(1))
    dirs = [small_case(tmp_path, f"CASE-{i}", shift=2 + 5 * i) for i in range(3)]
    sids = [store.new_session() for _ in dirs]
    for sid, d in zip(sids[:2], dirs):
        store.set_case(CaseRequest(session_id=sid, source=d, label=d.name))
    held = store.get(sids[0]).segmenter
    assert trims == []  # nothing evicted yet
    store.set_case(CaseRequest(session_id=sids[2], source=dirs[2], label="c"))
    assert trims == [1] and held._case is None  # the evicted Segmenter forgot its case
    assert store.idle(quiet_s=60.0) is False  # not quiet long enough
    assert store.idle() is True and trims == [1, 1]
    assert store.idle() is False  # once per quiet spell
    store.ask(AskRequest(session_id=sids[2], query="segment the edema"))
    with store.inference_lock:  # never while a model call runs
        assert store.idle() is False
    assert store.idle() is True
