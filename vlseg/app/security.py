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
* failed logins are throttled by client address and by account with exponential backoff
  (:class:`LoginThrottle`, 429 with ``Retry-After``); behind a reverse proxy the client address
  comes from ``X-Forwarded-For`` only when the proxy is listed in ``trusted_proxies``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    fast: bool = False  # answer from the first stage alone (no 1 mm refinement stage)
    max_file_size_mb: int = 200
    queue_max_size: int = 8
    concurrency_limit: int = 1
    temp_ttl_s: int = 3600  # uploads and outputs older than this are deleted
    cleanup_interval_s: int = 600
    max_cached_sessions: int = 3  # sessions whose encoded scan stays in memory (LRU)
    max_sessions: int = 256  # session records kept at all (oldest dropped)
    sample_seeds: tuple[int, ...] = (0, 1, 4)  # phantoms with all three sub-regions
    sample_spacing_mm: float = 1.0
    sample_pairs: int = 2  # baseline/follow-up sample pairs (vlseg synth --pairs) for the comparison panel
    max_query_chars: int = 500
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the bind address and loopback
    login_free_failures: int = 3  # failed logins before the backoff starts (1 s, 2 s, 4 s, ...)
    login_max_delay_s: int = 300  # the longest wait for a client address that keeps failing
    login_account_max_delay_s: int = 4  # the longest wait an account's failures impose on others
    trusted_proxies: tuple[str, ...] = ()  # reverse proxies whose X-Forwarded-For is believed
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
        if self.login_free_failures < 0 or self.login_max_delay_s < 1 \
                or not 1 <= self.login_account_max_delay_s <= self.login_max_delay_s:
            raise InputError("login_free_failures must be >= 0 and 1 <= "
                             "login_account_max_delay_s <= login_max_delay_s")
        nets = []
        for proxy in self.trusted_proxies:
            try:
                nets.append(str(ipaddress.ip_network(str(proxy).strip(), strict=False)))
            except ValueError:
                raise InputError(f"trusted_proxies={str(proxy)!r}: not an address or network; give "
                                 "e.g. 127.0.0.1 or 10.0.0.0/8") from None
        object.__setattr__(self, "trusted_proxies", tuple(nets))
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
    """Failed logins with exponential backoff, counted per client address and per account.

    After ``free_failures`` failed logins a key must wait ``base_delay_s * 2 ** (n - free)``
    seconds after its last failure before the next attempt, up to ``max_delay_s`` for an address
    and ``account_max_delay_s`` for an account. An address that keeps guessing is slowed down to
    one guess per ``max_delay_s``; the account it guesses at is slowed for everyone, but never
    for more than ``account_max_delay_s`` after the last wrong password: the real user, from
    another address, is never locked out. A key with no failure for ``forget_s`` is forgotten;
    at most ``max_keys`` keys are kept (oldest dropped). Thread-safe.
    """

    def __init__(self, *, free_failures: int = 3, base_delay_s: float = 1.0,
                 max_delay_s: float = 300.0, account_max_delay_s: float = 4.0,
                 forget_s: float = 3600.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if free_failures < 0 or base_delay_s <= 0 or max_delay_s < base_delay_s \
                or account_max_delay_s <= 0 or forget_s < max_delay_s:
            raise ValueError("need free_failures >= 0, 0 < base_delay_s <= max_delay_s <= forget_s, "
                             "account_max_delay_s > 0")
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.account_max_delay_s = account_max_delay_s
        self.forget_s = forget_s
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()  # -> (n, last)
        self._lock = threading.Lock()

    def delay_s(self, n_failures: int, cap: float) -> float:
        """How long a key with ``n_failures`` waits after its last failure."""
        if n_failures < self.free_failures:
            return 0.0
        return min(cap, self.base_delay_s * 2.0 ** min(n_failures - self.free_failures, 40))

    def _keys(self, address: str, account: str | None) -> list[tuple[tuple[str, str], float]]:
        keys = [(("address", address), self.max_delay_s)]
        if account:
            keys.append((("account", account), self.account_max_delay_s))
        return keys

    def retry_after(self, address: str, account: str | None = None, now: float | None = None) -> int:
        """Whole seconds until a login from ``address`` for ``account`` is let through (0: now)."""
        now = self.clock() if now is None else now
        wait = 0.0
        with self._lock:
            for key, cap in self._keys(address, account):
                n, last = self._failures.get(key, (0, now))
                if now - last >= self.forget_s:
                    self._failures.pop(key, None)
                    continue
                wait = max(wait, last + self.delay_s(n, cap) - now)
        return 0 if wait <= 0 else max(1, int(wait + 0.999))

    def failed(self, address: str, account: str | None = None, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            for key, _ in self._keys(address, account):
                n, last = self._failures.pop(key, (0, now))
                self._failures[key] = (1 if now - last >= self.forget_s else n + 1, now)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, account: str | None = None) -> None:
        with self._lock:
            for key, _ in self._keys(address, account):
                self._failures.pop(key, None)


def _networks(values: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def client_address(peer: str, forwarded_for: str | None,
                   trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted reverse proxy, then the
    right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy (addresses
    further left are whatever the client chose to send, so they are never believed)."""
    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or not forwarded_for or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


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
    * throttles ``POST /login`` by client address and account (:class:`LoginThrottle`): while
      one must wait, attempts get 429 with ``Retry-After``. The client address is the peer's,
      or, from a trusted reverse proxy (``trusted_proxies``, none by default), the one it puts
      in ``X-Forwarded-For``.
    """

    _BAD = ("/file=http:", "/file=https:", "/file=//", "/file=ftp:", "/proxy=")
    _SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

    MAX_LOGIN_BODY = 64 * 1024

    def __init__(self, app: Any, *, hosts: frozenset[str] | None = None,
                 throttle: LoginThrottle | None = None, trusted_proxies: tuple[str, ...] = ()) -> None:
        self.app = app
        self.hosts = frozenset(hosts) if hosts is not None else LOOPBACK_NAMES
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self.trusted = _networks(tuple(trusted_proxies))

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
            await self._login(scope, receive, send, headers)
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: dict, receive: Any, send: Any, headers: dict[str, str]) -> None:
        peer = str((scope.get("client") or ("unknown",))[0])
        client = client_address(peer, headers.get("x-forwarded-for"), self.trusted)
        body = await _read_body(receive, self.MAX_LOGIN_BODY)
        if body is None:
            await _refuse(scope, send, 413, b"Login request too large.")
            return
        account = await _login_account(scope, body)
        wait = self.throttle.retry_after(client, account)
        if wait:
            await _refuse(scope, send, 429, b"Too many failed logins; try again later.",
                          [(b"retry-after", str(wait).encode())])
            return
        status: list[int] = []

        async def watch(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        await self.app(scope, _replay(body), watch)
        if status and 400 <= status[0] < 500:
            self.throttle.failed(client, account)
        elif status and status[0] < 300:
            self.throttle.succeeded(client, account)

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


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body (None when it is over ``limit`` bytes)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Any:
    """An ASGI ``receive`` that gives ``body`` once, then waits like a client that sent it all."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _login_account(scope: dict, body: bytes) -> str | None:
    """The ``username`` field of a login form (URL-encoded or multipart), None if absent."""
    from starlette.requests import Request

    try:
        form = await Request(scope, _replay(body)).form()
        name = form.get("username")
    except Exception:  # noqa: BLE001 - an unreadable form is Gradio's to refuse
        return None
    return str(name)[:256] if isinstance(name, str) and name else None


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
    throttle = LoginThrottle(free_failures=config.login_free_failures,
                             max_delay_s=config.login_max_delay_s,
                             account_max_delay_s=config.login_account_max_delay_s)
    return [Middleware(RequestGuard, hosts=accepted_hosts(config), throttle=throttle,
                       trusted_proxies=config.trusted_proxies)]
