"""Where the seconds of an answer go: the library's steps timed from outside, for the profile.

The library stays free of timing code: :func:`recording` wraps the functions that carry each
stage (the table :data:`STAGE_FUNCTIONS`: module, attribute) for the length of its ``with``
block and restores them after, so it is for a benchmark process that owns its interpreter
(``vlseg bench --profile``), never for a server. Stages nest (``read`` calls ``reorient``); each
records its *own* time, nested stages subtracted, so the stages of one recording add up to the
wall time they cover, nothing counted twice. A test checks that every entry still resolves, so a
renamed function breaks a test rather than silently dropping a stage.

    with recording() as times:          # {stage: seconds}
        seg.set_case(case); seg.ask("segment the whole tumor")
"""
from __future__ import annotations

import functools
import importlib
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# stage -> the (module, attribute) whose calls are that stage; attributes may be "Class.method".
# Where a function is imported by name, the entry names the module that calls it.
STAGE_FUNCTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "read": (("vlseg.segmenter", "open_case"),),
    "reorient": (("vlseg.io.case", "to_ras"),),
    "checks": (("vlseg.segmenter", "geometry_warnings"), ("vlseg.segmenter", "brain_warnings")),
    # the model-grid path (resample + N4 + normalise, the sequences in worker threads) ...
    "preprocess": (("vlseg.model.inference", "model_grid_preprocess"),),
    # ... and its parts, in the worker threads (see THREADED): N4, and the rest per sequence
    # (moments resampled to the model grid, z-scored); also the case-grid path's (training)
    "n4": (("vlseg.model.preprocess", "correct_bias_field"), ("vlseg.model.preprocess", "fit_log_bias_field")),
    "normalise": (("vlseg.model.preprocess", "normalize_volume"), ("vlseg.model.preprocess", "_normalised_at")),
    "encode": (("vlseg.model.vlseg_model", "VLSegModel.encode_image"),),
    "parse": (("vlseg.language.parse", "QueryParser.parse"),),
    "decode": (("vlseg.model.inference", "decode"),),
    # the refinement stage (1 mm crop around the tumor: box normalisation, sliding window, back)
    "refine": (("vlseg.model.refine_inference", "refine"),),
    "labelling": (("vlseg.reasoning.presence", "final_masks"), ("vlseg.reasoning.presence", "final_probabilities")),
    "atlas": (("vlseg.reasoning.atlas", "AtlasLocator.fit"), ("vlseg.reasoning.atlas", "fit_midplane")),
    "measure": (("vlseg.segmenter.dialogue", "measure_target"),),
    "relations": (("vlseg.segmenter.dialogue", "relations"),),
    "case_facts": (("vlseg.reasoning.case_facts", "compute"),),
    "intervals": (("vlseg.segmenter.dialogue", "Dialogue._with_intervals"),),
    "answer_text": (("vlseg.segmenter.dialogue", "answer_text_parts"),),
    "masks_out": (("vlseg.io.case", "Case.to_source"),),
    "save": (("vlseg.segmenter.answer", "write_answer"),),
}
STAGES: tuple[str, ...] = tuple(STAGE_FUNCTIONS)
# A stage run in another thread than the recording's is summed under its name + THREADED: its
# seconds overlap other work in wall time, so they are reported beside the wall-time stages.
THREADED = " (threads)"


def resolve(module: str, attribute: str) -> tuple[object, str, Callable]:
    """(owner, name, function) of ``module:attribute`` (``attribute`` may be ``Class.name``)."""
    owner: object = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, getattr(owner, name)


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Time the stages of :data:`STAGE_FUNCTIONS` while the block runs: the dict yielded fills
    with ``{stage: own seconds}``. Not thread-safe (one recording at a time)."""
    times: dict[str, float] = {}
    main = threading.get_ident()  # the recording's thread
    local = threading.local()  # .nested: per open stage of this thread, time in stages inside it
    lock = threading.Lock()

    def timed(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            nested = local.__dict__.setdefault("nested", [])
            key = name if threading.get_ident() == main else name + THREADED
            nested.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total = time.perf_counter() - t0
                inner = nested.pop()
                with lock:
                    times[key] = times.get(key, 0.0) + total - inner
                if nested:
                    nested[-1] += total
        return wrapper

    originals = []
    try:
        for name, targets in STAGE_FUNCTIONS.items():
            for module, attribute in targets:
                holder, attr, fn = resolve(module, attribute)
                raw = holder.__dict__.get(attr, fn) if isinstance(holder, type) else fn
                originals.append((holder, attr, raw))
                wrapped = timed(name, fn)
                setattr(holder, attr, staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped)
        yield times
    finally:
        for holder, attr, raw in reversed(originals):
            setattr(holder, attr, raw)


__all__ = ["STAGES", "STAGE_FUNCTIONS", "THREADED", "recording", "resolve"]
