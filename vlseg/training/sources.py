"""Training data: dataset sources, which concepts each annotates, and the weighted mixture.

A source is a folder of cases (phantoms, BraTS 2023/2021, MSD Task01, or a generic NIfTI folder
with a JSON label map) and the concepts it annotates. Training reads only the preprocessing
cache (``vlseg.training.cache``); :class:`MixtureDataset` draws a source by weight, a case from
it, a crop, augmentations and one prompt per slot:

* slots are filled first with the concepts the source supervises (shuffled), then padded with
  the others at ``loss_mask`` 0 and an all-zero target: an unannotated concept never adds loss;
* a supervised concept that is absent from the case is trained as an empty mask;
* a concept that exists only after treatment (the resection cavity) is supervised as absent on
  every source of untreated scans (a true negative, not a missing label);
* only the concepts the trained model segments (its config's ``concepts``) take slots.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vlseg import vocab
from vlseg.errors import InputError
from vlseg.io.layout import CaseFiles, find_case_files, is_nifti_name
from vlseg.synth.randomize import TUMOR_LABELS, RandomizeConfig, RandomizedSynth
from vlseg.training.augment import augment, random_crop
from vlseg.training.config import AugmentConfig, SourceConfig
from vlseg.training.prompts import sample_prompt

PHANTOM_CONVENTION = "brats2023"  # what `vlseg synth` writes (kind "phantoms")


def concept_bit(concept: str) -> int:
    """The bit of ``concept`` in a sample's ``bits`` (registration order, so bits stay put when
    a concept is added; the bundled concepts are bits 0-4)."""
    k = vocab.codes().index(vocab.check_concept(concept))
    if k >= 8:
        raise ValueError(f"concept {concept!r} is the {k + 1}th registered; training bits hold 8")
    return 1 << k


# --------------------------------------------------------------------------------------------
# which concepts a source can give, and which it supervises

def closure(concepts: Sequence[str]) -> tuple[str, ...]:
    """Add the derived concepts (TC, WT) whose parts are all in ``concepts``; vocabulary order."""
    have = set(concepts)
    derived = {c for c, parts in vocab.parts().items() if set(parts) <= have}
    return tuple(c for c in vocab.codes() if c in have | derived)


def absent_by_definition(convention: str) -> tuple[str, ...]:
    """Concepts a scan in ``convention`` cannot hold: post-treatment ones on untreated scans."""
    conv = vocab.convention(convention)
    return tuple(c.code for c in vocab.concepts() if c.timepoint is not None and c.timepoint != conv.timepoint)


def available_concepts(source: SourceConfig) -> tuple[str, ...]:
    """Concepts the source's label files can provide (an absent-by-definition one as empty)."""
    convention = source_convention(source)
    if convention is not None:
        return closure(sorted({*vocab.label_convention(convention), *absent_by_definition(convention)}))
    if source.kind == "randomized":
        return closure(TUMOR_LABELS)
    assert source.label_map is not None
    return closure(sorted(set(source.label_map.values())))


def supervised_concepts(source: SourceConfig) -> tuple[str, ...]:
    """Concepts whose prompts are trained on this source (annotated + fully covered derived)."""
    available = available_concepts(source)
    if source.annotates is None:
        return available
    missing = [c for c in source.annotates if c not in available]
    if missing:
        raise InputError(
            f"data source {source.name!r} declares annotates {missing} but its labels only give "
            f"{list(available)}; fix 'annotates' or the label_map"
        )
    return closure(source.annotates)


def folder_label_masks(labels: np.ndarray, label_map: dict[str, str], *, path: str = "") -> dict[str, np.ndarray]:
    """Integer label array + {"value": concept} -> bool mask per concept the map can give.

    A concept's mask is the union of the values mapped to it and to its sub-concepts (a value
    mapped to ET also counts for TC and WT); derived concepts come from their parts.
    """
    values = {int(v) for v in np.unique(labels)}
    unknown = sorted(values - {0} - {int(k) for k in label_map})
    if unknown:
        raise InputError(f"has label values {unknown} missing from the source's label_map "
                         f"{dict(label_map)}; add them (or map them to a concept)", path or None)
    direct: dict[str, np.ndarray] = {}
    for value, concept in label_map.items():
        m = labels == int(value)
        direct[concept] = direct[concept] | m if concept in direct else m
    out: dict[str, np.ndarray] = {}
    for concept in closure(sorted(direct)):
        mask = np.zeros(labels.shape, dtype=bool)
        for other, m in direct.items():
            if set(vocab.concept(other).parts) <= set(vocab.concept(concept).parts):
                mask |= m
        out[concept] = mask
    return out


# --------------------------------------------------------------------------------------------
# finding cases

@dataclass(frozen=True)
class CaseRef:
    """One case of one source, located but not read."""

    source: str
    case_id: str
    files: CaseFiles

    def paths(self) -> list[Path]:
        ps = list(self.files.images.values())
        if self.files.msd_image is not None:
            ps.append(self.files.msd_image)
        if self.files.label is not None:
            ps.append(self.files.label)
        return ps


def discover_cases(source: SourceConfig, *, require_labels: bool = True) -> list[CaseRef]:
    """Every case of a source, sorted by folder/file name (then ``max_cases`` applied).
    A randomized source has none (its samples are rendered on the fly)."""
    if source.kind == "randomized":
        return []
    root = Path(source.path)
    if not root.is_dir():
        raise InputError(f"data source {source.name!r}: folder not found; check 'path'", str(root))
    refs: list[CaseRef] = []
    if source.kind in vocab.convention_names() and vocab.convention(source.kind).channels:
        images_dir = root / "imagesTr" if (root / "imagesTr").is_dir() else root
        for p in sorted(images_dir.iterdir()):
            if p.is_file() and is_nifti_name(p.name) and not p.name.startswith("."):
                refs.append(CaseRef(source.name, find_case_files(p).case_id, find_case_files(p)))
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = find_case_files(sub)
            refs.append(CaseRef(source.name, f"{files.case_id}", files))
    if source.max_cases is not None:
        refs = refs[: source.max_cases]
    if not refs:
        raise InputError(f"data source {source.name!r} ({source.kind}): no cases found; "
                         "expected one sub-folder per case (MSD: imagesTr/*.nii.gz)", str(root))
    if require_labels:
        unlabelled = [r.case_id for r in refs if r.files.label is None]
        if unlabelled:
            raise InputError(f"data source {source.name!r}: {len(unlabelled)} case(s) have no label file "
                             f"(e.g. {unlabelled[0]}); training needs one per case", str(root))
    return refs


def source_convention(source: SourceConfig) -> str | None:
    """The label convention of a source's label files (None: a folder's own label_map, or
    rendered samples)."""
    if source.kind == "phantoms":
        return PHANTOM_CONVENTION
    return source.kind if source.kind in vocab.convention_names() else None


# --------------------------------------------------------------------------------------------
# the training mixture (reads the cache only)

@dataclass(frozen=True)
class CachedSample:
    images: np.ndarray     # (4, X, Y, Z) float16, z-scored, brain bbox at model spacing
    bits: np.ndarray       # (X, Y, Z) uint8, bit concept_bit(c) per concept
    present: np.ndarray    # (4,) bool


def read_cache_file(path: str | Path) -> CachedSample:
    """Load one cache file (plain .npz arrays; pickled objects are refused)."""
    with np.load(path, allow_pickle=False) as z:
        return CachedSample(images=z["images"], bits=z["bits"], present=z["present"].astype(bool))


@dataclass(frozen=True)
class SourceEntries:
    """The cache files of one source and what it supervises (a randomized source has no
    files: ``randomize`` and ``spacing_mm`` say how to render its samples)."""

    name: str
    weight: float
    supervised: tuple[str, ...]
    files: tuple[str, ...]
    randomize: RandomizeConfig | None = None
    spacing_mm: float | None = None
    bias_correction: str = "none"  # the model's test-time correction, applied to rendered samples too


def randomized_entries(source: SourceConfig, spacing_mm: float, bias_correction: str = "none") -> SourceEntries:
    """The mixture entry of a ``kind: randomized`` source (nothing to cache)."""
    return SourceEntries(name=source.name, weight=source.weight, supervised=supervised_concepts(source),
                         files=(), randomize=source.randomize or RandomizeConfig(), spacing_mm=float(spacing_mm),
                         bias_correction=bias_correction)


def randomized_sample(synth: RandomizedSynth, rng: np.random.Generator) -> CachedSample:
    """One rendered sample in the cache's form (bits of every concept, all sequences present)."""
    s = synth.sample(rng)
    bits = np.zeros(s.brain.shape, dtype=np.uint8)
    for c in closure(TUMOR_LABELS):
        for part in vocab.concept(c).parts:
            bits[s.labels[part]] |= concept_bit(c)
    return CachedSample(images=s.images, bits=bits, present=np.ones(s.images.shape[0], dtype=bool))


class MixtureDataset(torch.utils.data.IterableDataset):
    """Endless stream of augmented crops with per-slot prompts, targets and loss masks.

    Deterministic for a given (seed, rank, worker, start_step), so a resumed run draws fresh
    but reproducible samples.
    """

    def __init__(
        self,
        *,
        sources: Sequence[SourceEntries],
        crop_size: tuple[int, int, int],
        prompts_per_sample: int,
        foreground_prob: float,
        augment_config: AugmentConfig | None,
        seed: int = 0,
        rank: int = 0,
        start_step: int = 0,
        keep_in_memory: bool = True,
        concepts: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        # What the trained model segments (None: every registered concept).
        self.concepts = tuple(concepts) if concepts is not None else vocab.codes()
        sources = [dataclasses.replace(s, supervised=tuple(c for c in s.supervised if c in self.concepts))
                   for s in sources]
        if not sources or any(not s.files and s.randomize is None for s in sources):
            raise InputError("the training mixture needs at least one case per source")
        for s in sources:
            if not s.supervised:
                raise InputError(f"data source {s.name!r} supervises no concept")
            if s.randomize is not None and s.spacing_mm is None:
                raise InputError(f"data source {s.name!r} is randomized but has no spacing_mm")
        self.sources = tuple(sources)
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.crop_size = tuple(crop_size)
        self.prompts_per_sample = prompts_per_sample
        self.foreground_prob = foreground_prob
        self.augment_config = augment_config
        self.seed, self.rank, self.start_step = seed, rank, start_step
        self.keep_in_memory = keep_in_memory
        self._memory: dict[str, CachedSample] = {}
        self._synths: dict[str, RandomizedSynth] = {}   # per worker: cached anatomy + tumor pool

    def _load(self, path: str) -> CachedSample:
        if path in self._memory:
            return self._memory[path]
        sample = read_cache_file(path)
        if self.keep_in_memory:
            self._memory[path] = sample
        return sample

    def choose_slots(self, supervised: Sequence[str], rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        """Concept per prompt slot and its loss mask: supervised ones first, then masked padding."""
        sup = list(supervised)
        rng.shuffle(sup)
        chosen = sup[: self.prompts_per_sample]
        others = [c for c in self.concepts if c not in supervised]
        rng.shuffle(others)
        while len(chosen) + len(others) < self.prompts_per_sample:
            others.append(self.concepts[int(rng.integers(len(self.concepts)))])
        pad = others[: self.prompts_per_sample - len(chosen)]
        mask = np.array([1.0] * len(chosen) + [0.0] * len(pad), dtype=np.float32)
        return chosen + pad, mask

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One training sample (see module docstring)."""
        k = int(rng.choice(len(self.sources), p=self.probs))
        src = self.sources[k]
        if src.randomize is not None:
            if src.name not in self._synths:
                self._synths[src.name] = RandomizedSynth(spacing_mm=src.spacing_mm, config=src.randomize,
                                                          bias_correction=src.bias_correction)
            cached = randomized_sample(self._synths[src.name], rng)
        else:
            cached = self._load(src.files[int(rng.integers(len(src.files)))])
        sup_bits = np.uint8(sum(concept_bit(c) for c in src.supervised))
        # Crop (biased to this source's annotated tumor), then augment
        images, bits = random_crop(
            cached.images.astype(np.float32), cached.bits, size=self.crop_size,
            foreground=(cached.bits & sup_bits) != 0, foreground_prob=self.foreground_prob, rng=rng,
        )
        present = cached.present.copy()
        if self.augment_config is not None:
            images, bits, present = augment(images, bits, present, config=self.augment_config, rng=rng)
        images[~present] = 0.0
        # Prompts per slot; targets only where supervised
        concepts, loss_mask = self.choose_slots(src.supervised, rng)
        targets = np.zeros((len(concepts), *self.crop_size), dtype=np.uint8)   # (P, D, H, W)
        for i, (c, m) in enumerate(zip(concepts, loss_mask)):
            if m > 0:
                targets[i] = (bits & concept_bit(c)) != 0
        phrases = [sample_prompt(c, rng) for c in concepts]
        return {
            "images": torch.from_numpy(images),            # (4, D, H, W) float32
            "present": torch.from_numpy(present),          # (4,) bool
            "targets": torch.from_numpy(targets),          # (P, D, H, W) uint8
            "loss_mask": torch.from_numpy(loss_mask),      # (P,) float32
            "concepts": concepts,
            "phrases": phrases,
            "source": src.name,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.rank, worker, self.start_step])
        while True:
            yield self.sample(rng)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep per-sample lists (concepts, phrases, source) as lists."""
    out: dict[str, Any] = {}
    for key in ("images", "present", "targets", "loss_mask"):
        out[key] = torch.stack([s[key] for s in samples])
    for key in ("concepts", "phrases", "source"):
        out[key] = [s[key] for s in samples]
    return out


__all__ = [
    "concept_bit", "CaseRef", "CachedSample", "MixtureDataset", "SourceEntries",
    "available_concepts", "closure", "collate", "discover_cases", "folder_label_masks",
    "absent_by_definition", "randomized_entries", "randomized_sample", "read_cache_file", "source_convention", "supervised_concepts",
]
