"""Errors a user can act on. The CLI and app print their message on one line, no traceback."""
from __future__ import annotations

import re


class VlsegError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(VlsegError, ValueError):
    """Bad input (a scan, a label file, a query): the message names the file and what to do."""

    def __init__(self, problem: str, path: str | None = None) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ModelError(VlsegError):
    """A checkpoint or model config that cannot be used."""


def one_line(error: BaseException, *, typed: bool = False, limit: int | None = 300) -> str:
    """The one line shown for ``error``: the first line of its message (its type name when the
    message is empty), cut to ``limit`` characters. ``typed``: an error that is not a
    :class:`VlsegError` is prefixed with its type name (``"KeyError: 'x'"``)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if not text:
        line = type(error).__name__
    elif typed and not isinstance(error, VlsegError):
        line = f"{type(error).__name__}: {text}"
    else:
        line = text
    return line if limit is None else line[:limit]


def where(e: BaseException) -> str:
    """Where an exception was raised, as ``module.function.L<line>`` (code names only: safe to
    log, unlike its message, which may quote a client's path)."""
    tb = e.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    module = tb.tb_frame.f_globals.get("__name__", "")
    text = re.sub(r"[^A-Za-z0-9_.]", "", f"{module}.{code.co_name}.L{tb.tb_lineno}")
    return text[-48:]
