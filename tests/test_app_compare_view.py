"""Two time points in the app (issue 23, point 3): a sample pair or two uploads are compared,
the viewer shows both scans side by side on the baseline's grid (the follow-up registered onto
it, the change coloured), the table gives the change with its interval, and the chat answers
the change questions from the follow-up."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from vlseg.app import ui
from vlseg.app.samples import SampleLibrary
from vlseg.app.sessions import SessionStore
from vlseg.segmenter.compare import CHANGE_LABELS


def _quiet(*args, **kwargs):
    return None


@pytest.fixture(scope="module")
def pair_app(random_checkpoint, tmp_path_factory):
    from vlseg.segmenter import Segmenter

    root = tmp_path_factory.mktemp("app-pairs")
    samples = SampleLibrary(root=root / "samples", seeds=(0,), writer=lambda *a, **k: None, pairs=2)
    for i in range(samples.n_pairs):  # only the pairs: the test needs no sample case
        samples._pair_writer(samples.root / "pairs", 2031, i)
    store = SessionStore(base=Segmenter.from_pretrained(random_checkpoint), output_dir=root / "sessions")
    return ui.ChatApp(store=store, samples=samples), store


def _path(url: str) -> Path:
    assert url.startswith("gradio_api/file=")
    return Path(unquote(url[len("gradio_api/file="):]))


def _texts(chat):
    return [m["content"] for m in chat if isinstance(m["content"], str)]


def test_sample_pairs_are_named_by_their_change(pair_app):
    app, _ = pair_app
    assert app.samples.pair_names == ["pair-1-progression", "pair-2-new-lesion"]
    assert app.samples.pairs_ready() == app.samples.pair_names
    base, follow = app.samples.pair_paths("pair-2-new-lesion")
    assert base.is_dir() and follow.is_dir() and base.parent == follow.parent


def test_a_compared_pair_shows_side_by_side_with_the_change(pair_app):
    app, store = pair_app
    sid = store.new_session()
    out = app.compare_sample("pair-1-progression", sid, progress=_quiet)
    sid, chat, info, viewer, seq_radio, table, files = out
    assert "by RANO 2.0 imaging rules" in _texts(chat)[-1] or "RANO" in _texts(chat)[-1]
    assert "side by side" in _texts(chat)[-1] and "Comparison" in info
    assert "<table>" in table and "RANO imaging category" in table and "interval" in table
    assert any(f.endswith("comparison.json") for f in files)

    d = json.loads(viewer)
    assert [p["layers"] for p in d["panels"]] == ["concepts", "change"]
    assert [c["code"] for c in d["change"]] == list(CHANGE_LABELS)
    assert len({c["bit"] for c in d["change"]}) == len(CHANGE_LABELS)
    assert {c["code"] for c in d["concepts"]} <= {"ET", "TC", "WT"}
    for panel in d["panels"]:  # every plane of both panels has its sheets on disk
        for plane in ("axial", "coronal", "sagittal"):
            assert _path(panel["bg"][plane]).is_file()
            assert panel["mask"][plane] is None or _path(panel["mask"][plane]).is_file()
    assert d["panels"][0]["bg"]["axial"] != d["panels"][1]["bg"]["axial"]

    # The follow-up panel is on the baseline's grid and lined up with it (registered)
    session = store.get(sid)
    pair = session.pair
    b, f = pair.baseline.images["t1n"], pair.followup.images["t1n"]
    assert f.shape == b.shape and pair.followup.box == pair.baseline.box
    brain = (b > 0) & (f > 0)
    assert brain.sum() > 0.8 * (b > 0).sum()
    assert np.corrcoef(b[brain], f[brain])[0, 1] > 0.8

    # A change question is answered from the follow-up and keeps both scans side by side
    app.submit("did it grow?", sid)
    chat, _, _, viewer2, _, _ = app.answer_next(sid)
    assert "grew" in _texts(chat)[-1] or "shrank" in _texts(chat)[-1] or "change" in _texts(chat)[-1].lower()
    if viewer2 is not None and not isinstance(viewer2, dict):
        assert "panels" in json.loads(viewer2)
    assert "panels" in json.loads(app._viewer(sid))
    # A question about one region goes back to the single viewer of the follow-up
    app.submit("segment the edema", sid)
    app.answer_next(sid)
    assert "panels" not in json.loads(app._viewer(sid))


def test_compare_mistakes_are_said_in_the_chat(pair_app, tmp_path):
    app, store = pair_app
    sid = store.new_session()
    out = app.compare_sample(None, sid, progress=_quiet)
    assert _texts(out[1])[-1] == "⚠️ Pick one of the sample pairs first."
    out = app.compare_upload([], None, sid, progress=_quiet)
    assert "Upload both scans" in _texts(out[1])[-1]
    # Different sequences: refused with one line, no side-by-side view
    base, follow = app.samples.pair_paths("pair-1-progression")
    b_files = [str(p) for p in sorted(base.glob("*.nii.gz")) if "seg" not in p.name]
    f_files = [str(p) for p in sorted(follow.glob("*-t1c.nii.gz"))]
    out = app.compare_upload(b_files, f_files, sid, progress=_quiet)
    assert _texts(out[1])[-1].startswith("⚠️") and "sequences" in _texts(out[1])[-1]
    assert store.get(sid).pair is None


def test_a_refused_pair_leaves_the_loaded_case_answering(pair_app, tmp_path):
    """Two different brains: refused after the baseline was answered (the registration runs
    beside it); the session's own scan answers the next question, nothing of the baseline."""
    from scipy import ndimage

    from vlseg.app.sessions import CaseRequest

    app, store = pair_app
    sid = store.new_session()
    own, other = app.samples.pair_paths("pair-2-new-lesion")
    store.set_case(CaseRequest(session_id=sid, source=own, label="own"))
    # Another anatomy: the baseline squashed along one axis
    import nibabel as nib

    base, _ = app.samples.pair_paths("pair-1-progression")
    squashed = tmp_path / "squashed"
    squashed.mkdir()
    for f in sorted(base.glob("*-t*.nii.gz")):
        img = nib.load(f)
        data = np.asarray(img.dataobj, np.float32)
        small = ndimage.zoom(data, (1.0, 0.7, 1.0), order=1)
        out = np.zeros_like(data)
        out[:, :small.shape[1]] = small
        nib.save(nib.Nifti1Image(out, img.affine), squashed / f.name)
    files = lambda d: [str(p) for p in sorted(d.glob("*-t*.nii.gz"))]  # noqa: E731
    res = app.compare_upload(files(base), files(squashed), sid, progress=_quiet)
    assert _texts(res[1])[-1].startswith("⚠️") and "cannot compare" in _texts(res[1])[-1]
    session = store.get(sid)
    assert session.pair is None and session.label == "own"
    app.submit("segment the enhancing tumor", sid)
    chat, *_ = app.answer_next(sid)
    assert store.get(sid).segmenter.case.case_id == own.name
