"""Preprocessing cache: each training case is read once, preprocessed exactly as the predictor
does (``vlseg.model.preprocess``), cropped to the brain and stored as a compressed ``.npz``.

Files live in ``<cache_dir>/<spacing>mm/<source>/<case_id>-<key>.npz`` where ``key`` hashes the
input files (path, size, mtime), the spacing, the label spec and the model's bias correction (when
it has one), so a changed case is rebuilt.
Arrays: ``images`` (4, X, Y, Z) float16, ``bits`` (X, Y, Z) uint8 (bit ``concept_bit(c)`` per concept),
``present`` (4,) bool, ``available`` uint8 (bits of the concepts the labels give), ``bbox``.

    python -m vlseg.training.cache --config train/configs/tiny_phantoms.yaml [--workers 2]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vlseg import vocab
from vlseg.errors import InputError, VlsegError
from vlseg.fileio import atomic_path
from vlseg.training.build import resolve_model_config
from vlseg.training.config import SourceConfig
from vlseg.training.sources import (
    concept_bit,
    CaseRef,
    SourceEntries,
    discover_cases,
    folder_label_masks,
    randomized_entries,
    source_convention,
    supervised_concepts,
)

CACHE_VERSION = 1
BBOX_MARGIN = 2  # voxels kept around the brain


def cache_key(ref: CaseRef, source: SourceConfig, spacing_mm: float, bias_correction: str = "none") -> str:
    files = []
    for p in ref.paths():
        st = p.stat()
        files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    spec = {
        "version": CACHE_VERSION, "kind": source.kind, "spacing": float(spacing_mm),
        "label_map": source.label_map, "files": files,
    }
    if bias_correction != "none":  # keeps the keys of caches made before the option existed
        spec["bias_correction"] = bias_correction
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cache_dir: str | Path, ref: CaseRef, source: SourceConfig, spacing_mm: float,
               bias_correction: str = "none") -> Path:
    safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in ref.case_id)
    key = cache_key(ref, source, spacing_mm, bias_correction)
    return Path(cache_dir) / f"{spacing_mm:g}mm" / source.name / f"{safe_id}-{key}.npz"


def load_labelled_case(ref: CaseRef, source: SourceConfig):
    """Read one case with vlseg.io; return (Case, {concept: bool RAS+ mask} for available concepts)."""
    from vlseg.io import load_case, read_volume

    if source.kind == "folder":
        case = load_case(dict(ref.files.images))
        if ref.files.label is None:
            raise InputError("no label file in the case folder", str(ref.files.images[case.present[0]].parent))
        vol = read_volume(ref.files.label)
        problem = case.source_grid.mismatch(vol.grid)
        if problem is not None:
            raise InputError(f"label grid differs from the images: {problem}", str(vol.path))
        data = vol.data
        if not np.array_equal(np.round(data), data) or data.min() < 0:
            raise InputError("label file holds non-integer or negative values", str(vol.path))
        labels = case.from_source(data.astype(np.int64))
        masks = folder_label_masks(labels, source.label_map or {}, path=str(vol.path))
    else:
        src = ref.files.msd_image if ref.files.msd_image is not None else dict(ref.files.images)
        case = load_case(src, label=ref.files.label, label_convention=source_convention(source))
        if case.labels is None:
            raise InputError("case has no label file; training needs one", ref.case_id)
        masks = dict(case.labels)
    return case, masks


def preprocess_case(case, masks: dict[str, np.ndarray], spacing_mm: float,
                    bias_correction: str = "none") -> dict[str, np.ndarray]:
    """Normalize + resample (shared predictor code), crop to the brain; arrays for the cache."""
    from vlseg.model.preprocess import normalize_case_images, resample_to_spacing

    images, present = normalize_case_images(case, bias_correction=bias_correction)  # (4, X, Y, Z), (4,)
    images_t = torch.from_numpy(np.ascontiguousarray(images))
    spacing_in = tuple(float(s) for s in case.spacing)
    spacing_out = (float(spacing_mm),) * 3
    images_r = resample_to_spacing(images_t, spacing_in, spacing_out, mode="trilinear")  # (4, x, y, z)
    concepts = [c for c in vocab.codes() if c in masks]
    stack = torch.from_numpy(np.stack([masks[c] for c in concepts]).astype(np.float32))  # (K, X, Y, Z)
    stack_r = resample_to_spacing(stack, spacing_in, spacing_out, mode="trilinear") > 0.5
    images_r = images_r.numpy()
    bits = np.zeros(images_r.shape[1:], dtype=np.uint8)
    for c, m in zip(concepts, stack_r.numpy()):
        bits[m] |= concept_bit(c)
    # Crop to the brain (nonzero in any sequence) plus a margin
    brain = np.any(images_r != 0, axis=0)
    if not brain.any():
        raise InputError("the images are empty after normalization", case.case_id)
    lo, hi = [], []
    for axis in range(3):
        nz = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(max(int(nz[0]) - BBOX_MARGIN, 0))
        hi.append(min(int(nz[-1]) + 1 + BBOX_MARGIN, brain.shape[axis]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return {
        "images": np.ascontiguousarray(images_r[(slice(None), *box)]).astype(np.float16),
        "bits": np.ascontiguousarray(bits[box]),
        "present": np.asarray(present, dtype=bool),
        "available": np.uint8(sum(concept_bit(c) for c in concepts)),
        "bbox": np.array([lo, hi], dtype=np.int64),
        "spacing": np.float32(spacing_mm),
    }


def _build_one(job: tuple[CaseRef, SourceConfig, float, str, str]) -> str:
    ref, source, spacing_mm, bias_correction, out = job
    case, masks = load_labelled_case(ref, source)
    arrays = preprocess_case(case, masks, spacing_mm, bias_correction)
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, **arrays)
    return out


def build_cache(
    sources: Sequence[SourceConfig],
    *,
    cache_dir: str | Path,
    spacing_mm: float,
    workers: int = 1,
    progress: bool = True,
    bias_correction: str = "none",
) -> list[SourceEntries]:
    """Make sure every case of every source is cached; return the cache files per source.
    ``bias_correction``: the trained model's (``ModelConfig.bias_correction``), so training sees
    the inputs the predictor will give it."""
    from tqdm.auto import tqdm

    entries: list[SourceEntries] = []
    jobs: list[tuple[CaseRef, SourceConfig, float, str, str]] = []
    for source in sources:
        if source.kind == "randomized":          # rendered on the fly: nothing to cache
            entries.append(randomized_entries(source, spacing_mm, bias_correction))
            continue
        supervised = supervised_concepts(source)
        refs = discover_cases(source)
        paths = [str(cache_path(cache_dir, r, source, spacing_mm, bias_correction)) for r in refs]
        jobs += [(r, source, spacing_mm, bias_correction, p) for r, p in zip(refs, paths) if not Path(p).is_file()]
        entries.append(SourceEntries(name=source.name, weight=source.weight, supervised=supervised,
                                     files=tuple(paths)))
    if jobs:
        bar = tqdm(total=len(jobs), desc="preprocessing cache", disable=not progress, unit="case")
        if workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            # The worker processes are this function's own: one torch thread each
            with ctx.Pool(min(workers, len(jobs)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for _ in pool.imap_unordered(_build_one, jobs):
                    bar.update()
        else:
            for job in jobs:
                _build_one(job)
                bar.update()
        bar.close()
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlseg.training.cache",
                                description="Build the preprocessing cache of a training config.")
    p.add_argument("--config", required=True, help="training YAML (train/configs/*.yaml)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=None, help="processes (default: data.cache_workers)")
    args = p.parse_args(argv)
    try:
        from vlseg.training.config import load_config

        config = load_config(args.config, args.override)
        model_config = resolve_model_config(config)
        entries = build_cache(config.data.sources, cache_dir=config.data.cache_dir,
                              spacing_mm=model_config.spacing_mm, workers=args.workers or config.data.cache_workers,
                              bias_correction=model_config.bias_correction)
    except VlsegError as e:
        print(f"cache: error: {e}", file=sys.stderr)
        return 2
    for e in entries:
        print(f"{e.name}: {len(e.files)} cases, supervises {', '.join(e.supervised)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
