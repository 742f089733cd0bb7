"""How failures reach clients and the server log: a message in words for the client, one line
with the error's class and code location for the log, never a traceback.

Gradio prints the traceback of any exception that is not a ``gr.Error`` to stderr and answers
the client ``{"error": null}`` (``show_error=False``, which the app needs: exception messages may
quote server paths). Some of those exceptions come before any handler of ours runs, e.g. Gradio
refusing a server path that an API client names as an input file ("Cannot move /etc/passwd to the
gradio cache dir ..."), so a traceback would carry the client's path into the log.
:class:`GuardedBlocks` turns every such exception into a ``gr.Error`` with a message meant for
the client (and no traceback), and logs it through the app's one choke point (``logging.py``).
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.exceptions import Error as GradioError
from gradio.exceptions import InvalidPathError

from vlseg.app.logging import log_event, new_request_id, where

REFUSED_PATH = ("a file was named by a path on the server; only files uploaded to this server "
                "can be used: upload the file first and pass what the upload returns")


def client_message(error: BaseException, request_id: str) -> str:
    """What the client is told about an error that is not one of the app's own messages."""
    if isinstance(error, InvalidPathError):
        return REFUSED_PATH
    return (f"the server could not answer this request (error id {request_id}); it is still "
            "running: try again, or with another case or question")


class GuardedBlocks(gr.Blocks):
    """``gr.Blocks`` whose event processing never lets a bare exception reach Gradio's handlers
    (which print tracebacks and answer ``{"error": null}``)."""

    async def process_api(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await super().process_api(*args, **kwargs)
        except GradioError:
            raise
        except Exception as e:  # noqa: BLE001 - every other failure is reported the same way
            rid = new_request_id()
            log_event(rid, op="event", status="error", error=type(e).__name__, where=where(e))
            raise gr.Error(client_message(e, rid), print_exception=False) from None
