"""One way in for every place that takes a model: a bundled name, a checkpoint folder, or a LoRA
adapter folder (``runs/<x>/best``, ``runs/<x>/checkpoints/step_*``) applied on its base.

    source = resolve_model("runs/ft/best")   # ModelSource: base checkpoint + adapter, base sha checked
    model = load_model("runs/ft/best")       # base weights, then the adapter on top; eval mode
    describe_source(source)                  # answer.json's "model" block: base + adapter, sha256s

A refinement stage (``refiner.safetensors`` + ``refiner.json``) beside the checkpoint (or the
adapter) is part of the model: ``source.refiner`` names its folder and ``load_refiner(source)``
loads it; a folder without one is a single-stage model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlseg.errors import ModelError
from vlseg.model import checkpoint as ckpt
from vlseg.model.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterInfo,
    BaseRef,
    adapter_sha256,
    is_adapter_folder,
    load_adapter,
    read_adapter,
)
from vlseg.model.refiner import Refiner
from vlseg.model.refiner_checkpoint import has_refiner, load_refiner as _load_refiner_folder, refiner_sha256
from vlseg.model.vlseg_model import VLSegModel


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: a full checkpoint, optionally with a LoRA adapter."""

    checkpoint: Path                  # the full checkpoint folder (an adapter's base)
    adapter: Path | None = None       # the adapter folder, if any
    base: BaseRef | None = None       # what the adapter names as its base (sha256 verified)
    refiner: Path | None = None       # the folder holding the refinement stage, if any

    @property
    def kind(self) -> str:
        return "adapter" if self.adapter is not None else "checkpoint"


def bundled_name(folder: str | Path) -> str | None:
    """The bundled checkpoint name of ``folder`` (``vlseg/weights/<name>``), else None."""
    folder = Path(folder).resolve()
    return folder.name if folder.parent == Path(ckpt.WEIGHTS_DIR).resolve() else None


def checkpoint_ref(name_or_path: str | Path | None) -> BaseRef:
    """A BaseRef for a full checkpoint (what an adapter trained on it records)."""
    folder = ckpt.resolve_checkpoint(name_or_path)
    name = bundled_name(folder)
    return BaseRef(sha256=ckpt.checkpoint_sha256(folder), name=name,
                   path=None if name else str(folder.resolve()))


def find_base(info: AdapterInfo) -> Path:
    """The base checkpoint folder an adapter names, its weights' SHA-256 checked."""
    base = info.base
    folder: Path | None = None
    if base.name and (Path(ckpt.WEIGHTS_DIR) / base.name / ckpt.WEIGHTS_FILE).is_file():
        folder = Path(ckpt.WEIGHTS_DIR) / base.name
    elif base.path and (Path(base.path) / ckpt.WEIGHTS_FILE).is_file():
        folder = Path(base.path)
    if folder is None:
        raise ModelError(f"{info.folder}: the adapter's base checkpoint {base.where()} is not found; "
                         "put it back there or retrain the adapter on a checkpoint you have")
    sha = ckpt.checkpoint_sha256(folder)
    if sha != base.sha256:
        raise ModelError(f"{info.folder}: adapter was trained on base checkpoint sha256 {base.sha256[:12]}... "
                         f"but {base.where()} has sha256 {sha[:12]}...; use the adapter with the base it was "
                         "trained on")
    return folder


def resolve_model(name_or_path: str | Path | None = None, *, refiner: str | Path | None = None) -> ModelSource:
    """None -> the bundled default; a bundled name; a checkpoint folder (or its model.safetensors);
    an adapter folder (or its adapter.safetensors / adapter.json) -> its base + the adapter.
    ``refiner``: a folder holding a refinement stage to use; None: the one beside the adapter,
    else beside the checkpoint, if any."""
    source = _resolve_first_stage(name_or_path)
    if refiner is not None and str(refiner) != "":
        folder = Path(str(refiner)).expanduser()
        folder = folder.parent if folder.is_file() else folder
        if not has_refiner(folder):
            raise ModelError(f"{folder}: no refinement stage here (refiner.safetensors + refiner.json)")
    else:
        candidates = [p for p in (source.adapter, source.checkpoint) if p is not None]
        folder = next((p for p in candidates if has_refiner(p)), None)
    return ModelSource(checkpoint=source.checkpoint, adapter=source.adapter, base=source.base, refiner=folder)


def _resolve_first_stage(name_or_path: str | Path | None) -> ModelSource:
    if name_or_path is not None and str(name_or_path) != "":
        path = Path(str(name_or_path)).expanduser()
        if path.is_file() and path.name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            path = path.parent
        if path.is_dir() and is_adapter_folder(path):
            if (path / ckpt.WEIGHTS_FILE).exists():
                raise ModelError(f"{path}: holds both a full checkpoint ({ckpt.WEIGHTS_FILE}) and a LoRA adapter "
                                 f"({ADAPTER_CONFIG}); keep one of them in this folder")
            info = read_adapter(path)
            return ModelSource(checkpoint=find_base(info), adapter=path, base=info.base)
    return ModelSource(checkpoint=ckpt.resolve_checkpoint(name_or_path))


def load_model(name_or_path: str | Path | None = None, *, device: str | torch.device = "cpu",
               refiner: str | Path | None = None) -> VLSegModel:
    """Load a model (see ``resolve_model``) to CPU, then move it to ``device``; eval mode.

    An adapter is applied on top of its base; nothing is merged, so the base stays the one
    whose SHA-256 the adapter names. ``model.source`` records where the weights came from.
    """
    source = resolve_model(name_or_path, refiner=refiner)
    model = ckpt.load_checkpoint(source.checkpoint)
    if source.adapter is not None:
        load_adapter(model, source.adapter)
    model.source = source  # type: ignore[attr-defined]
    return model.to(device).eval()


def load_refiner(source: ModelSource, *, device: str | torch.device = "cpu") -> Refiner | None:
    """The source's refinement stage (sha256 checked), or None for a single-stage model."""
    if source.refiner is None:
        return None
    return _load_refiner_folder(source.refiner).to(device).eval()


def describe_refiner(folder: Path | None) -> dict[str, Any] | None:
    """answer.json's provenance of a refinement stage: its name and weights' SHA-256."""
    if folder is None:
        return None
    name = bundled_name(folder) or display_name(folder)
    return {"name": name, "sha256": refiner_sha256(folder)}


def display_name(folder: Path) -> str:
    """A short, path-free name for an adapter folder: ``<run>/best`` or ``<run>/step_0000300``."""
    parent = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
    return f"{parent.name}/{folder.name}" if parent.name else folder.name


def describe_source(source: ModelSource) -> dict[str, Any]:
    """answer.json's provenance of the weights: the base checkpoint and the adapter, each with
    its SHA-256 (``checkpoint``/``checkpoint_sha256`` keep naming the full checkpoint)."""
    base_sha = source.base.sha256 if source.base is not None else ckpt.checkpoint_sha256(source.checkpoint)
    base_name = bundled_name(source.checkpoint) or source.checkpoint.name
    adapter = None
    if source.adapter is not None:
        info = read_adapter(source.adapter)
        adapter = {"name": display_name(source.adapter), "sha256": adapter_sha256(source.adapter),
                   "rank": info.spec.rank, "parameters": info.parameters}
    return {"checkpoint": source.checkpoint.name, "checkpoint_sha256": base_sha,
            "base": {"checkpoint": base_name, "sha256": base_sha}, "adapter": adapter,
            "refiner": describe_refiner(source.refiner)}
