"""Segmentation metrics: case-wise Dice/HD95 and BraTS 2023 lesion-wise Dice/HD95.

``vlseg evaluate`` (:mod:`vlseg.metrics.evaluate`) scores a folder of predicted label maps
against a folder of ground truth with these functions.
"""
from vlseg.metrics.casewise import case_metrics
from vlseg.metrics.lesionwise import lesion_wise
from vlseg.metrics.overlap import HD95_EMPTY, complete_concepts, dice, hd95

__all__ = ["HD95_EMPTY", "case_metrics", "complete_concepts", "dice", "hd95", "lesion_wise"]
