"""Scan I/O: load a case (BraTS 2023+/2021 folders, MSD 4D images, explicit files) into RAS+
float32 with validation, and write masks / label maps back onto the input's own grid.

    >>> case = open_case("BraTS-GLI-00001-000/")        # read, validate, check the geometry
    >>> case = load_case({"t1c": "a.nii.gz", "flair": "b.nii.gz"})   # read and validate only
    >>> case.present, case.shape, case.spacing
    >>> case.study          # None for files; a DICOM study's series, reference and resampled
    >>> write_mask(mask_ras, case, "out/ET.nii.gz")     # uint8, input affine, clean header
    >>> classify("upload_flair.nii.gz").sequence         # 't2f'  (see README.md: where rules live)
"""
from vlseg.io.case import Case, load_case, write_label_map, write_map, write_mask
from vlseg.io.classify import LABEL_TOKENS, FileClass, classify
from vlseg.io.foreign import Foreign, label_values, what_is
from vlseg.io.envelope import MIN_FOV_MM, brain_warnings, check_geometry, geometry_warnings, sequence_warnings
from vlseg.io.labels import check_binary_mask, check_label_map
from vlseg.io.layout import MSD_CHANNELS, CaseFiles, find_case_files
from vlseg.io.opening import CaseSource, open_case
from vlseg.io.nifti import NiftiReader, is_nifti_name, looks_like_nifti, write_uint8
from vlseg.io.outputs import check_output_dir
from vlseg.io.study import StudySource
from vlseg.io.readers import (
    READERS,
    Reader,
    has_reader_suffix,
    read_header,
    read_volume,
    reader_for,
    register_reader,
)
from vlseg.io.volume import (
    DEFAULT_MAX_VOXELS,
    GRID_TOL_DIR,
    GRID_TOL_MM,
    Grid,
    Header,
    Volume,
    ras_grid,
    to_ras,
)

__all__ = [
    "Case", "CaseSource", "open_case", "load_case", "write_mask", "write_map", "write_label_map",
    "FileClass", "classify", "label_values", "LABEL_TOKENS", "Foreign", "what_is",
    "check_label_map", "check_binary_mask",
    "check_geometry", "geometry_warnings", "brain_warnings", "sequence_warnings", "MIN_FOV_MM", "check_output_dir",
    "Reader", "READERS", "register_reader", "reader_for", "read_header", "read_volume",
    "has_reader_suffix", "NiftiReader", "is_nifti_name", "looks_like_nifti",
    "Grid", "Header", "Volume", "to_ras", "ras_grid", "write_uint8",
    "DEFAULT_MAX_VOXELS", "GRID_TOL_MM", "GRID_TOL_DIR",
    "MSD_CHANNELS", "CaseFiles", "find_case_files", "StudySource",
]
