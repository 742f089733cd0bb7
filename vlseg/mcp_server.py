"""`vlseg mcp`: the segmenter as Model Context Protocol tools, for LLM agents and assistants.

Three tools, the same over stdio (``vlseg mcp``, the official ``mcp`` SDK's FastMCP) and over the
app's HTTP server (``vlseg serve --mcp``, Gradio's MCP endpoint, loopback only):

* ``load_case(path, series=None)``: a case folder (BraTS/MSD/any named NIfTI files) or a DICOM
  study folder the server can read; encodes it once and returns the case summary (sequences,
  shape, spacing, warnings; for DICOM which series was read as which sequence).
* ``compare(baseline, followup)``: two scans of one patient (``Segmenter.compare``): registration,
  both answers, volume change with intervals, RANO 2.0 SPD, new lesions, the imaging category;
  the follow-up stays loaded for "did it grow?".
* ``ask(question)``: answers a question about the loaded case; returns the answer text, the
  measurements (answer.json's targets), and the paths of the written answer.json, masks and,
  for DICOM input, the DICOM-SEG.

:class:`CaseTools` holds the state (one Segmenter, loaded on the first ``load_case``) and is
what both transports call. Tool errors are one line (the library's messages, with parameters
named as the tools name them) and never quote patient tags, CLI flags or exception classes
(``agent_words``); the heap is trimmed after every tool call (the server idles between calls). A failed ``load_case`` leaves
no case loaded; a refused question writes nothing. Nothing is written to stdout but the protocol.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypedDict

from vlseg.errors import InputError, VlsegError, one_line, where
from vlseg.memory import release_memory

if TYPE_CHECKING:  # the model stack loads on the first load_case, not at server start
    from vlseg.segmenter import SegmenterLike
    from vlseg.segmenter.answer import JsonObject

DEFAULT_OUT = Path("~/.cache/vlseg/mcp")
_log = logging.getLogger("vlseg.mcp")
INSTRUCTIONS = (
    "Promptable 3D brain-tumor MRI segmentation with grounded answers. Call load_case with a case "
    "folder (BraTS-style NIfTI files) or a DICOM study folder first, then ask questions such as "
    "'segment the necrotic core' or 'how big is the enhancing tumor and which lobe is it in?'. "
    "For two scans of one patient call compare(baseline, followup), then ask 'did it grow?'. "
    "Answers come with measurements and the paths of the written masks. Research tool, not a "
    "diagnosis.")


class CaseLoaded(TypedDict, total=False):
    """What ``load_case`` returns: ``Segmenter.set_case``'s summary (``CaseSummary``, repeated
    here so the server starts without importing the model stack), the format, the series."""

    case_id: str
    sequences: list[str]
    shape: list[int]
    spacing_mm: list[float]
    encode_s: float
    warnings: list[str]
    timepoint: str  # as asked: pre | post | auto
    format: str  # "dicom" | "nifti"
    series: dict[str, str]  # DICOM: sequence -> the series read as it


class Asked(TypedDict):
    """What ``ask`` returns."""

    text: str
    refused: bool
    measurements: list[JsonObject]  # answer.json's targets
    warnings: list[str]
    answer_json: str | None  # None for a refusal (nothing is written)
    masks: dict[str, str]  # concept -> NIfTI mask path
    dicom_seg: str | None


class Compared(TypedDict):
    """What ``compare`` returns (comparison.json's main fields and its path)."""

    text: str
    rano_category: str
    rano_basis: str
    new_lesions: int
    regions: dict[str, JsonObject]
    spd_mm2: dict[str, float]
    registration_warning: str | None
    comparison_json: str


class CaseTools:
    """The MCP tools' state: a lazily loaded Segmenter, the case that is set, the output root."""

    def __init__(self, *, segmenter: SegmenterLike | None = None,
                 factory: Callable[[], SegmenterLike] | None = None,
                 out_root: str | os.PathLike) -> None:
        if segmenter is None and factory is None:
            raise ValueError("give a segmenter or a factory that builds one")
        self._seg = segmenter
        self._factory = factory
        self.out_root = Path(out_root).expanduser()
        self._lock = threading.Lock()
        self._case_id: str | None = None
        self._n = 0

    def _segmenter(self) -> SegmenterLike:
        if self._seg is None:
            assert self._factory is not None
            self._seg = self._factory()
        return self._seg

    def load_case(self, path: str, series: dict[str, str] | None = None,
                  timepoint: str = "auto") -> CaseLoaded:
        """Load and encode a scan: a case folder (NIfTI files named like BraTS, e.g.
        case-t1c.nii.gz) or a DICOM study folder. ``series`` (DICOM only) picks the series of a
        sequence by number, description or SeriesInstanceUID, e.g. {"t1c": "7"}. ``timepoint``:
        "pre" (untreated: no resection cavity is reported), "post" (after surgery) or "auto"
        (default: decided from the scan). Returns the case summary: sequences, shape, spacing in
        mm, warnings."""
        from vlseg.io import open_case

        src = Path(str(path)).expanduser()
        with self._lock:
            self._clear()  # a failed load leaves no case: asking then says none is loaded
            case = open_case(src, series=series)
            summary = CaseLoaded(**self._segmenter().set_case(case, timepoint=timepoint))
            self._case_id = case.case_id
            summary["format"] = "dicom" if case.study is not None else "nifti"
            if case.study is not None:
                summary["series"] = dict(case.study.labels)
            return summary

    def compare(self, baseline: str, followup: str, timepoint: str = "auto") -> Compared:
        """Compare two scans of one patient (case or DICOM study folders): the follow-up is
        rigidly registered to the baseline, both are segmented, lesions are matched, and the
        change is measured: per-region volumes with the change and its interval, RANO 2.0
        bidimensional products of the measurable enhancing lesions, new lesions and the RANO
        imaging category. The follow-up stays loaded, so ask can answer "did it grow?" or "is
        there a new lesion?" next. Returns the summary text, the category, the regions and the
        path of comparison.json (beside both answers' masks)."""
        from vlseg.io import open_case

        with self._lock:
            self._clear()
            base = open_case(Path(str(baseline)).expanduser())
            follow = open_case(Path(str(followup)).expanduser())
            comparison = self._segmenter().compare(base, follow, timepoint=timepoint)
            self._case_id = follow.case_id
            self._n += 1
            out = self.out_root / _safe_name(follow.case_id) / f"compare-{time.strftime('%Y%m%d-%H%M%S')}-{self._n:03d}"
            path = comparison.save(out)
            doc = comparison.doc
            return {"text": doc["text"], "rano_category": doc["rano_category"],
                    "rano_basis": doc["rano_basis"], "new_lesions": doc["new_lesions"],
                    "regions": doc["regions"], "spd_mm2": {k: doc["spd_mm2"][k] for k in ("baseline", "followup")},
                    "registration_warning": doc["registration"]["warning"], "comparison_json": str(path)}

    def _clear(self) -> None:
        """Forget the case (and its encoding) and give the freed heap back to the OS."""
        if self._case_id is None:
            return
        self._case_id = None
        if self._seg is not None:
            self._seg.reset()
        release_memory()

    def idle(self) -> None:
        """Give freed heap back to the OS (the server is idle between tool calls: the tools call
        it as they return, after the request's temporaries are freed)."""
        with self._lock:
            release_memory()

    def ask(self, question: str) -> Asked:
        """Ask a question about the loaded case, e.g. "segment the whole tumor" or "how far is the
        edema from the midline?". Returns the answer text, the measurements (volumes in mL,
        diameters, location, intervals) and the paths of answer.json, the masks (NIfTI, in the
        scan's own grid) and, for DICOM input, the DICOM-SEG."""
        if not str(question or "").strip():
            raise InputError("the question is empty; ask e.g. 'segment the necrotic core'")
        with self._lock:
            if self._case_id is None:
                raise InputError("no case is loaded; call load_case with a case or DICOM study "
                                 "folder first")
            answer = self._segmenter().ask(str(question))
            doc = answer.to_json()
            if answer.refused:  # nothing to keep: a refusal writes no folder
                return {"text": answer.text, "refused": True, "measurements": [],
                        "warnings": doc["warnings"], "answer_json": None, "masks": {},
                        "dicom_seg": None}
            self._n += 1
            out = self.out_root / _safe_name(self._case_id) / f"{time.strftime('%Y%m%d-%H%M%S')}-{self._n:03d}"
            answer_json = answer.save(out)
            seg = out / "segmentation.dcm"
            return {
                "text": answer.text,
                "refused": answer.refused,
                "measurements": doc["targets"],
                "warnings": doc["warnings"],
                "answer_json": str(answer_json),
                "masks": {c: str(out / f"{c}.nii.gz") for c in answer.masks_ras},
                "dicom_seg": str(seg) if seg.is_file() else None,
            }


# Library errors name a function's parameter (``series='AX'``, ``series=t1c=NUMBER``); an agent
# gives ``series`` as a mapping, so say it that way.
_SERIES = re.compile(r"(?<![\w-])series=(?:(\w+)=('[^']*'|<[^>]*>|[^\s;:,)]+)|('[^']*'|[^\s;:,)]*))")


def _series_words(m: re.Match[str]) -> str:
    if m.group(1):
        spec = m.group(2).strip("'")
        return f'the series parameter, e.g. {{"{m.group(1)}": "{spec}"}}'
    return f"the series value {m.group(3)}" if m.group(3) else "the series parameter"


def agent_words(error: BaseException) -> str:
    """One line for an agent: the problem in words, with parameters as the tools name them;
    never a CLI flag, an exception class or a traceback."""
    if isinstance(error, VlsegError):
        text = one_line(error, limit=None)
        if isinstance(error, InputError):
            text = one_line(InputError(_SERIES.sub(_series_words, error.problem), error.path),
                            limit=None)
        if text == type(error).__name__:
            return "the request failed; check the path and the question"
        return text[:600]
    if isinstance(error, OSError):
        what = (error.strerror or "cannot be read").lower()
        return f"{error.filename}: {what}" if error.filename else f"the file {what}"
    return ("the server could not answer this request (an internal error, logged without "
            "details); try another case or question")


def _report(error: BaseException) -> str:
    """The agent's message for ``error``; an unexpected one is logged by class and place only
    (messages and tracebacks may quote the client's paths)."""
    if not isinstance(error, (VlsegError, OSError)):
        _log.warning("op=mcp status=error error=%s where=%s", type(error).__name__, where(error))
    return agent_words(error)


def _safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:80].strip(".")
    return keep or "case"


def build_server(tools: CaseTools):
    """A FastMCP server exposing ``tools`` (stdio transport: ``server.run("stdio")``)."""
    from mcp.server.fastmcp import FastMCP
    from mcp.server.fastmcp.exceptions import ToolError

    server = FastMCP("vlseg", instructions=INSTRUCTIONS, log_level="WARNING")

    def call(fn: Callable[..., dict], *args: Any, **kwargs: Any) -> dict:
        # Library code must never write to stdout: it carries the protocol.
        with contextlib.redirect_stdout(sys.stderr):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every failure is one line for the agent
                raise ToolError(_report(e)) from None
            finally:
                tools.idle()

    @server.tool(description=CaseTools.load_case.__doc__)
    def load_case(path: str, series: dict[str, str] | None = None, timepoint: str = "auto") -> dict[str, Any]:
        return call(tools.load_case, path, series, timepoint)

    @server.tool(description=CaseTools.ask.__doc__)
    def ask(question: str) -> dict[str, Any]:
        return call(tools.ask, question)

    @server.tool(description=CaseTools.compare.__doc__)
    def compare(baseline: str, followup: str, timepoint: str = "auto") -> dict[str, Any]:
        return call(tools.compare, baseline, followup, timepoint)

    return server


def run_cli(args: argparse.Namespace) -> int:
    """``vlseg mcp``: check the arguments, then serve over stdio until the client disconnects."""
    from vlseg.io import check_output_dir

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    try:
        out = check_output_dir(Path(args.out or DEFAULT_OUT).expanduser())
    except InputError as e:
        raise InputError(f"--out {e}") from None

    def factory() -> SegmenterLike:
        import torch

        from vlseg.segmenter import Segmenter

        if args.threads is not None:  # the process's thread count is the server's to set
            torch.set_num_threads(args.threads)
        with contextlib.redirect_stdout(sys.stderr):
            return Segmenter.from_pretrained(args.model, device=args.device)

    if args.model is not None:  # a bad --model fails now, not at the first tool call
        from vlseg.model import resolve_model

        resolve_model(args.model)
    build_server(CaseTools(factory=factory, out_root=out)).run("stdio")
    return 0





def add_gradio_tools(blocks: Any, tools: CaseTools) -> None:
    """``vlseg serve --mcp``: the same two tools as Gradio API endpoints, which Gradio's MCP
    server (``launch(mcp_server=True)``) lists as MCP tools named ``load_case`` and ``ask``."""
    import gradio as gr

    def guarded(fn: Callable[..., dict], *args: Any) -> dict:
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure is one line for the agent
            raise gr.Error(_report(e), print_exception=False) from None
        finally:
            tools.idle()

    def load_case(path: str, series: dict | None = None, timepoint: str = "auto") -> dict:
        return guarded(tools.load_case, path, series, timepoint)

    def ask(question: str) -> dict:
        return guarded(tools.ask, question)

    def compare(baseline: str, followup: str, timepoint: str = "auto") -> dict:
        return guarded(tools.compare, baseline, followup, timepoint)

    load_case.__doc__, ask.__doc__ = CaseTools.load_case.__doc__, CaseTools.ask.__doc__
    compare.__doc__ = CaseTools.compare.__doc__
    with blocks:
        gr.api(load_case, api_name="mcp_load_case", concurrency_id="inference")
        gr.api(ask, api_name="mcp_ask", concurrency_id="inference")
        gr.api(compare, api_name="mcp_compare", concurrency_id="inference")

__all__ = ["CaseTools", "Compared", "agent_words", "build_server", "run_cli", "add_gradio_tools", "INSTRUCTIONS"]
