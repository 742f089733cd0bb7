"""Weights are verified against the sha256 their JSON records before use (issue 10, point 2):
a checkpoint or adapter with flipped bytes is a one-line error with exit status 2, and the hash
of an unchanged file is computed once (remembered by path, size, mtime, ctime and inode)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from vlseg.cli import main
from vlseg.errors import ModelError
from vlseg.model import checkpoint as ckpt
from vlseg.model import load_model, storage
from vlseg.model.adapters import ADAPTER_WEIGHTS, add_adapters, save_adapter
from vlseg.model.loading import checkpoint_ref


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    """Each test starts with no remembered hashes and its own cache file."""
    cache = tmp_path / "sha256-cache.json"
    monkeypatch.setattr(storage, "default_hash_cache", lambda: cache)
    monkeypatch.setattr(storage, "_hashes", {})
    return cache


def _flip(path, offset: int = 200_000, n: int = 4096) -> None:
    """Invert ``n`` bytes of the weights (past the safetensors header)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


@pytest.fixture
def bundled_copy(tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(ckpt.WEIGHTS_DIR / ckpt.DEFAULT_CHECKPOINT, dest)
    return dest


def test_flipped_checkpoint_bytes_are_refused(bundled_copy, phantom_case_2mm, tmp_path, capsys):
    _flip(bundled_copy / ckpt.WEIGHTS_FILE)
    with pytest.raises(ModelError, match="does not match .* recorded in config.json"):
        load_model(bundled_copy)
    out = tmp_path / "out"
    rc = main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
               "--out", str(out), "--model", str(bundled_copy)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "sha256" in lines[0] and "re-copy" in lines[0]
    assert not (out / "answer.json").exists()


def test_checkpoint_without_a_recorded_sha_is_refused(bundled_copy):
    meta = json.loads((bundled_copy / ckpt.CONFIG_FILE).read_text())
    del meta["provenance"]["weights_sha256"]
    (bundled_copy / ckpt.CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="records no valid weights_sha256"):
        load_model(bundled_copy)


def test_hash_is_computed_once_and_remembered_across_processes(bundled_copy, monkeypatch, _own_hash_cache):
    weights = bundled_copy / ckpt.WEIGHTS_FILE
    calls = []
    real = storage.file_sha256
    monkeypatch.setattr(storage, "file_sha256", lambda p: calls.append(p) or real(p))
    first = storage.cached_sha256(weights)
    assert storage.cached_sha256(weights) == first and len(calls) == 1
    # A new process: nothing in memory, the JSON cache answers.
    monkeypatch.setattr(storage, "_hashes", {})
    assert storage.cached_sha256(weights) == first and len(calls) == 1
    assert str(weights.resolve()) in json.loads(_own_hash_cache.read_text())
    # Modified in place with its mtime put back: the ctime still changes, so it is re-hashed.
    st = weights.stat()
    _flip(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert storage.cached_sha256(weights) != first and len(calls) == 2


def test_an_unwritable_cache_only_costs_a_rehash(bundled_copy, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(storage, "default_hash_cache", lambda: blocker / "cache.json")
    assert load_model(bundled_copy).config.name == "tiny"


def test_flipped_adapter_bytes_are_refused(random_checkpoint, tmp_path):
    model = load_model(random_checkpoint)
    spec = add_adapters(model, rank=2, alpha=4.0, text_rank=4)
    folder = save_adapter(model, spec, tmp_path / "ad", base=checkpoint_ref(random_checkpoint))
    assert load_model(folder) is not None  # intact: loads
    _flip(folder / ADAPTER_WEIGHTS, offset=4096, n=512)
    with pytest.raises(ModelError, match="does not match .* recorded in adapter.json"):
        load_model(folder)
