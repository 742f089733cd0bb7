"""`vlseg segment --dicomweb URL`: the PACS edge of the command line.

Reads the credentials (``$VLSEG_DICOMWEB_AUTH``, or the file ``--dicomweb-auth-file`` names:
``user:password`` for HTTP basic, ``Bearer <token>`` or a bare token for a bearer token; never a
command-line value, never logged), builds the :class:`~vlseg.io.dicomweb.Pacs`, retrieves a
study into a private temporary folder, and with ``--store`` sends the answer's DICOM-SEG and SR
report back in one STOW-RS request, both or neither: when either file is missing from the
answer (an exporter failed) nothing is sent.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Mapping

from vlseg.errors import InputError
from vlseg.io.dicomweb import Auth, Pacs

AUTH_ENV = "VLSEG_DICOMWEB_AUTH"


def check_pacs_args(args: argparse.Namespace) -> None:
    """The flag combinations, before anything is read or sent."""
    url = getattr(args, "dicomweb", None)
    study, search = getattr(args, "study", None), getattr(args, "search", None)
    if not url:
        for flag, value in (("--study", study), ("--search", search),
                            ("--store", getattr(args, "store", False)),
                            ("--dicomweb-auth-file", getattr(args, "dicomweb_auth_file", None)),
                            ("--dicomweb-ca", getattr(args, "dicomweb_ca", None))):
            if value:
                raise InputError(f"{flag} goes with --dicomweb URL (a DICOMweb server)")
        return
    if bool(study) == bool(search):
        raise InputError("with --dicomweb give --study STUDY_UID (one study) or --search QUERY "
                         "(a cohort), one of them")
    if args.case or getattr(args, "cases", None) or any(getattr(args, s, None) for s in
                                                        ("t1n", "t1c", "t2w", "t2f")):
        raise InputError("--dicomweb reads the scan from the server; leave out --case, --cases "
                         "and per-sequence files")


def read_auth(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Auth | None:
    """The credentials from ``--dicomweb-auth-file`` or ``$VLSEG_DICOMWEB_AUTH`` (None: none)."""
    path = getattr(args, "dicomweb_auth_file", None)
    if path:
        try:
            secret = Path(path).read_text().strip().splitlines()
        except OSError as e:
            raise InputError(f"cannot be read ({e.strerror or e})", str(path)) from None
        if not secret:
            raise InputError("is empty; write 'user:password' or 'Bearer <token>' in it", str(path))
        text, where = secret[0], f"--dicomweb-auth-file {path}"
    elif environ.get(AUTH_ENV):
        text, where = environ[AUTH_ENV], f"${AUTH_ENV}"
    else:
        return None
    try:
        return Auth.parse(text)
    except ValueError as e:
        raise InputError(f"{where}: {e}") from None


def pacs_from_args(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Pacs:
    ca = getattr(args, "dicomweb_ca", None)
    if ca and not Path(ca).is_file():
        raise InputError("--dicomweb-ca is not a file (a PEM bundle of CA certificates)", str(ca))
    verify: bool | str = False if getattr(args, "insecure", False) else (str(ca) if ca else True)
    return Pacs(args.dicomweb, auth=read_auth(args, environ), verify=verify)


def store_answer(pacs: Pacs, answer_json: Path) -> list[str]:
    """Send the DICOM-SEG and the SR report an answer folder holds, in one request; refuses,
    sending nothing, unless both are there."""
    doc = json.loads(answer_json.read_text())
    seg, sr = doc.get("dicom_seg"), doc.get("dicom_sr")
    if not isinstance(seg, dict) or not isinstance(sr, dict):
        missing = "the DICOM-SEG" if not isinstance(seg, dict) else "the SR report"
        why = "; ".join(str(w) for w in doc.get("warnings", []) if "could not be written" in str(w))
        raise InputError(f"--store: nothing was stored: {missing} was not written"
                         + (f" ({why})" if why else ""))
    folder = answer_json.parent
    return pacs.store([folder / str(seg["file"]), folder / str(sr["file"])])


__all__ = ["AUTH_ENV", "check_pacs_args", "read_auth", "pacs_from_args", "store_answer"]
