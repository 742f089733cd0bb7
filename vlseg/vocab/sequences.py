"""MRI sequence names: canonical codes in the model's channel order, accepted aliases, titles."""
from __future__ import annotations

# Canonical sequence names, in the channel order the model uses.
SEQUENCES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
SEQUENCE_ALIASES: dict[str, str] = {
    "t1n": "t1n", "t1": "t1n", "t1w": "t1n", "t1native": "t1n",
    "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t1post": "t1c",
    "t2w": "t2w", "t2": "t2w",
    "t2f": "t2f", "flair": "t2f", "t2flair": "t2f", "t2-flair": "t2f",
}
SEQUENCE_TITLES: dict[str, str] = {"t1n": "T1 native", "t1c": "T1 post-contrast", "t2w": "T2",
                                   "t2f": "T2-FLAIR"}


def canonical_sequence(name: str) -> str:
    """Map any accepted sequence name (``flair``, ``t1ce``, ``T2w`` ...) to ``t1n|t1c|t2w|t2f``."""
    key = name.strip().lower().replace("_", "").replace(" ", "")
    if key in SEQUENCE_ALIASES:
        return SEQUENCE_ALIASES[key]
    raise ValueError(
        f"unknown MRI sequence {name!r}; use one of {', '.join(SEQUENCES)} "
        "(or the older names t1, t1ce, t2, flair)"
    )
