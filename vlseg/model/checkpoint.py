"""Checkpoints: ``model.safetensors`` + ``config.json`` (model config + provenance). Never pickle.

The frozen text backbone (e.g. MiniLM, 90 MB) is not stored: it is rebuilt from the spec in the
config (``minilm`` -> the installed package). Text LoRA adapters, if any, are stored.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import struct
import subprocess
from pathlib import Path
from typing import Any

import torch

from vlseg.errors import ModelError
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.model.config import ModelConfig
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
    if path.is_dir():
        path = path / WEIGHTS_FILE
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    import vlseg

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "vlseg": getattr(vlseg, "__version__", "unknown")}
    for mod in ("monai", "transformers", "peft", "safetensors"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - provenance is best effort
            pass
    return v


def save_checkpoint(model: VLSegModel, path_dir: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``path_dir/model.safetensors`` and ``path_dir/config.json`` atomically; return the folder.

    ``provenance`` (data sources, steps, seed, ...) is stored as given, completed with the git
    commit, library versions, creation time and the weights' SHA-256 unless already present.
    """
    from safetensors.torch import save_file

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.checkpoint_state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "model": model.config.name})
    prov = dict(provenance or {})
    prov.setdefault("git_commit", _git_commit())
    prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    prov.setdefault("versions", _versions())
    prov["weights_sha256"] = checkpoint_sha256(out / WEIGHTS_FILE)
    prov["parameters"] = model.num_parameters()
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
    from vlseg.model.config import list_config_names

    if text in list_config_names():
        raise ModelError(f"{text!r} is a model config, not a trained checkpoint; train one with `{TRAIN_HINT}`")
    raise ModelError(f"{text}: no such checkpoint (bundled: {', '.join(list_bundled()) or 'none'})")


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser sees it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise ModelError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if not (2 <= n <= size - 8) or head[8:9] != b"{":
        raise ModelError(f"{path}: not a safetensors file (pickled checkpoints are never loaded)")


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable checkpoint config ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("model"), dict):
        raise ModelError(f"{path}: not a vlseg checkpoint config (format must be {FORMAT!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{path}: checkpoint format {meta['format_version']} is newer than this vlseg; upgrade vlseg")
    return meta


def load_state_into(model: VLSegModel, weights: str | Path) -> None:
    """Strictly load a safetensors file into ``model`` (frozen text base keys excepted)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(weights)
    _check_safetensors(weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{weights}: corrupt safetensors file ({e})") from e
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


def load_model(name_or_path: str | Path | None = None, *, device: str | torch.device = "cpu") -> VLSegModel:
    """Load a checkpoint (None = the bundled default) to CPU, then move it to ``device``; eval mode."""
    from vlseg.model.registry import build_model

    folder = resolve_checkpoint(name_or_path)
    meta = read_checkpoint_config(folder)
    config = ModelConfig.from_dict(meta["model"])
    model = build_model(config)
    load_state_into(model, folder / WEIGHTS_FILE)
    model.checkpoint_dir = folder  # type: ignore[attr-defined]
    model.provenance = dict(meta.get("provenance") or {})  # type: ignore[attr-defined]
    return model.to(device).eval()
