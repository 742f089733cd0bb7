"""A PACS over DICOMweb: studies in (QIDO-RS search, WADO-RS retrieve), results out (STOW-RS).

The HTTP is the field's client library's (``dicomweb-client``), not ours. A :class:`Pacs` is
given its URL and, when the server asks for it, an :class:`Auth` (HTTP basic or a bearer token;
the CLI reads it from an environment variable or a file, never from the command line). TLS
certificates are verified unless ``verify=False`` is asked for, or checked against a CA bundle.

    pacs = Pacs("https://pacs.example.org/dicom-web", auth=Auth(token="..."))
    folder = pacs.retrieve_study(uid, into)           # one .dcm per instance, random names
    pacs.store([seg_path, sr_path])                   # one STOW-RS request, all or nothing said

Every failure is a :class:`PacsError`: one line with the server's HTTP status where there is
one, no patient data (UIDs are named, patient names and IDs never), no credentials.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from vlseg.errors import InputError

MR = "MR"
STUDY_UID = "0020000D"
MODALITIES_IN_STUDY = "00080061"
RETRIES = 3
MAX_INSTANCES = 20_000  # a brain MR study has a few thousand at most; more is not one study


class PacsError(InputError):
    """A DICOMweb request that failed: unreachable, refused, not found, rejected."""


@dataclass(frozen=True)
class Auth:
    """HTTP basic (``username`` + ``password``) or a bearer ``token``; ``repr`` shows neither."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and (self.username or self.password):
            raise ValueError("give a bearer token or a user name and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("HTTP basic authentication needs a user name and a password")

    def __repr__(self) -> str:
        kind = "token" if self.token else "basic" if self.username else "none"
        return f"Auth({kind})"

    @classmethod
    def parse(cls, secret: str) -> "Auth":
        """``user:password`` (HTTP basic) or ``Bearer <token>`` / a bare token (no colon)."""
        secret = secret.strip()
        if not secret:
            raise ValueError("the DICOMweb credentials are empty")
        if secret.lower().startswith("bearer "):
            return cls(token=secret[7:].strip())
        if ":" in secret:
            user, password = secret.split(":", 1)
            return cls(username=user, password=password)
        return cls(token=secret)


def _check_uid(uid: str) -> str:
    uid = uid.strip()
    if not uid or len(uid) > 64 or not all(c.isdigit() or c == "." for c in uid):
        raise InputError(f"--study {uid[:70]!r} is not a DICOM UID (digits and dots, at most 64)")
    return uid


class Pacs:
    """One DICOMweb server: ``url`` is its DICOMweb root (e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, *, auth: Auth | None = None, verify: bool | str = True,
                 timeout_s: float = 60.0) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        if not url.startswith(("http://", "https://")):
            raise InputError(f"--dicomweb must be an http:// or https:// URL, got {url[:80]!r}")
        from urllib.parse import urlsplit

        if urlsplit(url).username is not None or urlsplit(url).password is not None:
            raise InputError("--dicomweb URL holds credentials (user:password@); give them in "
                             "$VLSEG_DICOMWEB_AUTH or --dicomweb-auth-file instead")
        self.url = url.rstrip("/")
        session = requests.Session()
        session.verify = verify
        if auth is not None and auth.token:
            session.headers["Authorization"] = f"Bearer {auth.token}"
        elif auth is not None and auth.username is not None:
            session.auth = (auth.username, auth.password or "")
        self._client = DICOMwebClient(self.url, session=session, timeout=timeout_s)
        # The client retries every failed request (a refused connection too) 5 times with waits
        # of 2-16 s; a user waiting at a prompt gets two quick retries (0.5 s, 1 s) instead.
        self._client.set_http_retry_params(retry=True, max_attempts=RETRIES,
                                           wait_exponential_multiplier=250)

    # ----------------------------------------------------------------- in
    def search_studies(self, query: str | dict[str, str]) -> list[str]:
        """Study Instance UIDs of a QIDO-RS study search (``"ModalitiesInStudy=MR&StudyDate=..."``)."""
        filters = _parse_search(query) if isinstance(query, str) else dict(query)
        found = self._call("search", lambda: self._client.search_for_studies(search_filters=filters))
        uids = []
        for item in found:
            value = (item.get(STUDY_UID) or {}).get("Value") or []
            if value:
                uids.append(str(value[0]))
        return uids

    def retrieve_study(self, study_uid: str, into: str | os.PathLike) -> Path:
        """Every instance of the study, written under ``into`` with random file names (header
        values never name files); refuses a study with no MR images. Returns the folder."""
        uid = _check_uid(study_uid)
        into = Path(into)
        datasets = self._call(f"retrieve of study {uid}",
                              lambda: self._client.retrieve_study(uid))
        if not datasets:
            raise PacsError(f"study {uid} has no instances on {self._where()}")
        if len(datasets) > MAX_INSTANCES:
            raise PacsError(f"study {uid} has {len(datasets)} instances, more than one MR study "
                            f"holds (limit {MAX_INSTANCES})")
        modalities = sorted({str(getattr(ds, "Modality", "") or "?") for ds in datasets})
        if MR not in modalities:
            raise PacsError(f"study {uid} is not an MR study (modalities {', '.join(modalities)}); "
                            "vlseg answers brain MRI")
        into.mkdir(parents=True, exist_ok=True)
        for ds in datasets:
            if str(getattr(ds, "Modality", "")) != MR:
                continue  # earlier results (SEG, SR) and other objects are not images to read
            ds.save_as(into / f"{uuid.uuid4().hex}.dcm", enforce_file_format=True)
        return into

    # ----------------------------------------------------------------- out
    def store(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        """STOW-RS the DICOM files in one request; their SOP Instance UIDs. Refuses before
        sending when any file cannot be read, and raises when the server stored not all of them
        (naming those it refused and those it kept)."""
        from pydicom import dcmread

        datasets = []
        for p in paths:
            try:
                datasets.append(dcmread(p))
            except Exception as e:  # noqa: BLE001 - nothing is sent when one file is bad
                raise PacsError(f"{Path(p).name} is not a readable DICOM file ({type(e).__name__}); "
                                "nothing was stored") from None
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        response = self._call("store", lambda: self._client.store_instances(datasets))
        failed = [str(i.ReferencedSOPInstanceUID) for i in getattr(response, "FailedSOPSequence", [])]
        if failed:
            kept = [u for u in uids if u not in failed]
            raise PacsError(f"{self._where()} refused {len(failed)} of {len(uids)} instances "
                            f"({', '.join(failed)}); stored: {', '.join(kept) or 'none'}")
        return uids

    def instances_of(self, study_uid: str) -> list:
        """The study's instance metadata (QIDO-RS), for checks after a store."""
        uid = _check_uid(study_uid)
        return self._call("search", lambda: self._client.search_for_instances(study_instance_uid=uid))

    # ----------------------------------------------------------------- errors
    def _where(self) -> str:
        return "the DICOMweb server"

    def _call(self, what: str, fn):
        import requests

        try:
            return fn()
        except requests.exceptions.SSLError:
            raise PacsError(f"{what} failed: the DICOMweb server's TLS certificate could not be "
                            "verified (give its CA bundle, or --insecure for a test server)") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            kind = "timed out" if isinstance(e, requests.exceptions.Timeout) else "is unreachable"
            raise PacsError(f"{what} failed: the DICOMweb server at {self.url} {kind}") from None
        except requests.exceptions.HTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            reason = {401: "authentication failed (check the credentials)",
                      403: "access denied", 404: "not found",
                      409: "the server refused the instances"}.get(status, "request failed")
            raise PacsError(f"{what} failed: HTTP {status} {reason}") from None
        except ValueError as e:  # dicomweb-client's own checks (bad UID, bad filter)
            raise PacsError(f"{what} failed: {str(e)[:160]}") from None


def _parse_search(query: str) -> dict[str, str]:
    """``"ModalitiesInStudy=MR&StudyDate=20240101-"`` -> QIDO-RS filters."""
    filters: dict[str, str] = {}
    for part in (p for p in query.split("&") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--search part {part[:60]!r} is not KEY=VALUE "
                             "(e.g. ModalitiesInStudy=MR&StudyDate=20240101-20241231)")
        filters[key.strip()] = value.strip()
    return filters


def study_uids_of(paths: Iterable[str | os.PathLike]) -> set[str]:
    """The Study Instance UIDs of DICOM files (headers only)."""
    from pydicom import dcmread

    return {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in paths}


__all__ = ["Auth", "Pacs", "PacsError", "study_uids_of"]
