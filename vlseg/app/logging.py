"""The app's one logging choke point: request ids and timings, never user content.

Every log line the app writes goes through :func:`log_event`, which only accepts a fixed set of
field names with numbers, booleans or short identifiers as values. Free text (file names, query
text, HTTP headers, exception messages that may quote a path) cannot reach the log because there
is no field to carry it: anything else is dropped and counted.

    with request_context("ask", session_id=s.short_id) as ctx:
        ...
        ctx.set(intent="segment", n_targets=2)
    # -> "vlseg.app req=3f9a1c2b op=ask session=91ab02cd status=ok intent=segment n_targets=2 s=0.412"
"""
from __future__ import annotations

import contextlib
import logging as _logging
import re
import time
import uuid
from typing import Any, Iterator

from vlseg.errors import where

LOGGER_NAME = "vlseg.app"
_logger = _logging.getLogger(LOGGER_NAME)

# The only fields a log line may carry. Values must be numbers/bools or match _SAFE_TOKEN.
ALLOWED_FIELDS: frozenset[str] = frozenset({
    "op", "session", "status", "error", "intent", "refused", "n_targets", "n_files", "n_sequences",
    "sequences", "concepts", "kind", "s", "encode_s", "queue", "n_sessions", "n_deleted", "bytes",
    "port", "host_is_local", "sample", "evicted", "where",
})
# Identifiers only: concept codes, sequence names, exception class names, short ids.
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_,.+\-]{0,48}$")


def new_request_id() -> str:
    """Short random id (8 hex chars of a uuid4) for correlating log lines of one request."""
    return uuid.uuid4().hex[:8]


def _clean(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        parts = [_clean(v) for v in value]
        if any(p is None for p in parts):
            return None
        joined = ",".join(p for p in parts if p is not None)
        return joined if _SAFE_TOKEN.match(joined) else None
    if isinstance(value, str) and _SAFE_TOKEN.match(value):
        return value
    return None


def format_event(request_id: str, **fields: Any) -> str:
    """Render one line; fields outside ALLOWED_FIELDS or with unsafe values are dropped."""
    parts = [f"req={request_id}"]
    dropped = 0
    for key, value in fields.items():
        text = _clean(value) if key in ALLOWED_FIELDS else None
        if text is None:
            dropped += 1
            continue
        parts.append(f"{key}={text}")
    if dropped:
        parts.append(f"dropped={dropped}")
    return " ".join(parts)


def log_event(request_id: str, level: int = _logging.INFO, **fields: Any) -> None:
    """The choke point: every app log line is written here."""
    _logger.log(level, format_event(request_id, **fields))


class RequestContext:
    """Timing + outcome of one request; fields set during the request are logged at the end."""

    def __init__(self, op: str, *, session: str | None = None) -> None:
        self.request_id = new_request_id()
        self.fields: dict[str, Any] = {"op": op}
        if session is not None:
            self.fields["session"] = session

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)


@contextlib.contextmanager
def request_context(op: str, *, session: str | None = None) -> Iterator[RequestContext]:
    """Log one line per request with its id, outcome and duration in seconds.

    An exception is logged by class name only (its message may quote a path) and re-raised.
    """
    ctx = RequestContext(op, session=session)
    t0 = time.perf_counter()
    try:
        yield ctx
    except BaseException as e:
        log_event(ctx.request_id, _logging.WARNING, **ctx.fields, status="error",
                  error=type(e).__name__, where=where(e), s=time.perf_counter() - t0)
        raise
    else:
        ctx.fields.setdefault("status", "ok")
        log_event(ctx.request_id, **ctx.fields, s=time.perf_counter() - t0)


def configure(level: int = _logging.INFO) -> None:
    """Send app log lines to stderr (called by `vlseg serve`; libraries never configure logging)."""
    if not any(getattr(h, "_vlseg", False) for h in _logger.handlers):
        handler = _logging.StreamHandler()
        handler.setFormatter(_logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler._vlseg = True  # type: ignore[attr-defined]
        _logger.addHandler(handler)
    _logger.setLevel(level)
    _logger.propagate = True
