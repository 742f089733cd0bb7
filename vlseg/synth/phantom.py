"""One synthetic BraTS-like case: pose the template, grow a tumor, render four contrasts.

``generate_case(seed)`` returns NIfTI images (``t1n, t1c, t2w, t2f, seg``); ``write_case`` writes
them in the BraTS 2023 layout. ``timepoint="post"`` gives the same tumor after surgery (a
resection cavity, residual tumor or none, blood products; labels in the BraTS 2024 convention);
``healthy=True`` the same head with no tumor at all (an all-zero label map). Everything is deterministic per seed: each stage draws from its own
child of ``SeedSequence(seed)`` so stages do not disturb each other's random streams.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.synth.anatomy import (
    Template,
    affine_grid,
    index_to_grid,
    load_template,
    output_geometry,
    pose_matrix,
    sample_grid,
    sample_pose,
)
from vlseg.synth.contrast import compose, sample_means
from vlseg.synth.followup import FollowUp, baseline_spec, followup_spec, moved_pose
from vlseg.synth.params import DEFAULT_RANGES, POST_BASE_MEANS, POST_TISSUES, PROTEIN_FLAIR, SynthRanges
from vlseg.synth.tumor import (
    FAR,
    PostOp,
    TumorSpec,
    displace_normal,
    edema_fraction,
    hard_labels,
    postop_fractions,
    postop_labels,
    resected,
    sample_postop,
    sample_tumor,
    tumor_fields,
    tumor_fractions,
)

GENERATOR_VERSION = "1"
CASE_KEYS: tuple[str, ...] = (*SEQUENCES, "seg")
ORIENTATION_FLIPS: dict[str, tuple[int, ...]] = {"RAS": (), "LAS": (0,), "LPS": (0, 1)}
TIMEPOINTS: tuple[str, ...] = ("pre", "post")
# The label convention of a phantom's label map, by time point.
TIMEPOINT_CONVENTION: dict[str, str] = {"pre": "brats2023", "post": "brats2024"}


def default_case_id(seed: int) -> str:
    return f"BraTS-SYN-{int(seed)}"


def _crop_box(pts_world: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    idx = (pts_world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    lo = np.clip(np.floor(idx.min(0)) - margin, 0, np.asarray(shape)).astype(int)
    hi = np.clip(np.ceil(idx.max(0)) + margin + 1, 0, np.asarray(shape)).astype(int)
    return tuple(slice(a, max(a, b)) for a, b in zip(lo, hi))


def _box_corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    c = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)], float)
    return c @ affine[:3, :3].T + affine[:3, 3]


def _sub_box(box_aff: np.ndarray, box_shape: tuple[int, ...], pose, crop_aff: np.ndarray,
             cshape: tuple[int, ...], to_mni: np.ndarray) -> tuple[tuple[slice, ...], tuple[int, ...], np.ndarray]:
    """The part of the crop a template-space box maps to: slices, shape, index -> MNI affine."""
    sub = _crop_box(pose.to_world(_box_corners(box_aff, box_shape)), crop_aff, cshape, margin=2)
    shape = tuple(sl.stop - sl.start for sl in sub)
    aff = to_mni.copy()
    aff[:3, 3] = to_mni[:3, :3] @ [sl.start for sl in sub] + to_mni[:3, 3]
    return sub, shape, aff


def _post_means(rng: np.random.Generator, r: SynthRanges, post: PostOp) -> dict[str, tuple[float, ...]]:
    """Per-case means of the post-treatment tissues (fluid brighter on FLAIR with protein)."""
    out = {}
    for seq, base in POST_BASE_MEANS.items():
        m = dict(base)
        if seq == "t2f":
            m["FLUID"] += post.protein * (PROTEIN_FLAIR - base["FLUID"])
        out[seq] = tuple(m[t] * float(rng.uniform(*r.tissue_jitter)) for t in POST_TISSUES)
    return out


def _render(seed: int, spacing_mm: float, r: SynthRanges, tpl: Template, *, timepoint: str = "pre",
            healthy: bool = False, pair: bool = False,
            followup: Callable[[TumorSpec], FollowUp] | None = None
            ) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """RAS arrays (int16 images + uint8 seg), their affine, and the drawn parameters.
    ``pair``: the baseline of a two-time-point pair (it always enhances); ``followup``: draws
    that pair's follow-up from the baseline tumor (``vlseg.synth.followup``)."""
    if timepoint not in TIMEPOINTS:
        raise ValueError(f"timepoint must be one of {TIMEPOINTS}, got {timepoint!r}")
    ss = np.random.SeedSequence(int(seed))
    # A fifth stream for the post-treatment draws: the first four are those of the pre-treatment
    # case, so the post case of a seed is the same head and tumor after surgery.
    rng_pose, rng_tumor, rng_contrast, rng_store, rng_post = (np.random.default_rng(s) for s in ss.spawn(5))
    shape, out_aff = output_geometry(spacing_mm, r)
    s = float(spacing_mm)

    # Pose the head and grow the tumor (in template space).
    pose = sample_pose(rng_pose, tpl, r)
    spec = sample_tumor(rng_tumor, tpl, r)
    fu = None
    if pair or followup is not None:
        spec = baseline_spec(spec)
    if followup is not None:  # the same head and tumor later: changed, moved, new contrast
        fu = followup(spec)
        spec, pose = followup_spec(spec, fu), moved_pose(pose, fu)
        rng_contrast = np.random.default_rng(fu.contrast_seed)
    post = sample_postop(rng_post, r) if timepoint == "post" and not healthy else None
    if post is not None:
        spec = resected(spec, post)
    fields = tumor_fields(rng_tumor, spec, tpl, r)
    if healthy:  # the same head with no tumor: empty level sets, no mass effect
        for f in (fields.core, fields.necrosis, fields.edema):
            f[...] = FAR
        fields.pull[...] = 0.0

    # Output voxels that can hold brain (a crop of the FOV) and the tumor's sub-box of that crop.
    crop = _crop_box(pose.to_world(tpl.surface_mm), out_aff, shape, margin=3)
    cshape = tuple(sl.stop - sl.start for sl in crop)
    crop_aff = out_aff.copy()                                   # crop index -> scanner mm
    crop_aff[:3, 3] = out_aff[:3, :3] @ [sl.start for sl in crop] + out_aff[:3, 3]
    to_mni = pose_matrix(pose) @ crop_aff                       # crop index -> MNI mm
    sub, sshape, sub_to_mni = _sub_box(fields.affine, fields.core.shape, pose, crop_aff, cshape, to_mni)
    tstack, taff = fields.tumor_stack()
    tsub, tshape, tsub_to_mni = _sub_box(taff, tstack.shape[1:], pose, crop_aff, cshape, to_mni)

    # Tumor fields on their sub-box (trilinear from the coarse grid); outside it: no tumor.
    lin, off = index_to_grid(tstack.shape, np.linalg.inv(taff) @ tsub_to_mni)
    f = sample_grid(tstack, affine_grid(tshape, lin, off), padding="border").numpy()
    core, necrosis, gap, edema, texture = f                               # each (x, y, z)
    # Mass effect: where each output voxel takes its anatomy from (a larger sub-box).
    lin, off = index_to_grid(fields.core.shape, np.linalg.inv(fields.affine) @ sub_to_mni)
    pull_mm = sample_grid(fields.pull, affine_grid(sshape, lin, off), padding="border").numpy()

    # Normal anatomy, pulled away from the tumor by the mass effect.
    tpl_shape = tuple(tpl.tissue.shape[1:])
    lin, off = index_to_grid(tpl_shape, np.linalg.inv(tpl.affine) @ to_mni)
    grid = affine_grid(cshape, lin, off)                              # (X, Y, Z, 3)
    mm_to_grid = index_to_grid(tpl_shape, np.linalg.inv(tpl.affine))[0]
    pull = np.einsum("ab,bxyz->xyza", mm_to_grid, pull_mm).astype(np.float32)
    grid[sub] += torch.from_numpy(pull)
    gm, wm, csf = sample_grid(tpl.tissue, grid).numpy()                 # (X, Y, Z) each
    del grid, pull
    brain_frac = gm + wm + csf
    brain = brain_frac >= 0.5
    norm = np.where(brain, 1.0 / np.maximum(brain_frac, 1e-3), 0.0).astype(np.float32)
    for t in (gm, wm, csf):
        t *= norm                                                     # fractions sum to 1 in brain

    # Tumor fractions (partial volume: linear ramp over one voxel) in the tumor sub-box.
    sub = tsub
    sshape = tshape
    bsub = brain[sub]
    gm_s, wm_s, csf_s = gm[sub], wm[sub], csf[sub]                    # views
    ed_f = edema_fraction(edema, bsub, s)
    extra: tuple[np.ndarray, ...] = ()
    extra_means = None
    if post is None:
        tc, ncr, et = tumor_fractions(core, necrosis, gap, bsub, spec, s)
        ed = displace_normal(tc, ed_f, gm_s, wm_s, (csf_s,))         # edema replaces GM/WM, not CSF
        hard = hard_labels(core, necrosis, gap, edema, bsub, csf_s, spec)
    else:  # the cavity (fluid, blood) and its wall (residual tumor, gliosis)
        pf = postop_fractions(core, necrosis, gap, texture, bsub, post, s)
        ed = displace_normal(pf["tc"], ed_f, gm_s, wm_s, (csf_s,)) + pf["gliosis"]
        ncr, et = pf["netc"], pf["et"]
        extra, extra_means = (pf["fluid"], pf["blood"]), _post_means(rng_post, r, post)
        hard = postop_labels(core, necrosis, gap, edema, bsub, csf_s, post)

    # Hard labels at voxel centres (BraTS 2023: 1 NCR, 2 ED, 3 ET; 2024 adds 4 RC).
    convention = TIMEPOINT_CONVENTION[timepoint]
    lab = vocab.label_convention(convention)
    seg_sub = np.zeros(sshape, np.uint8)
    for concept, mask in hard.items():
        seg_sub[mask] = lab[concept]
    seg_c = np.zeros(cshape, np.uint8)
    seg_c[sub] = seg_sub

    # Contrasts.
    means = sample_means(rng_contrast, r)
    imgs_c, cinfo = compose(rng_contrast, normal=(gm, wm, csf), tumor=(ed, ncr, et), texture=texture,
                            sub=sub, brain=brain, means=means, r=r, spacing_mm=s, extra=extra,
                            extra_means=extra_means)
    arrays = {k: np.zeros(shape, np.int16) for k in SEQUENCES}
    for k in SEQUENCES:
        arrays[k][crop] = imgs_c[k]
    arrays["seg"] = np.zeros(shape, np.uint8)
    arrays["seg"][crop] = seg_c

    info = {
        "generator": f"vlseg.synth v{GENERATOR_VERSION}",
        "seed": int(seed),
        "spacing_mm": s,
        "timepoint": timepoint,
        "label_convention": convention,
        "variant": "healthy" if healthy else spec.variant,
        "enhancement": None if healthy else spec.enhancement,
        "edema_mm": None if healthy else spec.edema_mm,
        "rim_gap_threshold": (spec.rim_gap_threshold if np.isfinite(spec.rim_gap_threshold) and not healthy
                              else None),
        "lesions": [] if healthy else [asdict(les) for les in spec.lesions],
        **({"postop": post.describe()} if post is not None else {}),
        **({"followup": fu.describe()} if fu is not None else {}),
        "pose": {"rotation_deg": pose.rotation_deg, "scale": pose.scale, "shift_mm": pose.shift_mm},
        "means": means,
        **cinfo,
        "label_voxels": {k: int((arrays["seg"] == v).sum()) for k, v in lab.items()},
    }
    info["orientation"] = "RAS"
    if rng_store.uniform() < r.p_non_ras:
        info["orientation"] = "LPS" if rng_store.uniform() < 0.5 else "LAS"
    return arrays, out_aff, info


def nifti_image(arr: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A clean NIfTI image of ``arr``: qform and sform set to ``affine`` (scanner code), units
    mm/s, the array's own dtype on disk."""
    img = nib.Nifti1Image(np.ascontiguousarray(arr), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(arr.dtype)
    return img


def _store(arrays: dict[str, np.ndarray], affine: np.ndarray, orientation: str) -> dict[str, nib.Nifti1Image]:
    """Flip arrays into the storage orientation, adjust the affine, build clean NIfTI images."""
    aff = affine.copy()
    for ax in ORIENTATION_FLIPS[orientation]:
        n = next(iter(arrays.values())).shape[ax]
        aff[:3, 3] += aff[:3, ax] * (n - 1)
        aff[:3, ax] *= -1
        arrays = {k: np.flip(v, ax) for k, v in arrays.items()}
    return {k: nifti_image(v, aff) for k, v in arrays.items()}


def generate_case_with_info(seed: int, *, spacing_mm: float = 1.0, ranges: SynthRanges = DEFAULT_RANGES,
                            timepoint: str = "pre", healthy: bool = False
                            ) -> tuple[dict[str, nib.Nifti1Image], dict]:
    """Images keyed ``t1n, t1c, t2w, t2f, seg`` and a JSON-able record of what was drawn."""
    arrays, aff, info = _render(int(seed), float(spacing_mm), ranges, load_template(),
                                timepoint=timepoint, healthy=healthy)
    return _store(arrays, aff, info["orientation"]), info


def generate_case(seed: int, *, spacing_mm: float = 1.0, ranges: SynthRanges = DEFAULT_RANGES,
                  timepoint: str = "pre", healthy: bool = False) -> dict[str, nib.Nifti1Image]:
    """One phantom as NIfTI images keyed ``t1n, t1c, t2w, t2f, seg`` (deterministic per seed)."""
    return generate_case_with_info(seed, spacing_mm=spacing_mm, ranges=ranges, timepoint=timepoint,
                                   healthy=healthy)[0]


def case_files(case_dir: Path, case_id: str) -> dict[str, Path]:
    files = {k: case_dir / f"{case_id}-{k}.nii.gz" for k in CASE_KEYS}
    files["info"] = case_dir / f"{case_id}-synth.json"
    return files


def write_case(out_dir: str | os.PathLike, seed: int, *, case_id: str | None = None,
               spacing_mm: float = 1.0, ranges: SynthRanges = DEFAULT_RANGES, timepoint: str = "pre",
               healthy: bool = False) -> Path:
    """Write ``out_dir/<case_id>/<case_id>-{t1n,t1c,t2w,t2f,seg}.nii.gz``; return the case folder.

    Existing files are never overwritten: a complete case is skipped, an interrupted one gets only
    its missing files (generation is deterministic, so they match). Each file is written
    atomically; the ``-synth.json`` record of the drawn parameters is written last.
    """
    case_id = case_id or default_case_id(seed)
    if not case_id or any(c in case_id for c in "/\\\0") or case_id in (".", ".."):
        raise ValueError(f"invalid case id {case_id!r}")
    case_dir = Path(out_dir) / case_id
    files = case_files(case_dir, case_id)
    if all(f.exists() for f in files.values()):
        return case_dir
    images, info = generate_case_with_info(seed, spacing_mm=spacing_mm, ranges=ranges, timepoint=timepoint,
                                           healthy=healthy)
    case_dir.mkdir(parents=True, exist_ok=True)
    for k in CASE_KEYS:
        if not files[k].exists():
            with atomic_path(files[k]) as tmp:
                nib.save(images[k], tmp)
    info["case_id"] = case_id
    write_json_atomic(files["info"], json.loads(json.dumps(info, default=float)))
    return case_dir
