"""The Gradio chat app: layout, event handlers, and the ``/ask`` HTTP API endpoint.

Layout: a case panel (sample cases or an upload of 1-4 NIfTI sequences or a .zip of a case folder),
a chat panel (each answer adds grounded text, an overlay picture, a measurements table and mask
downloads), and a slice viewer (axial slider + per-concept overlay toggles) for the whole volume.

Every model call goes through ``SessionStore`` (one inference lock, per-session Segmenters).
Handlers never raise for a user mistake: the message goes into the chat and the app keeps running.
"""
from __future__ import annotations

import re
import uuid
from typing import Any

import gradio as gr

from vlseg import vocab
from vlseg.errors import VlsegError
from vlseg.app.logging import log_event, new_request_id, where
from vlseg.app.samples import SampleLibrary
from vlseg.app.sessions import (
    MEASUREMENT_HEADERS, AskRequest, CaseRequest, CaseResponse, SessionStore, fingerprint_files,
)
from vlseg.app.uploads import collect_uploads

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
    "Pick a sample case or upload 1–4 NIfTI sequences (file names like BraTS: `…-t1n/-t1c/-t2w/-t2f"
    ".nii.gz` or `…_t1/_t1ce/_t2/_flair.nii.gz`), or a `.zip` of a BraTS case folder. Then ask, e.g. "
    "*segment the enhancing tumor*. Research tool output, not a diagnosis: the bundled model was "
    "trained on synthetic phantoms."
)


_ABS_PATH = re.compile(r"(?<![\w.])(?:/[^\s/:'\"]+)+/([^\s/:'\"]+)")


def strip_dirs(text: str) -> str:
    """Show file names without server folders (upload caches, output roots) in user messages."""
    return _ABS_PATH.sub(r"\1", text)


def _user_message(e: BaseException) -> str:
    """Chat text for an error: the user's own problem verbatim, anything else generic."""
    if isinstance(e, VlsegError):
        return f"⚠️ {strip_dirs(str(e))}"
    rid = new_request_id()
    log_event(rid, op="handler", status="error", error=type(e).__name__, where=where(e))
    return f"⚠️ Something went wrong on the server (error id {rid}); the app is still running — try again."


class ChatApp:
    """Event handlers bound to one SessionStore and SampleLibrary."""

    def __init__(self, *, store: SessionStore, samples: SampleLibrary) -> None:
        self.store = store
        self.samples = samples

    # ----------------------------------------------------------------- case loading
    def _case_loaded(self, resp: CaseResponse, chat: list[dict], note: str = "",
                     what: str = "") -> tuple:
        shape = "×".join(str(v) for v in resp.shape)
        sp = "×".join(f"{v:g}" for v in resp.spacing_mm)
        info = (f"**Case:** {resp.label} · sequences {', '.join(resp.sequences)} · {shape} voxels "
                f"at {sp} mm" + ("" if resp.reused else f" · encoded in {resp.encode_s:.1f} s"))
        missing = [s for s in ("t1n", "t1c", "t2w", "t2f") if s not in resp.sequences]
        text = (f"Loaded **{resp.label}** ({', '.join(resp.sequences)}{note}). "
                + (f"Missing sequences ({', '.join(missing)}) are treated as absent. " if missing else "")
                + "Ask e.g. *segment the enhancing tumor* or *how big is the edema?*")
        chat = list(chat or []) + [{"role": "user", "content": what or f"(load {resp.label})"},
                                   {"role": "assistant", "content": text}]
        z = resp.shape[2]
        view = self.store.viewer_slice(resp.session_id, z // 2, list(vocab.codes()))
        return (resp.session_id, chat, info, view,
                gr.Slider(minimum=0, maximum=z - 1, value=z // 2, step=1, interactive=True))

    def _case_failed(self, sid: str, chat: list[dict], e: BaseException, what: str) -> tuple:
        chat = list(chat or []) + [{"role": "user", "content": what},
                                   {"role": "assistant", "content": _user_message(e)}]
        return sid, chat, gr.skip(), gr.skip(), gr.skip()

    def load_sample(self, name: str | None, sid: str | None, chat: list[dict] | None,
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
            return self._case_loaded(resp, chat or [])
        except Exception as e:  # noqa: BLE001 - shown in the chat; the app keeps running
            return self._case_failed(sid, chat or [], e, f"(load {name})")

    def load_upload(self, files: list[str] | None, sid: str | None, chat: list[dict] | None,
                    progress: gr.Progress = gr.Progress()) -> tuple:
        sid = self.store.ensure(sid)
        try:
            progress(0.05, desc="checking uploaded files")
            work = self.store.output_dir / sid / f"upload-{uuid.uuid4().hex[:8]}"
            ups = collect_uploads(files or [], work)
            progress(0.15, desc="checking uploaded files")
            resp = self.store.set_case(
                CaseRequest(session_id=sid, source=dict(ups.sequences), label="your upload",
                            fingerprint=fingerprint_files(ups.sequences)),
                progress=lambda f, msg: progress(f, desc=msg))
            note = f"; ignored {', '.join(ups.ignored)}" if ups.ignored else ""
            return self._case_loaded(resp, chat or [], note, what="(upload)")
        except Exception as e:  # noqa: BLE001
            return self._case_failed(sid, chat or [], e, "(upload)")

    # ----------------------------------------------------------------- chat
    def ask(self, query: str, sid: str | None, chat: list[dict] | None,
            enabled: list[str] | None, z: float | None) -> tuple:
        sid = self.store.ensure(sid)
        chat = list(chat or []) + [{"role": "user", "content": query or ""}]
        try:
            resp = self.store.ask(AskRequest(session_id=sid, query=query or ""))
        except Exception as e:  # noqa: BLE001
            chat.append({"role": "assistant", "content": _user_message(e)})
            return sid, chat, "", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        text = resp.text
        if resp.reencoded:
            text += " *(The scan was re-encoded: it had been unloaded to save memory.)*"
        chat.append({"role": "assistant", "content": text})
        if resp.focus_slice is not None:
            z = resp.focus_slice  # show the slice through the target
        view = self.store.viewer_slice(sid, None if z is None else int(z), enabled)
        files = [str(p) for p in resp.mask_files] or None
        overlay = str(resp.overlay_png) if resp.overlay_png else None
        slider = gr.skip() if resp.focus_slice is None else gr.Slider(value=resp.focus_slice)
        return sid, chat, "", overlay, resp.table, files, view, slider

    def view(self, sid: str | None, z: float | None, enabled: list[str] | None) -> Any:
        return self.store.viewer_slice(sid, None if z is None else int(z), enabled)

    def refresh_samples(self) -> tuple:
        ready = self.samples.ready()
        done = len(ready) == len(self.samples.names) or self.samples.error is not None
        return (gr.Radio(choices=ready, value=ready[0] if ready else None),
                self.samples.status(), gr.Timer(active=not done))

    # ----------------------------------------------------------------- HTTP API
    def api_ask(self, files: list[str] | None, query: str, sid: str | None) -> tuple:
        """``/ask``: (sequence files, query) -> (answer JSON, mask files). Same schema as answer.json.

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
                                            fingerprint=fingerprint_files(ups.sequences)))
            resp = self.store.ask(AskRequest(session_id=sid, query=query or ""))
        except VlsegError as e:
            raise gr.Error(strip_dirs(str(e)), print_exception=False) from None
        except Exception as e:  # noqa: BLE001
            raise gr.Error(_user_message(e).lstrip("⚠️ "), print_exception=False) from None
        return resp.answer_json, [str(p) for p in resp.mask_files], sid


def _dropper(store: SessionStore) -> Any:
    def drop(session_id: str | None) -> None:
        store.drop(session_id)

    return drop


def build_blocks(*, store: SessionStore, samples: SampleLibrary, blocks_kwargs: dict[str, Any]) -> gr.Blocks:
    """The whole UI; ``blocks_kwargs`` carries the cache-cleanup settings from security.py."""
    app = ChatApp(store=store, samples=samples)
    heavy = {"concurrency_id": "inference", "api_visibility": "private"}
    with gr.Blocks(title=TITLE, **blocks_kwargs) as demo:
        # A plain function, not the bound method: Gradio deep-copies the page config (which
        # holds this callback) per request, and a bound method would copy the store and model.
        sid = gr.State(None, delete_callback=_dropper(store))
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                gr.Markdown("### 1 · Case")
                sample_radio = gr.Radio(choices=samples.ready(), label="Sample cases",
                                        elem_id="sample-radio")
                sample_status = gr.Markdown(samples.status(), elem_id="sample-status")
                load_sample_btn = gr.Button("Load sample case", variant="primary",
                                            elem_id="load-sample")
                uploads = gr.File(label="…or upload 1–4 NIfTI sequences or a .zip",
                                  file_count="multiple", file_types=[".nii", ".gz", ".zip"],
                                  elem_id="upload")
                load_upload_btn = gr.Button("Load uploaded scans", elem_id="load-upload")
                case_info = gr.Markdown("*No case loaded.*", elem_id="case-info")
            with gr.Column(scale=2, min_width=420):
                gr.Markdown("### 2 · Chat")
                chat = gr.Chatbot(label="Answers", height=360, elem_id="chat",
                                  feedback_options=None)
                with gr.Row():
                    query = gr.Textbox(placeholder="e.g. segment the enhancing tumor", show_label=False,
                                       scale=5, max_lines=2, elem_id="query")
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                gr.Examples(EXAMPLE_QUERIES, inputs=[query], label="Try")
        with gr.Row():
            overlay = gr.Image(label="Mask over the scan (3 planes through the target)",
                               type="filepath", format="png", interactive=False, elem_id="overlay")
        with gr.Row():
            table = gr.Dataframe(headers=MEASUREMENT_HEADERS, value=[], type="array",
                                 interactive=False, label="Measurements", wrap=True,
                                 elem_id="measurements")
        masks_out = gr.File(label="Mask NIfTI files (input grid)", file_count="multiple",
                            interactive=False, elem_id="masks")
        with gr.Accordion("Slice viewer (whole volume)", open=True):
            with gr.Row():
                with gr.Column(scale=1, min_width=240):
                    zslider = gr.Slider(0, 1, value=0, step=1, label="Axial slice",
                                        interactive=False, elem_id="zslider")
                    toggles = gr.CheckboxGroup(
                        choices=[(f"{c.code} {c.name}", c.code) for c in vocab.concepts()],
                        value=list(vocab.codes()), label="Overlays", elem_id="toggles")
                viewer = gr.Image(label="Axial slice", type="numpy", interactive=False,
                                  format="png", height=360, elem_id="viewer")

        # Hidden components of the HTTP API (`client.predict(files, query, api_name="/ask")`).
        with gr.Column(visible=False):
            api_files = gr.File(file_count="multiple", label="files")
            api_query = gr.Textbox(label="query")
            api_answer = gr.JSON(label="answer")
            api_masks = gr.File(file_count="multiple", label="masks")
            api_btn = gr.Button("ask")

        case_outputs = [sid, chat, case_info, viewer, zslider]
        load_sample_btn.click(app.load_sample, [sample_radio, sid, chat], case_outputs,
                              show_progress_on=[case_info], api_name="ui_load_sample", **heavy)
        load_upload_btn.click(app.load_upload, [uploads, sid, chat], case_outputs,
                              show_progress_on=[case_info], api_name="ui_load_upload", **heavy)
        ask_outputs = [sid, chat, query, overlay, table, masks_out, viewer, zslider]
        for k, trigger in enumerate((send.click, query.submit)):
            trigger(app.ask, [query, sid, chat, toggles, zslider], ask_outputs,
                    api_name=f"ui_chat_{k}", **heavy)
        for k, trigger in enumerate((zslider.change, toggles.change)):
            trigger(app.view, [sid, zslider, toggles], [viewer], trigger_mode="always_last",
                    api_name=f"ui_view_{k}",
                    concurrency_id="viewer", concurrency_limit=2, api_visibility="private",
                    show_progress="hidden")
        timer = gr.Timer(2.0, active=len(samples.ready()) < len(samples.names))
        timer.tick(app.refresh_samples, None, [sample_radio, sample_status, timer],
                   api_name="ui_samples_tick", api_visibility="private", show_progress="hidden", queue=False)
        demo.load(app.refresh_samples, None, [sample_radio, sample_status, timer],
                  api_name="ui_samples_load", api_visibility="private", show_progress="hidden", queue=False)
        api_btn.click(app.api_ask, [api_files, api_query, sid], [api_answer, api_masks, sid],
                      api_name="ask", concurrency_id="inference", api_visibility="public",
                      api_description="Answer a question on a scan: files = 1-4 NIfTI sequences "
                      "(names carry the sequence, e.g. ...-t2f.nii.gz) or a .zip of a case folder; "
                      "returns (answer JSON as in `vlseg segment`, mask NIfTI files).")
    return demo


__all__ = ["ChatApp", "build_blocks", "TITLE"]
