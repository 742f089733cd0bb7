"""Safe NIfTI reading and clean NIfTI writing.

Reading checks a file in the order that keeps a bad file cheap to refuse:

1. it exists, is a regular file and can be opened;
2. the content (not the name) says gzip or plain, and the first bytes are a NIfTI-1/2 header;
3. the header dimensions are sane and below the voxel cap, *before* any voxel data is read;
4. the data are read fully inside one try, so corrupt or truncated gzip streams surface here;
5. the affine (best of sform/qform) is finite and non-singular, and sform/qform agree.

Every refusal is an :class:`~vlseg.errors.InputError` naming the file and the problem.
:class:`NiftiReader` wraps this as the first entry of the reader registry (``vlseg.io.readers``).
Writing builds a fresh header (no text fields or extensions carried over), uint8, scl 1/0,
with the source grid's affine as both qform and sform, through an atomic temp-file rename.
"""
from __future__ import annotations

import gzip
import math
import os
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from vlseg.errors import InputError
from vlseg.fileio import atomic_path
from vlseg.io.study import StudySource
from vlseg.io.volume import DEFAULT_MAX_VOXELS, GRID_TOL_DIR, GRID_TOL_MM, Grid, Header, Volume, fmt_shape, fmt_vec

__all__ = ["DEFAULT_MAX_VOXELS", "GRID_TOL_DIR", "GRID_TOL_MM", "Grid", "Volume", "NiftiReader",
           "NIFTI_SUFFIXES", "is_nifti_name", "looks_like_nifti", "read_nifti", "read_nifti_header",
           "check_output_path", "write_uint8"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

_GZIP_MAGIC = b"\x1f\x8b"
_TRAILER_CAP = 1 << 20  # bytes of trailing gzip data read to reach the CRC check
_MAX_VOX_OFFSET = 64 << 20  # header + extensions larger than this are refused unread
_UNITS = {"mm", "meter", "micron"}
_LABEL_INTENTS = {1002, 1003}  # NIFTI_INTENT_LABEL, NIFTI_INTENT_NEURONAME


def is_nifti_name(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def looks_like_nifti(head: bytes) -> bool:
    """NIfTI-1 (348, ``n+1``) or NIfTI-2 (540, ``n+2``) single-file header, either byte order."""
    for size, magic, at in ((348, b"n+1\x00", 344), (540, b"n+2\x00", 4)):
        if len(head) >= max(at + 4, 4):
            for fmt in ("<i", ">i"):
                if struct.unpack(fmt, head[:4])[0] == size and head[at:at + 4] == magic:
                    return True
    return False


# ----------------------------------------------------------------------------- reading


def _open_stream(path: Path, gz: bool):
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the returned stream
    return gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw, raw


def _sniff(path: Path) -> tuple[bool, bytes]:
    """Return (is_gzip, first 540 header bytes) judged by content, not by the file name."""
    if not path.exists():
        raise InputError("file not found; check the path", str(path))
    if path.is_dir():
        raise InputError("is a folder, expected a NIfTI file (.nii or .nii.gz)", str(path))
    if not path.is_file():
        raise InputError("is not a regular file; give a NIfTI file (.nii or .nii.gz)", str(path))
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror or e}); check its permissions", str(path)) from None
    gz = magic == _GZIP_MAGIC
    try:
        stream, raw = _open_stream(path, gz)
        with raw, stream:
            head = stream.read(540)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"corrupt or truncated gzip data ({e}); re-export or re-copy the file",
                         str(path)) from None
    return gz, head


def _header_from_bytes(path: Path, head: bytes):
    """Parse a NIfTI-1 or NIfTI-2 header, or explain what the file is instead."""
    for klass, size in ((nib.Nifti1Header, 348), (nib.Nifti2Header, 540)):
        if len(head) >= size and size in (struct.unpack("<i", head[:4])[0],
                                          struct.unpack(">i", head[:4])[0]):
            hdr = klass(binaryblock=head[:size], check=False)
            magic = bytes(hdr["magic"]).rstrip(b"\x00")
            if magic in (b"n+1", b"n+2"):
                return hdr
            if magic in (b"ni1", b"ni2"):
                raise InputError("is the header of a NIfTI .hdr/.img pair; convert it to a single "
                                 ".nii.gz file", str(path))
            raise InputError("has no NIfTI magic (an ANALYZE 7.5 file?); convert it to NIfTI "
                             "(.nii.gz)", str(path))
    if len(head) > 132 and head[128:132] == b"DICM":
        raise InputError("is a DICOM file, not NIfTI; convert the series with dcm2niix first",
                         str(path))
    what = "text/HTML" if head.lstrip()[:1] in (b"<", b"{") else "unknown content"
    raise InputError(f"is not a NIfTI file ({what}, no NIfTI-1/2 header); expected .nii or .nii.gz",
                     str(path))


def _check_channels(path: Path, shape: tuple[int, ...], channels: int | None) -> None:
    """``channels``: None for one 3D volume, or the exact number of volumes a 4D file must hold."""
    if len(shape) == 4:
        if channels is None:
            raise InputError(f"is 4D with {shape[3]} volumes (shape {fmt_shape(shape)}); give one "
                             "3D volume per sequence", str(path))
        if shape[3] != channels:
            raise InputError(f"is 4D with {shape[3]} volumes; expected {channels} channels "
                             "(MSD order FLAIR, T1w, T1gd, T2w)", str(path))
    elif channels is not None:
        raise InputError(f"is 3D (shape {fmt_shape(shape)}); expected a 4D image with {channels} "
                         "channels (MSD order FLAIR, T1w, T1gd, T2w)", str(path))


def _check_header(path: Path, hdr, *, max_voxels: int) -> tuple[int, ...]:
    """Validate dimensions and data type from the header alone; return the kept 3D/4D shape."""
    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise InputError(f"has an invalid header (dim[0]={ndim}); the file is corrupt", str(path))
    shape = dim[1:ndim + 1]
    if min(shape) < 1:
        raise InputError(f"header has an empty dimension (shape {fmt_shape(shape)}); the file is "
                         "corrupt", str(path))
    n_vox = math.prod(shape)  # Python ints: no overflow
    if n_vox > max_voxels:
        raise InputError(f"header claims {fmt_shape(shape)} = {n_vox:,} voxels, above the limit of "
                         f"{max_voxels:,}; crop or downsample the image (or raise max_voxels)",
                         str(path))
    while len(shape) > 3 and shape[-1] == 1:  # singleton trailing dims are fine
        shape = shape[:-1]
    if len(shape) < 3 or min(shape[:3]) == 1:
        raise InputError(f"is 2D (shape {fmt_shape(shape)}); a 3D volume is needed", str(path))
    if len(shape) > 4:
        raise InputError(f"has {len(shape)} dimensions ({fmt_shape(shape)}); a 3D volume is "
                         "needed", str(path))
    offset = float(hdr["vox_offset"])
    if not (np.isfinite(offset) and hdr.sizeof_hdr + 4 <= offset <= _MAX_VOX_OFFSET):
        raise InputError(f"has an invalid data offset (vox_offset={offset:g}); the file is corrupt",
                         str(path))
    zooms = np.asarray(hdr["pixdim"][1:4], dtype=np.float64)
    if int(hdr["sform_code"]) == 0 and not (np.isfinite(zooms).all() and (zooms != 0).all()):
        # qform and the fallback affine both scale by pixdim; nibabel would quietly use 1 mm.
        raise InputError(f"has a singular affine (voxel sizes {fmt_vec(zooms)} in the header); "
                         "fix pixdim or the qform/sform", str(path))
    try:
        dtype = hdr.get_data_dtype()
    except (HeaderDataError, KeyError, ValueError):
        raise InputError(f"has an unknown data type code ({int(hdr['datatype'])}); the file is "
                         "corrupt", str(path)) from None
    if dtype.fields is not None or dtype.kind not in "iuf":
        raise InputError(f"has unsupported voxel type {dtype}; save it as integer or float",
                         str(path))
    return tuple(shape)


def _check_affine(path: Path, hdr, affine: np.ndarray) -> None:
    if not np.isfinite(affine).all():
        raise InputError("has a non-finite affine (NaN/Inf in the qform/sform); fix the header",
                         str(path))
    m = affine[:3, :3]
    scale = float(np.prod(np.linalg.norm(m, axis=0)))
    if scale == 0 or abs(float(np.linalg.det(m))) < 1e-6 * scale:
        raise InputError("has a singular affine (zero spacing or degenerate axes); fix the "
                         "qform/sform", str(path))
    q, qc = hdr.get_qform(coded=True)
    s, sc = hdr.get_sform(coded=True)
    if qc and sc and q is not None and s is not None:
        gq = Grid(shape=(1, 1, 1), affine=q) if np.isfinite(q).all() else None
        gs = Grid(shape=(1, 1, 1), affine=s)
        if gq is None or gs.mismatch(gq) is not None:
            raise InputError("has a qform and an sform that disagree, so tools would place it "
                             "differently; make them equal (e.g. fslorient -copysform2qform)",
                             str(path))


def read_nifti(path: str | os.PathLike, *, max_voxels: int = DEFAULT_MAX_VOXELS,
               channels: int | None = None) -> Volume:
    """Read and validate one NIfTI file into float32 (scaling applied) in its own voxel order.

    ``channels``: None for a 3D volume (a singleton 4th dim is accepted), or the exact number of
    volumes a 4D file must hold (4 for an MSD image). Voxel values are checked finite here;
    image- or label-specific checks are left to the caller.
    """
    path = Path(path)
    gz, head = _sniff(path)
    hdr = _header_from_bytes(path, head)
    shape = _check_header(path, hdr, max_voxels=max_voxels)
    _check_channels(path, shape, channels)
    klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    if not gz:  # a short plain file is refused from its size, before reading
        need = int(hdr["vox_offset"]) + math.prod(shape) * hdr.get_data_dtype().itemsize
        if path.stat().st_size < need:
            raise InputError(f"is truncated ({path.stat().st_size:,} bytes, header needs {need:,}); "
                             "re-copy the file", str(path))
    try:
        stream, raw = _open_stream(path, gz)
        with raw, stream:
            img = klass.from_file_map({"image": nib.FileHolder(fileobj=stream)}, mmap=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
                affine = np.array(img.affine, dtype=np.float64)
            if gz:  # read on to the end of the stream so the gzip CRC is checked
                left = _TRAILER_CAP
                while left > 0 and (chunk := stream.read(min(65536, left))):
                    left -= len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"corrupt or truncated gzip data ({e}); re-export or re-copy the file",
                         str(path)) from None
    except MemoryError:
        raise InputError(f"is too large to load ({fmt_shape(shape)} voxels)", str(path)) from None
    except (OSError, ValueError, HeaderDataError, ImageFileError) as e:
        short = re.match(r"Expected (\d+) bytes, got (\d+) bytes", str(e))
        if short:
            raise InputError(f"is truncated (the header needs {int(short[1]):,} bytes of voxel data, "
                             f"the file holds {int(short[2]):,}); re-copy the file", str(path)) from None
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"could not be read ({msg}); the file is corrupt or truncated",
                         str(path)) from None
    hdr = img.header
    del img
    _check_affine(path, hdr, affine)
    if not np.isfinite(data).all():
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"has {n_bad:,} NaN/Inf voxels; replace them (e.g. with 0) and retry",
                         str(path))
    return Volume(data=data, grid=_grid(hdr, shape, affine), path=path)


def _grid(hdr, shape: tuple[int, ...], affine: np.ndarray) -> Grid:
    qc, sc = int(hdr["qform_code"]), int(hdr["sform_code"])
    try:
        units = hdr.get_xyzt_units()[0]
    except KeyError:  # an unknown unit code: NIfTI readers assume mm
        units = "mm"
    return Grid(shape=shape[:3], affine=affine, qform_code=qc or sc or 1, sform_code=sc or qc or 1,
                xyz_units=units if units in _UNITS else "mm")


def read_nifti_header(path: str | os.PathLike, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
    """Validate a NIfTI file's header (no voxel data read); 3D or 4D files are both accepted."""
    path = Path(path)
    _, head = _sniff(path)
    hdr = _header_from_bytes(path, head)
    shape = _check_header(path, hdr, max_voxels=max_voxels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        affine = np.array(hdr.get_best_affine(), dtype=np.float64)
    _check_affine(path, hdr, affine)
    return Header(grid=_grid(hdr, shape, affine), channels=shape[3] if len(shape) == 4 else 1,
                  role="label" if int(hdr["intent_code"]) in _LABEL_INTENTS else None)


class NiftiReader:
    """The NIfTI-1/2 reader (``.nii``, ``.nii.gz``): the first entry of ``vlseg.io.readers.READERS``."""

    name = "NIfTI"
    suffixes = NIFTI_SUFFIXES
    hint = "NIfTI (.nii or .nii.gz)"

    def can_read(self, path: Path) -> bool:
        """A file with a NIfTI name, or (for other names) a NIfTI header in its first bytes."""
        if path.is_dir():
            return False
        if is_nifti_name(path.name):
            return True  # even if missing or corrupt: its read explains what is wrong
        if not path.is_file():
            return False
        try:
            with open(path, "rb") as f:
                head = f.read(540)
            if head[:2] == _GZIP_MAGIC:
                with gzip.open(path, "rb") as g:
                    head = g.read(540)
        except (OSError, EOFError, zlib.error):
            return False
        return looks_like_nifti(head)

    def read_header(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
        return read_nifti_header(path, max_voxels=max_voxels)

    def read(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
             channels: int | None = None) -> Volume:
        return read_nifti(path, max_voxels=max_voxels, channels=channels)

    # -- the study seam: NIfTI files are read one by one, never split from a folder
    def study(self, path: Path, overrides: Mapping[str, str] | None = None, *,
              reference: str | None = None) -> StudySource | None:
        return None

    def study_of(self, images: Mapping[str, Path]) -> StudySource | None:
        return None

    def is_one_case(self, path: Path) -> bool:
        return False


# ----------------------------------------------------------------------------- writing


def check_output_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    name = path.name.lower()
    if not is_nifti_name(name):
        raise InputError("output must end in .nii or .nii.gz", str(path))
    if path.is_dir():
        raise InputError("is a folder; give an output file name ending in .nii.gz", str(path))
    return path


def write_uint8(data: np.ndarray, grid: Grid, path: str | os.PathLike) -> Path:
    """Write ``data`` (already in the grid's voxel order) as uint8 with a fresh, clean header."""
    return _write_on_grid(data, grid, path, np.uint8)


def write_float32(data: np.ndarray, grid: Grid, path: str | os.PathLike) -> Path:
    """Write ``data`` (already in the grid's voxel order) as float32 with a fresh, clean header
    (probability and uncertainty maps); non-finite values are refused."""
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError("a probability map must be finite")
    return _write_on_grid(data, grid, path, np.float32)


def _write_on_grid(data: np.ndarray, grid: Grid, path: str | os.PathLike, dtype) -> Path:
    path = check_output_path(path)
    data = np.ascontiguousarray(data, dtype=dtype)
    if data.shape != grid.shape:
        raise ValueError(f"data shape {data.shape} does not match the grid {grid.shape}")
    hdr = nib.Nifti1Header()  # fresh: no descrip/aux_file/db_name/intent_name/extensions
    hdr.set_data_dtype(dtype)
    img = nib.Nifti1Image(data, None, header=hdr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qform cannot hold shears: nibabel strips them
        img.set_qform(grid.affine, code=int(grid.qform_code))
    img.set_sform(grid.affine, code=int(grid.sform_code))
    if Grid(shape=grid.shape, affine=img.header.get_qform()).mismatch(grid) is not None:
        img.set_qform(None, code=0)  # a sheared affine: only the sform can hold it exactly
    img.header.set_xyzt_units(xyz=grid.xyz_units)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path
