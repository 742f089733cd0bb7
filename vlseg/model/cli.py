"""``vlseg models [PATH ...]``: the named configs, the bundled checkpoints and any given folders,
each as a full checkpoint or a LoRA adapter with its base."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlseg.errors import ModelError
from vlseg.model import checkpoint as ckpt
from vlseg.model.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapter_folder, read_adapter
from vlseg.model.config import load_named_config
from vlseg.model.image_encoder import ImageEncoder
from vlseg.model.loading import bundled_name, find_base
from vlseg.model.registry import list_models


def describe_folder(name_or_path: str | Path) -> dict[str, str]:
    """{"model", "kind", "config", "base"} for a bundled name or a folder; ModelError if neither."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_file() and path.name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        path = path.parent
    if path.is_dir() and is_adapter_folder(path):
        info = read_adapter(path)
        try:
            base_folder = find_base(info)
            base = f"{bundled_name(base_folder) or base_folder} (sha256 {info.base.sha256[:12]}, found)"
        except ModelError as e:
            base = f"{info.base.where()} (sha256 {info.base.sha256[:12]}, UNUSABLE: {e})"
        return {"model": str(name_or_path), "kind": f"LoRA adapter (rank {info.spec.rank}, "
                f"{info.parameters:,} params)", "config": info.spec.base_model, "base": base}
    folder = ckpt.resolve_checkpoint(name_or_path)
    config = ckpt.read_checkpoint_config(folder)["model"].get("name", "?")
    return {"model": str(name_or_path), "kind": "full checkpoint", "config": str(config), "base": "-"}


def print_configs() -> None:
    print(f"{'config':<8} {'image params':>12} {'spacing':>8} {'patch':>12}  text encoder (LoRA rank)")
    for name in list_models():
        c = load_named_config(name)
        enc = ImageEncoder(in_channels=2 * c.in_sequences, channels=c.channels, res_blocks=c.res_blocks,
                           head_scales=c.head_scales, feature_dim=c.feature_dim)
        n = sum(p.numel() for p in enc.parameters())
        patch = "x".join(map(str, c.patch_size))
        print(f"{name:<8} {n / 1e6:>11.2f}M {c.spacing_mm:>6.1f}mm {patch:>12}  "
              f"{c.text_encoder} ({c.text_lora_rank})")


def run_cli(args: argparse.Namespace) -> int:
    """``vlseg models``: configs, then one line per bundled checkpoint and per given folder."""
    print_configs()
    rows: list[dict[str, str]] = []
    status = 0
    for name in ckpt.list_bundled():
        rows.append({**describe_folder(ckpt.WEIGHTS_DIR / name), "model": f"{name} (bundled)"})
    for path in getattr(args, "paths", None) or []:
        try:
            rows.append(describe_folder(path))
        except ModelError as e:
            print(f"vlseg models: error: {e}", file=sys.stderr)
            status = 2
    print()
    if not rows:
        print("no trained models (bundled: none); give checkpoint or adapter folders: vlseg models PATH ...")
        return status
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  {'kind':<34} {'config':<10} base")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['kind']:<34} {r['config']:<10} {r['base']}")
    return status
