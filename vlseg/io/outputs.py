"""Output folders checked before any work is done: a folder (or one that can be made) that this
process can write, never a file and never under one.

    out = check_output_dir("results/case1")   # InputError naming the problem, else the Path

The check writes and removes one empty probe file (``.vlseg-probe-*``) in the folder, or in its
nearest existing parent when the folder does not exist yet (it is not created here): permission
bits alone do not tell (root ignores them; read-only mounts do not show in them).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vlseg.errors import InputError

PROBE_PREFIX = ".vlseg-probe-"


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` if it is, or can become, a folder this process can write; else ``InputError``."""
    out = Path(path).expanduser()
    if str(path).strip() == "":
        raise InputError("the output folder is empty; give a folder to write the answer into")
    if out.is_symlink() and not out.exists():
        raise InputError("is a broken symbolic link; give a real folder", str(out))
    if out.exists() and not out.is_dir():
        raise InputError("is a file, not a folder; give a folder to write the answer into", str(out))
    existing = out
    while not existing.exists():
        if existing.is_symlink():
            raise InputError(f"cannot be created: {existing} is a broken symbolic link", str(out))
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot be created: {existing} is a file, not a folder; choose another "
                         "output folder", str(out))
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=existing)
    except OSError as e:
        where = "" if existing == out else f" (its nearest existing parent {existing})"
        raise InputError(f"cannot be written{where}: {e.strerror or e}; choose a folder you can "
                         "write", str(out)) from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return out
