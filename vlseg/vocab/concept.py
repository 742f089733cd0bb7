"""The :class:`Concept` record (see ``vlseg.vocab``)."""
from __future__ import annotations

from dataclasses import dataclass, field

RGB = tuple[int, int, int]
# A DICOM coded concept: (code value, coding scheme designator, code meaning).
DicomCode = tuple[str, str, str]
MORPHOLOGICALLY_ABNORMAL: DicomCode = ("49755003", "SCT", "Morphologically Abnormal Structure")
LESION: DicomCode = ("52988006", "SCT", "Lesion")
# What a concept is to the relations between sub-regions (vlseg.reasoning.relations): the
# necrosis an enhancing rim surrounds, the rim, the edema whose extent beyond the core is
# measured, the core it is measured from.
RELATION_ROLES: tuple[str, ...] = ("necrosis", "enhancing", "edema", "core")


@dataclass(frozen=True)
class Concept:
    """One region vlseg can segment. Base (disjoint) classes have ``parts == (code,)``."""

    code: str                               # short code used in JSON, file names and the UI
    name: str                               # display name ("necrotic tumor core")
    parts: tuple[str, ...]                  # disjoint classes making it up
    color: RGB                              # display colour, RGB 0-255
    labels: dict[str, int] = field(default_factory=dict)  # convention -> label value (base only)
    prompt: str | None = None               # canonical model prompt; defaults to ``name``
    synonyms: tuple[str, ...] = ()          # training terms (abbreviations first)
    heldout_synonyms: tuple[str, ...] = ()  # validation-only terms (never trained on)
    phrases: tuple[str, ...] = ()           # extra parser phrasings (lay wording)
    keywords: tuple[str, ...] = ()          # regexes (on normalized text) that settle the concept
    # Capitalised-only abbreviations ("ET" yes, "et" no) -> the phrase they stand for.
    abbreviations: tuple[tuple[str, str], ...] = ()
    tier: int = 0                           # keyword precedence: lower tiers win (0 = most specific)
    ratio_whole: str | None = None          # default whole of "what fraction is <this>?"
    # Decided directly from its own probability in the nested labelling (the BraTS regions
    # WT ⊃ TC ⊃ ET); the other base classes are differences of regions (vlseg.reasoning.labelling).
    region: bool = False
    # DICOM-SEG segment description: segmented property category and type (SNOMED CT codes).
    dicom_category: DicomCode = MORPHOLOGICALLY_ABNORMAL
    dicom_type: DicomCode = LESION
    relation_role: str | None = None        # one of RELATION_ROLES (None: no part in relations)
    # Name of the ratio "this / ratio_whole" in answer.json and calibration ("necrotic_fraction_
    # of_core"); None: the ratio is still answered, but is not reported or calibrated by name.
    ratio_name: str | None = None
    # The scans it exists on: None for any scan, "post" for post-treatment scans only (a
    # resection cavity); on other scans it is absent by definition (a true negative in training).
    timepoint: str | None = None
    # Its name on post-treatment scans where that differs (BraTS 2024: "non-enhancing tumor core").
    post_name: str | None = None

    def __post_init__(self) -> None:
        if not self.code or not self.code.isalnum() or self.code.upper() != self.code:
            raise ValueError(f"concept code must be upper-case letters/digits, got {self.code!r}")
        if not self.parts:
            raise ValueError(f"concept {self.code}: parts must name at least one class")
        if len(self.color) != 3 or not all(0 <= int(v) <= 255 for v in self.color):
            raise ValueError(f"concept {self.code}: color must be three values in 0..255")
        if self.relation_role is not None and self.relation_role not in RELATION_ROLES:
            raise ValueError(f"concept {self.code}: relation_role must be one of {RELATION_ROLES}")
        for name in ("dicom_category", "dicom_type"):
            code = getattr(self, name)
            if len(code) != 3 or not all(isinstance(v, str) and v for v in code):
                raise ValueError(f"concept {self.code}: {name} must be (code value, scheme, meaning)")
        if self.ratio_name is not None and self.ratio_whole is None:
            raise ValueError(f"concept {self.code}: ratio_name needs a ratio_whole")
        if self.timepoint not in (None, "pre", "post"):
            raise ValueError(f"concept {self.code}: timepoint must be None, 'pre' or 'post'")
        if self.labels and self.parts != (self.code,):
            raise ValueError(f"concept {self.code}: only base classes carry label values")

    @property
    def is_base(self) -> bool:
        return self.parts == (self.code,)

    @property
    def canonical_prompt(self) -> str:
        return self.prompt or self.name

    @property
    def hex_color(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)
