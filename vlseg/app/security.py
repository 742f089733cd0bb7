"""Secure-by-default settings for the app: config, credentials, and Gradio launch arguments.

* binds to 127.0.0.1 unless a host is given; ``share`` is always False;
* credentials come from the ``VLSEG_AUTH`` environment variable or a file, never argv;
* uploads are capped (``max_file_size``) and checked by content (see ``uploads.py``);
* one inference at a time (``default_concurrency_limit=1``) and a bounded queue (``max_size``);
* Gradio's upload/cache folder lives under the app's own output root and is swept by age
  (``delete_cache``), as are the app's outputs (``uploads.Janitor``);
* the only extra path the server may serve is that output root; sample scans, checkpoints and
  everything else are never served (``blocked_paths``), and ``strict_cors`` is on;
* requests must name the app by its bind address, a loopback name, or a name given with
  ``--allowed-host`` in their ``Host`` header, else 421 (DNS rebinding: a web page whose name
  resolves to this machine must not reach the app), and cross-site writes are refused (403);
* failed logins are throttled per client address (429 once ``login_max_failures`` failed within
  ``login_window_s``).
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlseg.errors import InputError

DEFAULT_PORT = 7860
LOCALHOST = "127.0.0.1"
LOOPBACK_NAMES: frozenset[str] = frozenset({"localhost", "127.0.0.1", "::1"})
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$|^[0-9a-f]*:[0-9a-f.]*:[0-9a-f:.]*$")


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
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the bind address and loopback
    login_max_failures: int = 5  # failed logins per client address within login_window_s ...
    login_window_s: int = 300  # ... before further attempts get 429
    auth: tuple[str, str] | None = field(default=None, repr=False)  # never printed

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InputError(f"port={self.port}: must be in 1..65535")
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
        hosts = tuple(str(h).strip().lower().rstrip(".") for h in self.allowed_hosts)
        bad = [h for h, n in zip(self.allowed_hosts, hosts) if not _HOST_NAME.match(n)]
        if bad:
            raise InputError(f"allowed_hosts={bad[0]!r}: not a host name; give a bare name such "
                             "as mri.example.org (no scheme, port or path)")
        object.__setattr__(self, "allowed_hosts", hosts)
        if self.login_max_failures < 1 or self.login_window_s < 1:
            raise InputError("login_max_failures and login_window_s must be at least 1")
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


def normalise_host(name: str) -> str:
    """A Host header or host name without port, brackets or trailing dot, lower case."""
    name = name.strip().lower()
    if name.startswith("["):  # [::1]:7860
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:  # example.org:7860 (a bare IPv6 address has several colons)
        name = name.split(":", 1)[0]
    return name.rstrip(".")


def accepted_hosts(config: AppConfig) -> frozenset[str]:
    """Host names the server answers to: its bind address, loopback names, ``--allowed-host``."""
    return frozenset({normalise_host(config.host), *LOOPBACK_NAMES, *config.allowed_hosts})


def queue_kwargs(config: AppConfig) -> dict[str, Any]:
    """Arguments for ``Blocks.queue``: one job at a time, bounded waiting line."""
    return {"default_concurrency_limit": config.concurrency_limit, "max_size": config.queue_max_size}


def blocks_kwargs(config: AppConfig) -> dict[str, Any]:
    """Arguments for ``gr.Blocks``: Gradio's own cache swept every interval, by age."""
    return {"delete_cache": (config.cleanup_interval_s, config.temp_ttl_s), "analytics_enabled": False}


def model_folders(model: str | None) -> list[Path]:
    """Every folder the app's weights come from (an adapter's base checkpoint too), so none of
    them is ever served."""
    if not model or not Path(model).exists():
        return []
    folders = [Path(model).resolve()]
    try:
        from vlseg.model.loading import resolve_model

        source = resolve_model(model)
        folders += [p.resolve() for p in (source.checkpoint, source.adapter) if p is not None]
    except Exception:  # noqa: BLE001 - an unusable model is refused later, with its own message
        pass
    return list(dict.fromkeys(folders))


def launch_kwargs(config: AppConfig) -> dict[str, Any]:
    """Arguments for ``Blocks.launch``; ``share`` is pinned to False."""
    blocked = [str(config.samples_dir)] + [str(p) for p in model_folders(config.model)]
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


class LoginThrottle:
    """Failed logins per client address in a sliding window; thread-safe, bounded memory."""

    def __init__(self, *, max_failures: int = 5, window_s: float = 300.0,
                 max_clients: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until ``client`` may try again (0: it may now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.window_s]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            if len(recent) < self.max_failures:
                return 0
            return max(1, int(recent[-self.max_failures] + self.window_s - now + 0.999))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failures.setdefault(client, []).append(now)
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


class RequestGuard:
    """ASGI middleware in front of Gradio's routes.

    * refuses requests (HTTP and websocket) whose ``Host`` is not one the app answers to with
      421: a DNS-rebinding page (``Host: evil.example:7911``, its own ``Origin``) never reaches
      a route, whatever its Origin says;
    * refuses ``/file=<http(s) URL>`` and ``/proxy=`` with 403: Gradio 6 fetches public URLs given
      to ``/gradio_api/file=`` on the caller's behalf, which this app never needs;
    * refuses state-changing requests (POST, PUT, ...) whose ``Origin`` is another site than the
      one serving the app (cross-site uploads or queue joins from a web page the user visits).
      API clients such as gradio_client send no ``Origin`` and are not affected;
    * throttles ``POST /login``: after ``max_failures`` failed attempts from one client address
      within the window, further attempts get 429 with ``Retry-After``.
    """

    _BAD = ("/file=http:", "/file=https:", "/file=//", "/file=ftp:", "/proxy=")
    _SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app: Any, *, hosts: frozenset[str] | None = None,
                 throttle: LoginThrottle | None = None) -> None:
        self.app = app
        self.hosts = frozenset(hosts) if hosts is not None else LOOPBACK_NAMES
        self.throttle = throttle if throttle is not None else LoginThrottle()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        if normalise_host(headers.get("host", "")) not in self.hosts:
            await _refuse(scope, send, 421, b"Misdirected request: unknown Host.")
            return
        if kind == "http" and self._refuse(scope, headers):
            await _refuse(scope, send, 403, b"Not allowed.")
            return
        if kind == "http" and scope.get("method") == "POST" and \
                scope.get("path", "").rstrip("/").endswith("/login"):
            await self._login(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: dict, receive: Any, send: Any) -> None:
        client = str((scope.get("client") or ("unknown",))[0])
        wait = self.throttle.retry_after(client)
        if wait:
            await _refuse(scope, send, 429, b"Too many failed logins; try again later.",
                          [(b"retry-after", str(wait).encode())])
            return
        status: list[int] = []

        async def watch(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        await self.app(scope, receive, watch)
        if status and 400 <= status[0] < 500:
            self.throttle.failed(client)
        elif status and status[0] < 300:
            self.throttle.succeeded(client)

    def _refuse(self, scope: dict, headers: dict[str, str]) -> bool:
        from urllib.parse import unquote, urlsplit

        raw = scope.get("raw_path") or b""
        text = (scope.get("path", "") + " " + unquote(unquote(raw.decode("latin-1")))).lower()
        if any(b in text for b in self._BAD):
            return True
        if scope.get("method", "GET") in self._SAFE_METHODS:
            return False
        origin = headers.get("origin")
        if origin is None:
            return False
        host = headers.get("host", "")
        return origin == "null" or urlsplit(origin).netloc.lower() != host.lower()


async def _refuse(scope: dict, send: Any, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    if scope.get("type") == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


NoRemoteFetch = RequestGuard  # earlier name


def middleware(config: AppConfig | None = None) -> list[Any]:
    """Extra middleware for Gradio's FastAPI app (passed as ``launch(app_kwargs=...)``)."""
    from starlette.middleware import Middleware

    if config is None:
        return [Middleware(RequestGuard)]
    throttle = LoginThrottle(max_failures=config.login_max_failures, window_s=config.login_window_s)
    return [Middleware(RequestGuard, hosts=accepted_hosts(config), throttle=throttle)]
