"""File-level helpers shared by full checkpoints, LoRA adapters and training state.

Everything here is about *files*, not models: refuse pickles before any parser sees them, load
safetensors on CPU, read a format-tagged JSON config, hash weights, record provenance.
"""
from __future__ import annotations

import hashlib
import json
import platform
import struct
import subprocess
from pathlib import Path
from typing import Any

import torch

from vlseg.errors import ModelError
from vlseg.fileio import write_json_atomic


def check_safetensors(path: str | Path) -> None:
    """Refuse anything that is not a safetensors file before any parser sees it."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise ModelError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if not (2 <= n <= size - 8) or head[8:9] != b"{":
        raise ModelError(f"{path}: not a safetensors file (pickled checkpoints are never loaded)")


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Header check, then load every tensor to CPU; a corrupt file is a ``ModelError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: corrupt safetensors file ({e})") from None


def read_format_json(path: str | Path, *, fmt: str, version: int, what: str,
                     required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a JSON object tagged ``{"format": fmt, "format_version": <= version}``.

    ``required`` names keys that must hold JSON objects. Errors name the file and the problem.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable {what} config ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt or any(
            not isinstance(meta.get(k), dict) for k in required):
        raise ModelError(f"{path}: not a {what} config (format must be {fmt!r})")
    try:
        found = int(meta.get("format_version", 0))
    except (TypeError, ValueError):
        raise ModelError(f"{path}: format_version must be an integer") from None
    if found > version:
        raise ModelError(f"{path}: {what} format {found} is newer than this vlseg; upgrade vlseg")
    return meta


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Hashes already computed, keyed by the file's identity: path, size, mtime, ctime and inode (a
# rewrite changes size or mtime, and restoring the mtime still changes the ctime). Kept in this
# process and in a small JSON under the user's cache folder, so the bundled checkpoint is hashed
# once per install, not on every start.
HASH_CACHE_ENTRIES = 64
_hashes: dict[str, dict[str, Any]] = {}


def default_hash_cache() -> Path:
    return Path.home() / ".cache" / "vlseg" / "sha256-cache.json"


def _identity(path: Path) -> tuple[str, dict[str, Any]]:
    st = path.stat()
    return str(path.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                 "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def cached_sha256(path: str | Path, *, cache_file: Path | None = None) -> str:
    """SHA-256 of a file, computed once per file identity (see ``_identity``) and remembered in
    this process and in ``cache_file`` (default ``~/.cache/vlseg/sha256-cache.json``; a cache
    that cannot be read or written only costs a re-hash)."""
    path = Path(path)
    key, ident = _identity(path)
    hit = _hashes.get(key)
    if hit is not None and hit["id"] == ident:
        return hit["sha256"]
    cache_file = cache_file or default_hash_cache()
    stored = _read_hash_cache(cache_file)
    hit = stored.get(key)
    if isinstance(hit, dict) and hit.get("id") == ident and isinstance(hit.get("sha256"), str):
        _hashes[key] = hit
        return hit["sha256"]
    sha = file_sha256(path)
    if _identity(path)[1] != ident:  # changed while being hashed: do not remember it
        return sha
    _hashes[key] = stored[key] = {"id": ident, "sha256": sha}
    _write_hash_cache(cache_file, dict(list(stored.items())[-HASH_CACHE_ENTRIES:]))
    return sha


def _read_hash_cache(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(cache_file: Path, data: dict[str, Any]) -> None:
    try:
        write_json_atomic(cache_file, data)
    except OSError:  # a read-only home: hash again next time
        pass


def verify_sha256(path: str | Path, expected: Any, *, recorded_in: str | Path) -> str:
    """The file's SHA-256, which must equal ``expected`` (what its JSON records); else a one-line
    ``ModelError``. Weights are never used unverified."""
    path = Path(path)
    if not isinstance(expected, str) or len(expected) != 64:
        raise ModelError(f"{recorded_in}: records no valid weights_sha256, so {path.name} cannot be "
                         "verified; re-save the checkpoint or adapter with this vlseg version")
    try:
        sha = cached_sha256(path)
    except OSError as e:
        raise ModelError(f"{path}: cannot be read ({e.strerror or e})") from None
    if sha != expected.lower():
        raise ModelError(f"{path}: sha256 {sha[:12]}... does not match {expected[:12]}... recorded "
                         f"in {Path(recorded_in).name}; the weights are corrupt or were modified: "
                         "re-copy them (or retrain)")
    return sha


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write ``state`` (copied to CPU) to a .safetensors file atomically; return its SHA-256."""
    from safetensors.torch import save_file

    from vlseg.fileio import atomic_path

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return cached_sha256(path)


def provenance_record(provenance: dict[str, Any] | None, *, weights_sha256: str, parameters: int) -> dict[str, Any]:
    """``provenance`` as given, completed with the git commit, creation time and library versions
    unless present, and the weights' SHA-256 and parameter count."""
    import datetime as _dt

    prov = dict(provenance or {})
    prov.setdefault("git_commit", git_commit())
    prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    prov.setdefault("versions", library_versions())
    prov["weights_sha256"] = weights_sha256
    prov["parameters"] = parameters
    return prov


def git_commit() -> str | None:
    """The vlseg source tree's git commit, if it is a checkout (provenance, best effort)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def library_versions() -> dict[str, str]:
    """Versions of Python, torch, vlseg and the libraries whose behaviour a checkpoint depends on."""
    import vlseg

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "vlseg": getattr(vlseg, "__version__", "unknown")}
    for mod in ("monai", "transformers", "peft", "safetensors"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - provenance is best effort
            pass
    return v
