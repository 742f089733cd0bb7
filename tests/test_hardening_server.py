"""The server answers only requests addressed to it (DNS rebinding, issue 10 point 5), throttles
failed logins, checks a question's length before reading uploads, and deletes uploads when it
stops (point 6). Middleware tests run in process; the live-server ones use the fast stand-in
model of test_app_server.py."""
from __future__ import annotations

import asyncio
import http.client
import os
import time

import pytest

from vlseg.app.security import AppConfig, LoginThrottle, RequestGuard, accepted_hosts


def _call(guard: RequestGuard, headers: dict[str, str], *, path: str = "/config", method: str = "GET",
          kind: str = "http", client=("10.0.0.9", 5555), status: int = 200) -> dict:
    sent: list[dict] = []

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})

    async def send(msg):
        sent.append(msg)

    guard.app = inner
    scope = {"type": kind, "path": path, "raw_path": path.encode(), "method": method,
             "client": client, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, None, send))
    return sent[0]


def _guard(tmp_path, **cfg) -> RequestGuard:
    config = AppConfig(output_root=tmp_path / "o", samples_dir=tmp_path / "s", **cfg)
    return RequestGuard(None, hosts=accepted_hosts(config))


def test_spoofed_host_is_refused_even_with_a_matching_origin(tmp_path):
    guard = _guard(tmp_path, port=7911)
    evil = {"host": "evil.example:7911", "origin": "http://evil.example:7911"}
    assert _call(guard, evil)["status"] == 421
    assert _call(guard, evil, path="/gradio_api/upload", method="POST")["status"] == 421
    assert _call(guard, {"host": "evil.example"})["status"] == 421
    assert _call(guard, {})["status"] == 421  # no Host at all
    assert _call(guard, {"host": "127.0.0.1.evil.example:7911"})["status"] == 421
    for ok in ("127.0.0.1:7911", "localhost:7911", "LOCALHOST", "[::1]:7911", "localhost."):
        assert _call(guard, {"host": ok})["status"] == 200, ok
    # A right Host with a foreign Origin still cannot write (cross-site request).
    assert _call(guard, {"host": "127.0.0.1:7911", "origin": "http://evil.example:7911"},
                 path="/gradio_api/upload", method="POST")["status"] == 403


def test_websocket_with_a_foreign_host_is_closed(tmp_path):
    msg = _call(_guard(tmp_path), {"host": "evil.example"}, kind="websocket")
    assert msg["type"] == "websocket.close"


def test_bind_address_and_allowed_hosts(tmp_path):
    guard = _guard(tmp_path, host="0.0.0.0", allowed_hosts=("MRI.example.org", "10.1.2.3"))
    for ok in ("mri.example.org:7860", "10.1.2.3:7860", "127.0.0.1:7860", "0.0.0.0:7860"):
        assert _call(guard, {"host": ok})["status"] == 200, ok
    for bad in ("10.1.2.4:7860", "evil.example", "mri.example.org.evil.example"):
        assert _call(guard, {"host": bad})["status"] == 421, bad
    with pytest.raises(Exception, match="not a host name"):
        AppConfig(output_root=tmp_path, samples_dir=tmp_path, allowed_hosts=("https://x.org/",))


def _login(guard: RequestGuard, status: int, *, client=("10.0.0.9", 5555), user: str = "alice",
           headers: dict[str, str] | None = None) -> dict:
    """A POST /login with a form body, answered ``status`` by the app behind the guard."""
    from urllib.parse import urlencode

    body = urlencode({"username": user, "password": "x"}).encode()
    sent: list[dict] = []

    async def inner(scope, receive, send):
        msg = await receive()  # the guard replays the body it read
        assert msg["body"] == body
        await send({"type": "http.response.start", "status": status, "headers": []})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg):
        sent.append(msg)

    guard.app = inner
    hdrs = {"host": "127.0.0.1:7860", "content-type": "application/x-www-form-urlencoded",
            **(headers or {})}
    scope = {"type": "http", "path": "/login", "raw_path": b"/login", "method": "POST",
             "client": client, "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]}
    asyncio.run(guard(scope, receive, send))
    return sent[0]


def test_failed_logins_back_off_per_address_and_briefly_per_account(tmp_path):
    guard = _guard(tmp_path)
    clock = [0.0]
    guard.throttle = LoginThrottle(free_failures=3, max_delay_s=300, account_max_delay_s=4,
                                   clock=lambda: clock[0])
    for i in range(5):  # five wrong passwords, 10 s apart (each one let through)
        clock[0] = 10.0 * i
        assert _login(guard, 400)["status"] == 400
    refused = _login(guard, 200)  # the same address waits, even with the right password
    assert refused["status"] == 429 and int(dict(refused["headers"])[b"retry-after"]) <= 4
    # Another address, the same account: let through within a few seconds of the last failure.
    other = _login(guard, 200, client=("10.0.0.8", 1))
    assert other["status"] == 429 and int(dict(other["headers"])[b"retry-after"]) <= 4
    assert _login(guard, 200, client=("10.0.0.8", 1), user="bob")["status"] == 200
    clock[0] += 4.0
    assert _login(guard, 200, client=("10.0.0.8", 1))["status"] == 200

    t = LoginThrottle(free_failures=3, base_delay_s=1, max_delay_s=300, account_max_delay_s=4)
    for i in range(3):
        t.failed("a", "alice", now=float(i))
    assert t.retry_after("a", "alice", now=2.0) == 1 and t.retry_after("a", "alice", now=3.0) == 0
    for i in range(3, 12):  # an address that keeps guessing waits longer and longer ...
        t.failed("a", "alice", now=float(i))
    assert t.retry_after("a", None, now=11.0) == 300 and t.retry_after("a", None, now=12.0) == 299
    # ... but the real user elsewhere waits at most 4 s after the last wrong password.
    assert t.retry_after("b", "alice", now=11.0) == 4 and t.retry_after("b", "alice", now=15.0) == 0
    t.succeeded("b", "alice")
    assert t.retry_after("b", "alice", now=11.5) == 0
    assert t.retry_after("a", None, now=11.0 + 3600) == 0  # forgotten after an hour


def test_the_client_address_comes_from_x_forwarded_for_only_from_a_trusted_proxy(tmp_path):
    from vlseg.app.security import _networks, client_address

    proxy = _networks(("10.0.0.1", "192.168.0.0/16"))
    assert client_address("10.0.0.1", "203.0.113.5", ()) == "10.0.0.1"  # off by default
    assert client_address("10.0.0.1", "203.0.113.5", proxy) == "203.0.113.5"
    assert client_address("10.0.0.1", "6.6.6.6, 203.0.113.5, 192.168.1.2", proxy) == "203.0.113.5"
    assert client_address("203.0.113.9", "1.2.3.4", proxy) == "203.0.113.9"  # not from the proxy

    guard = RequestGuard(None, trusted_proxies=("10.0.0.1",), throttle=LoginThrottle(
        free_failures=1, max_delay_s=300, account_max_delay_s=1))
    via_proxy = ("10.0.0.1", 4444)
    for _ in range(4):
        _login(guard, 400, client=via_proxy, headers={"x-forwarded-for": "203.0.113.5"}, user="x")
    assert _login(guard, 400, client=via_proxy, headers={"x-forwarded-for": "203.0.113.5"},
                  user="y")["status"] == 429
    # Another client behind the same proxy is not locked out by the first one's failures.
    assert _login(guard, 200, client=via_proxy, headers={"x-forwarded-for": "203.0.113.6"},
                  user="z")["status"] == 200
    with pytest.raises(Exception, match="not an address or network"):
        AppConfig(output_root=tmp_path, samples_dir=tmp_path, trusted_proxies=("proxy.local",))


def test_query_length_is_checked_before_uploads_are_read(tmp_path, monkeypatch):
    import gradio as gr

    from app_fakes import FakeSegmenter, fake_fork
    from vlseg.app import ui
    from vlseg.app.sessions import SessionStore

    store = SessionStore(base=FakeSegmenter(), output_dir=tmp_path, max_query_chars=500, fork=fake_fork)
    monkeypatch.setattr(ui, "collect_uploads", lambda *a, **k: pytest.fail("uploads were read"))
    app = ui.ChatApp(store=store, samples=None)
    with pytest.raises(gr.Error, match="longer than 500 characters"):
        app.api_ask(["whatever.nii.gz"], "segment the edema " * 40, 0.9, None)


# ------------------------------------------------------------------------------ live server
@pytest.fixture
def live(tmp_path):
    from app_fakes import (FakeSegmenter, copy_case_writer, fake_fork, free_port, point_gradio_at,
                           restore_env, save_gradio_env, small_case)
    from vlseg.app.server import create_app

    saved = save_gradio_env()
    sample = small_case(tmp_path / "src", "SAMPLE", shift=5)
    cfg = AppConfig(output_root=tmp_path / "out", samples_dir=tmp_path / "samples", port=free_port(),
                    sample_seeds=(1,), sample_spacing_mm=2.0, max_file_size_mb=1,
                    auth=("alice", "s3cret-pass"), login_free_failures=3)
    point_gradio_at(cfg)
    app = create_app(cfg, segmenter=FakeSegmenter(), fork=fake_fork, sample_writer=copy_case_writer(sample))
    app.launch()
    yield app, small_case(tmp_path / "cases", "CASE-A", shift=2)
    app.close()
    restore_env(saved)


def _raw(port: int, path: str, host: str, method: str = "GET", headers: dict | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.slow
def test_live_server_host_check_throttle_and_cleanup(live):
    import httpx

    app, case = live
    port = app.config.port
    evil = {"Origin": f"http://evil.example:{port}"}
    for path, method in (("/config", "GET"), ("/gradio_api/upload", "POST"), ("/login", "POST"),
                         ("/gradio_api/info", "GET")):
        assert _raw(port, path, f"evil.example:{port}", method, evil) == 421, path
    assert _raw(port, "/config", f"localhost:{port}") == 401  # reaches the app (auth on)

    with httpx.Client(base_url=app.url) as h:
        # A logged-in upload lands in Gradio's cache ...
        assert h.post("/login", data={"username": "alice", "password": "s3cret-pass"}).status_code == 200
        data = (case / "CASE-A-t1c.nii.gz").read_bytes()
        assert h.post("/gradio_api/upload", files={"files": ("CASE-A-t1c.nii.gz", data)}).status_code == 200
        big = h.post("/gradio_api/upload", files={"files": ("big-t1c.nii.gz", b"\0" * (2 << 20))})
        assert big.status_code == 413
        # ... and failed logins back off, the right password included, for a few seconds only.
        for _ in range(3):
            assert h.post("/login", data={"username": "alice", "password": "wrong"}).status_code == 400
        r = h.post("/login", data={"username": "alice", "password": "s3cret-pass"})
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 4
        time.sleep(int(r.headers["retry-after"]) + 0.2)
        assert h.post("/login", data={"username": "alice", "password": "s3cret-pass"}).status_code == 200
    time.sleep(1.0)  # Gradio moves uploads into its cache in a background task
    assert list(app.config.gradio_temp_dir.rglob("CASE-A-t1c.nii.gz"))
    answer = app.config.sessions_dir / "some-session" / "answer-001"
    answer.mkdir(parents=True)
    (answer / "ET.nii.gz").write_bytes(b"x")
    # Empty tmp* upload files (refused or broken-off uploads) older than a minute are swept.
    orphan = app.config.gradio_temp_dir / "tmpabc123"
    orphan.write_bytes(b"")
    old = time.time() - 120
    os.utime(orphan, (old, old))
    fresh = app.config.gradio_temp_dir / "tmpfresh"
    fresh.write_bytes(b"")
    app.cache_janitor.sweep()
    assert not orphan.exists() and fresh.exists()
    app.close()
    assert list(app.config.gradio_temp_dir.iterdir()) == []
    assert list(app.config.sessions_dir.iterdir()) == []
    assert app.config.samples_dir.is_dir()  # generated samples are not uploads: kept


@pytest.mark.slow
def test_a_server_path_named_by_a_client_is_refused_in_words_and_never_logged(live, capfd):
    import json

    import httpx

    app, _ = live
    secret = "/etc/passwd-of-the-client"
    with httpx.Client(base_url=app.url, timeout=60) as h:
        assert h.post("/login", data={"username": "alice", "password": "s3cret-pass"}).status_code == 200
        file = {"path": secret, "meta": {"_type": "gradio.FileData"}}
        r = h.post("/gradio_api/call/ask", json={"data": [[file], "segment the tumor", 0.9, None, "auto"]})
        assert r.status_code == 200, r.text
        stream = h.get(f"/gradio_api/call/ask/{r.json()['event_id']}").text
    assert "event: error" in stream
    payload = json.loads(stream.split("event: error", 1)[1].split("data:", 1)[1].splitlines()[0])
    assert payload and "upload the file first" in str(payload) and secret not in str(payload)
    logged = capfd.readouterr()
    assert secret not in logged.err + logged.out and "Traceback" not in logged.err
