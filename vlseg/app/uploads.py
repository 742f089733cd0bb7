"""Uploaded files: checked by content (not by extension), zips extracted safely, old files swept.

A browser's ``file_types`` is only a hint, so every upload is sniffed here before ``vlseg.io``
opens it:

* ``.nii``: NIfTI-1 (``sizeof_hdr`` 348 and magic ``n+1\\0`` at byte 344) or NIfTI-2 (540, ``n+2\\0``);
* ``.nii.gz``: gzip magic ``1f 8b`` and a NIfTI header inside the first decompressed bytes;
* ``.zip``: zip magic ``PK\\3\\4``; extracted with caps on member count, total and per-member
  size and compression ratio (zip bombs), refusing absolute paths, ``..``, links and devices.

Which sequence a file holds, or whether it is a label map (``*-seg``, ``*_label``, ``*_mask``),
is decided by :func:`vlseg.io.classify` (name + header), the same rules ``load_case`` and
``vlseg evaluate`` use. The file name appears only in the user's own chat messages; it is never
logged.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import stat
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Literal

from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError
from vlseg.io import READERS, NiftiReader, classify, has_reader_suffix, looks_like_nifti, reader_for
from vlseg.io.classify import NAMING_HINT
from vlseg.io.dicom_study import looks_like_dicom

Kind = Literal["nifti", "nifti_gz", "zip", "scan"]  # "scan": claimed by another registered reader

MAX_FILES_PER_REQUEST = 8
ZIP_MAX_MEMBERS = 32
ZIP_STUDY_MAX_MEMBERS = 4000  # a zipped DICOM study: one file per slice
ZIP_MAX_TOTAL_BYTES = 2 * 1024**3  # uncompressed
ZIP_MAX_RATIO = 200.0  # uncompressed/compressed for large members (zeros compress ~1000x)
_RATIO_FREE_BYTES = 64 * 1024**2  # members smaller than this may compress arbitrarily well
_CHUNK = 1024 * 1024
_HELP = ("upload 1-4 NIfTI files (.nii or .nii.gz, one per sequence), a .zip of a BraTS case "
         "folder or a .zip of a DICOM study")


def _display(path: Path) -> str:
    return path.name


def _other_reader_claims(path: Path) -> bool:
    """A registered reader besides NIfTI (which is checked by content above) claims the file."""
    return any(r.can_read(path) for r in READERS if not isinstance(r, NiftiReader))


def sniff(path: str | Path) -> Kind:
    """Say what a file is from its first bytes; InputError for anything else."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(540)
    except OSError:
        raise InputError(f"could not read the uploaded file; {_HELP}", _display(path)) from None
    if not head:
        raise InputError(f"the file is empty; {_HELP}", _display(path))
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(540)
        except (OSError, EOFError, zlib.error):
            raise InputError("the gzip file is corrupt or truncated; upload it again", _display(path)) from None
        if looks_like_nifti(inner):
            return "nifti_gz"
        if _other_reader_claims(path):
            return "scan"
        raise InputError(f"a gzip file that does not hold a NIfTI image; {_HELP}", _display(path))
    if looks_like_nifti(head):
        return "nifti"
    if _other_reader_claims(path):
        return "scan"
    raise InputError(f"not a NIfTI image or zip (checked by content, not by name); {_HELP}",
                     _display(path))


def sequence_from_name(name: str) -> str | None:
    """Sequence a file's name gives (``BraTS2021_00000_flair.nii.gz`` -> t2f), "seg" for a label
    map or concept mask (``*-seg``, ``*_label``, ``*_mask``, ``ET.nii.gz``), else None."""
    fc = classify(PurePosixPath(name).name, depth="name")
    if fc.role in ("label", "concept_mask"):
        return "seg"
    return fc.sequence


def _is_link_or_special(info: zipfile.ZipInfo) -> bool:
    ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip stores no Unix file type
    return bool(ftype) and ftype not in (stat.S_IFREG, stat.S_IFDIR)


def _safe_member_path(name: str) -> PurePosixPath | None:
    """Relative, normalised member path; None for entries that must not be extracted."""
    name = name.replace("\\", "/")
    p = PurePosixPath(name)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", name) or any(part == ".." for part in p.parts):
        raise InputError("the zip holds an unsafe path (absolute or '..'); zip the case folder itself")
    parts = [x for x in p.parts if x not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or any(x.startswith(".") for x in parts):
        return None
    return PurePosixPath(*parts)


def safe_extract_zip(zip_path: str | Path, dest: str | Path, *, max_members: int = ZIP_MAX_MEMBERS,
                     max_total_bytes: int = ZIP_MAX_TOTAL_BYTES,
                     max_ratio: float = ZIP_MAX_RATIO, tree: bool = False) -> list[Path]:
    """Extract the NIfTI members of a zip into ``dest`` (flat, unique names); return their paths.
    ``tree``: extract every regular member under its own (checked) relative path instead (a
    DICOM study, whose files often have no suffix and repeat names across series folders).

    Sizes are counted while decompressing (a zip's own size fields can lie). Any violation
    removes everything extracted so far and raises InputError.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    shown = _display(zip_path)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise InputError(f"the zip holds {len(infos)} entries (at most {max_members}); "
                                 "zip a single case folder", shown)
            total = 0
            for info in infos:
                rel = _safe_member_path(info.filename)
                if rel is None or info.is_dir():
                    continue
                if _is_link_or_special(info):
                    raise InputError("the zip holds a link or special file; zip plain files only", shown)
                if info.flag_bits & 0x1:
                    raise InputError("the zip is encrypted; upload an unencrypted zip", shown)
                if not tree and not has_reader_suffix(rel.name):
                    continue  # READMEs, JSON sidecars ...: ignored, never written
                target = dest / (rel if tree else rel.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    raise InputError(f"the zip holds two files named {rel.name}; zip one case", shown)
                member_bytes = 0
                with zf.open(info) as src, open(target, "wb") as out:
                    written.append(target)
                    while chunk := src.read(_CHUNK):
                        member_bytes += len(chunk)
                        total += len(chunk)
                        if total > max_total_bytes:
                            raise InputError(f"the zip expands to more than {max_total_bytes // 1024**2} MB; "
                                             "upload fewer or smaller files", shown)
                        if (member_bytes > _RATIO_FREE_BYTES
                                and member_bytes > max_ratio * max(info.compress_size, 1)):
                            raise InputError("a zip member expands far more than real scans do "
                                             "(possible zip bomb); upload the files themselves", shown)
                        out.write(chunk)
    except InputError:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError):
        for p in written:
            p.unlink(missing_ok=True)
        raise InputError("the zip file is corrupt or uses an unsupported format; zip the case again",
                         shown) from None
    return written


@dataclass
class UploadSet:
    """Uploaded scans sorted by sequence; ``ignored`` lists names the user should hear about."""

    sequences: dict[str, Path] = field(default_factory=dict)  # canonical seq -> path
    label: Path | None = None
    ignored: list[str] = field(default_factory=list)
    fingerprint: str = ""  # sha256 of the uploaded files' bytes (the same upload again matches)
    name: str | None = None  # a DICOM study's name: its StudyDescription, else the upload's name

    def describe(self) -> str:
        order = [s for s in SEQUENCES if s in self.sequences]
        text = "sequences " + ", ".join(order)
        if self.ignored:
            text += f" (ignored: {', '.join(self.ignored)})"
        return text


def collect_uploads(paths: Iterable[str | Path], work_dir: str | Path, *,
                    max_files: int = MAX_FILES_PER_REQUEST) -> UploadSet:
    """Sniff every upload, extract zips into ``work_dir``, and map files to sequences by name."""
    paths = [Path(p) for p in paths if p]
    if not paths:
        raise InputError(f"no file was uploaded; {_HELP}")
    if len(paths) > max_files:
        raise InputError(f"{len(paths)} files were uploaded (at most {max_files}); {_HELP}")
    files: list[Path] = []
    studies: list[Path] = []
    names: list[str] = []
    for i, p in enumerate(paths):
        kind = sniff(p)
        if kind == "zip" and zip_holds_dicom(p):  # a DICOM study: its reader maps the series
            folder = Path(work_dir) / f"zip{i}"
            safe_extract_zip(p, folder, max_members=ZIP_STUDY_MAX_MEMBERS, tree=True)
            studies.append(folder)
            names.append(study_description(folder) or _upload_stem(p))
        elif kind == "zip":
            members = safe_extract_zip(p, Path(work_dir) / f"zip{i}")
            for m in members:
                sniff(m)
            files.extend(members)
        else:
            files.append(p)
    result = UploadSet(fingerprint=fingerprint_uploads(paths), name=names[0] if names else None)
    for folder in studies:
        reader = reader_for(folder)
        study = reader.study(folder) if reader is not None else None
        if study is None:
            raise InputError(f"the zip holds no readable DICOM study; {_HELP}")
        for seq, series in study.paths.items():
            if seq in result.sequences:
                raise InputError(f"two uploads hold the {seq} sequence; upload one study")
            result.sequences[seq] = series
    for f in files:
        fc = classify(f, depth="header")
        if fc.role == "not_scan":
            raise InputError(f"{fc.reason}; {_HELP}", f.name)
        if fc.role == "multi":
            raise InputError(f"is {fc.reason}; upload one 3D file per sequence", f.name)
        if fc.role in ("label", "concept_mask"):
            result.label = result.label or f
            result.ignored.append(f.name)
            continue
        if fc.role != "sequence" or fc.sequence is None:
            raise InputError(f"cannot tell which sequence this file holds from its name; {NAMING_HINT}",
                             f.name)
        seq = fc.sequence
        if seq in result.sequences:
            raise InputError(f"two files hold the {seq} sequence ({result.sequences[seq].name} and "
                             f"{f.name}); upload one per sequence")
        result.sequences[seq] = f
    if not result.sequences:
        raise InputError(f"no MRI sequence among the uploaded files; {_HELP}")
    return result


def fingerprint_uploads(paths: Iterable[str | Path]) -> str:
    """sha256 over the uploaded files' bytes (each zip or NIfTI as sent, in any order): identifies
    the same scan uploaded again, whatever it unpacks to (a DICOM study's series are folders)."""
    digests = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digests.append(h.digest())
    total = hashlib.sha256()
    for d in sorted(digests):
        total.update(d)
    return total.hexdigest()


def study_description(folder: Path, *, probe: int = 64) -> str | None:
    """The StudyDescription of the first DICOM file under ``folder`` that has one (issue 22: a
    study is named after it, not after its first file, 'IM020001'); None without one."""
    import pydicom

    seen = 0
    for f in sorted(folder.rglob("*")):
        if seen >= probe:
            break
        if not f.is_file():
            continue
        seen += 1
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyDescription"])
        except Exception:  # noqa: BLE001 - not DICOM or unreadable: try the next file
            continue
        text = " ".join(str(ds.get("StudyDescription", "") or "").split())
        if text:
            return text[:64]
    return None


def _upload_stem(p: Path) -> str | None:
    """The upload's own name without .zip (Gradio keeps it as the temp file's name)."""
    stem = p.name[:-4] if p.name.lower().endswith(".zip") else p.stem
    return stem or None


def zip_holds_dicom(zip_path: str | Path, *, probe: int = 16) -> bool:
    """True if one of the first ``probe`` file members of a zip starts like a DICOM file."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()][:probe]
            for info in members:
                if info.flag_bits & 0x1:
                    return False
                with zf.open(info) as f:
                    if looks_like_dicom(f.read(132)):
                        return True
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError):
        return False
    return False


class Janitor:
    """Deletes entries of a folder older than ``ttl_s``; optionally in a daemon thread."""

    def __init__(self, *, root: str | Path, ttl_s: float, interval_s: float) -> None:
        if ttl_s <= 0 or interval_s <= 0:
            raise ValueError("ttl_s and interval_s must be positive")
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, now: float | None = None) -> int:
        """Remove direct children whose newest modification is older than the TTL; return count."""
        now = time.time() if now is None else now
        n = 0
        if not self.root.is_dir():
            return 0
        for child in self.root.iterdir():
            try:
                times = [child.stat().st_mtime]
                if child.is_dir() and not child.is_symlink():
                    times += [q.stat().st_mtime for q in child.rglob("*")]
                newest = max(times)
                if now - newest <= self.ttl_s:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
                n += 1
            except OSError:
                continue
        return n

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vlseg-janitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()
