"""The chat handlers without a browser: questions recorded at once and answered in order, a
refusal or failure that leaves the results alone, limits said in the chat, examples that ask."""
from __future__ import annotations

import json

import pytest

from app_fakes import FakeSegmenter, fake_fork, small_case
from vlseg.app import ui
from vlseg.app.sessions import CaseRequest, SessionStore

SKIP = {"__type__": "update"}


@pytest.fixture
def chat_app(tmp_path):
    store = SessionStore(base=FakeSegmenter(), output_dir=tmp_path / "sessions", fork=fake_fork)
    sid = store.new_session()
    store.set_case(CaseRequest(session_id=sid, source=small_case(tmp_path, "CASE-U", shift=3), label=None))
    return ui.ChatApp(store=store, samples=None), sid


def _texts(chat):
    return [m["content"] for m in chat if isinstance(m["content"], str)]


def test_questions_show_at_once_and_are_answered_in_order(chat_app):
    app, sid = chat_app
    _, chat, box, status = app.submit("segment the enhancing tumor", sid)
    assert box == "" and _texts(chat) == ["segment the enhancing tumor", ui.QUEUED]
    _, chat, _, status = app.submit("how big is the edema?", sid)
    assert _texts(chat)[-2:] == ["how big is the edema?", ui.QUEUED] and "2 questions" in status
    chat, table, files, viewer, _, status = app.answer_next(sid, probability_maps=True)
    texts = _texts(chat)
    assert texts[1].startswith("enhancing tumor of case CASE-U") and texts[-1] == ui.QUEUED
    assert "<table>" in table and [f.rsplit("/", 1)[1] for f in files] == [
        "CASE-U_ET.nii.gz", "CASE-U_ET_probability.nii.gz", "CASE-U_ET_uncertainty.nii.gz", "CASE-U_all.zip"]
    assert [c["code"] for c in json.loads(viewer)["concepts"]] == ["ET"]
    assert any(isinstance(m["content"], dict) and m["content"]["path"].endswith("overlay.png") for m in chat)
    chat, *_ = app.answer_next(sid)
    assert _texts(chat)[-1].startswith("peritumoral edema of case CASE-U")
    # A spare answer step (nothing waiting) changes nothing.
    chat2, table, files, viewer, seq, status = app.answer_next(sid)
    assert chat2 == chat and table == files == viewer == seq == SKIP and status == ""


def test_refused_and_failed_questions_keep_the_results(chat_app, monkeypatch):
    app, sid = chat_app
    app.submit("segment the liver", sid)
    chat, *kept, status = app.answer_next(sid)
    assert _texts(chat)[-1].startswith("I can segment") and kept == [SKIP] * 4

    def boom(req):
        raise RuntimeError("disk full at /secret/path")

    monkeypatch.setattr(app.store, "ask", boom)
    app.submit("segment the edema", sid)
    chat, *kept, status = app.answer_next(sid)
    assert "went wrong on the server" in _texts(chat)[-1] and "/secret" not in _texts(chat)[-1]
    assert kept == [SKIP] * 4


def test_limits_are_said_in_the_chat_never_silently(chat_app):
    app, sid = chat_app
    _, chat, _, _ = app.submit("   ", sid)
    assert len(chat) == 0 or "   " not in _texts(chat)  # empty: nothing recorded
    _, chat, _, _ = app.submit("x" * 2000, sid)
    assert "longer than" in _texts(chat)[-1] and len(_texts(chat)[-2]) < 300
    for k in range(ui.MAX_WAITING):
        app.submit(f"segment the edema {k}", sid)
    _, chat, _, _ = app.submit("one more", sid)
    assert _texts(chat)[-2] == "one more" and "already waiting" in _texts(chat)[-1]


def test_clicking_an_example_asks_it(chat_app):
    app, sid = chat_app
    _, chat, _, _ = app.submit_example(1, sid)
    assert _texts(chat)[-2:] == [ui.EXAMPLE_QUERIES[1], ui.QUEUED]
    assert app.submit_example(99, sid) == (SKIP,) * 4


def test_zipped_dicom_study_loads_through_the_upload_path(phantom_case_2mm, tmp_path):
    """A nested-layout DICOM study, zipped: its series are folders, yet it loads, is asked about,
    and the same zip sent again reuses the encoding (fingerprint of the uploaded bytes)."""
    import zipfile

    from dicom_cases import phantom_images, study

    folder = study(phantom_images(phantom_case_2mm), tmp_path / "dicom", seed="ui", layout="nested")
    zpath = tmp_path / "study.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"export/{f.relative_to(folder)}")
    base = FakeSegmenter()
    store = SessionStore(base=base, output_dir=tmp_path / "sessions", fork=fake_fork)
    app = ui.ChatApp(store=store, samples=None)
    sid, chat, info, viewer, *_ = app.load_upload([str(zpath)], None, progress=lambda *a, **k: None)
    assert "went wrong" not in _texts(chat)[-1] and _texts(chat)[-1].startswith("Loaded")
    assert "t1c" in info and json.loads(viewer)["seq"] == "t1c"
    seg = store.get(sid).segmenter
    assert seg.n_encodes == 1
    app.load_upload([str(zpath)], sid, progress=lambda *a, **k: None)
    assert store.get(sid).segmenter is seg and seg.n_encodes == 1  # same bytes: reused
    answer, masks, _ = app.api_ask([str(zpath)], "segment the enhancing tumor", None, sid)
    assert answer["targets"][0]["concept"] == "ET" and seg.n_encodes == 1


def test_api_ask_asks_without_pictures(chat_app, monkeypatch, tmp_path):
    app, _ = chat_app
    seen = []
    real = app.store.ask
    monkeypatch.setattr(app.store, "ask", lambda req: seen.append(req) or real(req))
    case = small_case(tmp_path, "CASE-API", shift=5)
    answer, masks, _ = app.api_ask([str(p) for p in sorted(case.glob("*.nii.gz"))],
                                   "segment the edema", None, None)
    assert seen[0].pictures is False and answer["targets"][0]["concept"] == "ED"
    assert [m.rsplit("/", 1)[1] for m in masks] == ["ED.nii.gz"]


def test_each_answer_keeps_its_own_downloads(chat_app):
    """Issue 22: the necrotic-core mask of the first answer can still be downloaded after later
    questions; each bubble links its own masks, zip and answer.json."""
    app, sid = chat_app
    app.submit("segment the enhancing tumor", sid)
    app.submit("how big is the edema?", sid)
    app.answer_next(sid, probability_maps=True)
    chat, *_ = app.answer_next(sid, probability_maps=True)
    first, second = [t for t in _texts(chat) if "Downloads of this answer" in t]
    assert "CASE-U_ET.nii.gz" in first and "CASE-U_ED.nii.gz" not in first and "answer.json" in first
    assert "CASE-U_ED.nii.gz" in second and "CASE-U_ET.nii.gz" not in second
    import re
    from pathlib import Path
    from urllib.parse import unquote

    folders = []
    for text in (first, second):
        paths = [Path(unquote(u)) for u in re.findall(r"\(gradio_api/file=([^)]+)\)", text)]
        # the mask, its probability and uncertainty maps, the zip and answer.json
        assert len(paths) == 5 and all(p.is_file() for p in paths)
        folders.append({next(x for x in p.parts if x.startswith("answer-")) for p in paths})
    assert all(len(f) == 1 for f in folders) and folders[0] != folders[1]  # each answer's own folder


def test_progress_and_time_left_in_the_answer_bubble(chat_app, monkeypatch):
    """Issue 22: while an answer is computed its bubble says the time so far, and from the
    second answer of a kind on, about how long is left; the final step is answer_next's."""
    import time

    app, sid = chat_app
    real = app.store.ask
    monkeypatch.setattr(app.store, "ask", lambda req: time.sleep(2.3) or real(req))
    app.submit("segment the enhancing tumor", sid)
    steps = list(app.answer_live(sid))
    live = [_texts(s[0])[-1] for s in steps[:-1]]
    assert live and all(t.startswith("*Answering… ") and " s so far" in t for t in live)
    assert "left" not in live[0]  # nothing timed yet: no estimate
    final = steps[-1]
    assert "<table>" in final[1] and _texts(final[0])[-1].startswith("enhancing tumor of case")
    assert "<table>" in _texts(final[0])[-1]  # the answer's own table in its bubble
    app.submit("how big is the edema?", sid)
    live = [_texts(s[0])[-1] for s in list(app.answer_live(sid))[:-1]]
    assert any("left" in t or "almost done" in t for t in live), live
