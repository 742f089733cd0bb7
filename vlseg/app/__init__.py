"""The vlseg chat app (Gradio) and its HTTP API. Entry point: ``vlseg serve``.

Logic lives here; ``serve/app.py`` only builds and launches. Gradio is imported lazily so that
``import vlseg.app`` stays cheap.
"""
from __future__ import annotations

from vlseg.app.security import AppConfig

__all__ = ["AppConfig", "create_app"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy wrapper
    from vlseg.app.server import create_app as _create

    return _create(*args, **kwargs)
