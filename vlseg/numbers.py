"""One number format for answers, JSON, tables and legends.

Values are rounded once (``round_ml``, ``round_mm``, ``round_fraction``: what answer.json holds)
and written without trailing zeros (``fmt_number``): the text, the app's table and the picture
legends all show the JSON's value the same way ("61 mL", "0.35 mL", "12.4 mm", "41%").
"""
from __future__ import annotations


def round_ml(v: float) -> float:
    """Volumes: 2 decimals below 1 mL, 1 decimal above."""
    return round(float(v), 2 if abs(v) < 1 else 1)


def round_mm(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def round_fraction(v: float | None) -> float | None:
    return None if v is None else round(float(v), 2)


def fmt_number(v: float) -> str:
    """A rounded value as text, without trailing zeros (12.0 -> "12", 0.05 -> "0.05")."""
    s = f"{float(v):.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def fmt_ml(v: float) -> str:
    return f"{fmt_number(round_ml(v))} mL"


def fmt_pct(fraction: float) -> str:
    """A fraction (0..1) as a whole percentage: 0.413 -> "41%"."""
    return f"{fmt_number(round(float(fraction) * 100, 0))}%"
