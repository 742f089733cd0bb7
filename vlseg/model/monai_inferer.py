"""MONAI's sliding-window inferer, imported once per process, in the background when asked.

``import monai`` imports every MONAI subpackage (torchvision and transformers' model zoo
included): 3-4 s on this project's 2-core host, against 0.3 s for the rest of a model load. The
predictor of a model with a refinement stage starts the import in a background thread
(:func:`preload_inferer`) when it is given the first case the stage will refine (finer than the
first stage's grid), so that it runs while that case is bias-corrected and encoded; a process
that only sees 2 mm cases never imports it; :func:`sliding_window` waits for it before it imports, so no two threads ever compete
for MONAI's module locks.
"""
from __future__ import annotations

import sys
import threading

_INFERER: dict[str, threading.Thread] = {}  # the one background import of MONAI's inferer
_INFERER_LOCK = threading.Lock()


def preload_inferer() -> None:
    """Start importing MONAI's sliding-window inferer in a background thread (once per process;
    nothing when it is imported already)."""
    with _INFERER_LOCK:
        if "thread" in _INFERER or "monai.inferers" in sys.modules:
            return

        def load() -> None:
            try:
                import monai.inferers  # noqa: F401
            except Exception:  # noqa: BLE001 - sliding_window() imports again and reports it
                pass

        # Not a daemon: a process that ends meanwhile waits for the import instead of tearing it down
        _INFERER["thread"] = threading.Thread(target=load, name="vlseg-import-monai", daemon=False)
        _INFERER["thread"].start()


def sliding_window():
    """MONAI's ``sliding_window_inference``, after the background import (if any) has ended:
    this thread never competes with it for MONAI's module locks."""
    thread = _INFERER.get("thread")
    if thread is not None:
        thread.join()
    from monai.inferers import sliding_window_inference

    return sliding_window_inference


__all__ = ["preload_inferer", "sliding_window"]
