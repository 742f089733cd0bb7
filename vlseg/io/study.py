"""What a case read from a study knows about its source, and the bounded cache readers own.

A reader that splits a folder into sequences (DICOM) answers :class:`StudySource` through the
reader seam (``Reader.study`` for a folder, ``Reader.study_of`` for the files a case was read
from); ``load_case`` sets it as ``Case.study``. Exporters and entry points read it instead of
asking whether a case "is DICOM": ``case.study is None`` for a case read from plain files.

    >>> case.study.reference, case.study.resampled      # ('t1c', ('t1n', 't2w', 't2f'))
    >>> case.study.labels["t2f"]                       # "#3 'AX T2 FLAIR'"

:class:`BoundedCache` is the one cache shape a reader keeps: owned by the reader object (its
lifetime), at most ``size`` entries (least recently used out), safe across threads.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Hashable, Mapping, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class StudySource:
    """A case's study: its series per sequence and the grid the case is on.

    ``reference`` is the sequence whose series grid the case is on (the first of t1c, t2f, t1n,
    t2w natively on it); its series may be outside the case when every sequence the case holds
    was resampled. ``resampled`` lists, in the case's order, the sequences read onto that grid."""

    folder: Path | None  # the study folder (None: series from several folders)
    paths: Mapping[str, Path]  # sequence -> series path (a folder of one series, or its first file)
    labels: Mapping[str, str]  # sequence -> series label for people ("#3 'AX T2 FLAIR'"; no PHI)
    reference: str  # the sequence whose series grid the case is on
    reference_path: Path  # that series' path
    reference_files: tuple[Path, ...]  # its files (a DICOM-SEG references them)
    resampled: tuple[str, ...]  # sequences resampled onto the reference grid
    warnings: tuple[str, ...] = ()  # what reading the study let pass (files skipped as unreadable)

    def __post_init__(self) -> None:
        if set(self.labels) != set(self.paths):
            raise ValueError("a StudySource needs one label per series path")
        if not self.reference_files:
            raise ValueError("a StudySource needs the reference series' files")
        unknown = set(self.resampled) - set(self.paths)
        if unknown:
            raise ValueError(f"resampled sequences {sorted(unknown)} are not among the series")


class BoundedCache(Generic[K, V]):
    """A least-recently-used map of at most ``size`` entries, owned by one object."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a cache needs room for at least one entry")
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


__all__ = ["StudySource", "BoundedCache"]
