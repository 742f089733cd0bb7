"""Where the seconds of an answer go: named stages the library marks, a recorder the caller opens.

The library marks its steps with :func:`stage` (``with stage("n4"): ...``); nothing is recorded
unless a caller has opened a :func:`recording` (``vlseg bench --profile``), so a marked step
costs one context-variable lookup otherwise. Stages may nest: each records its *own* time (the
time of stages inside it is subtracted), so the stages of one recording add up to the wall time
they cover, with nothing counted twice.

    with recording() as times:          # {stage: seconds}
        seg.set_case(case); seg.ask("segment the whole tumor")
    print(times)                        # {"read": 0.41, "reorient": 0.02, "n4": 0.35, ...}

The recorder belongs to the caller and lives as long as its ``with`` block; work handed to other
threads is timed by the stage around the hand-off, not inside the threads.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

# The stages of one answer, in the order they run (a profile prints them in this order).
STAGES: tuple[str, ...] = (
    "read", "reorient", "checks", "n4", "normalise", "resample", "encode", "parse", "decode",
    "labelling", "atlas", "measure", "relations", "case_facts", "intervals", "answer_text", "save",
)


@dataclass
class _Recorder:
    times: dict[str, float] = field(default_factory=dict)
    stack: list[float] = field(default_factory=list)  # time of nested stages, per open stage


_current: ContextVar[_Recorder | None] = ContextVar("vlseg_profile", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` when a recording is open (its own time, nested stages
    excluded); otherwise do nothing."""
    rec = _current.get()
    if rec is None:
        yield
        return
    rec.stack.append(0.0)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        total = time.perf_counter() - t0
        nested = rec.stack.pop()
        rec.times[name] = rec.times.get(name, 0.0) + total - nested
        if rec.stack:
            rec.stack[-1] += total


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Open a recording: the dict yielded fills with ``{stage: seconds}`` as marked steps run."""
    rec = _Recorder()
    token = _current.set(rec)
    try:
        yield rec.times
    finally:
        _current.reset(token)


__all__ = ["STAGES", "recording", "stage"]
