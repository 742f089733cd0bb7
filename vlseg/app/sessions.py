"""Chat sessions for the app: one Segmenter state per browser session, one inference lock.

Modelled on the SAM2 web demo: sessions are keyed by uuid4 ids that live only on the server
(Gradio ``gr.State``), requests and responses are typed dataclasses, and a single lock serialises
every call into the model (the Segmenter is not thread-safe). Each session gets its own
``Segmenter`` that shares the loaded model weights and query parser with the others but keeps its
own case, cached encoding and chat context, so sessions never see each other's data.

Memory is bounded: only the ``max_cached`` most recently used sessions keep their encoded scan
(LRU); an evicted session keeps the path of its scan and is re-encoded on its next question.
An eviction drops the session's arrays (Segmenter state, viewer images; masks are kept packed)
and gives the freed heap back to the OS, as does :meth:`SessionStore.idle` after a quiet spell
(``vlseg.memory.release_memory``; without it glibc keeps the pages and the process only grows).

The chat itself lives here too, as a list of :class:`Turn` per session: a question is recorded
(``submit``) the moment it is sent and answered later, in order (``next_pending`` / ``finish``),
so no question is lost while another one is being answered and every answer stays with its
question. The browser only ever shows what this list says.
"""
from __future__ import annotations

import copy
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError, VlsegError
from vlseg.memory import release_memory
from vlseg.app import render
from vlseg.app.logging import request_context
from vlseg.app.results import named_downloads, safe_case_id, table_html
from vlseg.app.viewer import PairView, ViewerCase

if TYPE_CHECKING:  # torch loads with the model, not with the app's modules
    from vlseg.io import Case
    from vlseg.segmenter import SegmenterLike
    from vlseg.segmenter.compare import Comparison

Progress = Callable[[float, str], None]
MAX_TURNS = 200  # chat turns kept per session (oldest dropped)


def fork_segmenter(base: SegmenterLike) -> SegmenterLike:
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
    label: str | None  # what the chat calls this case (None: the case id from the file names)
    fingerprint: str | None = None  # content hash; the same upload twice reuses the encoding
    name: str | None = None  # names the case and its downloads (a DICOM study's description)


@dataclass(frozen=True)
class CaseResponse:
    session_id: str
    label: str
    sequences: tuple[str, ...]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    encode_s: float
    reused: bool  # True when the same scan was already encoded for this session
    case_id: str = "case"  # file-name-safe id (downloads are named <case_id>_<concept>.nii.gz)


@dataclass(frozen=True)
class AskRequest:
    session_id: str
    query: str
    confidence: float | None = None  # level of the volume / ratio intervals (None: default)
    timepoint: str | None = None  # pre | post | auto for the scan (None: as it was)
    pictures: bool = True  # the UI's extras: overlay PNG, table, named downloads + zip, viewer masks
    # with pictures: each concept's probability and uncertainty maps among the downloads (writing
    # two compressed float volumes costs about a second per answer at 1 mm, so it is asked for)
    probability_maps: bool = False


@dataclass(frozen=True)
class AskResponse:
    session_id: str
    text: str
    refused: bool
    intent: str
    answer_json: dict[str, Any]
    table_html: str  # measurements table ("" without targets or pictures), see results.py
    overlay_png: Path | None  # None without masks or pictures
    mask_files: list[Path]  # as answer.json names them (<concept>.nii.gz; the HTTP API's files)
    downloads: list[Path]  # <case_id>_<concept>.nii.gz + <case_id>_all.zip (the UI's; [] without pictures)
    answer_dir: Path
    reencoded: bool
    center: tuple[int, int, int] | None = None  # voxel (RAS+) through the target, for the viewer

    @property
    def has_result(self) -> bool:
        """True when the answer brings something to show beside the chat (masks or numbers)."""
        return bool(self.mask_files or self.answer_json.get("targets"))


@dataclass(frozen=True)
class CompareRequest:
    session_id: str
    baseline: Path | Mapping[str, Path]  # case folder or {sequence: file}
    followup: Path | Mapping[str, Path]
    confidence: float | None = None
    timepoint: str | None = None


@dataclass(frozen=True)
class CompareResponse:
    session_id: str
    text: str
    comparison_json: dict[str, Any]
    files: list[Path]  # comparison.json, the change map and the follow-up masks on the baseline grid
    out_dir: Path


@dataclass
class Turn:
    """One exchange in the chat: the question at once, the answer when it is ready."""

    id: int
    question: str
    kind: str = "ask"  # "ask" (answered by the model) or "note" (case loads, messages)
    answer: str | None = None  # None while queued or being answered
    picture: Path | None = None  # overlay shown with the answer
    state: str = "queued"  # queued -> answering -> done
    downloads: tuple[Path, ...] = ()  # this answer's own masks, zip and answer.json (issue 22)
    table: str = ""  # this answer's own measurements table (HTML)
    started: float | None = None  # when answering began (progress in the bubble)


class _OnBaselineGrid(Mapping):
    """A comparison's follow-up images pulled onto the baseline grid through its registration,
    each sequence when it is first shown (about 0.5 s per sequence at 1 mm; the viewer shows one
    at a time)."""

    def __init__(self, cmp: Comparison) -> None:
        self._cmp = cmp
        self._keys = [s for s in cmp.followup_case.images if s in cmp.baseline_case.images]
        self._done: dict[str, np.ndarray] = {}

    def __getitem__(self, seq: str) -> np.ndarray:
        if seq not in self._done:
            if seq not in self._keys:
                raise KeyError(seq)
            from vlseg.reasoning.registration import resample_to_grid

            base, follow = self._cmp.baseline_case, self._cmp.followup_case
            self._done[seq] = resample_to_grid(np.asarray(follow.images[seq], np.float32), follow.affine,
                                               base.shape, base.affine, self._cmp.registration.matrix, order=1)
        return self._done[seq]

    def __contains__(self, seq: object) -> bool:  # without resampling
        return seq in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


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
    case_id: str = "case"
    segmenter: SegmenterLike | None = None  # None when no case or evicted from the LRU
    viewer: ViewerCase | None = None  # images + sprite sheets of the slice viewer
    pair: PairView | None = None  # after a comparison: both time points side by side
    viewer_seq: str | None = None  # sequence shown in the viewer
    sequences: list[str] = field(default_factory=list)  # the scan's sequences (kept when evicted)
    masks_ras: dict[str, np.ndarray] = field(default_factory=dict)  # latest mask per concept
    packed_masks: dict[str, tuple[tuple[int, ...], bytes]] = field(default_factory=dict)  # when evicted
    volumes_ml: dict[str, float | None] = field(default_factory=dict)
    center: tuple[int, int, int] | None = None  # voxel the viewer's crosshair jumps to
    focus: int = 0  # bumped when the crosshair should jump to ``center``
    current: tuple[str, ...] = ()  # the latest answer's concepts: the viewer's legend
    case_gen: int = 0  # bumped per new case (the viewer's key)
    n_answers: int = 0
    turns: list[Turn] = field(default_factory=list)
    n_turns: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def pack_masks(self) -> None:
        """Keep the masks compressed (an evicted session's viewer still shows them)."""
        for c, m in self.masks_ras.items():
            self.packed_masks[c] = (m.shape, zlib.compress(np.packbits(m.astype(bool)).tobytes(), 1))
        self.masks_ras = {}

    def masks(self) -> dict[str, np.ndarray]:
        """The latest mask per concept. While evicted (no Segmenter) an unpacked copy: the packed
        masks stay, so the LRU's memory cap still holds; once re-encoded they are unpacked for good."""
        if self.packed_masks and not self.masks_ras:
            unpacked = {}
            for c, (shape, data) in self.packed_masks.items():
                bits = np.unpackbits(np.frombuffer(zlib.decompress(data), np.uint8))
                unpacked[c] = bits[:int(np.prod(shape))].reshape(shape)
            if self.segmenter is None:
                return unpacked
            self.masks_ras, self.packed_masks = unpacked, {}
        return self.masks_ras


class SessionStore:
    """All sessions of one app process. Thread-safe; model calls run under one lock."""

    def __init__(self, *, base: SegmenterLike, output_dir: str | Path, max_cached: int = 3,
                 max_sessions: int = 256, max_query_chars: int = 500,
                 fork: Callable[[SegmenterLike], SegmenterLike] = fork_segmenter) -> None:
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
        self._chat_lock = threading.Lock()  # guards every session's turns
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._encoded: OrderedDict[str, None] = OrderedDict()  # LRU of sessions holding encodings
        self._last_request = time.monotonic()
        self._trimmed = True  # no request since the heap was last trimmed

    # ----------------------------------------------------------------- bookkeeping
    def new_session(self) -> str:
        sid = str(uuid.uuid4())
        with self._meta_lock:
            self._sessions[sid] = Session(id=sid, out_dir=self.output_dir / sid)
            dropped = []
            while len(self._sessions) > self.max_sessions:
                old, old_session = self._sessions.popitem(last=False)
                self._encoded.pop(old, None)
                dropped.append(old_session)
        for old_session in dropped:  # nothing else refers to them: freed now, trimmed when idle
            old_session.segmenter, old_session.viewer, old_session.pair = None, None, None
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
        """Mark a session as holding an encoding; evict the least recently used beyond the cap
        (the caller holds the inference lock)."""
        evicted = []
        with self._meta_lock:
            self._encoded[session.id] = None
            self._encoded.move_to_end(session.id)
            while len(self._encoded) > self.max_cached:
                old_id, _ = self._encoded.popitem(last=False)
                old = self._sessions.get(old_id)
                if old is not None:
                    evicted.append(old)
            self._last_request, self._trimmed = time.monotonic(), False
        for old in evicted:
            self._release(old)
        if evicted:
            release_memory()

    @staticmethod
    def _release(session: Session) -> None:
        """Drop a session's arrays: its Segmenter state and viewer images (masks stay packed)."""
        if session.segmenter is not None:
            session.segmenter.reset()
        session.segmenter = None
        session.viewer = None  # sprite sheets on disk stay valid
        session.pair = None
        session.pack_masks()

    def idle(self, quiet_s: float = 0.0) -> bool:
        """Give freed heap back to the OS once no request has come for ``quiet_s`` seconds
        (once per quiet spell; skipped while a model call runs). True when it trimmed."""
        if self._trimmed or time.monotonic() - self._last_request < quiet_s:
            return False
        if not self.inference_lock.acquire(blocking=False):
            return False
        try:
            release_memory()
            self._trimmed = True
        finally:
            self.inference_lock.release()
        return True

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
            from vlseg.io import open_case

            progress(0.2, "reading and checking the scan")
            case = open_case(req.source)  # InputError on every bad input
            progress(0.5, "encoding the scan (once per case)")
            with self.inference_lock:
                session.case_gen += 1
                encode_s = self._encode_locked(session, case)
                session.source, session.fingerprint = req.source, req.fingerprint
                # A named upload (a DICOM study's description) names the case, not its first file
                session.case_id = safe_case_id(req.name or getattr(case, "case_id", None) or req.label)
                session.label = req.label or session.case_id
                session.masks_ras, session.packed_masks, session.volumes_ml = {}, {}, {}
                session.center, session.focus, session.current = None, session.focus + 1, ()
                session.viewer_seq, session.pair = None, None
            ctx.set(n_sequences=len(case.present), sequences=list(case.present), encode_s=encode_s)
            return self._case_response(session, encode_s=encode_s, reused=False)

    def _encode_locked(self, session: Session, case: Case, viewer: ViewerCase | None = None) -> float:
        """Encode ``case`` into the session's own Segmenter (caller holds the inference lock);
        ``viewer``: the case's viewer when one is already built (a re-encode of the same scan)."""
        seg = session.segmenter or self._fork(self._base)
        t0 = time.perf_counter()
        seg.set_case(case)
        encode_s = time.perf_counter() - t0
        session.segmenter = seg
        session.viewer = viewer or self._make_viewer(session, case)
        self._touch_encoded(session)
        return encode_s

    def _make_viewer(self, session: Session, case: Case) -> ViewerCase:
        key = f"{session.short_id}-{session.case_gen}"
        viewer = ViewerCase(images=case.images, spacing=tuple(float(v) for v in case.spacing),
                            out_dir=session.out_dir / "viewer", key=key)
        session.sequences = list(viewer.sequences)
        return viewer

    def _pair_view(self, session: Session, cmp: Comparison) -> PairView:
        """The side-by-side viewer of a comparison: the baseline with its masks, the follow-up's
        images on the baseline grid (each sequence resampled when first shown) with the change map."""
        base, follow = cmp.baseline_case, cmp.followup_case
        spacing = tuple(float(v) for v in base.spacing)
        key = f"{session.short_id}-{session.case_gen}"
        folder = session.out_dir / "viewer"
        baseline = ViewerCase(images=base.images, spacing=spacing, out_dir=folder, key=f"{key}-baseline")
        return PairView(
            baseline=baseline,
            followup=ViewerCase(images=_OnBaselineGrid(cmp), spacing=spacing, out_dir=folder,
                                key=f"{key}-followup", box=baseline.box),
            masks={c: np.asarray(m, np.uint8) for c, m in cmp.baseline.masks_ras.items()},
            change=cmp.change,
            volumes_ml={t["concept"]: t.get("volume_ml") for t in cmp.baseline.targets},
            titles=(f"Baseline · {safe_case_id(base.case_id)}",
                    f"Follow-up · {safe_case_id(follow.case_id)} · registered, change coloured"))

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
                    from vlseg.io import open_case

                    self._encode_locked(session, open_case(session.source), viewer=session.viewer)
                    reencoded = True
                seg = session.segmenter
                assert seg is not None
                if req.timepoint is not None:
                    seg.set_timepoint(req.timepoint)
                ans = (seg.ask(query) if req.confidence is None
                       else seg.ask(query, confidence=req.confidence))
                case = seg.case
                self._touch_encoded(session)
            session.n_answers += 1
            answer_dir = session.out_dir / f"answer-{session.n_answers:03d}"
            ans.save(answer_dir, probabilities=req.pictures and req.probability_maps)
            mask_files = [p for p in (answer_dir / f"{c}.nii.gz" for c in ans.masks_ras) if p.is_file()]
            answer_json = ans.to_json()
            overlay, center = None, None
            if ans.masks_ras and req.pictures:
                if ans.intent != "change":  # a change question keeps both time points side by side
                    session.pair = None
                center = render.target_center(ans.masks_ras, case.shape)
                session.masks().update({c: np.asarray(m, dtype=np.uint8)
                                          for c, m in ans.masks_ras.items()})
                vols = {t["concept"]: t.get("volume_ml") for t in ans.targets}
                session.volumes_ml.update(vols)
                if session.pair is None:  # the side-by-side view keeps the baseline's crosshair
                    session.center, session.focus = center, session.focus + 1
                session.current = tuple(ans.masks_ras)
                overlay = render.render_overlay(
                    case.images, ans.masks_ras, case.spacing, answer_dir / "overlay.png",
                    volumes_ml=vols, title=f"{session.label or 'case'}: " + ", ".join(ans.masks_ras))
            downloads = (named_downloads(answer_dir, answer_json, session.case_id)
                         if ans.targets and req.pictures else [])
            ctx.set(intent=ans.intent, refused=ans.refused, n_targets=len(ans.targets),
                    concepts=[t["concept"] for t in ans.targets], evicted=reencoded)
            return AskResponse(
                session_id=session.id, text=ans.text, refused=ans.refused, intent=ans.intent,
                answer_json=answer_json, overlay_png=overlay,
                table_html=table_html(answer_json) if req.pictures else "",
                mask_files=mask_files, downloads=downloads, answer_dir=answer_dir,
                reencoded=reencoded, center=center,
            )

    def compare(self, req: CompareRequest) -> CompareResponse:
        """Compare two scans of one patient in a session (``Segmenter.compare``); the follow-up
        stays set, so the session's next questions ("did it grow?") are answered from it."""
        session = self.get(req.session_id)
        with request_context("compare", session=session.short_id) as ctx:
            from vlseg.io import open_case

            base, follow = open_case(req.baseline), open_case(req.followup)  # InputError first
            with self.inference_lock:
                session.case_gen += 1
                seg = session.segmenter or self._fork(self._base)
                kw = {} if req.confidence is None else {"confidence": req.confidence}
                try:
                    cmp = seg.compare(base, follow, timepoint=req.timepoint, **kw)
                except Exception:
                    if seg is session.segmenter:  # its case is gone: the next question re-encodes the scan
                        with self._meta_lock:
                            self._encoded.pop(session.id, None)
                        self._release(session)
                    raise
                session.segmenter = seg
                session.viewer = self._make_viewer(session, follow)
                session.pair = self._pair_view(session, cmp)
                base_masks = cmp.baseline.masks_ras
                session.source, session.fingerprint = req.followup, None
                session.case_id = safe_case_id(follow.case_id)
                session.label = session.case_id
                session.masks_ras, session.packed_masks, session.volumes_ml = {}, {}, {}
                session.center = render.target_center(base_masks, base.shape)
                session.focus, session.viewer_seq, session.current = session.focus + 1, None, ()
                self._touch_encoded(session)
            session.n_answers += 1
            out = session.out_dir / f"compare-{session.n_answers:03d}"
            path = cmp.save(out)
            registered = sorted((out / "followup_on_baseline").glob("*.nii.gz"))
            ctx.set(rano_category=cmp.doc["rano_category"], new_lesions=cmp.doc["new_lesions"])
            return CompareResponse(session_id=session.id, text=cmp.text, comparison_json=cmp.doc,
                                   files=[path, *registered], out_dir=out)

    # ----------------------------------------------------------------- viewer
    def viewer_payload(self, session_id: str | None, seq: str | None = None,
                       url: Callable[[Path], str] = str) -> dict[str, Any] | None:
        """The slice viewer's data for the session's scan and masks so far; None without a scan.

        ``seq`` switches the background sequence (default: the one shown, else T1c/FLAIR/T1/T2).
        After an LRU eviction the scan is re-read (not re-encoded) to draw it, and that viewer
        is not kept: an evicted session holds no images, so the LRU's memory cap holds.
        """
        if not session_id:
            return None
        try:
            session = self.get(session_id)
        except VlsegError:
            return None
        if session.pair is not None:
            pair = session.pair
            if seq not in pair.sequences:
                seq = session.viewer_seq if session.viewer_seq in pair.sequences else None
            seq = seq or render.pick_background(pair.baseline.images)[0]
            session.viewer_seq = seq
            return pair.payload(seq=seq, url=url, center=session.center, focus=session.focus)
        viewer = session.viewer
        if viewer is None:
            if session.source is None:
                return None
            from vlseg.io import open_case

            viewer = self._make_viewer(session, open_case(session.source))  # not kept (evicted)
        if seq not in viewer.sequences:
            seq = session.viewer_seq if session.viewer_seq in viewer.sequences else None
        if seq is None:
            seq = render.pick_background(viewer.images)[0]
        session.viewer_seq = seq
        return viewer.payload(seq=seq, masks=dict(session.masks()), volumes_ml=dict(session.volumes_ml),
                              center=session.center, focus=session.focus, url=url,
                              current=session.current)

    def viewer_sequences(self, session_id: str | None) -> tuple[list[str], str | None]:
        """Sequences the session's scan has, and the one the viewer shows."""
        try:
            session = self.get(session_id) if session_id else None
        except VlsegError:
            session = None
        if session is None or not session.sequences:
            return [], None
        return list(session.sequences), session.viewer_seq

    # ----------------------------------------------------------------- the chat
    def submit(self, session_id: str, question: str, *, kind: str = "ask",
               answer: str | None = None) -> Turn | None:
        """Record a question now (answered later, in order); None for an empty one."""
        text = " ".join((question or "").split())
        if not text:
            return None
        session = self.get(session_id)
        with self._chat_lock:
            session.n_turns += 1
            turn = Turn(id=session.n_turns, question=text, kind=kind, answer=answer,
                        state="done" if answer is not None else "queued")
            session.turns.append(turn)
            del session.turns[:-MAX_TURNS]
        return turn

    def next_pending(self, session_id: str) -> Turn | None:
        """The oldest queued question of the session, marked as being answered."""
        session = self.get(session_id)
        with self._chat_lock:
            for turn in session.turns:
                if turn.state == "queued" and turn.kind == "ask":
                    turn.state, turn.started = "answering", time.time()
                    return turn
        return None

    def finish(self, turn: Turn, answer: str, picture: Path | None = None,
               downloads: tuple[Path, ...] = (), table: str = "") -> None:
        with self._chat_lock:
            turn.answer, turn.picture, turn.state = answer, picture, "done"
            turn.downloads, turn.table = tuple(downloads), table

    def turns(self, session_id: str | None) -> list[Turn]:
        """A snapshot of the session's chat (empty for an unknown session)."""
        if not session_id:
            return []
        try:
            session = self.get(session_id)
        except VlsegError:
            return []
        with self._chat_lock:
            return [copy.copy(t) for t in session.turns]

    def _case_response(self, session: Session, *, encode_s: float, reused: bool) -> CaseResponse:
        assert session.segmenter is not None
        case = session.segmenter.case
        present = tuple(s for s in SEQUENCES if s in case.images)
        return CaseResponse(
            session_id=session.id, label=session.label or "case", sequences=present,
            shape=tuple(int(v) for v in case.shape),  # type: ignore[arg-type]
            spacing_mm=tuple(round(float(v), 3) for v in case.spacing),  # type: ignore[arg-type]
            encode_s=round(encode_s, 3), reused=reused, case_id=session.case_id,
        )
