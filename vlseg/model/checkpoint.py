"""Full checkpoints: ``model.safetensors`` + ``config.json`` (model config + provenance). Never pickle.

The frozen text backbone (e.g. MiniLM, 90 MB) is not stored: it is rebuilt from the spec in the
config (``minilm`` -> the installed package). Text LoRA adapters, if any, are stored.
LoRA fine-tunes of a checkpoint are ``adapters.py``; ``loading.load_model`` loads either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlseg.errors import ModelError
from vlseg.fileio import write_json_atomic
from vlseg.model.config import ModelConfig, list_config_names
from vlseg.model.registry import build_model
from vlseg.model.storage import (
    cached_sha256, check_safetensors, load_safetensors, provenance_record, read_format_json, save_weights,
    verify_sha256,
)
from vlseg.model.vlseg_model import VLSegModel

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_CHECKPOINT = "default"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "vlseg-checkpoint"
FORMAT_VERSION = 1
TRAIN_HINT = "accelerate launch train/train.py --config train/configs/tiny_phantoms.yaml"


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 of a checkpoint's weights file (``path`` = the folder or the .safetensors file)."""
    path = Path(path)
    return cached_sha256(path / WEIGHTS_FILE if path.is_dir() else path)


def save_checkpoint(model: VLSegModel, path_dir: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``path_dir/model.safetensors`` and ``path_dir/config.json`` atomically; return the folder.

    ``provenance`` (data sources, steps, seed, ...) is stored as given, completed with the git
    commit, library versions, creation time and the weights' SHA-256 unless already present.
    """
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = save_weights(out / WEIGHTS_FILE, model.checkpoint_state_dict(),
                       {"format": FORMAT, "model": model.config.name})
    prov = provenance_record(provenance, weights_sha256=sha, parameters=model.num_parameters())
    write_json_atomic(out / CONFIG_FILE, {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(), "provenance": prov,
    })
    return out


def list_bundled() -> list[str]:
    """Names of checkpoint folders bundled under ``vlseg/weights/``."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / WEIGHTS_FILE).is_file())


def resolve_checkpoint(name_or_path: str | Path | None = None) -> Path:
    """None -> bundled default; a bundled name; or a checkpoint folder / its model.safetensors."""
    if name_or_path is None or str(name_or_path) == "":
        folder = WEIGHTS_DIR / DEFAULT_CHECKPOINT
        if not (folder / WEIGHTS_FILE).is_file():
            raise ModelError(f"no bundled checkpoint in {folder}; train one with `{TRAIN_HINT}`")
        return folder
    text = str(name_or_path)
    if "/" not in text and "\\" not in text and (WEIGHTS_DIR / text / WEIGHTS_FILE).is_file():
        return WEIGHTS_DIR / text
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            raise ModelError(f"{path}: not a vlseg checkpoint folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
        return path
    if path.is_file():
        if path.name != WEIGHTS_FILE or not (path.parent / CONFIG_FILE).is_file():
            raise ModelError(
                f"{path}: not a vlseg checkpoint; give the folder holding {WEIGHTS_FILE} + {CONFIG_FILE} "
                "(pickled .pt/.pth/.ckpt files are never loaded)"
            )
        return path.parent
    if text in list_config_names():
        raise ModelError(f"{text!r} is a model config, not a trained checkpoint; train one with `{TRAIN_HINT}`")
    raise ModelError(f"{text}: no such checkpoint (bundled: {', '.join(list_bundled()) or 'none'})")


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``: format checked, ``model`` and ``provenance`` dicts."""
    return read_format_json(Path(folder) / CONFIG_FILE, fmt=FORMAT, version=FORMAT_VERSION,
                            what="vlseg checkpoint", required=("model",))


def load_state_into(model: VLSegModel, weights: str | Path) -> None:
    """Strictly load a safetensors file into ``model`` (frozen text base keys excepted)."""
    weights = Path(weights)
    state = load_safetensors(weights)
    expected = model.checkpoint_state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"{weights}: weights do not match the model config "
            f"(missing keys: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"unexpected keys: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise ModelError(f"{weights}: tensor shapes do not match the model config for {bad[:5]}")
    model.load_state_dict(state, strict=False)
    model.text_encoder.clear_cache()


def load_checkpoint(folder: str | Path) -> VLSegModel:
    """Build the model a full checkpoint folder describes and strictly load its weights (CPU),
    after checking them against the SHA-256 its config.json records.

    Callers normally use ``vlseg.model.load_model``, which also takes bundled names, weight
    files and LoRA adapter folders.
    """
    folder = Path(folder)
    meta = read_checkpoint_config(folder)
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    check_safetensors(folder / WEIGHTS_FILE)  # a pickle is named as one, before anything else
    verify_sha256(folder / WEIGHTS_FILE, prov.get("weights_sha256"), recorded_in=folder / CONFIG_FILE)
    model = build_model(ModelConfig.from_dict(meta["model"]))
    load_state_into(model, folder / WEIGHTS_FILE)
    model.provenance = dict(meta.get("provenance") or {})  # type: ignore[attr-defined]
    return model


def average_checkpoints(first: str | Path, second: str | Path, out: str | Path, *, weight: float) -> Path:
    """Write ``(1 - weight) * first + weight * second`` (every stored tensor) as a checkpoint in
    ``out``: weight-space ensembling of a fine-tune with the model it started from (WiSE-FT,
    Wortsman et al. 2022), which keeps most of the fine-tune's gain under shift and most of the
    start's accuracy where that was better. Both must be full checkpoints of the same model
    config; the new provenance names both (SHA-256, provenance) and the weight."""
    if not 0.0 <= weight <= 1.0:
        raise ModelError(f"weight must lie in [0, 1], got {weight}")
    folders = [resolve_checkpoint(first), resolve_checkpoint(second)]
    models = [load_checkpoint(f) for f in folders]
    configs = [m.config.to_dict() for m in models]
    if configs[0] != configs[1]:
        diff = sorted(k for k in configs[0] if configs[0].get(k) != configs[1].get(k))
        raise ModelError(f"{folders[0]} and {folders[1]} have different model configs ({', '.join(diff)}); "
                         "only checkpoints of one model can be averaged")
    a, b = (m.checkpoint_state_dict() for m in models)
    merged = {k: (a[k].float() * (1.0 - weight) + b[k].float() * weight).to(a[k].dtype) for k in a}
    models[1].load_state_dict(merged, strict=False)
    models[1].text_encoder.clear_cache()
    provenance = {
        "weight_average": {
            "weight": weight,
            "first": {"checkpoint": str(first), "sha256": checkpoint_sha256(folders[0]),
                      "provenance": getattr(models[0], "provenance", {})},
            "second": {"checkpoint": str(second), "sha256": checkpoint_sha256(folders[1]),
                       "provenance": getattr(models[1], "provenance", {})},
        },
    }
    return save_checkpoint(models[1], out, provenance)

