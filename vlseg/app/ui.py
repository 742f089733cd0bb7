"""The Gradio chat app: layout, event handlers, and the ``/ask`` HTTP API endpoint.

Layout (one screen at 1400×900, stacked at phone width): a case panel (sample cases, or an upload
of 1-4 NIfTI sequences or a .zip of a case folder), the chat (each answer brings grounded text and
the three-plane overlay with legend and volumes), and beside it the results: a three-plane slice
viewer (``viewer.py`` + ``static/viewer.js``), the measurements table and downloads named by case.

Asking is two steps so that no question is ever lost: ``submit`` records the question in the
session's chat at once (no queue, no model), then ``answer_next`` (queued, one model call at a
time) answers the oldest waiting question. Every step redraws the chat from the session's own
list, so answers stay attached to their questions whatever order the browser sees replies in.

Every model call goes through ``SessionStore`` (one inference lock, per-session Segmenters).
Handlers never raise for a user mistake: the message goes into the chat and the app keeps running;
a refused or failed question leaves the picture, table, files and viewer as they were.
"""
from __future__ import annotations

import json
import re
import statistics
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from vlseg.errors import VlsegError
from vlseg.segmenter.timepoint import TIMEPOINTS
from vlseg.app.errors import GuardedBlocks
from vlseg.app.logging import log_event, new_request_id, where
from vlseg.app.samples import SampleLibrary
from vlseg.app.sessions import (
    AskRequest, CaseRequest, CaseResponse, CompareRequest, SessionStore, Turn,
)
from vlseg.app.results import comparison_table_html
from vlseg.app.uploads import collect_uploads
from vlseg.app.viewer import SEQUENCE_BUTTONS

TITLE = "vlseg — ask a brain-tumor MRI"
EXAMPLE_QUERIES = [
    "segment the enhancing tumor",
    "how big is the edema?",
    "where is the tumor?",
    "what fraction of the tumor core is necrotic?",
    "segment the necrotic core and the edema",
    "what can you segment?",
]
INTRO = (
    "Pick a sample case or upload 1–4 NIfTI sequences (BraTS names: `…-t1n/-t1c/-t2w/-t2f.nii.gz` "
    "or `…_t1/_t1ce/_t2/_flair.nii.gz`) or a `.zip` of a case folder, then ask. Research tool "
    "output, not a diagnosis: the bundled model was trained on synthetic images only, never on real scans."
)
STATIC = Path(__file__).with_name("static")
MAX_WAITING = 5  # questions one session may have waiting; more are refused with a reason, not dropped
QUEUED = "*Queued — answered right after the question above…*"
ANSWERING = "*Answering…*"

_ABS_PATH = re.compile(r"(?<![\w.])(?:/[^\s/:'\"]+)+/([^\s/:'\"]+)")
# The library's hint names its ``series=`` parameter, which the app has no field for.
_SERIES_HINT = re.compile(r"(pick one|name them) with series=[^;]*")


def strip_dirs(text: str) -> str:
    """Show file names without server folders (upload caches, output roots) in user messages,
    and a DICOM study's series hint as what the app's user can do."""
    text = _SERIES_HINT.sub("upload a zip holding only the series to use", text)
    return _ABS_PATH.sub(r"\1", text)


def _user_message(e: BaseException) -> str:
    """Chat text for an error: the user's own problem verbatim, anything else generic."""
    if isinstance(e, VlsegError):
        return f"⚠️ {strip_dirs(str(e))}"
    rid = new_request_id()
    log_event(rid, op="handler", status="error", error=type(e).__name__, where=where(e))
    return f"⚠️ Something went wrong on the server (error id {rid}); the app is still running — try again."


def file_url(path: Path) -> str:
    """URL of a file under the app's outputs (served by Gradio's file route; page-relative)."""
    return "gradio_api/file=" + quote(str(Path(path).resolve()))


def chat_messages(turns: list[Turn], expected_s: float | None = None) -> list[dict[str, Any]]:
    """The chat as Gradio messages: each question, then its answer (or where it waits, with the
    time so far and ``expected_s``, the expected time of this answer) and picture."""
    msgs: list[dict[str, Any]] = []
    for t in turns:
        msgs.append({"role": "user", "content": t.question})
        if t.answer is None:
            msgs.append({"role": "assistant", "content": answering(t, expected_s) if t.state == "answering"
                         else QUEUED})
            continue
        msgs.append({"role": "assistant", "content": t.answer + _own_results(t)})
        if t.picture is not None and Path(t.picture).is_file():
            msgs.append({"role": "assistant", "content": {
                "path": str(t.picture), "alt_text": "Mask over the scan: axial, coronal and sagittal "
                "planes through the target, with legend and volumes"}})
    return msgs


def answering(t: Turn, expected_s: float | None = None) -> str:
    """The bubble of the question being answered: time so far and, when known, what is left."""
    if t.started is None:
        return ANSWERING
    so_far = max(0, int(time.time() - t.started))
    if expected_s is None:
        return f"*Answering… {so_far} s so far (the first answer on a case also maps it to the atlas).*"
    left = int(round(expected_s - so_far))
    rest = f"about {left} s left" if left > 0 else "almost done"
    return f"*Answering… {so_far} s so far, {rest}.*"


def _own_results(t: Turn) -> str:
    """This answer's own table and downloads in its bubble, so an earlier answer's table and
    masks stay there after later questions (issue 22)."""
    out = ""
    if t.table:
        out += "\n\n" + t.table
    shown = [f for f in t.downloads if Path(f).is_file()]
    if shown:
        links = " · ".join(f"[{Path(f).name}]({file_url(Path(f))})" for f in shown)
        out += f"\n\n**Downloads of this answer:** {links}"
    return out


def _waiting(turns: list[Turn]) -> str:
    n = sum(1 for t in turns if t.answer is None)
    return "" if n == 0 else f"{n} question{'s' if n > 1 else ''} waiting for an answer…"


def _seq_choices(seqs: list[str]) -> list[tuple[str, str]]:
    return [(SEQUENCE_BUTTONS.get(s, s), s) for s in seqs]


class ChatApp:
    """Event handlers bound to one SessionStore and SampleLibrary."""

    def __init__(self, *, store: SessionStore, samples: SampleLibrary) -> None:
        self.store = store
        self.samples = samples
        # Recent answer times (s), first answers on a case apart: the bubble's estimate
        self._took: dict[bool, deque[float]] = {True: deque(maxlen=5), False: deque(maxlen=5)}

    def _chat(self, sid: str | None) -> list[dict[str, Any]]:
        return chat_messages(self.store.turns(sid))

    def _viewer(self, sid: str | None, seq: str | None = None) -> str:
        payload = self.store.viewer_payload(sid, seq, url=file_url)
        return "" if payload is None else json.dumps(payload)

    # ----------------------------------------------------------------- case loading
    def _case_loaded(self, resp: CaseResponse, note: str = "", what: str = "") -> tuple:
        shape = "×".join(str(v) for v in resp.shape)
        sp = "×".join(f"{v:g}" for v in resp.spacing_mm)
        info = (f"**Case:** {resp.label} · {', '.join(resp.sequences)} · {shape} voxels at {sp} mm"
                + ("" if resp.reused else f" · encoded in {resp.encode_s:.1f} s"))
        missing = [s for s in ("t1n", "t1c", "t2w", "t2f") if s not in resp.sequences]
        text = (f"Loaded **{resp.label}** ({', '.join(resp.sequences)}{note}). "
                + (f"Missing sequences ({', '.join(missing)}) are treated as absent. " if missing else "")
                + "Ask e.g. *segment the enhancing tumor* or *how big is the edema?*")
        sid = resp.session_id
        self.store.submit(sid, what or f"Load {resp.label}", kind="note", answer=text)
        viewer = self._viewer(sid)
        seqs, shown = self.store.viewer_sequences(sid)
        return (sid, self._chat(sid), info, viewer,
                gr.Radio(choices=_seq_choices(seqs), value=shown, interactive=True),
                "", None)

    def _case_failed(self, sid: str, e: BaseException, what: str) -> tuple:
        self.store.submit(sid, what, kind="note", answer=_user_message(e))
        return sid, self._chat(sid), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def load_sample(self, name: str | None, sid: str | None,
                    progress: gr.Progress = gr.Progress()) -> tuple:
        sid = self.store.ensure(sid)
        try:
            if not name:
                raise VlsegError("Pick one of the sample cases first.")
            if name not in self.samples.names:
                raise VlsegError("Unknown sample case; pick one from the list.")
            if not self.samples.is_ready(name):
                raise VlsegError(f"{name} is still being generated ({self.samples.status()}); "
                                 "try again in a few seconds.")
            progress(0.05, desc="loading sample case")
            resp = self.store.set_case(
                CaseRequest(session_id=sid, source=self.samples.path(name), label=name,
                            fingerprint=f"sample:{name}"),
                progress=lambda f, msg: progress(f, desc=msg))
            return self._case_loaded(resp)
        except Exception as e:  # noqa: BLE001 - shown in the chat; the app keeps running
            return self._case_failed(sid, e, f"Load {name or 'a sample case'}")

    def load_upload(self, files: list[str] | None, sid: str | None,
                    progress: gr.Progress = gr.Progress()) -> tuple:
        sid = self.store.ensure(sid)
        names = ", ".join(Path(f).name for f in (files or [])) or "nothing"
        try:
            progress(0.05, desc="checking uploaded files")
            work = self.store.output_dir / sid / f"upload-{uuid.uuid4().hex[:8]}"
            ups = collect_uploads(files or [], work)
            progress(0.15, desc="checking uploaded files")
            resp = self.store.set_case(
                CaseRequest(session_id=sid, source=dict(ups.sequences), label=ups.name,
                            fingerprint=ups.fingerprint, name=ups.name),
                progress=lambda f, msg: progress(f, desc=msg))
            note = f"; ignored {', '.join(ups.ignored)}" if ups.ignored else ""
            out = self._case_loaded(resp, note, what=f"Upload {strip_dirs(names)}")
            return (*out, gr.File(value=None))  # the upload box clears after a load
        except Exception as e:  # noqa: BLE001
            return (*self._case_failed(sid, e, f"Upload {strip_dirs(names)}"), gr.skip())

    # ----------------------------------------------------------------- two time points
    def _compared(self, sid: str, resp: Any, what: str) -> tuple:
        """A comparison in the chat (its text), both scans side by side in the viewer, the
        change table and the comparison's files."""
        text = (resp.text + " The viewer shows both scans side by side on the baseline's grid (change "
                "coloured); ask e.g. *did it grow?* or *is there a new lesion?*")
        self.store.submit(sid, what, kind="note", answer=text)
        seqs, shown = self.store.viewer_sequences(sid)
        info = f"**Comparison:** {what[len('Compare '):]} · follow-up set for questions"
        return (sid, self._chat(sid), info, self._viewer(sid),
                gr.Radio(choices=_seq_choices(seqs), value=shown, interactive=True),
                comparison_table_html(resp.comparison_json), [str(p) for p in resp.files])

    def compare_sample(self, name: str | None, sid: str | None, confidence: float | None = None,
                       timepoint: str | None = None, progress: gr.Progress = gr.Progress()) -> tuple:
        sid = self.store.ensure(sid)
        what = f"Compare {name or 'a sample pair'}"
        try:
            if not name or name not in self.samples.pair_names:
                raise VlsegError("Pick one of the sample pairs first.")
            if name not in self.samples.pairs_ready():
                raise VlsegError(f"{name} is still being generated ({self.samples.status()}); "
                                 "try again in a few seconds.")
            base, follow = self.samples.pair_paths(name)
            progress(0.1, desc="registering and answering both scans")
            resp = self.store.compare(CompareRequest(session_id=sid, baseline=base, followup=follow,
                                                     confidence=_confidence(confidence),
                                                     timepoint=_timepoint(timepoint) or "auto"))
            return self._compared(sid, resp, f"Compare {name}: baseline and follow-up")
        except Exception as e:  # noqa: BLE001 - shown in the chat; the app keeps running
            return self._case_failed(sid, e, what)

    def compare_upload(self, baseline: list[str] | None, followup: list[str] | None, sid: str | None,
                       confidence: float | None = None, timepoint: str | None = None,
                       progress: gr.Progress = gr.Progress()) -> tuple:
        sid = self.store.ensure(sid)
        what = "Compare the uploaded baseline and follow-up"
        try:
            if not baseline or not followup:
                raise VlsegError("Upload both scans: the baseline's files and the follow-up's files.")
            progress(0.05, desc="checking uploaded files")
            work = self.store.output_dir / sid / f"upload-{uuid.uuid4().hex[:8]}"
            ups = [collect_uploads(files, work / role) for role, files in
                   (("baseline", baseline), ("followup", followup))]
            progress(0.1, desc="registering and answering both scans")
            resp = self.store.compare(CompareRequest(session_id=sid, baseline=dict(ups[0].sequences),
                                                     followup=dict(ups[1].sequences),
                                                     confidence=_confidence(confidence),
                                                     timepoint=_timepoint(timepoint) or "auto"))
            return self._compared(sid, resp, f"Compare {ups[0].name} (baseline) with {ups[1].name} (follow-up)")
        except Exception as e:  # noqa: BLE001
            return self._case_failed(sid, e, what)

    # ----------------------------------------------------------------- chat
    def submit(self, query: str | None, sid: str | None) -> tuple:
        """Step 1 (instant, no queue): the question joins the chat; the box clears."""
        sid = self.store.ensure(sid)
        text = " ".join((query or "").split())
        if text:
            try:
                self.store.check_query(text)
                waiting = sum(1 for t in self.store.turns(sid) if t.answer is None)
                if waiting >= MAX_WAITING:
                    raise VlsegError(f"{waiting} questions are already waiting; ask this again once "
                                     "they are answered.")
                self.store.submit(sid, text)
            except Exception as e:  # noqa: BLE001 - e.g. too long: said at once, never queued
                shown = text if len(text) <= 200 else text[:200] + "…"
                self.store.submit(sid, shown, kind="note", answer=_user_message(e))
        turns = self.store.turns(sid)
        return sid, chat_messages(turns), "", _waiting(turns)

    def submit_example(self, index: int | None, sid: str | None) -> tuple:
        """Clicking an example asks it."""
        if index is None or not 0 <= int(index) < len(EXAMPLE_QUERIES):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return self.submit(EXAMPLE_QUERIES[int(index)], sid)

    def answer_next(self, sid: str | None, confidence: float | None = None,
                    timepoint: str | None = None, probability_maps: bool = False) -> tuple:
        """Step 2 (queued, one model call at a time): answer the oldest waiting question."""
        keep = (gr.skip(), gr.skip(), gr.skip(), gr.skip())  # table, files, viewer, sequence
        if not sid:
            return (self._chat(sid), *keep, "")
        try:
            turn = self.store.next_pending(sid)
        except VlsegError:
            return (self._chat(sid), *keep, "")
        if turn is None:
            turns = self.store.turns(sid)
            return (chat_messages(turns), *keep, _waiting(turns))
        try:
            resp = self.store.ask(AskRequest(session_id=sid, query=turn.question,
                                             confidence=_confidence(confidence),
                                             timepoint=_timepoint(timepoint),
                                             probability_maps=bool(probability_maps)))
        except Exception as e:  # noqa: BLE001 - a failed question keeps everything shown
            self.store.finish(turn, _user_message(e))
            turns = self.store.turns(sid)
            return (chat_messages(turns), *keep, _waiting(turns))
        text = resp.text
        if resp.reencoded:
            text += " *(The scan was re-encoded: it had been unloaded to save memory.)*"
        own = (*resp.downloads, resp.answer_dir / "answer.json") if resp.downloads else ()
        self.store.finish(turn, text, resp.overlay_png, own, resp.table_html)
        turns = self.store.turns(sid)
        if not resp.has_result:  # refused / capability answers: nothing new to show
            return (chat_messages(turns), *keep, _waiting(turns))
        files = [str(p) for p in resp.downloads] or None
        viewer = self._viewer(sid)
        return (chat_messages(turns), resp.table_html, files, viewer, gr.skip(), _waiting(turns))

    def answer_live(self, sid: str | None, confidence: float | None = None,
                    timepoint: str | None = None, probability_maps: bool = False):
        """``answer_next`` with progress in the answer bubble: the time so far and, from recent
        answers of the same kind (the first on a case, or a later one), about how long is left;
        refreshed every second while the model works."""
        first = _first_answer(self.store.turns(sid))
        took, other = self._took[first], self._took[not first]
        expected = statistics.median(took or other) if (took or other) else None
        box: dict[str, tuple] = {}
        t0 = time.perf_counter()
        worker = threading.Thread(target=lambda: box.setdefault("out", self.answer_next(sid, confidence, timepoint,
                                                                                       probability_maps)),
                                  daemon=True)
        worker.start()
        while True:
            worker.join(1.0)
            if not worker.is_alive():
                break
            turns = self.store.turns(sid)
            yield (chat_messages(turns, expected), gr.skip(), gr.skip(), gr.skip(), gr.skip(), _waiting(turns))
        out = box.get("out")
        if out is None:  # answer_next raised (it catches what it expects): keep what is shown
            turns = self.store.turns(sid)
            yield (chat_messages(turns), gr.skip(), gr.skip(), gr.skip(), gr.skip(), _waiting(turns))
            return
        if out[1] is not None and not isinstance(out[1], dict):  # a result came: time it
            took.append(time.perf_counter() - t0)
        yield out

    def change_sequence(self, sid: str | None, seq: str | None) -> Any:
        if not sid or not seq:
            return gr.skip()
        return self._viewer(sid, seq)

    def refresh_samples(self) -> tuple:
        ready, pairs = self.samples.ready(), self.samples.pairs_ready()
        done = (len(ready) == len(self.samples.names) and len(pairs) == self.samples.n_pairs
                or self.samples.error is not None)
        return (gr.Radio(choices=ready, value=ready[0] if ready else None),
                self.samples.status(), gr.Timer(active=not done),
                gr.Radio(choices=pairs, value=pairs[0] if pairs else None))

    # ----------------------------------------------------------------- HTTP API
    def api_ask(self, files: list[str] | None, query: str, confidence: float | None,
                sid: str | None, timepoint: str | None = None) -> tuple:
        """``/ask``: (sequence files, query[, confidence, timepoint]) -> (answer JSON, mask files).
        Same schema as answer.json; ``confidence`` (default 0.9) sets the intervals' level,
        ``timepoint`` (auto, pre, post; default auto) whether the scan is after treatment.

        Within one client session, sending the same files again reuses the cached encoding and
        the chat context (follow-up questions work).
        """
        sid = self.store.ensure(sid)
        try:
            self.store.check_query(query)  # before any upload is read or scan encoded
            work = self.store.output_dir / sid / f"upload-{uuid.uuid4().hex[:8]}"
            ups = collect_uploads(files or [], work)
            self.store.set_case(CaseRequest(session_id=sid, source=dict(ups.sequences),
                                            label="api upload",
                                            fingerprint=ups.fingerprint))
            resp = self.store.ask(AskRequest(session_id=sid, query=query or "",
                                             confidence=_confidence(confidence),
                                             timepoint=_timepoint(timepoint) or "auto", pictures=False))
        except VlsegError as e:
            raise gr.Error(strip_dirs(str(e)), print_exception=False) from None
        except Exception as e:  # noqa: BLE001
            raise gr.Error(_user_message(e).lstrip("⚠️ "), print_exception=False) from None
        return resp.answer_json, [str(p) for p in resp.mask_files], sid


    def api_compare(self, baseline: list[str] | None, followup: list[str] | None,
                    confidence: float | None, sid: str | None, timepoint: str | None = None) -> tuple:
        """``/compare``: (baseline files, follow-up files[, confidence, timepoint]) ->
        (comparison JSON as in `vlseg compare`, files: comparison.json, the change map and the
        follow-up masks on the baseline grid). The session keeps the follow-up, so ``/ask``
        with the follow-up's files can then answer "did it grow?"."""
        sid = self.store.ensure(sid)
        try:
            work = self.store.output_dir / sid / f"upload-{uuid.uuid4().hex[:8]}"
            ups = [collect_uploads(files or [], work / role) for role, files in
                   (("baseline", baseline), ("followup", followup))]
            resp = self.store.compare(CompareRequest(session_id=sid, baseline=dict(ups[0].sequences),
                                                     followup=dict(ups[1].sequences),
                                                     confidence=_confidence(confidence),
                                                     timepoint=_timepoint(timepoint) or "auto"))
        except VlsegError as e:
            raise gr.Error(strip_dirs(str(e)), print_exception=False) from None
        except Exception as e:  # noqa: BLE001
            raise gr.Error(_user_message(e).lstrip("⚠️ "), print_exception=False) from None
        return resp.comparison_json, [str(p) for p in resp.files], sid

def _first_answer(turns: list[Turn]) -> bool:
    """Whether the next answer is the first on the loaded case (no answer since the last load)."""
    for t in reversed(turns):
        if t.kind == "ask" and t.state == "done":
            return False
        if t.kind == "note" and (t.answer or "").startswith("Loaded"):
            return True
    return True


def _confidence(value: Any) -> float | None:
    """The interval confidence from the UI or API: 0.5-0.99, else the default (None)."""
    try:
        q = float(value)
    except (TypeError, ValueError):
        return None
    return q if 0.5 <= q <= 0.99 else None


def _timepoint(value: Any) -> str | None:
    """The scan's time point from the UI or API: auto, pre or post, else None (unchanged)."""
    return value if value in TIMEPOINTS else None


def _dropper(store: SessionStore) -> Any:
    def drop(session_id: str | None) -> None:
        store.drop(session_id)

    return drop


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def build_blocks(*, store: SessionStore, samples: SampleLibrary, blocks_kwargs: dict[str, Any]) -> gr.Blocks:
    """The whole UI; ``blocks_kwargs`` carries the cache-cleanup settings from security.py."""
    app = ChatApp(store=store, samples=samples)
    heavy = {"concurrency_id": "inference", "api_visibility": "private"}
    with GuardedBlocks(title=TITLE, fill_width=True, **blocks_kwargs) as demo:
        # A plain function, not the bound method: Gradio deep-copies the page config (which
        # holds this callback) per request, and a bound method would copy the store and model.
        sid = gr.State(None, delete_callback=_dropper(store))
        # The page's own stylesheet, injected into <head> (layout, chat, table).
        gr.HTML("", head=f"<style>{_static('app.css')}</style>", js_on_load=None, elem_id="app-style")
        gr.Markdown(f"### {TITLE}\n{INTRO}", elem_id="intro")
        with gr.Row(elem_id="main", equal_height=False):
            with gr.Column(scale=2, min_width=240, elem_id="case-col"):
                sample_radio = gr.Radio(choices=samples.ready(), label="Sample cases",
                                        elem_id="sample-radio")
                sample_status = gr.Markdown(samples.status(), elem_id="sample-status")
                load_sample_btn = gr.Button("Load sample case", variant="primary",
                                            elem_id="load-sample")
                uploads = gr.File(label="…or upload 1–4 NIfTI sequences or a .zip",
                                  file_count="multiple", file_types=[".nii", ".gz", ".zip"],
                                  elem_id="upload", height=120)
                load_upload_btn = gr.Button("Load uploaded scans", elem_id="load-upload")
                with gr.Accordion("Two time points: compare a baseline and a follow-up", open=False,
                                  elem_id="compare-box"):
                    pair_radio = gr.Radio(choices=samples.pairs_ready(), label="Sample pairs (known change)",
                                          elem_id="pair-radio")
                    compare_sample_btn = gr.Button("Compare sample pair", elem_id="compare-sample")
                    base_files = gr.File(label="…or the baseline: 1–4 NIfTI sequences or a .zip",
                                         file_count="multiple", file_types=[".nii", ".gz", ".zip"],
                                         elem_id="upload-baseline", height=100)
                    follow_files = gr.File(label="and the follow-up (the same sequences)",
                                           file_count="multiple", file_types=[".nii", ".gz", ".zip"],
                                           elem_id="upload-followup", height=100)
                    compare_upload_btn = gr.Button("Compare uploaded scans", elem_id="compare-upload")
                case_info = gr.Markdown("*No case loaded.*", elem_id="case-info")
            with gr.Column(scale=4, min_width=330, elem_id="chat-col"):
                chat = gr.Chatbot(show_label=False, height="min(62vh, 600px)", elem_id="chat",
                                  feedback_options=None, buttons=[], layout="bubble",
                                  placeholder="Load a case, then ask about it.")
                with gr.Row(elem_id="ask-row"):
                    query = gr.Textbox(placeholder="e.g. segment the enhancing tumor", show_label=False,
                                       scale=5, max_lines=2, elem_id="query", container=False)
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=70, elem_id="ask")
                ask_status = gr.Markdown("", elem_id="ask-status")
                examples = gr.Dataset(components=[query], samples=[[q] for q in EXAMPLE_QUERIES],
                                      label="Try (click to ask)", type="index", elem_id="examples",
                                      layout="gallery", samples_per_page=len(EXAMPLE_QUERIES))
            with gr.Column(scale=5, min_width=330, elem_id="result-col"):
                seq_radio = gr.Radio(choices=[], label="Sequence under the masks", elem_id="viewer-seq",
                                     interactive=True)
                viewer = gr.HTML("", html_template='<div class="vv-host"></div>',
                                 js_on_load=_static("viewer.js"), css_template=_static("viewer.css"),
                                 elem_id="viewer", apply_default_css=False)
                table = gr.HTML("", elem_id="measurements")
                confidence = gr.Slider(0.5, 0.99, value=0.9, step=0.01, elem_id="confidence",
                                       label="Interval confidence (next answers)")
                timepoint = gr.Radio([("decide from the scan", "auto"), ("before treatment", "pre"),
                                      ("after surgery", "post")], value="auto", elem_id="timepoint",
                                     label="Scan time point (a resection cavity is reported only after surgery)")
                maps = gr.Checkbox(False, elem_id="probability-maps",
                                   label="Probability and uncertainty maps in the downloads (next answers; "
                                   "about a second more each)")
                downloads = gr.File(label="Downloads (named by case; the zip has masks, answer.json "
                                    "and a CSV)", file_count="multiple", interactive=False,
                                    elem_id="downloads", height=140)

        # Hidden components of the HTTP API (`client.predict(files, query, api_name="/ask")`).
        with gr.Column(visible=False):
            api_files = gr.File(file_count="multiple", label="files")
            api_query = gr.Textbox(label="query")
            api_confidence = gr.Number(value=0.9, label="confidence", minimum=0.5, maximum=0.99)
            api_timepoint = gr.Radio(["auto", "pre", "post"], value="auto", label="timepoint")
            api_answer = gr.JSON(label="answer")
            api_masks = gr.File(file_count="multiple", label="masks")
            api_btn = gr.Button("ask")
            api_baseline = gr.File(file_count="multiple", label="baseline")
            api_followup = gr.File(file_count="multiple", label="followup")
            api_comparison = gr.JSON(label="comparison")
            api_compare_files = gr.File(file_count="multiple", label="comparison files")
            api_compare_btn = gr.Button("compare")

        case_outputs = [sid, chat, case_info, viewer, seq_radio, table, downloads]
        load_sample_btn.click(app.load_sample, [sample_radio, sid], case_outputs,
                              show_progress_on=[case_info], api_name="ui_load_sample", **heavy)
        load_upload_btn.click(app.load_upload, [uploads, sid], case_outputs + [uploads],
                              show_progress_on=[case_info], api_name="ui_load_upload", **heavy)

        compare_sample_btn.click(app.compare_sample, [pair_radio, sid, confidence, timepoint], case_outputs,
                                 show_progress_on=[case_info], api_name="ui_compare_sample", **heavy)
        compare_upload_btn.click(app.compare_upload, [base_files, follow_files, sid, confidence, timepoint],
                                 case_outputs, show_progress_on=[case_info], api_name="ui_compare_upload",
                                 **heavy)

        # Asking: record at once (no queue), then answer in order (queued with the model).
        submit_outputs = [sid, chat, query, ask_status]
        answer_outputs = [chat, table, downloads, viewer, seq_radio, ask_status]
        triggers = [(send.click, app.submit, [query, sid]), (query.submit, app.submit, [query, sid]),
                    (examples.click, app.submit_example, [examples, sid])]
        for k, (trigger, fn, inputs) in enumerate(triggers):
            trigger(fn, inputs, submit_outputs, queue=False, trigger_mode="multiple",
                    show_progress="hidden", api_name=f"ui_submit_{k}", api_visibility="private",
                    ).then(app.answer_live, [sid, confidence, timepoint, maps], answer_outputs, show_progress="hidden",
                           api_name=f"ui_answer_{k}", trigger_mode="multiple", **heavy)
        seq_radio.input(app.change_sequence, [sid, seq_radio], [viewer], api_name="ui_sequence",
                        concurrency_id="viewer", concurrency_limit=2, api_visibility="private",
                        show_progress="minimal", trigger_mode="always_last")

        timer = gr.Timer(2.0, active=len(samples.ready()) < len(samples.names)
                         or len(samples.pairs_ready()) < samples.n_pairs)
        timer.tick(app.refresh_samples, None, [sample_radio, sample_status, timer, pair_radio],
                   api_name="ui_samples_tick", api_visibility="private", show_progress="hidden", queue=False)
        demo.load(app.refresh_samples, None, [sample_radio, sample_status, timer, pair_radio],
                  api_name="ui_samples_load", api_visibility="private", show_progress="hidden", queue=False)
        api_btn.click(app.api_ask, [api_files, api_query, api_confidence, sid, api_timepoint],
                      [api_answer, api_masks, sid],
                      api_name="ask", concurrency_id="inference", api_visibility="public",
                      api_description="Answer a question on a scan: files = 1-4 NIfTI sequences "
                      "(names carry the sequence, e.g. ...-t2f.nii.gz) or a .zip of a case folder; "
                      "returns (answer JSON as in `vlseg segment`, mask NIfTI files).")
        api_compare_btn.click(app.api_compare, [api_baseline, api_followup, api_confidence, sid, api_timepoint],
                              [api_comparison, api_compare_files, sid],
                              api_name="compare", concurrency_id="inference", api_visibility="public",
                              api_description="Compare two scans of one patient: baseline files and "
                              "follow-up files (1-4 NIfTI sequences each, the same sequences, or a .zip "
                              "of a case folder); returns (comparison JSON as in `vlseg compare`: "
                              "volume change with intervals, RANO 2.0 SPD, new lesions, category; "
                              "comparison.json, the change map and the follow-up masks on the baseline grid).")
    return demo


__all__ = ["ChatApp", "build_blocks", "chat_messages", "TITLE"]
