"""Synthetic BraTS-like phantoms on the ICBM152 2009a template anatomy (see data/PHANTOMS.md)."""
from vlseg.synth.params import DEFAULT_RANGES, SynthRanges
from vlseg.synth.phantom import (
    CASE_KEYS,
    default_case_id,
    generate_case,
    generate_case_with_info,
    write_case,
)

__all__ = [
    "CASE_KEYS",
    "DEFAULT_RANGES",
    "SynthRanges",
    "default_case_id",
    "generate_case",
    "generate_case_with_info",
    "write_case",
]
