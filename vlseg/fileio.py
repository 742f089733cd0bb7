"""Atomic file output: write to a temporary file beside the target, then rename over it."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so an
    existing output is never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        # Keep multi-part suffixes such as ".nii.gz" so writers that look at the name still work.
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give outputs the usual permissions (0666 minus the umask).
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


STAGING_PREFIX = ".vlseg-staging-"


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, *, manifest: str,
                  previous: Iterator[str] | list[str] | tuple[str, ...] = ()) -> Iterator[Path]:
    """Write a set of outputs into a fresh staging folder, then publish them into ``out_dir``.

    Publishing keeps the rule "a folder holds exactly what its manifest lists": the old manifest
    is withdrawn first, the files it listed (``previous``; plain names only, nothing else is
    touched) are removed, the new files are moved into place, and the new manifest comes last.
    A process killed at any point leaves either no manifest or a manifest that matches the
    files beside it. Staging folders left by killed runs are removed on the next publish.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGING_PREFIX}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    # Files a killed publish was moving (its manifest never came): ours to remove as well.
    journal = out / PUBLISH_JOURNAL
    previous = list(previous) + _journal_files(journal)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        yield stage
        new = sorted(p.name for p in stage.iterdir() if p.is_file())
        if manifest not in new:
            raise ValueError(f"staged outputs lack their manifest {manifest!r}")
        write_json_atomic(journal, {"files": sorted(set(previous) | set(new))})
        # Withdraw the old answer first: from here until the end there is no manifest at all.
        with contextlib.suppress(FileNotFoundError):
            (out / manifest).unlink()
        for name in previous:
            old = out / name
            if Path(name).name == name and name not in new and old.is_file() and not old.is_symlink():
                old.unlink()
        for name in new:
            if name != manifest:
                os.replace(stage / name, out / name)
        os.replace(stage / manifest, out / manifest)  # last
        journal.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


PUBLISH_JOURNAL = ".vlseg-publishing.json"


def _journal_files(journal: Path) -> list[str]:
    try:
        files = json.loads(journal.read_text()).get("files", [])
        return [str(f) for f in files if isinstance(f, str)]
    except (OSError, ValueError, AttributeError):
        return []
