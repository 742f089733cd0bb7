"""Chat sessions for the app: one Segmenter state per browser session, one inference lock.

Modelled on the SAM2 web demo: sessions are keyed by uuid4 ids that live only on the server
(Gradio ``gr.State``), requests and responses are typed dataclasses, and a single lock serialises
every call into the model (the Segmenter is not thread-safe). Each session gets its own
``Segmenter`` that shares the loaded model weights and query parser with the others but keeps its
own case, cached encoding and chat context, so sessions never see each other's data.

Memory is bounded: only the ``max_cached`` most recently used sessions keep their encoded scan
(LRU); an evicted session keeps the path of its scan and is re-encoded on its next question.
"""
from __future__ import annotations

import copy
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError, VlsegError
from vlseg.app import render
from vlseg.app.logging import request_context

Progress = Callable[[float, str], None]
VIEWER_MIN_PX = 320  # slice-viewer images of small grids are zoomed to at least this size


class SegmenterLike(Protocol):
    """What the app needs from ``vlseg.Segmenter``."""

    def set_case(self, source: Any) -> dict[str, Any]: ...
    def ask(self, query: str) -> Any: ...
    def reset(self) -> None: ...
    @property
    def case(self) -> Any: ...


def fork_segmenter(base: Any) -> SegmenterLike:
    """A Segmenter with its own case state that shares ``base``'s model and parser (no reload)."""
    from vlseg.segmenter import Segmenter

    if isinstance(base, Segmenter):
        return base.fork()
    # Duck-typed stand-ins (tests): a shallow copy with the case state cleared.
    seg = copy.copy(base)
    seg.reset()
    return seg


# --------------------------------------------------------------------------- requests / responses
@dataclass(frozen=True)
class CaseRequest:
    session_id: str
    source: Path | Mapping[str, Path]  # case folder or {sequence: file}
    label: str  # what the chat calls this case ("sample-1-seed11-1mm", "your upload")
    fingerprint: str | None = None  # content hash; the same upload twice reuses the encoding


@dataclass(frozen=True)
class CaseResponse:
    session_id: str
    label: str
    sequences: tuple[str, ...]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    encode_s: float
    reused: bool  # True when the same scan was already encoded for this session


@dataclass(frozen=True)
class AskRequest:
    session_id: str
    query: str


@dataclass(frozen=True)
class AskResponse:
    session_id: str
    text: str
    refused: bool
    intent: str
    answer_json: dict[str, Any]
    table: list[list[Any]]  # rows of MEASUREMENT_HEADERS
    overlay_png: Path | None
    mask_files: list[Path]
    answer_dir: Path
    reencoded: bool
    focus_slice: int | None = None  # axial index (RAS+) through the target, for the viewer


MEASUREMENT_HEADERS: list[str] = [
    "concept", "region", "found", "volume (mL)", "range (mL)", "lesions", "max diameter (mm)",
    "perpendicular (mm)", "hemisphere", "crosses midline", "lobes",
]


def measurement_rows(targets: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for t in targets:
        rng = t.get("volume_ml_range") or [None, None]
        rows.append([
            t.get("concept"), vocab.names().get(t.get("concept", ""), ""),
            "yes" if t.get("present") else "no",
            t.get("volume_ml"),
            "" if rng[0] is None else f"{rng[0]}–{rng[1]}",
            t.get("n_lesions"), t.get("max_diameter_mm"), t.get("perpendicular_diameter_mm"),
            t.get("hemisphere") or "", "yes" if t.get("crosses_midline") else "no",
            ", ".join(t.get("lobes") or []),
        ])
    return rows


def fingerprint_files(files: Mapping[str, Path]) -> str:
    """sha256 over (sequence, content) pairs: identifies the same scan uploaded again."""
    h = hashlib.sha256()
    for seq in sorted(files):
        h.update(seq.encode())
        with open(files[seq], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- per-session state
@dataclass
class Session:
    id: str
    out_dir: Path
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    source: Path | Mapping[str, Path] | None = None
    label: str | None = None
    fingerprint: str | None = None
    segmenter: SegmenterLike | None = None  # None when no case or evicted from the LRU
    display: np.ndarray | None = None  # (X, Y, Z) uint8 background for the slice viewer
    masks_ras: dict[str, np.ndarray] = field(default_factory=dict)  # latest mask per concept
    n_answers: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:8]


class SessionStore:
    """All sessions of one app process. Thread-safe; model calls run under one lock."""

    def __init__(self, *, base: Any, output_dir: str | Path, max_cached: int = 3,
                 max_sessions: int = 256, max_query_chars: int = 500,
                 fork: Callable[[Any], SegmenterLike] = fork_segmenter) -> None:
        if max_cached < 1 or max_sessions < max_cached:
            raise ValueError("need max_sessions >= max_cached >= 1")
        self._base = base
        self._fork = fork
        self.output_dir = Path(output_dir)
        self.max_cached = max_cached
        self.max_sessions = max_sessions
        self.max_query_chars = max_query_chars
        self.inference_lock = threading.Lock()  # the Segmenter is not thread-safe
        self._meta_lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._encoded: OrderedDict[str, None] = OrderedDict()  # LRU of sessions holding encodings

    # ----------------------------------------------------------------- bookkeeping
    def new_session(self) -> str:
        sid = str(uuid.uuid4())
        with self._meta_lock:
            self._sessions[sid] = Session(id=sid, out_dir=self.output_dir / sid)
            while len(self._sessions) > self.max_sessions:
                old, _ = self._sessions.popitem(last=False)
                self._encoded.pop(old, None)
        return sid

    def get(self, session_id: str) -> Session:
        with self._meta_lock:
            s = self._sessions.get(session_id)
            if s is None:
                raise VlsegError("This chat session has expired; reload the page and load a case again.")
            self._sessions.move_to_end(session_id)
            s.last_used = time.time()
            return s

    def ensure(self, session_id: str | None) -> str:
        """The given session id if it is live, else a fresh one."""
        if session_id:
            with self._meta_lock:
                if session_id in self._sessions:
                    return session_id
        return self.new_session()

    def drop(self, session_id: str | None) -> None:
        """Forget a session (its files on disk are removed later by the janitor)."""
        if not session_id:
            return
        with self._meta_lock:
            self._sessions.pop(session_id, None)
            self._encoded.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def n_encoded(self) -> int:
        return len(self._encoded)

    def _touch_encoded(self, session: Session) -> None:
        """Mark a session as holding an encoding; evict the least recently used beyond the cap."""
        with self._meta_lock:
            self._encoded[session.id] = None
            self._encoded.move_to_end(session.id)
            while len(self._encoded) > self.max_cached:
                old_id, _ = self._encoded.popitem(last=False)
                old = self._sessions.get(old_id)
                if old is not None:
                    if old.segmenter is not None:
                        old.segmenter.reset()
                    old.segmenter = None
                    old.display = None
                    old.masks_ras = {}

    # ----------------------------------------------------------------- the two operations
    def set_case(self, req: CaseRequest, progress: Progress | None = None) -> CaseResponse:
        """Validate and encode a scan for one session (reuses the encoding of the same scan)."""
        session = self.get(req.session_id)
        progress = progress or (lambda f, msg: None)
        with request_context("set_case", session=session.short_id) as ctx:
            if (req.fingerprint is not None and req.fingerprint == session.fingerprint
                    and session.segmenter is not None):
                ctx.set(status="reused")
                return self._case_response(session, encode_s=0.0, reused=True)
            from vlseg.io import load_case

            progress(0.2, "reading and checking the scan")
            case = load_case(req.source)  # InputError on every bad input
            progress(0.5, "encoding the scan (once per case)")
            with self.inference_lock:
                encode_s = self._encode_locked(session, case)
                session.source, session.label = req.source, req.label
                session.fingerprint = req.fingerprint
                session.masks_ras = {}
            ctx.set(n_sequences=len(case.present), sequences=list(case.present), encode_s=encode_s)
            return self._case_response(session, encode_s=encode_s, reused=False)

    def _encode_locked(self, session: Session, case: Any) -> float:
        """Encode ``case`` into the session's own Segmenter (caller holds the inference lock)."""
        seg = session.segmenter or self._fork(self._base)
        t0 = time.perf_counter()
        seg.set_case(case)
        encode_s = time.perf_counter() - t0
        session.segmenter = seg
        session.display = render.to_display_uint8(render.pick_background(case.images)[1])
        self._touch_encoded(session)
        return encode_s

    def check_query(self, query: str | None) -> str:
        """The question with whitespace collapsed; InputError if empty or over the length limit
        (callers check before any upload is read or scan encoded)."""
        query = " ".join((query or "").split())
        if not query:
            raise InputError("the question is empty; type e.g. 'segment the enhancing tumor'")
        if len(query) > self.max_query_chars:
            raise InputError(f"the question is longer than {self.max_query_chars} characters; shorten it")
        return query

    def ask(self, req: AskRequest) -> AskResponse:
        """Answer one question on the session's case; writes overlay, masks and answer.json."""
        session = self.get(req.session_id)
        query = self.check_query(req.query)
        with request_context("ask", session=session.short_id) as ctx:
            reencoded = False
            with self.inference_lock:
                if session.segmenter is None:
                    # Evicted from the LRU (or never set): re-read and re-encode the same scan.
                    if session.source is None:
                        raise InputError("no scan is loaded yet; pick a sample case or upload your "
                                         "scans first")
                    from vlseg.io import load_case

                    self._encode_locked(session, load_case(session.source))
                    reencoded = True
                seg = session.segmenter
                assert seg is not None
                ans = seg.ask(query)
                case = seg.case
                self._touch_encoded(session)
            session.n_answers += 1
            answer_dir = session.out_dir / f"answer-{session.n_answers:03d}"
            ans.save(answer_dir)
            mask_files = [answer_dir / f"{c}.nii.gz" for c in ans.masks_ras]
            overlay, focus = None, None
            if ans.masks_ras:
                focus = render.target_center(ans.masks_ras, case.shape)[2]
                session.masks_ras.update({c: np.asarray(m, dtype=np.uint8)
                                          for c, m in ans.masks_ras.items()})
                vols = {t["concept"]: t.get("volume_ml") for t in ans.targets}
                overlay = render.render_overlay(
                    case.images, ans.masks_ras, case.spacing, answer_dir / "overlay.png",
                    volumes_ml=vols, title=f"{session.label or 'case'}: " + ", ".join(ans.masks_ras))
            ctx.set(intent=ans.intent, refused=ans.refused, n_targets=len(ans.targets),
                    concepts=[t["concept"] for t in ans.targets], evicted=reencoded)
            return AskResponse(
                session_id=session.id, text=ans.text, refused=ans.refused, intent=ans.intent,
                answer_json=ans.to_json(), table=measurement_rows(ans.targets), overlay_png=overlay,
                mask_files=[p for p in mask_files if p.is_file()], answer_dir=answer_dir,
                reencoded=reencoded, focus_slice=focus,
            )

    # ----------------------------------------------------------------- viewer
    def viewer_slice(self, session_id: str | None, z: int | None,
                     enabled: list[str] | None) -> np.ndarray | None:
        """Axial slice ``z`` of the session's scan with its latest masks; None without a scan."""
        if not session_id:
            return None
        try:
            session = self.get(session_id)
        except VlsegError:
            return None
        display = session.display
        if display is None:
            return None
        zz = display.shape[2] // 2 if z is None else int(z)
        return render.axial_slice(display, dict(session.masks_ras), zz, enabled,
                                  min_size=VIEWER_MIN_PX)

    def _case_response(self, session: Session, *, encode_s: float, reused: bool) -> CaseResponse:
        assert session.segmenter is not None
        case = session.segmenter.case
        present = tuple(s for s in SEQUENCES if s in case.images)
        return CaseResponse(
            session_id=session.id, label=session.label or "case", sequences=present,
            shape=tuple(int(v) for v in case.shape),  # type: ignore[arg-type]
            spacing_mm=tuple(round(float(v), 3) for v in case.spacing),  # type: ignore[arg-type]
            encode_s=round(encode_s, 3), reused=reused,
        )
