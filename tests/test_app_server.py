"""The running server (a fast stand-in model): /ask API, bad uploads, session isolation,
file-route traversal, log privacy, queue limits under load, and auth.

The end-to-end test with a real (tiny, random-weights) checkpoint is in test_app_e2e.py.
"""
from __future__ import annotations

import gzip
import http.client
import logging
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app_fakes import (FakeSegmenter, copy_case_writer, fake_fork, free_port, point_gradio_at,
                       restore_env, save_gradio_env, small_case)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _start(tmp: Path, *, auth=None, queue_max_size: int = 2, max_file_size_mb: int = 1):
    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app

    sample_src = small_case(tmp / "src", "SAMPLE", shift=5)
    cfg = AppConfig(output_root=tmp / "out", samples_dir=tmp / "samples", port=free_port(),
                    sample_seeds=(1,), sample_spacing_mm=2.0, queue_max_size=queue_max_size,
                    max_file_size_mb=max_file_size_mb, auth=auth)
    point_gradio_at(cfg)
    app = create_app(cfg, segmenter=FakeSegmenter(), fork=fake_fork,
                     sample_writer=copy_case_writer(sample_src))
    app.launch()
    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    saved = save_gradio_env()
    tmp = tmp_path_factory.mktemp("appserver")
    app = _start(tmp)
    cases = {name: small_case(tmp / "cases", name, shift=shift, size=size)
             for name, shift, size in (("CASE-A", 2, 4), ("CASE-B", 12, 6))}
    yield app, cases
    app.close()
    restore_env(saved)


def _files(case_dir: Path, seqs=("t1n", "t1c", "t2w", "t2f")):
    from gradio_client import handle_file

    return [handle_file(str(case_dir / f"{case_dir.name}-{s}.nii.gz")) for s in seqs]


def _client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def test_api_ask_returns_answer_json_and_masks(server):
    app, cases = server
    client = _client(app)
    answer, masks = client.predict(_files(cases["CASE-A"]), "segment the enhancing tumor",
                                   api_name="/ask")
    for key in ("query", "text", "refused", "intent", "targets", "model", "timing_s"):
        assert key in answer
    assert answer["query"] == "segment the enhancing tumor" and "CASE-A" in answer["text"]
    t = answer["targets"][0]
    assert t["concept"] == "ET" and t["mask"] == "ET.nii.gz" and t["present"] is True
    assert len(masks) == 1 and Path(masks[0]).name == "ET.nii.gz"
    img = nib.load(masks[0])
    src = nib.load(cases["CASE-A"] / "CASE-A-t1c.nii.gz")
    assert img.shape == src.shape and np.allclose(img.affine, src.affine)
    assert img.get_fdata().sum() * 8 / 1000 == pytest.approx(t["volume_ml"], abs=0.01)
    # Follow-up with the same files in the same client session: the encoding is reused.
    answer2, _ = client.predict(_files(cases["CASE-A"]), "how big is the edema?", api_name="/ask")
    assert answer2["targets"][0]["concept"] == "ED"
    encodes = [s.segmenter.n_encodes for s in app.store._sessions.values()
               if s.segmenter is not None and s.label == "api upload" and s.n_answers == 2]
    assert encodes == [1]
    # The intervals' confidence is a parameter of /ask (default 0.9).
    client.predict(_files(cases["CASE-A"]), "how big is the edema?", 0.8, api_name="/ask")
    fakes = [s.segmenter for s in app.store._sessions.values()
             if s.segmenter is not None and s.label == "api upload"]
    assert fakes and fakes[0].confidences[-2:] == [0.9, 0.8]


def test_page_config_does_not_drag_the_model_along(server):
    """Gradio deep-copies the page config on every /config request; the model must not be in it."""
    import copy

    app, _ = server
    memo: dict = {}
    copy.deepcopy(app.blocks.config, memo)
    assert not any(isinstance(v, FakeSegmenter) for v in memo.values())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bad_uploads_get_clear_messages_and_app_keeps_running(server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    app, cases = server
    client = _client(app)
    good = cases["CASE-A"] / "CASE-A-t1c.nii.gz"
    other = tmp_path / "other-t2f.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 24, 24)).astype(np.float32),
                             np.diag([2.0, 2, 2, 1])), other)
    bad = {
        "not a NIfTI": [_write(tmp_path / "page-t1c.nii.gz", b"<html><script>x</script></html>")],
        "corrupt or truncated": [_write(tmp_path / "cut-t1c.nii.gz", good.read_bytes()[:40])],
        "which sequence": [_write(tmp_path / "brain.nii.gz", good.read_bytes())],
        "gzip file that does not hold": [_write(tmp_path / "z-t1n.nii.gz",
                                                gzip.compress(b"hello" * 200))],
        "grid": [good, other],  # mismatched grids
    }
    for expect, paths in bad.items():
        with pytest.raises(AppError) as ei:
            client.predict([handle_file(str(p)) for p in paths], "segment the tumor", api_name="/ask")
        msg = str(ei.value)
        assert expect in msg, (expect, msg)
        assert str(app.config.output_root) not in msg  # no server paths in messages
    # Over max_file_size (1 MB here): refused at upload, nothing reaches the handler.
    big = tmp_path / "big-t1n.nii"
    big.write_bytes(good.read_bytes() + os.urandom(1_200_000))
    n_files = sum(1 for _ in app.config.gradio_temp_dir.rglob("big-t1n.nii"))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict([handle_file(str(big))], "segment the tumor", api_name="/ask")
    assert sum(1 for _ in app.config.gradio_temp_dir.rglob("big-t1n.nii")) == n_files == 0
    with pytest.raises(AppError, match="longer than"):
        client.predict(_files(cases["CASE-A"]), "x" * 2000, api_name="/ask")
    answer, _ = client.predict(_files(cases["CASE-A"]), "segment the liver", api_name="/ask")
    assert answer["refused"] is True and answer["targets"] == []
    answer, _ = client.predict(_files(cases["CASE-B"]), "the tumor", api_name="/ask")
    assert "CASE-B" in answer["text"]


def test_two_clients_never_see_each_others_case(server):
    app, cases = server
    a, b = _client(app), _client(app)
    ra, _ = a.predict(_files(cases["CASE-A"]), "segment the enhancing tumor", api_name="/ask")
    rb, mb = b.predict(_files(cases["CASE-B"], ("t1c", "t2f")), "segment the enhancing tumor",
                       api_name="/ask")
    ra2, ma2 = a.predict(_files(cases["CASE-A"]), "segment the enhancing tumor", api_name="/ask")
    assert "CASE-A" in ra["text"] and "CASE-A" in ra2["text"] and "CASE-B" in rb["text"]
    assert ra["targets"][0]["volume_ml"] == ra2["targets"][0]["volume_ml"]
    assert rb["sequences_used"] == ["t1c", "t2f"] and ra2["sequences_used"] == ["t1n", "t1c", "t2w", "t2f"]
    # Each mask lies on its own case's tumour (A at x 2-5, B at x 12-17), none on the other's.
    mask_a, mask_b = nib.load(ma2[0]).get_fdata(), nib.load(mb[0]).get_fdata()
    assert mask_a[2:6, 8:12, 8:12].all() and not mask_a[12:18].any()
    assert mask_b[12:18, 8:14, 8:14].sum() >= 0.9 * mask_b.sum() and not mask_b[2:6].any()


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)  # sent as-is: no client-side normalisation of '..'
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_file_route_serves_nothing_outside_outputs(server):
    from gradio_client import Client

    app, cases = server
    cfg = app.config
    port = cfg.port
    secret = cfg.output_root / "secret.txt"
    secret.write_text("TOPSECRET")
    app.samples.wait(60)
    sample_file = next(cfg.samples_dir.rglob("*-t1c.nii.gz"))
    # Positive control: an answer's mask (in the outputs) is served.
    client = Client(app.url, verbose=False, download_files=False)
    _, masks = client.predict(_files(cases["CASE-A"]), "segment the enhancing tumor", api_name="/ask")
    served = masks[0]["path"]
    status, _ = _raw_get(port, "/gradio_api/file=" + served)
    assert status == 200
    gtmp = str(cfg.gradio_temp_dir)
    attempts = [
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=%252Fetc%252Fpasswd",
        f"/gradio_api/file={gtmp}/../../../../../../etc/passwd",
        f"/gradio_api/file={gtmp}/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/gradio_api/file={gtmp}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"/gradio_api/file={gtmp}\\..\\..\\..\\..\\..\\..\\etc\\passwd",
        "/gradio_api/file=../../../../../../etc/passwd",
        f"/gradio_api/file={gtmp}/../secret.txt",
        f"/gradio_api/file={secret}",
        f"/gradio_api/file={sample_file}",
        f"/gradio_api/file={REPO / 'pyproject.toml'}",
        f"/gradio_api/file={Path(sys.executable).resolve()}",
        "/gradio_api/file=https://example.com/",
        "/gradio_api/file=https%3A%2F%2Fexample.com%2F",
        "/gradio_api/file=//example.com/x",
        "/file=/etc/passwd",
        "/gradio_api/file=" + served + "/../../../../../../../etc/passwd",
    ]
    for path in attempts:
        status, body = _raw_get(port, path)
        assert status in (400, 401, 403, 404, 405), (path, status)
        assert b"root:" not in body and b"TOPSECRET" not in body and b"[project]" not in body
        assert not body.startswith(b"\x1f\x8b")


def test_cross_site_upload_refused(server, tmp_path):
    import httpx

    app, cases = server
    data = (cases["CASE-A"] / "CASE-A-t1c.nii.gz").read_bytes()
    before = sorted(app.config.gradio_temp_dir.rglob("*.nii.gz"))
    with httpx.Client(base_url=app.url) as h:
        r = h.post("/gradio_api/upload", files={"files": ("csrf-t1c.nii.gz", data)},
                   headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        host = app.url.split("//")[1].rstrip("/")
        ok = h.post("/gradio_api/upload", files={"files": ("same-t1c.nii.gz", data)},
                    headers={"Origin": f"http://{host}"})
        assert ok.status_code == 200
    after = sorted(app.config.gradio_temp_dir.rglob("*.nii.gz"))
    assert not any(p.name == "csrf-t1c.nii.gz" for p in after) and len(after) == len(before) + 1


def test_logs_have_request_ids_not_names_or_queries(server, tmp_path, caplog):
    from gradio_client import handle_file

    app, cases = server
    src = cases["CASE-A"]
    named = tmp_path / "Doe_John_MRN123456"
    named.mkdir()
    files = []
    for seq in ("t1c", "t2f"):
        p = named / f"Doe_John_MRN123456-{seq}.nii.gz"
        p.write_bytes((src / f"CASE-A-{seq}.nii.gz").read_bytes())
        files.append(handle_file(str(p)))
    query = "segment the enhancing tumor for patient Doe"
    caplog.set_level(logging.DEBUG, logger="vlseg")
    caplog.set_level(logging.INFO)
    client = _client(app)
    client.predict(files, query, api_name="/ask")
    with pytest.raises(Exception):
        client.predict([handle_file(str(_write(named / "Doe_John_MRN123456-t1n.nii.gz", b"junk")))],
                       query, api_name="/ask")
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in server_records)
    ours = [r.getMessage() for r in server_records if r.name == "vlseg.app"]
    assert any("op=ask" in m and "status=ok" in m and " s=" in m for m in ours)
    assert any("op=set_case" in m for m in ours)
    assert all(m.startswith("req=") for m in ours)
    for secret in ("Doe", "MRN123456", "patient", ".nii", str(tmp_path)):
        assert secret not in text, secret


def test_load_twice_queue_size_no_server_errors(server):
    sys.path.insert(0, str(REPO / "serve"))
    from load_test import case_files, run_load

    app, cases = server
    app.store._base.delay_s = 0.6  # sessions created now answer slowly, so the queue fills
    try:
        n = 3 * app.config.queue_max_size
        report = run_load(app.url, case_files(cases["CASE-B"]), n=n, timeout_s=120)
    finally:
        app.store._base.delay_s = 0.0
    s = report.summary()
    assert s["errors"] == 0, s
    assert s["ok"] >= 1 and s["ok"] + s["queue_full"] == n, s
    assert s["queue_full"] >= 1, s  # the bounded queue refused the overflow
    assert s["still_answering"] is True and s["p95_s"] is not None


def test_auth_protects_every_route(tmp_path):
    saved = save_gradio_env()
    app = _start(tmp_path, auth=("alice", "s3cret-pass"))
    try:
        port = app.config.port
        for path in ("/config", "/gradio_api/info", "/gradio_api/file=/etc/passwd",
                     "/gradio_api/queue/status"):
            status, body = _raw_get(port, path)
            assert status in (401, 403), (path, status)
            assert b"named_endpoints" not in body and b"root:" not in body
        import httpx

        with httpx.Client(base_url=app.url) as h:
            assert h.post("/login", data={"username": "alice", "password": "wrong"}).status_code >= 400
            assert h.post("/login", data={"username": "alice", "password": "s3cret-pass"}).status_code == 200
            assert h.get("/gradio_api/info").status_code == 200
    finally:
        app.close()
        restore_env(saved)


def test_create_app_needs_gradio_pointed_at_its_output_root(tmp_path, monkeypatch):
    """Gradio takes its upload folder from the environment only; the app must own that folder
    (it sweeps and empties it), so create_app refuses to build on anyone else's."""
    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))
    cfg = AppConfig(output_root=tmp_path / "out", samples_dir=tmp_path / "samples", port=free_port())
    with pytest.raises(RuntimeError, match="gradio_environment"):
        create_app(cfg, segmenter=FakeSegmenter(), fork=fake_fork)
