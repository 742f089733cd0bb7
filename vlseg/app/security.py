"""Secure-by-default settings for the app: config, credentials, and Gradio launch arguments.

* binds to 127.0.0.1 unless a host is given; ``share`` is always False;
* credentials come from the ``VLSEG_AUTH`` environment variable or a file, never argv;
* uploads are capped (``max_file_size``) and checked by content (see ``uploads.py``);
* one inference at a time (``default_concurrency_limit=1``) and a bounded queue (``max_size``);
* Gradio's upload/cache folder lives under the app's own output root and is swept by age
  (``delete_cache``), as are the app's outputs (``uploads.Janitor``);
* the only extra path the server may serve is that output root; sample scans, checkpoints and
  everything else are never served (``blocked_paths``), and ``strict_cors`` is on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlseg.errors import InputError

DEFAULT_PORT = 7860
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class AppConfig:
    """Everything `build_app` needs; built from CLI arguments at the entry point."""

    output_root: Path
    samples_dir: Path
    host: str = LOCALHOST
    port: int = DEFAULT_PORT
    model: str | None = None  # model name or checkpoint folder (None: bundled default)
    device: str = "cpu"
    max_file_size_mb: int = 200
    queue_max_size: int = 8
    concurrency_limit: int = 1
    temp_ttl_s: int = 3600  # uploads and outputs older than this are deleted
    cleanup_interval_s: int = 600
    max_cached_sessions: int = 3  # sessions whose encoded scan stays in memory (LRU)
    max_sessions: int = 256  # session records kept at all (oldest dropped)
    sample_seeds: tuple[int, ...] = (0, 1, 4)  # phantoms with all three sub-regions
    sample_spacing_mm: float = 1.0
    max_query_chars: int = 500
    auth: tuple[str, str] | None = field(default=None, repr=False)  # never printed

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InputError(f"--port must be in 1..65535, got {self.port}")
        if self.max_file_size_mb < 1:
            raise InputError(f"max file size must be at least 1 MB, got {self.max_file_size_mb}")
        if self.queue_max_size < 1 or self.concurrency_limit < 1:
            raise InputError("queue size and concurrency limit must be at least 1")
        if self.temp_ttl_s < 60 or self.cleanup_interval_s < 1:
            raise InputError("temporary-file TTL must be at least 60 s and the interval at least 1 s")
        if self.max_cached_sessions < 1 or self.max_sessions < self.max_cached_sessions:
            raise InputError("max_sessions must be >= max_cached_sessions >= 1")
        if not self.sample_seeds:
            raise InputError("at least one sample seed is needed")
        object.__setattr__(self, "output_root", Path(self.output_root).expanduser().resolve())
        object.__setattr__(self, "samples_dir", Path(self.samples_dir).expanduser().resolve())

    @property
    def gradio_temp_dir(self) -> Path:
        """Where Gradio keeps uploads and its file cache (inside the output root)."""
        return self.output_root / "gradio"

    @property
    def sessions_dir(self) -> Path:
        """Per-session answers (overlay PNGs, mask NIfTIs, answer.json)."""
        return self.output_root / "sessions"

    @property
    def max_file_size_bytes(self) -> int:
        return self.max_file_size_mb * 1024 * 1024


def parse_credentials(text: str, *, source: str) -> tuple[str, str]:
    """'user:password' -> (user, password); the error names the source, never the secret."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    user, sep, password = line.partition(":")
    if not sep or not user or not password:
        raise InputError("credentials must be one line 'user:password' (both non-empty)", source)
    return user, password


def load_auth(env_value: str | None, auth_file: str | os.PathLike | None) -> tuple[str, str] | None:
    """Credentials from an auth file (preferred) or the VLSEG_AUTH value; None when neither is set."""
    if auth_file is not None:
        path = Path(auth_file).expanduser()
        if not path.is_file():
            raise InputError("auth file not found; give a file holding one 'user:password' line",
                             str(path))
        return parse_credentials(path.read_text(encoding="utf-8", errors="replace"), source=str(path))
    if env_value:
        return parse_credentials(env_value, source="VLSEG_AUTH")
    return None


def is_local_host(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def queue_kwargs(config: AppConfig) -> dict[str, Any]:
    """Arguments for ``Blocks.queue``: one job at a time, bounded waiting line."""
    return {"default_concurrency_limit": config.concurrency_limit, "max_size": config.queue_max_size}


def blocks_kwargs(config: AppConfig) -> dict[str, Any]:
    """Arguments for ``gr.Blocks``: Gradio's own cache swept every interval, by age."""
    return {"delete_cache": (config.cleanup_interval_s, config.temp_ttl_s), "analytics_enabled": False}


def launch_kwargs(config: AppConfig) -> dict[str, Any]:
    """Arguments for ``Blocks.launch``; ``share`` is pinned to False."""
    blocked = [str(config.samples_dir)]
    if config.model and Path(config.model).exists():
        blocked.append(str(Path(config.model).resolve()))
    return {
        "server_name": config.host,
        "server_port": config.port,
        "share": False,
        "auth": config.auth,
        "max_file_size": config.max_file_size_bytes,
        "allowed_paths": [str(config.sessions_dir)],
        "blocked_paths": blocked,
        "strict_cors": True,
        "ssr_mode": False,
        "show_error": False,  # exceptions may quote server paths; the UI shows our own messages
        "quiet": True,
        "mcp_server": False,
        "pwa": False,
        "enable_monitoring": False,
        "footer_links": ["api"],
    }


def prepare_dirs(config: AppConfig) -> None:
    """Create the output folders (owner-only) before Gradio starts using them."""
    for d in (config.output_root, config.gradio_temp_dir, config.sessions_dir, config.samples_dir):
        d.mkdir(parents=True, exist_ok=True)
        try:
            d.chmod(0o700)
        except OSError:  # pragma: no cover - e.g. a folder owned by someone else
            pass


class RequestGuard:
    """ASGI middleware in front of Gradio's routes.

    * refuses ``/file=<http(s) URL>`` and ``/proxy=`` with 403: Gradio 6 fetches public URLs given
      to ``/gradio_api/file=`` on the caller's behalf, which this app never needs;
    * refuses state-changing requests (POST, PUT, ...) whose ``Origin`` is another site than the
      one serving the app (cross-site uploads or queue joins from a web page the user visits).
      API clients such as gradio_client send no ``Origin`` and are not affected.
    """

    _BAD = ("/file=http:", "/file=https:", "/file=//", "/file=ftp:", "/proxy=")
    _SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and self._refuse(scope):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"Not allowed."})
            return
        await self.app(scope, receive, send)

    def _refuse(self, scope: dict) -> bool:
        from urllib.parse import unquote, urlsplit

        raw = scope.get("raw_path") or b""
        text = (scope.get("path", "") + " " + unquote(unquote(raw.decode("latin-1")))).lower()
        if any(b in text for b in self._BAD):
            return True
        if scope.get("method", "GET") in self._SAFE_METHODS:
            return False
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        origin = headers.get("origin")
        if origin is None:
            return False
        host = headers.get("host", "")
        return origin == "null" or urlsplit(origin).netloc.lower() != host.lower()


NoRemoteFetch = RequestGuard  # earlier name


def middleware() -> list[Any]:
    """Extra middleware for Gradio's FastAPI app (passed as ``launch(app_kwargs=...)``)."""
    from starlette.middleware import Middleware

    return [Middleware(RequestGuard)]
