"""A DICOM study folder: its files grouped into series, and the MR series mapped to sequences.

Headers are read with pydicom (no pixel data); series are told apart by SeriesInstanceUID.
Each MR image series is mapped to t1n / t1c / t2w / t2f from, in order of trust:

1. a ``series=`` override: series number, SeriesInstanceUID or description;
2. its SeriesDescription and ProtocolName (``FLAIR``, ``T2``, ``T1 ... POST/GD/+C``, ...);
3. its acquisition tags: inversion time (FLAIR: TI > 1500 ms with a long TE), echo and
   repetition times (T2: TE > 60 ms, TR > 1500 ms; T1: TE < 30 ms), and the contrast agent
   (ContrastBolusAgent present: T1 post-contrast).

Series that are not MR images (SEG, SR, presentation states), localizers, and derived maps
(ADC, DWI, perfusion, SWI, subtractions) are never mapped. Two series for one sequence, or none
at all, is a one-line error listing the series found (number, description, image count) and how
to pick one with ``series=``. Patient identifiers are compared, never shown.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import deque
from itertools import islice
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from vlseg.vocab import SEQUENCES, canonical_sequence
from vlseg.errors import InputError
from vlseg.io.study import BoundedCache

MAX_FILES = 20_000  # files examined in one study folder
MAX_DEPTH = 8  # sub-folder levels searched for DICOM files
_PREAMBLE = 128
# SOP classes read as MR images: MR, Enhanced MR, Legacy Converted Enhanced MR.
MR_IMAGE_CLASSES: frozenset[str] = frozenset({
    "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"})
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "ImageType", "EchoTime", "RepetitionTime", "InversionTime", "ContrastBolusAgent",
    "ScanningSequence", "StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate",
    "FrameOfReferenceUID", "NumberOfFrames", "ImageOrientationPatient", "ImagePositionPatient",
    "SharedFunctionalGroupsSequence", "SOPInstanceUID",
]
DICOM_NAME_SUFFIXES = (".dcm", ".dicom", ".ima")  # a file named so that fails to read is reported
NIFTI_NAME_SUFFIXES = (".nii", ".nii.gz")  # a folder holding these is a NIfTI case, not a series
# Words in a description that rule a series out (derived maps, localizers, other contrasts).
_EXCLUDE = re.compile(r"\b(adc|dwi|diff\w*|trace|tensor|dti|perf\w*|dsc|dce|asl|swi|swan|"
                      r"localizer|locali[sz]er|scout|survey|loc|mip|subtract\w*|sub|map|"
                      r"fa|tof|angio|mra|spectro\w*|svs|csi)\b", re.I)
_FLAIR = re.compile(r"flair|dark[-_ ]?fluid|\btirm\b|\bt2f\b|\bfl\b", re.I)
_T2 = re.compile(r"\bt2|t2w|\bt2\b|t2[-_ ]?(tse|fse|w)", re.I)
_T1 = re.compile(r"\bt1|t1w|mprage|mp[-_ ]?rage|spgr|bravo|tfl|vibe|\bt1n\b|\bt1c\b", re.I)
_POST = re.compile(r"post|\+\s*c\b|\bgd\b|gad\w*|contrast|\bce\b|t1c\b|t1ce|\bc\+|enh", re.I)
_PRE = re.compile(r"\bpre\b|native|t1n\b|non[-_ ]?contrast|w/?o\b", re.I)


@dataclass
class Series:
    """One series of a study, from its headers: what it is and where its files are."""

    uid: str
    number: int | None
    description: str
    protocol: str
    n_images: int  # files (each single- or multi-frame)
    files: list[Path] = field(default_factory=list)
    is_mr_image: bool = True
    excluded: str = ""  # why it is never mapped (localizer, derived map, not an MR image)
    echo_ms: float | None = None
    repetition_ms: float | None = None
    inversion_ms: float | None = None
    contrast: bool = False
    multiframe: bool = False
    sequence: str | None = None  # what its tags say (None: not recognised)
    evidence: str = ""  # "description" | "acquisition tags"
    frame_of_reference: str = ""  # FrameOfReferenceUID ("" when the files lack it)
    unread: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files beside its own
    geometry: object = field(default=None, repr=False, compare=False)  # cached by vlseg.io.dicom

    def label(self) -> str:
        num = f"#{self.number}" if self.number is not None else "#?"
        desc = self.description or self.protocol or "no description"
        return f"{num} '{desc}' ({self.n_images} {'file' if self.multiframe else 'image'}" \
               f"{'s' if self.n_images != 1 else ''})"


@dataclass
class Study:
    """The series of one DICOM study folder, in series-number order."""

    folder: Path
    series: list[Series]
    n_other_files: int = 0  # files that are not DICOM
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # DICOM files that could not be read

    def skipped_note(self) -> str:
        """One sentence naming the DICOM files skipped as unreadable ("" when none)."""
        if not self.skipped:
            return ""
        named = "; ".join(f"{f.name} {why}" for f, why in self.skipped[:3])
        more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        return (f"Skipped {len(self.skipped)} unreadable DICOM file(s) in the study: "
                f"{named}{more}.")

    def listing(self) -> str:
        parts = []
        for s in self.series:
            what = s.sequence or (s.excluded or "not recognised")
            parts.append(f"{s.label()} -> {what}")
        return "; ".join(parts) if parts else "none"


def looks_like_dicom(head: bytes) -> bool:
    """The first bytes of a DICOM Part 10 file: a 128-byte preamble then ``DICM``."""
    return head[_PREAMBLE:_PREAMBLE + 4] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (by content, never raises)."""
    try:
        with open(path, "rb") as f:
            return looks_like_dicom(f.read(_PREAMBLE + 4))
    except OSError:
        return False


def _iter_files(folder: Path, *, strict: bool) -> Iterator[Path]:
    """Regular files under ``folder``, lazily, breadth-first and by name within each folder
    (hidden entries, links and DICOMDIR skipped; at most MAX_DEPTH sub-folder levels).

    A folder that cannot be listed raises InputError when ``strict`` (a study being read must
    be read whole), else is skipped (a probe: one unreadable sub-folder is not an error)."""
    queue = deque([(folder, 0)])
    while queue:
        d, depth = queue.popleft()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            if strict:
                raise InputError(f"cannot be listed ({e.strerror or e}); check its permissions",
                                 str(d)) from None
            continue
        for e in entries:
            try:
                if e.name.startswith(".") or e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    if depth < MAX_DEPTH:
                        queue.append((Path(e.path), depth + 1))
                elif e.is_file(follow_symlinks=False) and e.name.upper() != "DICOMDIR":
                    yield Path(e.path)
            except OSError as err:
                if strict:
                    raise InputError(f"cannot be read ({err.strerror or err}); check its "
                                     "permissions", e.path) from None


def walk_files(folder: Path, *, max_files: int = MAX_FILES) -> list[Path]:
    """Regular files under ``folder`` (see :func:`_iter_files`), sorted; InputError if a folder
    cannot be listed or it holds more than ``max_files``."""
    out: list[Path] = []
    for f in _iter_files(folder, strict=True):
        out.append(f)
        if len(out) > max_files:
            raise InputError(f"holds more than {max_files:,} files; give one study folder",
                             str(folder))
    return sorted(out)


def holds_dicom(folder: Path, *, budget: int = 64) -> bool:
    """Cheap: a DICOM file (by its marker, or by a DICOM name: a broken one is reported by the
    study scan) among the first ``budget`` files found under ``folder`` (never raises; folders
    that cannot be listed are skipped)."""
    return any(f.name.lower().endswith(DICOM_NAME_SUFFIXES) or is_dicom_file(f)
               for f in islice(_iter_files(folder, strict=False), budget))


def holds_other_scans(folder: Path, *, budget: int = 64) -> bool:
    """True if a NIfTI file is among the first ``budget`` files under ``folder`` (a case of
    another kind), or it cannot be listed (never raises)."""
    try:
        os.scandir(folder).close()
    except OSError:
        return True
    return any(f.name.lower().endswith(NIFTI_NAME_SUFFIXES)
               for f in islice(_iter_files(folder, strict=False), budget))


def first_study_uid(folder: Path, *, budget: int = MAX_FILES) -> str | None:
    """StudyInstanceUID of the first DICOM file found under ``folder`` (None: no DICOM among its
    first ``budget`` files). Never raises: folders and files that cannot be read are skipped."""
    from pydicom import dcmread

    for f in islice(_iter_files(folder, strict=False), budget):
        if is_dicom_file(f):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            except Exception:  # noqa: BLE001 - unreadable: the study scan reports it later
                continue
            return str(ds.get("StudyInstanceUID", "") or "")
    return None


def _float(ds, name: str) -> float | None:
    try:
        v = ds.get(name)
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _enhanced_timing(ds) -> tuple[float | None, float | None, float | None]:
    """TE, TR, TI of an enhanced (multi-frame) MR image from its shared functional groups."""
    te = tr = ti = None
    try:
        shared = ds.SharedFunctionalGroupsSequence[0]
    except (AttributeError, IndexError, KeyError):
        return te, tr, ti
    for seq_name, tag, kind in (("MRTimingAndRelatedParametersSequence", "RepetitionTime", "tr"),
                                ("MREchoSequence", "EffectiveEchoTime", "te"),
                                ("MRModifierSequence", "InversionTimes", "ti")):
        try:
            item = getattr(shared, seq_name)[0]
            v = item.get(tag)
            v = v[0] if isinstance(v, (list, tuple)) or getattr(v, "VM", 1) > 1 else v
            value = float(v) if v not in (None, "") else None
        except (AttributeError, IndexError, TypeError, ValueError, KeyError):
            value = None
        if kind == "te":
            te = value
        elif kind == "tr":
            tr = value
        else:
            ti = value
    return te, tr, ti


def sequence_from_text(text: str, *, contrast: bool = False) -> str | None:
    """t1n/t1c/t2w/t2f from a series description or protocol name, else None."""
    if not text or _EXCLUDE.search(text.replace("_", " ")):
        return None
    low = text.replace("_", " ")
    if _FLAIR.search(low):
        return "t2f"
    if _T1.search(low):
        if _POST.search(low):
            return "t1c"
        if _PRE.search(low):
            return "t1n"
        return "t1c" if contrast else "t1n"
    if _T2.search(low):
        return "t2w"
    return None


def sequence_from_tags(s: Series) -> str | None:
    """t1n/t1c/t2w/t2f from TE/TR/TI and the contrast agent, else None."""
    te, tr, ti = s.echo_ms, s.repetition_ms, s.inversion_ms
    if ti is not None and ti > 1500 and (te is None or te > 50):
        return "t2f"
    if te is not None and te > 60 and (tr is None or tr > 1500):
        return "t2w"
    if te is not None and te < 30:
        return "t1c" if s.contrast else "t1n"
    return None


def _classify(s: Series) -> None:
    if not s.is_mr_image or s.excluded:
        return
    text = f"{s.description} {s.protocol}".strip()
    if _EXCLUDE.search(text.replace("_", " ")):
        s.excluded = "derived or localizer"
        return
    for t in (s.description, s.protocol):
        seq = sequence_from_text(t, contrast=s.contrast)
        if seq is not None:
            s.sequence, s.evidence = seq, "description"
            return
    seq = sequence_from_tags(s)
    if seq is not None:
        s.sequence, s.evidence = seq, "acquisition tags"


def _int(ds, name: str) -> int | None:
    """An integer header value, None when absent; ValueError names the tag when malformed."""
    v = ds.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {str(v)[:20]!r} is not a number") from None


def _unreadable(f: Path) -> str | None:
    """Why a file that is not a readable DICOM Part 10 file is reported rather than ignored: it
    is empty, or named like DICOM (None: another kind of file, ignored)."""
    try:
        size = f.stat().st_size
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty (0 bytes)"
    if f.name.lower().endswith(DICOM_NAME_SUFFIXES):
        return f"is not a DICOM Part 10 file ({size} bytes, no DICM marker: truncated, or no preamble)"
    return None


def _read_header(f: Path):
    """The header of one DICOM file, or the reason it cannot be used (one phrase)."""
    from pydicom import dcmread

    try:
        with warnings.catch_warnings():  # pydicom's warnings never reach the user's terminal
            warnings.simplefilter("ignore")
            ds = dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            if not uid:  # a Type 1 attribute of every image: a truncated or broken header
                return f"is truncated or incomplete ({f.stat().st_size} bytes, no SeriesInstanceUID)"
            info = {"uid": uid, "sop": str(ds.get("SOPClassUID", "")),
                    "image_type": [str(x).upper() for x in (ds.get("ImageType") or [])],
                    "number": _int(ds, "SeriesNumber"), "frames": _int(ds, "NumberOfFrames") or 1,
                    "description": str(ds.get("SeriesDescription", "") or "").strip(),
                    "protocol": str(ds.get("ProtocolName", "") or "").strip(),
                    "echo": _float(ds, "EchoTime"), "tr": _float(ds, "RepetitionTime"),
                    "ti": _float(ds, "InversionTime"),
                    "contrast": bool(str(ds.get("ContrastBolusAgent", "") or "").strip()),
                    "frame_of_reference": str(ds.get("FrameOfReferenceUID", "") or "").strip(),
                    "modality": str(ds.get("Modality", "?")),
                    "study": str(ds.get("StudyInstanceUID", "")),
                    "patient": (str(ds.get("PatientID", "")), str(ds.get("PatientName", "")),
                                str(ds.get("PatientBirthDate", ""))),
                    "instance": str(ds.get("SOPInstanceUID", "") or "")}
    except EOFError:
        return f"is truncated ({f.stat().st_size} bytes)"
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds on a malformed header
        msg = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        return f"has a malformed header ({msg})"
    return info


def scan_study(folder: str | os.PathLike) -> Study:
    """Read the headers of every DICOM file under ``folder`` and group them into series. Files
    that claim to be DICOM but cannot be read are skipped and listed in ``Study.skipped``;
    two MR images with one SOPInstanceUID are refused."""
    from pydicom import dcmread

    folder = Path(folder)
    files = walk_files(folder) if folder.is_dir() else [folder]
    by_uid: dict[str, Series] = {}
    patients: dict[tuple, Path] = {}
    studies: dict[str, Path] = {}
    instances: dict[str, Path] = {}
    skipped: list[tuple[Path, str]] = []
    others = 0
    for f in files:
        if not is_dicom_file(f):
            why = _unreadable(f)
            if why is not None:
                skipped.append((f, why))
            others += 1
            continue
        h = _read_header(f)
        if not isinstance(h, dict):
            if h is not None:
                skipped.append((f, h))
            others += 1
            continue
        s = by_uid.get(h["uid"])
        if s is None:
            s = by_uid[h["uid"]] = Series(
                uid=h["uid"], number=h["number"], description=h["description"],
                protocol=h["protocol"], n_images=0, is_mr_image=h["sop"] in MR_IMAGE_CLASSES,
                echo_ms=h["echo"], repetition_ms=h["tr"], inversion_ms=h["ti"],
                contrast=h["contrast"], multiframe=h["frames"] > 1,
                frame_of_reference=h["frame_of_reference"])
            if not s.is_mr_image:
                s.excluded = f"not an MR image ({h['modality']})"
            elif "LOCALIZER" in h["image_type"]:
                s.excluded = "localizer"
            if s.multiframe and s.echo_ms is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s.echo_ms, s.repetition_ms, s.inversion_ms = _enhanced_timing(
                        dcmread(f, stop_before_pixels=True))
        if s.is_mr_image:
            studies.setdefault(h["study"], f)
            patients.setdefault(h["patient"], f)
            first = instances.setdefault(h["instance"], f) if h["instance"] else f
            if first != f:
                raise InputError(f"has the same SOPInstanceUID as {first.name} (one image twice); "
                                 "remove the duplicate", str(f))
        s.n_images += 1
        s.files.append(f)
    if len(patients) > 1:
        a, b = list(patients.values())[:2]
        raise InputError(f"holds MR series of {len(patients)} different patients ({a.name} and "
                         f"{b.name} differ); give one patient's study per folder", str(folder))
    if len(studies) > 1:
        a, b = list(studies.values())[:2]
        raise InputError(f"holds MR series of {len(studies)} different studies ({a.name} and "
                         f"{b.name} differ); give one study per folder", str(folder))
    series = sorted(by_uid.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))
    for s in series:
        _classify(s)
        parents = {f.parent for f in s.files}
        s.unread = [(f, why) for f, why in skipped if f.parent in parents]
    return Study(folder=folder, series=series, n_other_files=others, skipped=skipped)


def scan_key(folder: Path) -> tuple[str, int, int]:
    """What a scanned study is kept by: its folder, its file count and newest modification time
    (a study that changed on disk is scanned again)."""
    files = walk_files(folder) if folder.is_dir() else [folder]
    newest = max((f.stat().st_mtime_ns for f in files), default=0)
    return (str(folder.resolve()), len(files), newest)


class StudyScans:
    """Scanned studies, owned by one reader: a study's headers are read once per load, not once
    per series read; at most ``size`` studies are kept (least recently used out)."""

    def __init__(self, size: int = 8) -> None:
        self._studies: BoundedCache[tuple[str, int, int], Study] = BoundedCache(size)

    def get(self, folder: str | os.PathLike) -> Study:
        folder = Path(folder)
        key = scan_key(folder)
        hit = self._studies.get(key)
        if hit is None:
            hit = scan_study(folder)
            self._studies.put(key, hit)
        return hit

    def __len__(self) -> int:
        return len(self._studies)


def _match(study: Study, spec: str) -> Series:
    """The series a ``series=`` value names: series number, SeriesInstanceUID or description."""
    spec = spec.strip()
    hits = [s for s in study.series if s.uid == spec]
    if not hits and spec.lstrip("#").isdigit():
        hits = [s for s in study.series if s.number == int(spec.lstrip("#"))]
    if not hits:
        low = spec.lower()
        hits = [s for s in study.series if low in (s.description.lower(), s.protocol.lower())]
    if len(hits) != 1:
        why = "matches no series" if not hits else f"matches {len(hits)} series"
        raise InputError(f"series={spec!r} {why}; the study holds: {study.listing()}",
                         str(study.folder))
    if not hits[0].is_mr_image:
        raise InputError(f"series={spec!r} is {hits[0].excluded}; pick an MR image series",
                         str(study.folder))
    return hits[0]


def _pick_hint(seq: str, series: list[Series]) -> str:
    """How to name one of ``series`` with ``series=``: by number when the numbers tell them
    apart, else by description, else by SeriesInstanceUID (listed, as the listing omits them)."""
    numbers = [s.number for s in series]
    if None not in numbers and len(set(numbers)) == len(numbers):
        return f"series={seq}=NUMBER"
    names = [(s.description or s.protocol).strip().lower() for s in series]
    if all(names) and len(set(names)) == len(names):
        return f"series={seq}='DESCRIPTION'"
    return f"series={seq}=UID, one of {', '.join(s.uid for s in series)}"


def parse_overrides(values: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["t1c=7", "flair=AX FLAIR"]`` -> ``{"t1c": "7", "t2f": "AX FLAIR"}`` (InputError if bad)."""
    out: dict[str, str] = {}
    for v in values or ():
        seq, sep, spec = str(v).partition("=")
        if not sep or not spec.strip():
            raise InputError(f"series={v!r}: give SEQ=SERIES, e.g. t1c=7 (series number), "
                             "t2f='AX FLAIR' (description) or t1n=<SeriesInstanceUID>")
        try:
            key = canonical_sequence(seq.strip())
        except ValueError as e:
            raise InputError(f"series={v!r}: {e}") from None
        if key in out:
            raise InputError(f"series= gives {key} twice; give one series per sequence")
        out[key] = spec
    return out


def map_sequences(study: Study, overrides: Mapping[str, str] | None = None) -> dict[str, Series]:
    """sequence -> the one series that holds it; InputError (one line, the series listed) when
    a sequence has two candidates or no sequence is found."""
    overrides = dict(overrides or {})
    chosen: dict[str, Series] = {}
    for seq, spec in overrides.items():
        chosen[seq] = _match(study, spec)
    taken = {s.uid for s in chosen.values()}
    if len(taken) != len(chosen):
        raise InputError("series= names one series for two sequences; give one series per "
                         "sequence", str(study.folder))
    for seq in SEQUENCES:
        if seq in chosen:
            continue
        cands = [s for s in study.series if s.sequence == seq and s.uid not in taken]
        if len(cands) > 1:
            names = ", ".join(s.label() for s in cands)
            raise InputError(f"has {len(cands)} series that look like {seq} ({names}); pick one "
                             f"with {_pick_hint(seq, cands)}; the study holds: {study.listing()}",
                             str(study.folder))
        if cands:
            chosen[seq] = cands[0]
    if not chosen:
        mr = [s for s in study.series if s.is_mr_image]
        if not study.series and study.skipped:  # nothing readable: the file is the problem
            f, why = study.skipped[0]
            more = f" (and {len(study.skipped) - 1} more like it)" if len(study.skipped) > 1 else ""
            raise InputError(f"{why}{more}; no readable DICOM image is in its folder", str(f))
        if not mr:  # CT, PET, reports ...: naming a series cannot help (only MR images are read)
            raise InputError(f"holds no MR image series (vlseg reads brain MRI only); the study "
                             f"holds: {study.listing()}", str(study.folder))
        raise InputError("holds no series recognised as T1, T1 post-contrast, T2 or FLAIR; the "
                         f"study holds: {study.listing()}; name them with {_pick_hint('t1c', mr)}",
                         str(study.folder))
    return {s: chosen[s] for s in SEQUENCES if s in chosen}


__all__ = ["Series", "Study", "scan_study", "StudyScans", "scan_key", "map_sequences", "parse_overrides",
           "is_dicom_file", "looks_like_dicom", "holds_dicom", "holds_other_scans", "walk_files", "first_study_uid", "sequence_from_text", "sequence_from_tags",
           "MR_IMAGE_CLASSES", "DICOM_NAME_SUFFIXES"]
