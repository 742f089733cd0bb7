"""MONAI's sliding-window inferer, imported once per process, in the background when asked.

``import monai`` imports every MONAI subpackage (torchvision and transformers' model zoo
included): 3-4 s on this project's 2-core host, against 0.3 s for the rest of a model load. The
predictor of a model with a refinement stage starts the import in a background thread
(:func:`preload_inferer`) when it is given the first case the stage will refine (finer than the
first stage's grid), so that it runs while that case is bias-corrected and encoded; a process
that only sees 2 mm cases never imports it. :func:`sliding_window` waits for the background
import before it imports, so no two threads ever compete for MONAI's module locks.
"""
from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_loading: threading.Thread | None = None  # the one background import, once started


def _load() -> None:
    try:
        import monai.inferers  # noqa: F401
    except Exception:  # noqa: BLE001 - sliding_window() imports again and reports it
        pass


def preload_inferer() -> None:
    """Start importing MONAI's sliding-window inferer in a background thread (once per process;
    nothing when it is imported already)."""
    global _loading
    with _lock:
        if _loading is None and "monai.inferers" not in sys.modules:
            # Not a daemon: a process that ends meanwhile waits for the import instead of tearing it down
            _loading = threading.Thread(target=_load, name="vlseg-import-monai", daemon=False)
            _loading.start()


def sliding_window():
    """MONAI's ``sliding_window_inference``, after the background import (if any) has ended:
    this thread never competes with it for MONAI's module locks."""
    if _loading is not None:
        _loading.join()
    from monai.inferers import sliding_window_inference

    return sliding_window_inference


__all__ = ["preload_inferer", "sliding_window"]
