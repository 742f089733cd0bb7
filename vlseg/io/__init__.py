"""Scan I/O: load a case (BraTS 2023+/2021 folders, MSD 4D images, explicit files) into RAS+
float32 with validation, and write masks / label maps back onto the input's own grid.

    >>> case = load_case("BraTS-GLI-00001-000/")        # or {"t1c": "a.nii.gz", "flair": ...}
    >>> case.present, case.shape, case.spacing
    >>> write_mask(mask_ras, case, "out/ET.nii.gz")     # uint8, input affine, clean header
"""
from vlseg.io.case import Case, load_case, to_ras, write_label_map, write_mask
from vlseg.io.layout import MSD_CHANNELS, CaseFiles, find_case_files, parse_name
from vlseg.io.nifti import (
    DEFAULT_MAX_VOXELS,
    GRID_TOL_DIR,
    GRID_TOL_MM,
    Grid,
    Volume,
    read_volume,
    write_uint8,
)

__all__ = [
    "Case", "load_case", "write_mask", "write_label_map", "to_ras",
    "Grid", "Volume", "read_volume", "write_uint8",
    "DEFAULT_MAX_VOXELS", "GRID_TOL_MM", "GRID_TOL_DIR",
    "MSD_CHANNELS", "CaseFiles", "find_case_files", "parse_name",
]
