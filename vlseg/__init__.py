"""vlseg: promptable 3D segmentation of brain-tumor MRI with grounded answers."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Segmenter", "Answer", "__version__"]


def __getattr__(name: str):
    # Lazy so `import vlseg` (and `vlseg --help`) does not import torch.
    if name in ("Segmenter", "Answer"):
        from vlseg import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'vlseg' has no attribute {name!r}")
