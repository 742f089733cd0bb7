"""Shared pytest setup: offline, few threads, and small generated fixtures."""
from __future__ import annotations

import os

# No network: everything loads from installed packages or files the tests generate.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
# Threads that spin while waiting make a busy 2-core machine many times slower; sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The napari plugin's tests run Qt headless.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="session")
def phantom_case_2mm(tmp_path_factory):
    """One synthetic BraTS-2023-layout case at 2 mm (120x120x78), generated once per session."""
    from vlseg.synth import write_case

    out = tmp_path_factory.mktemp("phantoms")
    return write_case(out, seed=7, spacing_mm=2.0)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """A `tiny` model with random weights saved as a checkpoint folder (behaviour tests only)."""
    import torch

    from vlseg.model import build_model
    from vlseg.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-random",
                           {"note": "random weights for tests"})
