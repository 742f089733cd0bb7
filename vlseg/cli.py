"""`vlseg` command line. Each subcommand parses its arguments here and calls into the library.

Environment variables are read here (and in the app's entry point) only; everything below gets
plain arguments. Errors meant for the user print as one line on stderr and exit with status 2;
anything unexpected prints one line too (exit status 1) and its traceback goes to a log file.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Mapping, Sequence

from vlseg import vocab
from vlseg.compare_cli import add_arguments as compare_arguments
from vlseg.errors import InputError, VlsegError, one_line

# subcommand -> "module:function"; the function takes the parsed argparse.Namespace and
# returns an exit status (or None for 0). Imports are lazy so `vlseg --help` stays fast.
COMMANDS: dict[str, str] = {
    "synth": "vlseg.synth.cli:run",
    "render": "vlseg.render:run_cli",
    "evaluate": "vlseg.metrics.evaluate:run_cli",
    "parse": "vlseg.language.cli:run",
    "segment": "vlseg.segmenter_cli:run",
    "compare": "vlseg.compare_cli:run",
    "serve": "vlseg.app.cli:run",
    "bench": "vlseg.benchmarks.speed:run_cli",
    "models": "vlseg.model.cli:run_cli",
    "mcp": "vlseg.mcp_server:run_cli",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlseg",
        description="Promptable 3D segmentation of brain-tumor MRI with grounded answers.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("synth", help="write synthetic BraTS-like phantom cases (BraTS 2023 layout)")
    s.add_argument("--out", required=True, help="output folder (one sub-folder per case)")
    s.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    s.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    s.add_argument("--start", type=int, default=0, help="index of the first case (default 0)")
    s.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    s.add_argument("--spacing", type=float, default=None,
                   help="voxel size in mm (default 1 = 240x240x155; 2 = 120x120x78, same field of view)")
    s.add_argument("--timepoint", default="pre", choices=["pre", "post"],
                   help="pre: untreated tumors (BraTS 2023 labels); post: the same tumors after surgery, "
                        "with a resection cavity (BraTS 2024 labels: 1 NETC, 2 SNFH, 3 ET, 4 RC)")
    s.add_argument("--healthy", action="store_true",
                   help="tumor-free brains (the same heads, an all-zero label map)")
    s.add_argument("--format", default="nifti", choices=["nifti", "dicom"],
                   help="nifti (BraTS files) or dicom (one DICOM study per case: an MR series per "
                        "sequence with realistic tags)")
    s.add_argument("--dicom-layout", default="flat", choices=["flat", "nested"],
                   help="with --format dicom: all files in one folder, or one folder per series")
    s.add_argument("--oblique", action="store_true", help="with --format dicom: oblique slices")
    s.add_argument("--slice-step", type=int, default=1,
                   help="with --format dicom: keep every n-th slice (thick slices)")
    s.add_argument("--enhanced", action="store_true",
                   help="with --format dicom: one multi-frame (enhanced MR) file per series")
    s.add_argument("--pairs", type=int, default=None, metavar="N",
                   help="write N baseline/follow-up pairs of one patient each with a known change "
                        "(progression, new lesion, partial/complete response, stable, edema only, in "
                        "turn), head moved and contrast redrawn at follow-up; truth.json per pair and "
                        "OUT/pairs.csv for `vlseg compare --pairs` (--spacing defaults to 2 here)")

    s = sub.add_parser("render", help="montage of a case: 4 sequences x 3 planes with label contour")
    s.add_argument("case", help="case folder (or a single NIfTI file)")
    s.add_argument("-o", "--out", required=True, help="output PNG path")
    s.add_argument("--seg", default=None, help="label map to outline (default: the case's own seg)")

    s = sub.add_parser("evaluate", help="Dice/HD95 (case-wise and lesion-wise) of predictions vs ground truth")
    s.add_argument("--pred", required=True,
                   help="folder of predicted label maps, or a `vlseg segment --cases` output folder")
    s.add_argument("--gt", required=True, help="folder of ground-truth label maps (or case folders)")
    s.add_argument("--out", default=None, help="folder for metrics.csv / metrics.json (default: --pred)")
    s.add_argument("--pred-convention", default=None, choices=list(vocab.convention_names()),
                   help="default: brats2023, or brats2024 where the ground truth is")
    s.add_argument("--gt-convention", default=None, choices=list(vocab.convention_names()),
                   help="default: from the layout (MSD labelsTr/ -> msd, *_seg -> brats2021, else brats2023, "
                        "or brats2024 when the labels include 4, the resection cavity)")
    s.add_argument("--definition", default="brats2023", choices=["brats2023", "brats2025"],
                   help="official BraTS 2023 lesion-wise rule (default) or the BraTS 2025 evaluation "
                        "(brats-evaluation: global + lesion-wise Dice, NSD, HD95)")

    s = sub.add_parser("parse", help="print the JSON parse of each query, one per line")
    s.add_argument("queries", nargs="+", help="queries; '-' reads one query per line from stdin")
    s.add_argument("--model", default=None, help="model name or checkpoint path (for its text encoder)")
    s.add_argument("--chat", action="store_true",
                   help="treat the queries as one conversation ('how big is it?' refers back)")

    s = sub.add_parser("segment", help="answer a query on a scan or a cohort; writes answer.json and masks")
    g = s.add_argument_group("input (give --case, per-sequence files, or --cases)")
    g.add_argument("--case", default=None,
                   help="case folder (BraTS 2021/2023, MSD, or any subset) or a DICOM study folder")
    g.add_argument("--cases", nargs="+", default=None, metavar="PATH",
                   help="cohort: case folders, folders of case folders, or text files listing case "
                        "folders; writes OUT/<case>/, OUT/measurements.csv, OUT/failures.csv "
                        "(exit 3 if some cases failed); resumable")
    for seq in ("t1n", "t1c", "t2w", "t2f"):
        g.add_argument(f"--{seq}", default=None, metavar="F", help=f"{seq} NIfTI file")
    g.add_argument("--series", action="append", default=[], metavar="SEQ=SERIES",
                   help="DICOM: the series holding a sequence, by series number, description or "
                        "SeriesInstanceUID, e.g. --series t1c=7 (repeatable)")
    g = s.add_argument_group(
        "PACS (DICOMweb)", "credentials from $VLSEG_DICOMWEB_AUTH or --dicomweb-auth-file "
        "('user:password' or 'Bearer <token>'), never on the command line")
    g.add_argument("--dicomweb", default=None, metavar="URL",
                   help="DICOMweb root of a PACS, e.g. http://host:8042/dicom-web")
    g.add_argument("--study", default=None, metavar="UID",
                   help="with --dicomweb: the Study Instance UID to retrieve (WADO-RS) and answer")
    g.add_argument("--search", default=None, metavar="QUERY",
                   help="with --dicomweb: a cohort of the studies a QIDO-RS search finds, e.g. "
                        "\"ModalitiesInStudy=MR&StudyDate=20240101-20241231\" (one output folder "
                        "per Study Instance UID, resumable like --cases)")
    g.add_argument("--store", action="store_true",
                   help="with --dicomweb: send the DICOM-SEG and the SR measurement report back "
                        "into the study (STOW-RS; both or neither)")
    g.add_argument("--dicomweb-auth-file", default=None, metavar="FILE",
                   help="file whose first line is 'user:password' or 'Bearer <token>'")
    g.add_argument("--dicomweb-ca", default=None, metavar="PEM",
                   help="CA bundle to verify the server's TLS certificate with")
    g.add_argument("--insecure", action="store_true",
                   help="do not verify the server's TLS certificate (test servers only)")
    s.add_argument("--query", required=True, help='e.g. "segment the necrotic core"')
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--save-probabilities", action="store_true",
                   help="also write per answered concept <C>_probability.nii.gz (calibrated "
                        "probability, float32) and <C>_uncertainty.nii.gz (entropy, bits)")
    s.add_argument("--model", default=None,
                   help="bundled name, checkpoint folder or LoRA adapter folder (default: bundled)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--confidence", type=float, default=0.9,
                   help="confidence level of the volume and ratio intervals (default 0.9)")
    s.add_argument("--timepoint", default="auto", choices=["auto", "pre", "post"],
                   help="pre: an untreated scan (no resection cavity is ever reported); post: after "
                        "surgery; auto (default): a model that segments the cavity decides, one of "
                        "1 mL or more means post-treatment (answer.json says what was assumed and why)")
    s.add_argument("--label-convention", default=None, choices=list(vocab.convention_names()),
                   help="also write labels.nii.gz: the masks as one label map in this convention "
                        "(e.g. brats2024: 1 NETC, 2 SNFH, 3 ET, 4 resection cavity)")
    s.add_argument("--force", action="store_true",
                   help="answer images that look like a label map, atlas, probability or statistical "
                        "map anyway (refused otherwise); answer.json carries a warning")
    s.add_argument("--fast", action="store_true",
                   help="answer from the first stage (2 mm) alone: skip the 1 mm refinement stage of a "
                        "model that has one (answer.json says which stages made each mask)")
    s.add_argument("--overwrite", action="store_true",
                   help="with --cases: redo cases already answered with this query and model")
    s.add_argument("--no-progress", action="store_true",
                   help="with --cases: no progress bar (failed cases are still printed)")

    s = sub.add_parser("compare", help="two scans of one patient: registration, both answers, change "
                       "with intervals, new lesions, RANO 2.0 category -> OUT/comparison.json")
    compare_arguments(s)

    s = sub.add_parser("serve", help="start the chat app (Gradio) on http://127.0.0.1:7860",
                       allow_abbrev=False)  # '--auth x' must not pass for '--auth-file x'
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--model", default=None, help="bundled name, checkpoint folder or LoRA adapter folder")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--fast", action="store_true",
                   help="answer from the first stage alone (no 1 mm refinement stage)")
    s.add_argument("--auth-file", default=None,
                   help="file with one 'user:password' line (or set VLSEG_AUTH=user:password)")
    s.add_argument("--samples", default=None, help="folder for generated sample cases")
    s.add_argument("--outputs", default=None, help="app output folder (default ~/.cache/vlseg/app)")
    s.add_argument("--max-file-mb", type=int, default=None, help="upload size limit (default 200)")
    s.add_argument("--queue-size", type=int, default=None, help="max waiting requests (default 8)")
    s.add_argument("--temp-ttl", type=int, default=None,
                   help="seconds before uploads/outputs are deleted (default 3600)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name clients use to reach the app, besides the bind address and "
                        "localhost (repeatable; requests naming any other Host are refused)")
    s.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                   help="address or network of a reverse proxy in front of the app whose "
                        "X-Forwarded-For header names the client (repeatable; none by default)")
    s.add_argument("--mcp", action="store_true",
                   help="also serve the MCP tools (load_case, ask) at /gradio_api/mcp/ (loopback "
                        "--host only; off by default)")

    s = sub.add_parser("mcp", help="run an MCP server over stdio with the tools load_case and ask")
    s.add_argument("--model", default=None, help="bundled name, checkpoint folder or LoRA adapter folder")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--out", default=None,
                   help="folder for answers and masks (default ~/.cache/vlseg/mcp)")

    s = sub.add_parser("bench", help="speed/memory benchmark of the Segmenter on a generated case")
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--model", default=None, help="bundled name, checkpoint folder or LoRA adapter folder")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--profile", action="store_true",
                   help="time every stage (read, reorient, N4, ..., save) of a first answer and a "
                        "follow-up on realistic cases (another pose, LPS, near the midline, thick "
                        "slices, multifocal) besides the generator's own")
    s.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                   help="with --profile: which cases (default all: default pose lps midline thick multifocal)")
    s.add_argument("--work", default=None,
                   help="with --profile: folder for the generated cases (kept, reused) and answers")
    s.add_argument("--out", default=None, metavar="FILE",
                   help="also write the result as JSON to FILE (with --profile, the table beside it as .txt)")

    s = sub.add_parser("models", help="list model configs, bundled checkpoints and given checkpoint/adapter folders")
    s.add_argument("paths", nargs="*", metavar="PATH",
                   help="checkpoint or LoRA adapter folders to describe (e.g. runs/finetune_lora/best)")
    return p


# Library errors name a function's parameter (``series='AX'``, ``threads=0``, ``device='cuda'``,
# ``pred_convention=msd``); here the user gave it as a flag.
FLAGS: dict[str, str] = {
    "series": "--series", "threads": "--threads", "device": "--device", "port": "--port",
    "allowed_hosts": "--allowed-host", "trusted_proxies": "--trusted-proxy",
    "pred_convention": "--pred-convention",
    "gt_convention": "--gt-convention", "force": "--force",
}
_PARAMETER = re.compile(rf"(?<![\w-])({'|'.join(FLAGS)})=('[^']*'|[^\s;:,]*)")


def in_flag_words(error: VlsegError) -> str:
    """The one line for ``error`` with the parameters it names written as this command line's
    flags: ``series='AX' matches no series`` -> ``--series AX matches no series``."""
    if not isinstance(error, InputError):
        return one_line(error)

    def flag(m: re.Match[str]) -> str:
        value = m.group(2)
        if value == "True":  # a switch: force=True -> --force
            return FLAGS[m.group(1)]
        if re.fullmatch(r"'[\w.-]+'", value):
            value = value[1:-1]
        flag = FLAGS[m.group(1)]
        return f"{flag} {value}" if value else flag

    problem = _PARAMETER.sub(flag, error.problem)
    return one_line(InputError(problem, error.path))


def _resolve(target: str) -> Callable:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def log_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where crash reports go: ``$VLSEG_LOG_DIR``, else ``~/.cache/vlseg/logs``."""
    return Path(environ.get("VLSEG_LOG_DIR") or Path.home() / ".cache" / "vlseg" / "logs")


def report_crash(command: str, exc: BaseException, folder: Path) -> Path | None:
    """Write the traceback of an unexpected exception to a log file; its path, or None when the
    log cannot be written. The user sees one line; the traceback is for the bug report."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        path.write_text(f"vlseg {command} (argv {sys.argv[1:]!r})\n{text}")
        return path
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Exit status: 0 done, 2 a problem the user can fix (one line on
    stderr), 1 an unexpected error (one line; the traceback goes to a log file), 130 Ctrl+C."""
    # OpenMP threads that spin while idle slow a busy small machine badly; must be set before
    # torch is imported (the subcommands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    prog = f"vlseg {args.command}"
    try:
        status = _resolve(COMMANDS[args.command])(args)
    except VlsegError as e:
        print(f"{prog}: error: {in_flag_words(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the machine's problem, not ours: disk full, permissions, ...
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"{prog}: error: {e.strerror or one_line(e)}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory; try a smaller scan or a machine with more memory",
              file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the boundary: one line for the user, the log for us
        log = report_crash(args.command, e, log_dir())
        details = f"; details in {log}" if log else ""
        print(f"{prog}: internal error ({type(e).__name__}: {one_line(e)}){details}; "
              "please report it", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
