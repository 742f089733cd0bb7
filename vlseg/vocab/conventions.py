"""Label conventions: how a dataset names its files and numbers its labels.

A :class:`LabelConvention` is the one record of a convention (BraTS 2021, 2023, 2024
post-treatment, MSD Task01): file-layout detection (``vlseg.io.classify``/``layout``), training
sources, ``vlseg evaluate --gt-convention/--pred-convention``, label I/O and DICOM-SEG all read
it from here. The label *values* live on the concepts (``Concept.labels[convention]``), so a
concept added later carries its own value in each convention it belongs to.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LabelConvention:
    """One label convention and the file naming that goes with it."""

    name: str                                   # "brats2023": the key concepts' ``labels`` use
    title: str                                  # one line for help texts
    # File naming: ``<case><separator><token>.nii.gz``, token per canonical sequence + label.
    separator: str = ""                         # "-" (BraTS 2023+), "_" (BraTS 2021), "" none
    sequence_tokens: dict[str, str] = field(default_factory=dict)  # t1n -> "t1n" / "t1"
    label_token: str = "seg"
    # Whether a folder named this way is read in this convention by default (BraTS 2024 is
    # named like 2023 and told apart by its labels, see ``vlseg.io.labels``).
    implied_by_naming: bool = True
    # One 4D image holding these sequences in this order (MSD Task01); () for one file each.
    channels: tuple[str, ...] = ()
    # The data it describes: "pre" (untreated) or "post" (post-treatment) scans.
    timepoint: str = "pre"
    # The challenge's own names of the regions where they differ from vlseg's concept codes
    # (BraTS 2024: NCR is "NETC", ED is "SNFH"); evaluation reports name regions this way.
    region_names: dict[str, str] = field(default_factory=dict)

    def region_name(self, code: str) -> str:
        """The challenge's name of concept ``code`` in this convention (the code if the same)."""
        return self.region_names.get(code, code)

    def __post_init__(self) -> None:
        if not self.name or self.name.lower() != self.name:
            raise ValueError(f"convention name must be lower-case, got {self.name!r}")
        if self.timepoint not in ("pre", "post"):
            raise ValueError(f"convention {self.name}: timepoint must be 'pre' or 'post'")
        if self.separator and not self.sequence_tokens:
            raise ValueError(f"convention {self.name}: a separator needs sequence_tokens")

    @property
    def file_tokens(self) -> frozenset[str]:
        """Every last-name token of its files (sequences and the label map), lower case."""
        if not self.separator:
            return frozenset()
        return frozenset([*(t.lower() for t in self.sequence_tokens.values()), self.label_token])

    def naming_example(self, suffix: str = "") -> str:
        """``*-t1n<suffix>, *-t1c, …`` — the suffix (e.g. ``.nii.gz``) shown on the first name only."""
        names = [f"*{self.separator}{t}" for t in self.sequence_tokens.values()]
        names[0] += suffix
        seqs = ", ".join(names)
        return f"{seqs} (label *{self.separator}{self.label_token})"


_BRATS_NEW = {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"}

BRATS2023 = LabelConvention(
    name="brats2023", title="BraTS 2023 (1 necrotic core, 2 edema, 3 enhancing tumor)",
    separator="-", sequence_tokens=_BRATS_NEW)
BRATS2021 = LabelConvention(
    name="brats2021", title="BraTS 2021 (1 necrotic core, 2 edema, 4 enhancing tumor)",
    separator="_", sequence_tokens={"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"})
MSD = LabelConvention(
    name="msd", title="MSD Task01 (1 edema, 2 non-enhancing tumor, 3 enhancing tumor)",
    channels=("t2f", "t1n", "t1c", "t2w"))
BRATS2024 = LabelConvention(
    name="brats2024", title="BraTS 2024 post-treatment (1 NETC, 2 SNFH, 3 ET, 4 resection cavity)",
    separator="-", sequence_tokens=_BRATS_NEW, implied_by_naming=False, timepoint="post",
    region_names={"NCR": "NETC", "ED": "SNFH"})

# Order: the default first (files named like BraTS 2023 read as 2023 unless told otherwise).
BUNDLED_CONVENTIONS: tuple[LabelConvention, ...] = (BRATS2023, BRATS2021, MSD, BRATS2024)
