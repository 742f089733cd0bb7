"""What one answer hands the user besides its text: the measurements table, the CSV, the downloads.

* The table is HTML: short headers that never break mid-word, units in the headers, every number
  in the one format of ``vlseg.numbers``, location in words, and one interval per volume (the
  calibrated one the text quotes, "possibly none" when it reaches 0) explained once in a
  footnote and in a tooltip on its header. The boundary-reading range stays in answer.json.
* Downloads are named by case: ``<case_id>_<concept>.nii.gz``, plus ``<case_id>_all.zip`` with
  the masks, answer.json and ``<case_id>_measurements.csv``.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from vlseg import vocab
from vlseg.fileio import atomic_path
from vlseg.numbers import fmt_number, fmt_pct, round_ml, round_mm
from vlseg.reasoning.answer import possibly_none


def interval_note(confidence: float | None) -> str:
    level = _pct(confidence)
    return (f"{level} interval: holds the true volume in {level} of test cases (calibrated on "
            "validation phantoms), centred on the volume; a lower bound of 0 means the region "
            "may be absent" if confidence is not None else "Interval: calibrated volume interval") + "."


def _pct(q: float | None) -> str:
    return "" if q is None else fmt_pct(q)


def safe_case_id(text: str | None, default: str = "case") -> str:
    """A case id usable in file names: letters, digits, '.', '_' and '-' only, at most 64 chars."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text or "")).strip("._-")[:64]
    return s or default


# --------------------------------------------------------------------------- number cells
def fmt_volume(v: Any) -> str:
    return "" if v is None else fmt_number(round_ml(float(v)))


def fmt_pair(pair: Any, fmt=fmt_volume) -> str:
    """[lo, hi] (as the Segmenter writes ranges and intervals) -> "lo–hi" ("" when missing)."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or None in pair:
        return ""
    return f"{fmt(pair[0])}–{fmt(pair[1])}"


def fmt_diameters(t: Mapping[str, Any]) -> str:
    a, b = round_mm(t.get("max_diameter_mm")), round_mm(t.get("perpendicular_diameter_mm"))
    if a is None:
        return ""
    return fmt_number(a) + ("" if b is None else f" × {fmt_number(b)}")


def location_words(t: Mapping[str, Any]) -> str:
    """'left hemisphere, crosses the midline; temporal, limbic; minor extension into frontal':
    the lobes ranked as in the answer text (involved first, then those only extended into)."""
    if not t.get("present", True):
        return "not found"
    parts = []
    side = t.get("hemisphere")
    if side in ("left", "right"):
        parts.append(f"{side} hemisphere")
    elif side:
        parts.append(f"{side}".replace("_", " "))
    if t.get("crosses_midline"):
        parts.append("crosses the midline")
    where = ", ".join(parts)
    involved = [str(x) for x in (t.get("lobes_involved", t.get("lobes")) or [])]
    minor = [str(x) for x in (t.get("lobes_minor") or [])]
    for named in (", ".join(involved), "minor extension into " + ", ".join(minor) if minor else ""):
        if named:
            where = f"{where}; {named}" if where else named
    return where


def confidence_of(answer: Mapping[str, Any]) -> float | None:
    """The intervals' level: answer.json's ``confidence`` (a float), None when absent."""
    c = answer.get("confidence")
    try:
        return None if c is None else float(c)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Column:
    header: str
    tip: str
    csv: str  # CSV header (plain, unit in brackets)


def lesions_tip(targets: Sequence[Mapping[str, Any]]) -> str:
    """The Lesions column's tip, with the targets' own merge distance (answer.json's
    ``lesion_merge_mm``)."""
    merge = sorted({float(t["lesion_merge_mm"]) for t in targets if t.get("lesion_merge_mm") is not None})
    if not merge:
        return "Separate lesions"
    return f"Separate lesions (pieces within {' / '.join(fmt_number(m) for m in merge)} mm count as one)"


def columns(with_interval: bool, confidence: float | None,
            targets: Sequence[Mapping[str, Any]] = ()) -> list[Column]:
    cols = [
        Column("Region", "Tumor sub-region (colour as in the pictures)", "region"),
        Column("Volume (mL)", "Voxels in the mask × voxel volume", "volume_ml"),
    ]
    if with_interval:
        level = _pct(confidence)
        cols.append(Column(f"{level} CI (mL)".strip(), interval_note(confidence),
                           f"interval_ml{'_' + str(int(round(confidence * 100))) if confidence else ''}"))
    cols += [
        Column("Lesions", lesions_tip(targets), "lesions"),
        Column("Size (mm)", "Longest axial diameter × the longest diameter perpendicular to it (RANO)",
               "diameters_mm"),
        Column("Location", "Side of the brain and the lobes it involves (atlas registration)", "location"),
    ]
    return cols


def rows(targets: Sequence[Mapping[str, Any]], with_interval: bool) -> list[list[str]]:
    out = []
    for t in targets:
        code = str(t.get("concept", ""))
        row = [code, fmt_volume(t.get("volume_ml") if t.get("present", True) else 0.0)]
        if with_interval:
            iv = t.get("volume_ml_interval")
            row.append(fmt_pair(iv) + (" (possibly none)" if iv and possibly_none(iv) else ""))
        n = t.get("n_lesions")
        row += ["" if n is None else str(n), fmt_diameters(t), location_words(t)]
        out.append(row)
    return out


def has_interval(targets: Sequence[Mapping[str, Any]]) -> bool:
    return any("volume_ml_interval" in t for t in targets)


def table_html(answer: Mapping[str, Any]) -> str:
    """The measurements of one answer as an HTML table with a footnote ('' when no targets)."""
    targets = answer.get("targets") or []
    if not targets:
        return ""
    with_iv = has_interval(targets)
    conf = confidence_of(answer)
    cols = columns(with_iv, conf, targets)
    colors = vocab.colors()
    head = "".join(f'<th title="{html.escape(c.tip)}">{_header_html(c.header)}'
                   + ("<sup>‡</sup>" if "CI" in c.header else "") + "</th>" for c in cols)
    body = []
    for t, r in zip(targets, rows(targets, with_iv)):
        code = r[0]
        rgb = colors.get(code, (128, 128, 128))
        name = vocab.names().get(code, "")
        region = (f'<span class="swatch" style="background: rgb{tuple(rgb)}"></span>'
                  f'<b>{html.escape(code)}</b> <span class="rname">{html.escape(name)}</span>')
        cells = [region] + [html.escape(v) for v in r[1:]]
        cls = "" if t.get("present", True) else ' class="absent"'
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = []
    if with_iv:
        notes.append(f"‡ {interval_note(conf)}")
    notes.append("Numbers as in answer.json; volumes rounded to 0.1 mL (0.01 mL below 1 mL).")
    return ('<div class="vl-table"><table><thead><tr>' + head + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>"
            + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes) + "</div>")


def comparison_table_html(doc: Mapping[str, Any]) -> str:
    """A comparison (comparison.json) as an HTML table: per region the volume at each time point
    and the change with its interval, then the SPD and the RANO category ('' when no regions)."""
    regions = doc.get("regions") or {}
    if not regions:
        return ""
    conf = (doc.get("calibration") or {}).get("confidence")
    level = f"{_pct(conf)} " if conf else ""
    colors = vocab.colors()
    head = ("<th>Region</th><th>Baseline (mL)</th><th>Follow-up (mL)</th><th>Change</th>"
            f"<th>{html.escape(level)}interval<sup>‡</sup></th>")
    body = []
    for code, r in regions.items():
        rgb = colors.get(code, (128, 128, 128))
        region = (f'<span class="swatch" style="background: rgb{tuple(rgb)}"></span>'
                  f'<b>{html.escape(code)}</b> <span class="rname">{html.escape(str(r.get("name", "")))}</span>')
        pct, iv = r.get("change_pct"), r.get("change_pct_interval")
        dv = r.get("change_ml")
        change = ("—" if dv is None else ("+" if dv > 0 else "") + f"{fmt_volume(dv)} mL"
                  + ("" if pct is None else f" ({pct:+.0f} %)"))
        interval = ("—" if not iv else
                    f"{iv[0]:+.0f} to " + ("no upper bound" if iv[1] is None else f"{iv[1]:+.0f} %"))
        cells = [region, fmt_volume(r.get("baseline_ml")), fmt_volume(r.get("followup_ml")),
                 html.escape(change), html.escape(interval)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    spd = doc.get("spd_mm2") or {}
    notes = []
    if spd.get("baseline") is not None and spd.get("followup") is not None:
        notes.append(f"SPD (RANO 2.0, measurable enhancing lesions): {fmt_number(spd['baseline'])} → "
                     f"{fmt_number(spd['followup'])} mm²")
    if doc.get("rano_category"):
        notes.append(f"RANO imaging category: {doc['rano_category']} — {doc.get('rano_basis', '')}")
    notes.append("‡ change in percent of the baseline volume, from both scans' calibrated volume intervals")
    return ('<div class="vl-table"><table><thead><tr>' + head + "</tr></thead><tbody>" + "".join(body)
            + "</tbody></table>" + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes) + "</div>")


def _header_html(header: str) -> str:
    """'Volume (mL)' -> 'Volume' over '(mL)': narrow columns, never a break inside a word."""
    word, sep, unit = header.partition(" (")
    return html.escape(word) + (f"<br><span class=\"unit\">({html.escape(unit)}</span>" if sep else "")


def measurements_csv(answer: Mapping[str, Any]) -> str:
    """The table as CSV: one row per target, plain numbers (no unit text in the cells)."""
    targets = answer.get("targets") or []
    with_iv = has_interval(targets)
    cols = columns(with_iv, confidence_of(answer), targets)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["concept", "name"] + [c.csv for c in cols[1:]])
    for t, r in zip(targets, rows(targets, with_iv)):
        w.writerow([r[0], vocab.names().get(r[0], "")] + [v.replace("–", " to ") for v in r[1:]])
    return buf.getvalue()


# --------------------------------------------------------------------------- downloads
def named_downloads(answer_dir: Path, answer: Mapping[str, Any], case_id: str) -> list[Path]:
    """``<case_id>_<concept>.nii.gz`` per mask (and its ``_probability`` and ``_uncertainty``
    maps where the answer saved them) plus ``<case_id>_all.zip``, in ``answer_dir/download``.

    The masks are hard links to (or copies of) the files ``Answer.save`` wrote; the zip holds the
    masks, answer.json (its ``mask`` entries renamed to match) and the measurements CSV.
    """
    if not answer.get("targets"):
        return []  # nothing measured: nothing to download
    cid = safe_case_id(case_id)
    out = Path(answer_dir) / "download"
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    data = json.loads(json.dumps(answer))  # deep copy
    for t in data.get("targets") or []:
        src = Path(answer_dir) / str(t.get("mask", ""))
        if not t.get("mask") or not src.is_file():
            continue
        dst = out / f"{cid}_{safe_case_id(t['concept'])}.nii.gz"
        _link_or_copy(src, dst)
        t["mask"] = dst.name
        files.append(dst)
        for kind in ("probability", "uncertainty"):  # saved with the answer's probability maps
            extra = Path(answer_dir) / f"{t['concept']}_{kind}.nii.gz"
            if extra.is_file():
                files.append(out / f"{cid}_{safe_case_id(t['concept'])}_{kind}.nii.gz")
                _link_or_copy(extra, files[-1])

    for key in ("dicom_seg", "dicom_probability_seg"):  # a DICOM study's DICOM-SEG (and fractional SEG)
        seg = data.get(key) if isinstance(data.get(key), dict) else None
        if seg and (Path(answer_dir) / str(seg.get("file", ""))).is_file():
            dst = out / f"{cid}_{safe_case_id(str(seg['file']))}"
            _link_or_copy(Path(answer_dir) / str(seg["file"]), dst)
            seg["file"] = dst.name
            files.append(dst)
    zpath = out / f"{cid}_all.zip"
    with atomic_path(zpath) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for f in files:  # already gzip-compressed: stored as they are
                z.write(f, arcname=f.name, compress_type=zipfile.ZIP_STORED)
            z.writestr(f"{cid}_answer.json", json.dumps(data, indent=2))
            z.writestr(f"{cid}_measurements.csv", measurements_csv(data))
    return files + [zpath]


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


__all__ = ["fmt_volume", "location_words", "measurements_csv", "named_downloads",
           "safe_case_id", "table_html"]
