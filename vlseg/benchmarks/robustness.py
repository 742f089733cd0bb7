"""Robustness benchmark: a fixed, seeded test set per shift family, scored per checkpoint.

Test set. Case ``i`` of every family starts from the same phantom (``vlseg.synth``), seeded by
``phantom_seed(i)``: a 128-bit integer hashed from the string ``NAMESPACE`` with its top bit set.
``numpy.random.SeedSequence`` turns a seed into 32-bit entropy words; every seed training can use
(the small integers the randomizer takes, the uint32 seeds ``vlseg synth`` derives from
``(base seed, index)``) has at most two nonzero words, these have four, so no training seed can
draw the same phantom. The shift applied on top draws from ``SeedSequence(phantom_seed(i),
spawn_key=(crc32(family), crc32(step)))``: one stream per case, family and step. Sharing the
phantom across families makes the comparison between families paired (same anatomy and tumor).

Cases are written once into ``<cache>/v<TESTSET_VERSION>-gen<generator version>-<spacing>mm/<family>/<case id>/`` in the
BraTS 2023 layout (int16 images, uint8 labels, the family's own grid and affine) plus a
``-shift.json`` record of what was drawn, and reused; regeneration is byte-identical in arrays.

Scoring goes through the predictor's own path (``Segmenter.from_pretrained``; ``load_case``,
``vlseg.predict.predict_masks`` once per sequence subset: encode, decode the five canonical
prompts, the case's one nested labelling at the Segmenter's threshold, as ``Segmenter`` and
``bench/evaluate_model.py`` do) and the project's
metrics (``vlseg.metrics.case_metrics``: Dice and HD95 per concept).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Required, TypedDict

import nibabel as nib
import numpy as np

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.synth import shifts
from vlseg.synth.phantom import nifti_image

if TYPE_CHECKING:
    from vlseg.segmenter import Segmenter

NAMESPACE = "vlseg-robustness-v1"
TESTSET_VERSION = "1"  # bump when a shift or the phantom generator changes: cached cases are keyed by it
FAMILIES: tuple[str, ...] = ("clean", "anatomy_warp", "contrast", "bias_field", "thick_slices", "noise",
                             "combined", "atypical")
# Steps of each family, applied in this order (contrast_table acts when rendering the phantom).
STEPS: dict[str, tuple[str, ...]] = {
    "clean": (),
    "anatomy_warp": ("anatomy_warp",),
    "contrast": ("contrast_table", "gamma"),
    "bias_field": ("bias_field",),
    "thick_slices": ("thick_slices",),
    "noise": ("noise",),
    "combined": ("contrast_table", "gamma", "anatomy_warp", "bias_field", "thick_slices", "noise"),
    # Tumors and brains unlike the typical draw: a small ring (even cases) or a tumor in the
    # cerebellum / brainstem (odd cases), in a brain with enlarged ventricles
    "atypical": ("atypical_tumor", "ventricle_zoom"),
}
SMALL_RING_RADIUS_MM = (3.0, 7.0)  # atypical even cases: tumor-core radius of the small ring
INFRA_RADIUS_MM = (6.0, 14.0)      # atypical odd cases: core radius in the cerebellum / brainstem
SUBSETS: dict[str, tuple[str, ...]] = {"all4": SEQUENCES, "flair_t1c": ("t1c", "t2f"), "t1c_only": ("t1c",)}
# Families also scored on each sequence subset: FLAIR + T1c on every family (the issue's "WT >= 0.85
# in every family"), T1c alone on the clean and the combined cases.
SUBSET_FAMILIES: dict[str, tuple[str, ...]] = {"flair_t1c": FAMILIES, "t1c_only": ("clean", "combined")}
METRICS: tuple[str, ...] = ("dice", "hd95")


# ----------------------------------------------------------------------------- seeds and names
def phantom_seed(index: int) -> int:
    """128-bit seed of case ``index`` (top bit set: outside every training seed, see above)."""
    digest = hashlib.sha256(f"{NAMESPACE}/phantom/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:16], "little") | (1 << 127)


def step_rng(index: int, family: str, step: str) -> np.random.Generator:
    key = (zlib.crc32(family.encode()), zlib.crc32(step.encode()))
    return np.random.default_rng(np.random.SeedSequence(phantom_seed(index), spawn_key=key))


def case_id(family: str, index: int) -> str:
    return f"ROB-{family}-{int(index):03d}"


def conditions(families: Iterable[str]) -> list[tuple[str, str]]:
    """(family, subset) pairs scored: all four sequences on every family, subsets on some."""
    fams = list(families)
    out = [(f, "all4") for f in fams]
    out += [(f, s) for s in SUBSETS if s != "all4" for f in fams if f in SUBSET_FAMILIES[s]]
    return out


def condition_name(family: str, subset: str) -> str:
    return family if subset == "all4" else f"{family}/{subset}"


def cache_folder(root: str | Path, spacing_mm: float) -> Path:
    """Cached cases are keyed by this module's and the phantom generator's versions and the spacing."""
    from vlseg.synth.phantom import GENERATOR_VERSION

    return Path(root) / f"v{TESTSET_VERSION}-gen{GENERATOR_VERSION}-{float(spacing_mm):g}mm"


# ----------------------------------------------------------------------------- test set
def make_case(family: str, index: int, *, spacing_mm: float = 1.0
              ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
    """One shifted case in memory: images (int16), labels (uint8), affine, record of the draws."""
    from vlseg.synth import DEFAULT_RANGES, generate_case_with_info

    if family not in STEPS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    seed = phantom_seed(index)
    ranges = DEFAULT_RANGES
    record: dict[str, Any] = {"family": family, "index": int(index), "namespace": NAMESPACE,
                              "phantom_seed": hex(seed), "testset_version": TESTSET_VERSION, "steps": {}}
    if "atypical_tumor" in STEPS[family]:
        ranges, kind = atypical_ranges(index, ranges)
        record["steps"]["atypical_tumor"] = {"kind": kind}
    if "contrast_table" in STEPS[family]:
        table = shifts.contrast_table(step_rng(index, family, "contrast_table"), ranges.base_means)
        ranges = dataclasses.replace(ranges, base_means=table)
        record["steps"]["contrast_table"] = {s: {t: round(v, 4) for t, v in row.items()} for s, row in table.items()}
    imgs, info = generate_case_with_info(seed, spacing_mm=spacing_mm, ranges=ranges)
    record["phantom"] = {k: info[k] for k in ("generator", "variant", "enhancement", "orientation")}
    images = {k: np.asarray(imgs[k].dataobj) for k in SEQUENCES}
    seg = np.asarray(imgs["seg"].dataobj)
    affine = np.asarray(imgs["seg"].affine, dtype=np.float64)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    for step in STEPS[family]:
        rng = step_rng(index, family, step)
        if step in ("contrast_table", "atypical_tumor"):  # acted when rendering
            continue
        if step == "gamma":
            images, rec = shifts.gamma(rng, images)
        elif step == "anatomy_warp":
            images, seg, rec = shifts.anatomy_warp(rng, images, seg, spacing)
        elif step == "ventricle_zoom":
            images, seg, rec = shifts.ventricle_zoom(rng, images, seg, spacing)
        elif step == "bias_field":
            images, rec = shifts.bias_field(rng, images, spacing)
        elif step == "thick_slices":
            images, seg, affine, rec = shifts.thick_slices(rng, images, seg, affine)
            spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        elif step == "noise":
            images, rec = shifts.rician_noise(rng, images)
        record["steps"][step] = rec
    record["shape"] = list(seg.shape)
    record["spacing_mm"] = [round(s, 4) for s in spacing]
    return images, seg, affine, record


def small_ring_ranges(ranges, radius_mm: tuple[float, float]):
    """One small enhancing ring around a necrotic centre (core radius in ``radius_mm``), little
    edema, supratentorial: the atypical family's even cases and ``bench/small_cores.py``'s."""
    return dataclasses.replace(ranges, p_small=1.0, small_radius_mm=tuple(radius_mm), p_multifocal=0.0,
                               p_infratentorial=0.0, p_no_enhancement=0.0, p_no_necrosis=0.0,
                               p_little_edema=0.7, little_edema_mm=(0.0, 3.0), edema_extent_mm=(2.0, 8.0))


def atypical_ranges(index: int, ranges):
    """The phantom ranges of atypical case ``index``: a small enhancing ring with little edema
    (even) or a tumor centred in the cerebellum / brainstem (odd); and which."""
    if index % 2 == 0:
        return small_ring_ranges(ranges, SMALL_RING_RADIUS_MM), "small ring"
    return dataclasses.replace(ranges, p_infratentorial=1.0, p_small=0.0, p_multifocal=0.0,
                               core_radius_mm=INFRA_RADIUS_MM), "infratentorial"


def case_paths(folder: Path, cid: str) -> dict[str, Path]:
    files = {k: folder / f"{cid}-{k}.nii.gz" for k in (*SEQUENCES, "seg")}
    files["record"] = folder / f"{cid}-shift.json"
    return files


def write_case(root: str | Path, family: str, index: int, *, spacing_mm: float = 1.0) -> Path:
    """Write one case under ``root/<family>/<case id>/`` unless it is complete already (the record
    is written last, every file atomically); return its folder."""
    cid = case_id(family, index)
    folder = Path(root) / family / cid
    files = case_paths(folder, cid)
    if all(p.exists() for p in files.values()):
        return folder
    images, seg, affine, record = make_case(family, index, spacing_mm=spacing_mm)
    folder.mkdir(parents=True, exist_ok=True)
    for k, arr in (*images.items(), ("seg", seg)):
        with atomic_path(files[k]) as tmp:
            nib.save(nifti_image(arr, affine), tmp)
    write_json_atomic(files["record"], record)
    return folder


def build_testset(root: str | Path, *, cases_per_family: int, families: Iterable[str] = FAMILIES,
                  spacing_mm: float = 1.0, first_case: int = 0, log: Callable[[str], None] = print
                  ) -> dict[str, list[Path]]:
    """Generate (or reuse) every case; ``{family: [case folder, ...]}``. Cases are indices
    ``first_case .. first_case + cases_per_family - 1``: another ``first_case`` range is a fresh
    draw of the same test set (new phantoms and shifts), for a figure no earlier choice has seen."""
    folder = cache_folder(root, spacing_mm)
    out: dict[str, list[Path]] = {}
    for family in families:
        out[family] = []
        for i in range(first_case, first_case + cases_per_family):
            t0 = time.perf_counter()
            cid = case_id(family, i)
            done = all(p.exists() for p in case_paths(folder / family / cid, cid).values())
            out[family].append(write_case(folder, family, i, spacing_mm=spacing_mm))
            if not done:
                log(f"generated {family} case {i} in {time.perf_counter() - t0:.1f} s")
    return out


# ----------------------------------------------------------------------------- scoring
class ScoreRow(TypedDict, total=False):
    """One case scored on one sequence subset (a row of ``per_case`` in robustness.json)."""

    family: Required[str]
    subset: Required[str]
    case: Required[str]
    seconds: Required[float]
    metrics: Required[dict[str, dict[str, float]]]  # concept -> {dice, hd95}
    first_stage: dict[str, dict[str, float]]  # the first stage alone, when a refinement stage ran


def score_model(seg: Segmenter, testset: dict[str, list[Path]], *, log: Callable[[str], None] = print
                ) -> list[ScoreRow]:
    """Per-case rows ``{family, subset, case, seconds, metrics: {concept: {dice, hd95}}}``; the
    masks are the ones ``Segmenter`` makes (RAS+ case grid). With a refinement stage the rows also
    hold ``first_stage``: the first stage's own masks scored (what ``--fast`` answers)."""
    from vlseg.evaluation import score_subsets
    from vlseg.io import load_case
    from vlseg.predict import concept_prompts

    refiner = seg.refiner if seg.predictor.refines else None
    prompts = None if refiner is not None else concept_prompts(seg.model)  # (3, E)
    rows: list[ScoreRow] = []
    for family, folders in testset.items():
        subsets = {s: SUBSETS[s] for f, s in conditions([family])}
        for folder in folders:
            case = load_case(folder)
            for subset, seconds, m, first in score_subsets(seg.model, case, subsets, prompts=prompts, threshold=seg.threshold,
                                                           device=seg.device, include_lesion_wise=False, refiner=refiner):
                row: ScoreRow = {"family": family, "subset": subset, "case": case.case_id, "seconds": round(seconds, 2),
                                 "metrics": _rounded(m)}
                if first is not None:
                    row["first_stage"] = _rounded(first)
                rows.append(row)
                log(f"{case.case_id} {subset}: " + " ".join(
                    f"{c} {m[c]['dice']:.3f}" + (f" (first stage {first[c]['dice']:.3f})" if first else "")
                    for c in TABLE_CONCEPTS))
    return rows


def _rounded(m: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {c: {k: round(float(m[c][k]), 4) for k in METRICS} for c in vocab.codes() if c in m}


def first_stage_rows(rows: list[ScoreRow]) -> list[ScoreRow]:
    """The rows as the first stage alone scored them (empty when no refinement stage ran)."""
    return [{**{k: v for k, v in r.items() if k != "first_stage"}, "metrics": r["first_stage"]}  # type: ignore[typeddict-item]
            for r in rows if "first_stage" in r]


def summarize(rows: list[ScoreRow]) -> dict[str, dict[str, Any]]:
    """``{condition: {n_cases, concept: {dice, dice_sd, hd95, hd95_sd}}}`` (means over cases)."""
    out: dict[str, list[dict[str, dict[str, float]]]] = {}
    for r in rows:
        out.setdefault(condition_name(r["family"], r["subset"]), []).append(r["metrics"])
    order = [condition_name(f, s) for f, s in conditions(FAMILIES)]
    summary: dict[str, dict[str, Any]] = {}
    for name, ms in sorted(out.items(), key=lambda kv: order.index(kv[0])):
        entry: dict[str, Any] = {"n_cases": len(ms)}
        for c in vocab.codes():
            if not all(c in m for m in ms):
                continue
            entry[c] = {}
            for k in METRICS:
                a = np.array([m[c][k] for m in ms], dtype=np.float64)
                entry[c][k] = round(float(a.mean()), 4)
                entry[c][f"{k}_sd"] = round(float(a.std(ddof=1)) if a.size > 1 else 0.0, 4)
        summary[name] = entry
    return summary


def model_labels(models: list[str | None]) -> list[str]:
    """Display names: a bundled name as given (``default`` for none), a folder by its own name;
    made unique."""
    labels: list[str] = []
    for m in models:
        base = "default" if m is None else (Path(m).name or str(m))
        label, k = base, 2
        while label in labels:
            label, k = f"{base} ({k})", k + 1
        labels.append(label)
    return labels


def testset_description(cases_per_family: int, spacing_mm: float, families: Iterable[str],
                        first_case: int = 0) -> dict[str, Any]:
    return {
        "namespace": NAMESPACE, "version": TESTSET_VERSION, "cases_per_family": int(cases_per_family),
        "first_case": int(first_case),
        "phantom_spacing_mm": float(spacing_mm), "families": {f: list(STEPS[f]) for f in families},
        "conditions": [condition_name(f, s) for f, s in conditions(families)],
        "subsets": {k: list(v) for k, v in SUBSETS.items()},
        "shift_parameters": {
            "warp_p95_mm": list(shifts.WARP_MM), "warp_lattice_mm": shifts.WARP_LATTICE_MM,
            "gamma": list(shifts.GAMMA), "tissue_scale": list(shifts.TISSUE_SCALE),
            "bias_range": list(shifts.BIAS_RANGE), "bias_lattice_mm": shifts.BIAS_LATTICE_MM,
            "thick_slice_mm": shifts.THICK_MM, "noise_fraction": list(shifts.NOISE_FRACTION),
        },
    }


def load_records(testset: dict[str, list[Path]]) -> dict[str, dict[str, Any]]:
    out = {}
    for family, folders in testset.items():
        for folder in folders:
            out[folder.name] = json.loads(case_paths(folder, folder.name)["record"].read_text())
    return out


# ----------------------------------------------------------------------------- report
TABLE_CONCEPTS: tuple[str, ...] = vocab.region_chain()  # WT, TC, ET


def markdown_tables(result: dict[str, Any]) -> str:
    """Dice and HD95 tables (WT/TC/ET), one row per condition, checkpoints side by side."""
    labels = [m["label"] for m in result["models"]]
    names = result["test_set"]["conditions"]
    n = result["test_set"]["cases_per_family"]
    lines: list[str] = []
    for metric, title, fmt in (("dice", "Dice (mean over cases)", "{:.3f}"), ("hd95", "HD95 mm (mean over cases)", "{:.1f}")):
        head = ["condition", "sequences"] + [f"{lab} {c}" if len(labels) > 1 else c for lab in labels for c in TABLE_CONCEPTS]
        lines += [f"**{title}**, {n} case(s) per family", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
        for name in names:
            family, _, subset = name.partition("/")
            seqs = "+".join(SUBSETS[subset or "all4"])
            cells = [fmt.format(result["summary"][lab][name][c][metric]) for lab in labels for c in TABLE_CONCEPTS]
            lines.append("| " + " | ".join([family, seqs, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_chart(result: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: one panel per concept (WT/TC/ET), one group per condition, one colour per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m["label"] for m in result["models"]]
    names = result["test_set"]["conditions"]
    x = np.arange(len(names))
    width = 0.8 / len(labels)
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(TABLE_CONCEPTS), 1, figsize=(max(8.0, 0.9 * len(names) + 2), 9), sharex=True)
    for ax, concept in zip(np.atleast_1d(axes), TABLE_CONCEPTS):
        for j, lab in enumerate(labels):
            vals = [result["summary"][lab][n][concept]["dice"] for n in names]
            sds = [result["summary"][lab][n][concept]["dice_sd"] for n in names]
            err = [[min(s, v) for s, v in zip(sds, vals)], [min(s, 1 - v) for s, v in zip(sds, vals)]]  # within [0, 1]
            ax.bar(x + (j - (len(labels) - 1) / 2) * width, vals, width, yerr=err, capsize=2,
                   color=colours[j % len(colours)], label=lab, error_kw={"elinewidth": 0.8})
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{concept} Dice")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title(f"vlseg robustness: Dice per shift family (mean ± sd, "
                      f"{result['test_set']['cases_per_family']} case(s) each)")
    axes[-1].set_xticks(x, names, rotation=30, ha="right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
