"""Segmentation metrics: case-wise Dice/HD95 and challenge lesion-wise Dice/HD95 (BraTS 2023),
and the BraTS 2025 evaluation (``panoptic.py``: matched lesions, NSD, global scores).

HD95 is the surface-area-weighted one BraTS uses (``surface.py``); ``overlap.hd95`` keeps the
boundary-voxel variant (MONAI's ``compute_hausdorff_distance``) for comparison.
``vlseg evaluate`` (:mod:`vlseg.metrics.evaluate`) scores a folder of predictions against a folder
of ground truth with these functions.
"""
from vlseg.metrics.casewise import case_hd95, case_metrics
from vlseg.metrics.lesionwise import DEFINITIONS, lesion_wise
from vlseg.metrics.panoptic import PanopticResult, panoptic
from vlseg.metrics.overlap import HD95_EMPTY, complete_concepts, dice, hd95
from vlseg.metrics.surface import hd95_surfel, surface_distances

__all__ = ["DEFINITIONS", "HD95_EMPTY", "case_hd95", "case_metrics", "complete_concepts", "dice", "hd95",
           "hd95_surfel", "lesion_wise", "panoptic", "PanopticResult",
           "surface_distances"]
