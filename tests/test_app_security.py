"""Secure defaults: bind address, no share, credentials not from argv, limits, remote-fetch block."""
from __future__ import annotations

import asyncio

import pytest

from vlseg.cli import build_parser
from vlseg.errors import InputError
from vlseg.app.cli import config_from_args
from vlseg.app.security import (
    AppConfig, RequestGuard, blocks_kwargs, launch_kwargs, load_auth, queue_kwargs,
)


def _serve_args(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_defaults_are_local_bounded_and_never_shared(tmp_path):
    cfg = config_from_args(_serve_args("--outputs", str(tmp_path / "o"), "--samples",
                                       str(tmp_path / "s")), environ={})
    kw = launch_kwargs(cfg)
    assert kw["server_name"] == "127.0.0.1" and kw["server_port"] == 7860
    assert kw["share"] is False and kw["auth"] is None and kw["strict_cors"] is True
    assert kw["max_file_size"] == 200 * 1024 * 1024
    assert kw["allowed_paths"] == [str(cfg.sessions_dir)]
    assert str(cfg.samples_dir) in kw["blocked_paths"]
    assert kw["show_error"] is False and kw["mcp_server"] is False
    assert queue_kwargs(cfg) == {"default_concurrency_limit": 1, "max_size": 8}
    assert blocks_kwargs(cfg)["delete_cache"] == (600, 3600)
    assert cfg.gradio_temp_dir.is_relative_to(cfg.output_root)


def test_options_change_limits_and_host(tmp_path):
    cfg = config_from_args(_serve_args("--host", "0.0.0.0", "--port", "8001", "--max-file-mb", "50",
                                       "--queue-size", "3", "--temp-ttl", "120",
                                       "--outputs", str(tmp_path)), environ={})
    kw = launch_kwargs(cfg)
    assert kw["server_name"] == "0.0.0.0" and kw["server_port"] == 8001
    assert kw["max_file_size"] == 50 * 1024 * 1024 and queue_kwargs(cfg)["max_size"] == 3
    assert blocks_kwargs(cfg)["delete_cache"][1] == 120
    with pytest.raises(InputError):
        AppConfig(output_root=tmp_path, samples_dir=tmp_path, port=0)
    with pytest.raises(InputError):
        AppConfig(output_root=tmp_path, samples_dir=tmp_path, temp_ttl_s=5)


def test_credentials_from_env_or_file_never_argv(tmp_path):
    with pytest.raises(SystemExit):
        _serve_args("--auth", "alice:pw")  # no way to pass a password on the command line
    cfg = config_from_args(_serve_args("--outputs", str(tmp_path)), environ={"VLSEG_AUTH": "alice:pw1"})
    assert cfg.auth == ("alice", "pw1") and "pw1" not in repr(cfg)
    f = tmp_path / "auth.txt"
    f.write_text("bob:pa:ss\n")
    cfg = config_from_args(_serve_args("--outputs", str(tmp_path), "--auth-file", str(f)),
                           environ={"VLSEG_AUTH": "alice:pw1"})
    assert cfg.auth == ("bob", "pa:ss") and launch_kwargs(cfg)["auth"] == ("bob", "pa:ss")
    assert load_auth(None, None) is None
    for bad in ("nopassword", ":pw", "user:"):
        with pytest.raises(InputError) as ei:
            load_auth(bad, None)
        assert "VLSEG_AUTH" in str(ei.value) and "pw" not in str(ei.value).replace("password", "")
    with pytest.raises(InputError, match="not found"):
        load_auth(None, tmp_path / "missing.txt")


def _call(path: str, raw: bytes | None = None, method: str = "GET",
          headers: dict[str, str] | None = None) -> int:
    sent = []

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(msg):
        sent.append(msg)

    headers = {"host": "127.0.0.1:7860", **(headers or {})}
    scope = {"type": "http", "path": path, "raw_path": raw or path.encode(), "method": method,
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(RequestGuard(inner)(scope, None, send))
    return sent[0]["status"]


@pytest.mark.parametrize("path", ["/gradio_api/file=https://example.com/x",
                                  "/gradio_api/file=http://169.254.169.254/latest",
                                  "/gradio_api/file=//example.com/x",
                                  "/gradio_api/proxy=https://example.com"])
def test_remote_fetches_refused(path):
    assert _call(path) == 403
    assert _call("/gradio_api/file=x", raw=path.replace(":", "%3A").replace("/", "%2F", 3).encode()) == 403


def test_local_requests_pass_middleware():
    assert _call("/gradio_api/file=/tmp/out/sessions/a/ET.nii.gz") == 200
    assert _call("/config") == 200


def test_cross_site_posts_refused():
    same = {"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"}
    assert _call("/gradio_api/upload", method="POST", headers=same) == 200
    assert _call("/gradio_api/upload", method="POST", headers={"host": "127.0.0.1:7860"}) == 200
    for origin in ("https://evil.example", "http://127.0.0.1:9999", "null"):
        hdr = {"host": "127.0.0.1:7860", "origin": origin}
        assert _call("/gradio_api/upload", method="POST", headers=hdr) == 403, origin
        assert _call("/gradio_api/queue/join", method="POST", headers=hdr) == 403, origin
        assert _call("/", method="GET", headers=hdr) == 200  # reading the page is harmless


def test_an_adapters_base_checkpoint_is_blocked_too(tmp_path, random_checkpoint):
    """With --model pointing at a LoRA adapter, neither the adapter nor its base is served."""
    import torch

    from vlseg.app.security import AppConfig, launch_kwargs
    from vlseg.model import load_model
    from vlseg.model.adapters import add_adapters, save_adapter
    from vlseg.model.loading import checkpoint_ref

    torch.manual_seed(1)
    model = load_model(random_checkpoint)
    spec = add_adapters(model, rank=2, alpha=4.0, text_rank=4)
    adapter = save_adapter(model, spec, tmp_path / "adapter", base=checkpoint_ref(random_checkpoint),
                           provenance={"steps": 0})
    cfg = AppConfig(output_root=tmp_path / "out", samples_dir=tmp_path / "samples", model=str(adapter))
    blocked = launch_kwargs(cfg)["blocked_paths"]
    assert str(adapter.resolve()) in blocked
    assert str(random_checkpoint.resolve()) in blocked


def test_client_messages_carry_no_server_paths_classes_or_flags():
    from gradio.exceptions import InvalidPathError

    from vlseg.app.errors import client_message
    from vlseg.app.ui import strip_dirs

    refused = client_message(InvalidPathError("Cannot move /etc/passwd to the gradio cache dir"), "ab12")
    assert "/etc/passwd" not in refused and "upload the file first" in refused
    other = client_message(KeyError("/srv/secret/case"), "ab12")
    assert "KeyError" not in other and "/srv" not in other and "ab12" in other
    # The app has no series field: its hint says what an app user can do instead.
    text = strip_dirs("/tmp/up/study: has 2 series that look like t1c (#1 'A', #1 'B'); pick one "
                      "with series=t1c='DESCRIPTION'; the study holds: x")
    assert text.startswith("study: ") and "series=" not in text and "upload a zip holding only" in text
