"""Model configuration: one frozen dataclass, named presets as JSON files in ``vlseg/configs/``."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vlseg import vocab
from vlseg.errors import ModelError

BIAS_CORRECTIONS = ("none", "n4")  # vlseg.model.preprocess implements them
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a VLSegModel (saved beside every checkpoint)."""

    name: str
    # Image encoder-decoder (residual U-Net): channels per level, finest first.
    channels: tuple[int, ...] = (16, 32, 64, 128)
    res_blocks: int = 1  # residual blocks per encoder level (after the strided one)
    # Decoder scales the prompt head reads (finest + coarser ones) and their projected width.
    head_scales: int = 2
    feature_dim: int = 16
    # Prompt conditioning: text embedding -> MLP -> prompt embedding (prompt_dim) -> dynamic
    # 1x1x1 conv head with `head_hidden` channels per hidden layer.
    prompt_dim: int = 128
    head_hidden: tuple[int, ...] = (8, 8)
    text_encoder: str = "minilm"
    text_lora_rank: int = 0  # > 0: PEFT LoRA on the text backbone (base weights frozen)
    text_lora_alpha: int = 16
    # Geometry: internal isotropic spacing (mm) and the patch size for training / sliding windows.
    spacing_mm: float = 2.0
    patch_size: tuple[int, int, int] = (96, 96, 96)
    in_sequences: int = 4
    # The concepts this model segments, in its channel order (training targets, the labelling's
    # inputs, validation); each must be registered in vlseg.vocab.
    concepts: tuple[str, ...] = vocab.PRE_TREATMENT_CODES
    # Test-time intensity preprocessing before z-scoring: "none", or "n4" (smooth bias field
    # divided out per sequence, vlseg.model.preprocess.correct_bias_field).
    bias_correction: str = "none"
    dropout: float = 0.0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Lists from JSON -> tuples, so configs hash and compare as values.
        for name in ("channels", "head_hidden", "patch_size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "concepts", tuple(str(c) for c in self.concepts))
        object.__setattr__(self, "spacing_mm", float(self.spacing_mm))
        problems = []
        if not self.name:
            problems.append("name is empty")
        if len(self.channels) < 2 or min(self.channels) <= 0:
            problems.append(f"channels needs >= 2 positive entries, got {self.channels}")
        if not 1 <= self.head_scales <= len(self.channels) - 1:
            problems.append(f"head_scales must be in 1..{len(self.channels) - 1}, got {self.head_scales}")
        if self.res_blocks < 0:
            problems.append("res_blocks must be >= 0")
        if self.feature_dim <= 0 or self.prompt_dim <= 0:
            problems.append("feature_dim and prompt_dim must be positive")
        if not self.head_hidden or min(self.head_hidden) <= 0:
            problems.append(f"head_hidden needs >= 1 positive entries, got {self.head_hidden}")
        if self.text_lora_rank < 0:
            problems.append("text_lora_rank must be >= 0")
        if not self.spacing_mm > 0:
            problems.append(f"spacing_mm must be > 0, got {self.spacing_mm}")
        if len(self.patch_size) != 3 or any(p % self.size_divisor for p in self.patch_size):
            problems.append(f"patch_size must be 3 multiples of {self.size_divisor}, got {self.patch_size}")
        if self.in_sequences != 4:
            problems.append("in_sequences must be 4 (t1n, t1c, t2w, t2f)")
        unknown = [c for c in self.concepts if c not in vocab.codes()]
        if not self.concepts or unknown or len(set(self.concepts)) != len(self.concepts):
            problems.append(f"concepts must be distinct registered concepts ({', '.join(vocab.codes())}), "
                            f"got {list(self.concepts)}")
        if self.bias_correction not in BIAS_CORRECTIONS:
            problems.append(f"bias_correction must be one of {list(BIAS_CORRECTIONS)}, got {self.bias_correction!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if problems:
            raise ModelError(f"model config {self.name!r}: " + "; ".join(problems))

    @property
    def size_divisor(self) -> int:
        """Spatial sizes fed to the network must be multiples of this (2 ** downsamplings)."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"model config has unknown fields {unknown}; known: {sorted(known)}")
        if "name" not in d:
            raise ModelError("model config has no 'name'")
        try:
            return cls(**dict(d))
        except (TypeError, ValueError) as e:
            raise ModelError(f"model config {d.get('name')!r}: {e}") from e

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def list_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_named_config(name: str) -> ModelConfig:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(list_config_names())}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e.msg})") from e
    return ModelConfig.from_dict(d)
