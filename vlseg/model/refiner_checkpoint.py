"""Refinement-stage weights: ``refiner.safetensors`` + ``refiner.json`` (config + provenance).

They live beside a first-stage checkpoint (``vlseg/weights/default/`` holds both stages) or in
a folder of their own (``runs/<x>/checkpoints/step_*``). A checkpoint folder without them is a
single-stage model and answers from its first stage. The refiner names no first-stage weights:
it was trained on simulated first-stage probabilities, so it stays valid when stage 1 changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlseg.errors import ModelError
from vlseg.fileio import write_json_atomic
from vlseg.model.refiner import Refiner, RefinerConfig
from vlseg.model.storage import (
    cached_sha256, check_safetensors, load_safetensors, provenance_record, read_format_json, save_weights,
    verify_sha256,
)

REFINER_WEIGHTS = "refiner.safetensors"
REFINER_CONFIG = "refiner.json"
FORMAT = "vlseg-refiner"
FORMAT_VERSION = 1


def has_refiner(folder: str | Path) -> bool:
    """Whether ``folder`` holds refinement-stage weights."""
    return (Path(folder) / REFINER_WEIGHTS).is_file()


def refiner_sha256(folder: str | Path) -> str:
    return cached_sha256(Path(folder) / REFINER_WEIGHTS)


def save_refiner(refiner: Refiner, folder: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``folder/refiner.safetensors`` and ``folder/refiner.json`` atomically."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    sha = save_weights(out / REFINER_WEIGHTS, refiner.state_dict(),
                       {"format": FORMAT, "model": refiner.config.name})
    prov = provenance_record(provenance, weights_sha256=sha, parameters=refiner.num_parameters())
    write_json_atomic(out / REFINER_CONFIG, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                             "refiner": refiner.config.to_dict(), "provenance": prov})
    return out


def read_refiner_config(folder: str | Path) -> dict[str, Any]:
    return read_format_json(Path(folder) / REFINER_CONFIG, fmt=FORMAT, version=FORMAT_VERSION,
                            what="vlseg refiner", required=("refiner",))


def load_state(refiner: Refiner, weights: Path) -> None:
    """Strictly load a safetensors file into ``refiner`` (keys and shapes must match)."""
    state = load_safetensors(weights)
    expected = refiner.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        raise ModelError(f"{weights}: weights do not match the refiner config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, shapes differ for {bad[:3]})")
    refiner.load_state_dict(state)


def load_refiner(folder: str | Path) -> Refiner:
    """The refiner stored in ``folder`` (config read, weights' SHA-256 checked), on CPU, eval mode.
    ``refiner.provenance`` and ``refiner.folder`` say where it came from."""
    folder = Path(folder)
    if not has_refiner(folder):
        raise ModelError(f"{folder}: no refinement stage here (needs {REFINER_WEIGHTS} + {REFINER_CONFIG})")
    meta = read_refiner_config(folder)
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    check_safetensors(folder / REFINER_WEIGHTS)
    verify_sha256(folder / REFINER_WEIGHTS, prov.get("weights_sha256"), recorded_in=folder / REFINER_CONFIG)
    refiner = Refiner(config=RefinerConfig.from_dict(meta["refiner"]))
    load_state(refiner, folder / REFINER_WEIGHTS)
    refiner.provenance = dict(prov)  # type: ignore[attr-defined]
    refiner.folder = folder  # type: ignore[attr-defined]
    return refiner.eval()
