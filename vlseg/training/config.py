"""Training configuration: frozen dataclasses built from YAML at the entry point.

``load_config(path, overrides)`` reads a YAML file, applies ``key.sub=value`` overrides (values
parsed as YAML), and returns a validated :class:`TrainConfig`. ``config_to_dict`` gives the
resolved config back as plain data, saved next to every checkpoint.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError
from vlseg.synth.randomize_params import RandomizeConfig



def source_kinds() -> tuple[str, ...]:
    """"phantoms" (vlseg synth output), every label convention of the vocabulary (a dataset in
    that layout), "folder" (a label_map of your own) and "randomized" (samples rendered on the
    fly by vlseg.synth.randomize: no folder, nothing cached)."""
    return ("phantoms", *vocab.convention_names(), "folder", "randomized")


@dataclass(frozen=True)
class SourceConfig:
    """One dataset in the mixture and the concepts it annotates."""

    name: str
    kind: str                                   # one of source_kinds()
    path: str = ""                              # dataset folder (not used by kind "randomized")
    annotates: tuple[str, ...] | None = None    # None: every concept the labels can give
    weight: float = 1.0                         # mixture weight (relative)
    label_map: dict[str, str] | None = None     # kind "folder": {"label value": concept}
    max_cases: int | None = None                # use only the first N cases (sorted)
    randomize: RandomizeConfig | None = None    # kind "randomized": ranges (None: the defaults)

    def __post_init__(self) -> None:
        where = f"data source {self.name!r}"
        if self.kind not in source_kinds():
            raise InputError(f"{where}: unknown kind {self.kind!r}; use one of {', '.join(source_kinds())}")
        if self.kind == "randomized":
            if self.path or self.label_map is not None or self.max_cases is not None:
                raise InputError(f'{where}: kind "randomized" renders its samples; it takes no path, '
                                 "label_map or max_cases (set its ranges under 'randomize')")
        elif self.randomize is not None:
            raise InputError(f'{where}: randomize is only used by kind "randomized" (this is {self.kind!r})')
        elif not self.path:
            raise InputError(f"{where}: 'path' is empty; give the dataset folder")
        if not (self.weight > 0):
            raise InputError(f"{where}: weight must be > 0, got {self.weight}")
        if self.annotates is not None:
            bad = [c for c in self.annotates if c not in vocab.codes()]
            if bad or not self.annotates:
                raise InputError(
                    f"{where}: 'annotates' must be a non-empty list of {', '.join(vocab.codes())}; got {list(self.annotates)}"
                )
        if self.kind == "folder":
            if not self.label_map:
                raise InputError(f'{where}: kind "folder" needs a label_map like {{"1": "ED"}}')
            for value, concept in self.label_map.items():
                if concept not in vocab.codes():
                    raise InputError(f"{where}: label_map value {concept!r} is not one of {', '.join(vocab.codes())}")
                try:
                    int(value)
                except ValueError:
                    raise InputError(f"{where}: label_map key {value!r} is not an integer label value") from None
        elif self.label_map is not None:
            raise InputError(f'{where}: label_map is only used by kind "folder" (this is {self.kind!r})')
        if self.max_cases is not None and self.max_cases < 1:
            raise InputError(f"{where}: max_cases must be >= 1")


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[SourceConfig, ...]
    cache_dir: str = "runs/cache"
    crop_size: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    prompts_per_sample: int = 5        # slots per sample; supervised concepts first, rest masked
    foreground_prob: float = 2 / 3     # fraction of crops centred on an annotated voxel
    num_workers: int = 0               # DataLoader workers per process
    cache_workers: int = 1             # processes building the preprocessing cache
    keep_in_memory: bool = True        # keep decoded cache files in RAM (per worker)

    def __post_init__(self) -> None:
        if not self.sources:
            raise InputError("data.sources is empty; list at least one training source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise InputError(f"data.sources: duplicate source names {names}")
        if len(self.crop_size) != 3 or min(self.crop_size) < 8:
            raise InputError(f"data.crop_size must be 3 sizes >= 8, got {list(self.crop_size)}")
        if self.batch_size < 1 or self.prompts_per_sample < 1:
            raise InputError("data.batch_size and data.prompts_per_sample must be >= 1")
        if not 0.0 <= self.foreground_prob <= 1.0:
            raise InputError("data.foreground_prob must lie in [0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    flip_prob: float = 0.5                         # per axis
    scale_range: tuple[float, float] = (0.9, 1.1)  # intensity multiply, per channel
    shift_range: tuple[float, float] = (-0.1, 0.1) # intensity add (z-score units), per channel
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.2
    noise_std: float = 0.1
    sequence_dropout_prob: float = 0.3             # drop a random proper subset of present sequences
    # When a sample is dropped to a subset, with this probability keep one of ``sequence_keep_sets``
    # (the protocols clinics actually send, e.g. T1c + FLAIR) instead of a uniformly random subset.
    sequence_keep_sets: tuple[tuple[str, ...], ...] = ()
    sequence_keep_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flip_prob", "gamma_prob", "noise_prob", "sequence_dropout_prob", "sequence_keep_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"augment.{name} must lie in [0, 1]")
        for keep in self.sequence_keep_sets:
            unknown = [s for s in keep if s not in SEQUENCES]
            if not keep or unknown:
                raise InputError(f"augment.sequence_keep_sets: {list(keep)} must be a non-empty list of "
                                 f"sequences from {list(SEQUENCES)}")
        if self.gamma_range[0] <= 0 or self.gamma_range[0] > self.gamma_range[1]:
            raise InputError("augment.gamma_range must be (low, high) with 0 < low <= high")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    text_lr: float = 5e-4              # LoRA parameters of the text encoder
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "cosine"          # cosine | poly | constant
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.scheduler not in ("cosine", "poly", "constant"):
            raise InputError(f"optim.scheduler must be cosine, poly or constant, got {self.scheduler!r}")
        if self.lr <= 0 or self.text_lr < 0:
            raise InputError("optim.lr must be > 0 and optim.text_lr >= 0")


@dataclass(frozen=True)
class LossConfig:
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    dice_smooth: float = 1.0


@dataclass(frozen=True)
class ValConfig:
    sources: tuple[SourceConfig, ...] = ()
    every: int = 250                   # steps between validations (0: only at the end)
    max_cases: int | None = None       # per source
    threshold: float = 0.5
    # Sequence subsets validated; the first one picks the "best" checkpoint.
    sequence_sets: tuple[tuple[str, ...], ...] = (SEQUENCES, ("t1c", "t2f"))
    heldout_phrases: bool = True       # also validate with held-out free-text phrasings

    def __post_init__(self) -> None:
        for subset in self.sequence_sets:
            bad = [s for s in subset if s not in SEQUENCES]
            if bad or not subset:
                raise InputError(f"val.sequence_sets: {list(subset)} must be a non-empty subset of {list(SEQUENCES)}")


@dataclass(frozen=True)
class LoraConfig:
    """Fine-tuning adapters (PEFT LoRA) on the segmentation network and the text encoder."""

    enabled: bool = False
    rank: int = 2
    alpha: float = 4.0
    dropout: float = 0.0
    # Substrings of module names (segmentation side) that receive adapters; empty = all Conv3d/Linear.
    targets: tuple[str, ...] = ()
    text_rank: int = 4                 # 0: leave the text encoder as it is

    def __post_init__(self) -> None:
        if self.enabled and self.rank < 1:
            raise InputError("lora.rank must be >= 1 when lora.enabled is true")


@dataclass(frozen=True)
class Stage1SimConfig:
    """How the refinement stage's training simulates first-stage probabilities from labels
    (``vlseg.training.refine_data.simulate_stage1``); sizes in coarse voxels."""

    factor: int = 2                                  # coarse grid = factor x the training spacing
    p_fine: float = 0.0                              # skip the coarse grid (a first stage that resolves partial volumes)
    p_missed: float = 0.05                           # the concept missed entirely
    p_erode_dilate: float = 0.5
    p_missing_piece: float = 0.3
    piece_radius: tuple[float, float] = (2.0, 6.0)
    p_false_blob: float = 0.2
    blob_radius: tuple[float, float] = (1.0, 3.0)
    blur_sigma: tuple[float, float] = (0.4, 1.5)
    level: tuple[float, float] = (0.3, 0.6)          # the soft fraction that maps to p = 0.5
    sharpness: tuple[float, float] = (5.0, 14.0)     # logit slope around that level
    noise_std: float = 1.5                           # smooth logit noise, up to this std

    def __post_init__(self) -> None:
        for name in ("p_missed", "p_erode_dilate", "p_missing_piece", "p_false_blob", "p_fine"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"refine.simulate.{name} must lie in [0, 1]")
        if self.factor < 1:
            raise InputError("refine.simulate.factor must be >= 1")
        if not 0 < self.level[0] <= self.level[1] < 1:
            raise InputError("refine.simulate.level must be (low, high) within (0, 1)")
        for name in ("piece_radius", "blob_radius", "blur_sigma", "sharpness"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise InputError(f"refine.simulate.{name} must be (low, high) with 0 < low <= high")


@dataclass(frozen=True)
class RefineTrainConfig:
    """Training the refinement stage (``vlseg.model.refiner``) instead of a first stage."""

    model: str | dict[str, Any] = "refine_tiny"     # refiner preset name or a RefinerConfig dict
    simulate: Stage1SimConfig = field(default_factory=Stage1SimConfig)


@dataclass(frozen=True)
class TrainConfig:
    name: str
    data: DataConfig
    output_dir: str = "runs/train"
    model: str | dict[str, Any] = "tiny"        # registry name or a ModelConfig dict
    init_checkpoint: str | None = None          # "default", a weights name or a path (fine-tuning)
    seed: int = 0
    max_steps: int = 1000
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    threads: int | None = None                  # torch CPU threads per process (set by train/*.py)
    mixed_precision: str = "no"                 # no | fp16 | bf16 (accelerate)
    text_lora_rank: int | None = None           # from scratch: override the model's text LoRA rank
    # The concepts the trained model segments (its checkpoint names them); None: the init
    # checkpoint's or the preset's. Adding one (e.g. RC) teaches the model a new prompt.
    concepts: tuple[str, ...] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    val: ValConfig = field(default_factory=ValConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Set: this run trains the refinement stage (vlseg.training.refine_loop), not a first stage
    refine: RefineTrainConfig | None = None

    def __post_init__(self) -> None:
        if self.refine is not None and (self.lora.enabled or self.init_checkpoint is not None):
            raise InputError("a refinement run (refine:) trains its own refiner; it takes no lora or init_checkpoint")
        if self.max_steps < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise InputError("max_steps, log_every and checkpoint_every must be >= 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise InputError("mixed_precision must be no, fp16 or bf16")
        if self.keep_checkpoints < 1:
            raise InputError("keep_checkpoints must be >= 1")
        if self.lora.enabled and self.init_checkpoint is None:
            raise InputError("lora.enabled needs init_checkpoint (\"default\" or a checkpoint path) to adapt")
        if self.concepts is not None:
            bad = [c for c in self.concepts if c not in vocab.codes()]
            if bad or not self.concepts or len(set(self.concepts)) != len(self.concepts):
                raise InputError(f"concepts must be distinct registered concepts ({', '.join(vocab.codes())}); "
                                 f"got {list(self.concepts)}")


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass

def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InputError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}" if where else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(f"{where or 'config'}: missing required key {f.name!r}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the checks above
        raise InputError(f"{where}: {e}") from None


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    if not isinstance(data, Mapping):
        raise InputError("training config must be a YAML mapping at the top level")
    return _from_dict(TrainConfig, data, "")


def config_to_dict(config: Any) -> Any:
    """Plain, YAML/JSON-friendly data (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    return config


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to nested dict ``data`` (copied)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise InputError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        for p in parts[:-1]:
            if isinstance(node, list):
                try:
                    node = node[int(p)]
                except (ValueError, IndexError):
                    raise InputError(f"override {item!r}: no list item {p!r}") from None
                continue
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            node = nxt
        if isinstance(node, list):
            try:
                node[int(parts[-1])] = value
            except (ValueError, IndexError):
                raise InputError(f"override {item!r}: no list item {parts[-1]!r}") from None
        else:
            node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config, apply overrides, and validate it.

    Relative data/output paths stay relative to the current directory (the repository root when
    run as documented).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"cannot read the training config ({e.strerror}); check the path", str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML ({str(e).splitlines()[0]}); fix the file", str(path)) from None
    if not isinstance(data, dict):
        raise InputError("a training config must be a YAML mapping", str(path))
    return config_from_dict(apply_overrides(data, overrides))
