"""The five brain-tumor concepts vlseg ships with (BraTS vocabulary, see DESIGN.md).

    NCR  necrotic / non-enhancing tumor core       ED  peritumoral edema (SNFH)
    ET   enhancing tumor                            TC  tumor core  = NCR ∪ ET
    WT   whole tumor = NCR ∪ ED ∪ ET

    RC   resection cavity (post-treatment scans; outside the tumor regions: TC and WT exclude it)

Label values: BraTS 2021 (4 = ET), BraTS 2023 and 2024 (3 = ET; 2024 labels 1 NETC, 2 SNFH and
adds 4 = RC), MSD Task01 (1 edema, 2 non-enhancing tumor, 3 enhancing tumor).
"""
from __future__ import annotations

from vlseg.vocab.concept import Concept, DicomCode

# SNOMED CT segmented property types (the codes pydicom's ``codes.SCT`` dictionary carries).
NECROSIS: DicomCode = ("6574001", "SCT", "Necrosis")
EDEMA: DicomCode = ("79654002", "SCT", "Edema")
NEOPLASM: DicomCode = ("108369006", "SCT", "Neoplasm")
# No SNOMED CT concept in pydicom's code dictionary names a surgical cavity, so the cavity gets a
# local code: a coding scheme designator starting "99" is private (DICOM PS3.16 §8).
RESECTION_CAVITY: DicomCode = ("VLSEG-RC", "99VLSEG", "Resection cavity")

NCR = Concept(
    code="NCR", name="necrotic tumor core", parts=("NCR",), color=(230, 40, 40),
    labels={"brats2023": 1, "brats2021": 1, "brats2024": 1, "msd": 2},
    synonyms=(
        "NCR", "necrotic core", "necrotic tumor core", "necrotic tumour core", "necrosis",
        "necrotic tissue", "necrotic region", "non-enhancing tumor core", "non-enhancing core", "NETC",
        "necrotic and non-enhancing tumor", "NCR/NET", "NET", "dead tissue in the tumor",
        "necrotic center", "central necrosis",
    ),
    heldout_synonyms=("necrotic part", "dead tumor tissue", "necrotic component"),
    phrases=(
        "necrotic tumor", "necrotic part", "dead tumor tissue", "the dark center of the tumor",
        "cystic necrotic cavity", "necrotic component", "tumor necrosis", "nonenhancing core",
    ),
    keywords=(r"\bnon[- ]?enhanc\w*", r"\bnecro\w*", r"\bdead tissue\b", r"\bncr\b"),
    abbreviations=(("NCR", "necrotic core"), ("NET", "necrotic core"), ("NETC", "necrotic core")),
    tier=0, ratio_whole="TC", ratio_name="necrotic_fraction_of_core",
    dicom_type=NECROSIS, relation_role="necrosis", post_name="non-enhancing tumor core",
)
ED = Concept(
    code="ED", name="peritumoral edema", parts=("ED",), color=(60, 200, 60),
    labels={"brats2023": 2, "brats2021": 2, "brats2024": 2, "msd": 1},
    synonyms=(
        "ED", "edema", "oedema", "peritumoral edema", "peritumoral oedema", "perilesional edema",
        "vasogenic edema", "swelling", "SNFH", "surrounding non-enhancing FLAIR hyperintensity",
        "FLAIR hyperintensity", "T2 hyperintensity", "FLAIR signal abnormality",
        "brain swelling around the tumor", "edematous tissue", "invaded tissue",
    ),
    heldout_synonyms=("oedematous area", "fluid around the tumor", "peritumoural swelling"),
    phrases=(
        "brain swelling", "swelling around the tumor", "surrounding edema", "fluid around the tumor",
        "infiltrative edema", "the bright area on flair", "white matter swelling", "edema region",
    ),
    keywords=(r"\bedema\w*", r"\bswell\w*", r"\bswollen\b", r"\bflair hyperintens\w*",
              r"\bhyperintens\w*( \w+)? on (t2 |t2-)?(flair|t2)\b", r"\bt2 hyperintens\w*",
              r"\bperitumou?ral\b", r"\bperilesional\b", r"\bvasogenic\b", r"\bsnfh\b",
              r"\bflair (signal )?abnormalit(y|ies)\b"),
    abbreviations=(("ED", "edema"), ("SNFH", "snfh")),
    tier=0, ratio_whole="WT", ratio_name="edema_fraction_of_whole",
    dicom_type=EDEMA, relation_role="edema", post_name="surrounding FLAIR signal abnormality",
)
ET = Concept(
    code="ET", name="enhancing tumor", parts=("ET",), color=(255, 230, 0),
    labels={"brats2023": 3, "brats2021": 4, "brats2024": 3, "msd": 3},
    synonyms=(
        "ET", "enhancing tumor", "enhancing tumour", "enhancing rim", "contrast enhancing tumor",
        "contrast-enhancing tumor", "enhancement", "gadolinium enhancing tumor", "enhancing lesion",
        "enhancing part of the tumor", "active tumor", "rim enhancement", "enhancing tissue",
    ),
    heldout_synonyms=("enhancing component", "contrast enhancement", "part that lights up with contrast"),
    phrases=(
        "enhancing part", "ring enhancement", "active tumor", "enhancing region", "enhancing component",
        "the part that lights up with contrast", "bright rim on t1 contrast", "viable enhancing tumor",
    ),
    keywords=(r"\benhanc\w*", r"\bgadolinium\b"),
    abbreviations=(("ET", "enhancing tumor"),),
    tier=0, ratio_whole="TC", region=True, ratio_name="enhancing_fraction_of_core",
    dicom_type=NEOPLASM, relation_role="enhancing",
)
TC = Concept(
    code="TC", name="tumor core", parts=("NCR", "ET"), color=(255, 140, 0),
    synonyms=(
        "TC", "tumor core", "tumour core", "core of the tumor", "solid tumor", "bulk tumor",
        "necrosis and enhancing tumor", "gross tumor core", "tumor core region", "solid core",
    ),
    heldout_synonyms=("tumour core region", "core tumor", "solid tumor core"),
    phrases=(
        "core", "the core of the tumor", "solid tumor core", "core region", "tumor without the edema",
        "solid part of the tumor", "gross tumor",
    ),
    keywords=(r"\bcore\b", r"\btc\b"),
    abbreviations=(("TC", "tumor core"),),
    tier=1, ratio_whole="WT", region=True, dicom_type=NEOPLASM, relation_role="core",
)
WT = Concept(
    code="WT", name="whole tumor", parts=("NCR", "ED", "ET"), color=(0, 170, 255),
    synonyms=(
        "WT", "whole tumor", "whole tumour", "tumor", "tumour", "entire tumor", "complete tumor",
        "lesion", "mass", "glioma", "FLAIR abnormality",
        "tumor with edema", "abnormal region", "full lesion extent",
    ),
    heldout_synonyms=("total tumor", "whole lesion", "entire abnormality"),
    phrases=(
        "brain tumor", "the whole lesion", "the abnormality", "tumor including edema", "tumor region",
        "neoplasm", "cancer", "the growth", "all tumor tissue", "brain lesion",
        "the tumor and its edema",
    ),
    keywords=(r"\btumou?rs?\b", r"\blesions?\b", r"\bmass(es)?\b", r"\bgliomas?\b",
              r"\bglioblastomas?\b", r"\bneoplasms?\b", r"\bcancers?\b", r"\bwt\b", r"\bgrowths?\b",
              r"\babnormalit(y|ies)\b"),
    abbreviations=(("WT", "whole tumor"),),
    tier=2, region=True, dicom_type=NEOPLASM,
)

RC = Concept(
    code="RC", name="resection cavity", parts=("RC",), color=(170, 60, 255),
    labels={"brats2024": 4},
    synonyms=(
        "resection cavity", "surgical cavity", "post-operative cavity", "postoperative cavity",
        "the cavity", "resection bed", "surgical bed", "operative cavity", "cavity left by surgery",
        "where the tumor was removed", "where the tumor was resected",
    ),
    heldout_synonyms=("surgical resection cavity", "post-surgical cavity", "tumor bed"),
    phrases=(
        "the hole left by surgery", "cavity after surgery", "resected area", "where they operated",
        "the operated area", "the surgical site",
    ),
    # Not a bare "cavity": "cystic necrotic cavity" is necrosis.
    keywords=(r"\bresect\w*( \w+)? (cavit\w*|bed|area|site)\b", r"\b(post-?operative|post-?surgical|"
              r"surgical|operative) (cavit\w*|bed|site)\b",               r"\b(tumor|tumour|it) was (removed|resected|operated)\b",
              r"\b(hole|cavity|gap|space) (left )?(by|after|from) (the )?(surgery|operation|resection)\b"),
    abbreviations=(("RC", "resection cavity"),),
    tier=0, dicom_type=RESECTION_CAVITY, timepoint="post",
)

# Registration order is the order of concepts everywhere (JSON, tables); a model's checkpoint
# names the concepts it segments and their order (vlseg.model.config.ModelConfig.concepts).
TUMOR_CONCEPTS: tuple[Concept, ...] = (NCR, ED, ET, TC, WT, RC)
TUMOR_CODES: tuple[str, ...] = tuple(c.code for c in TUMOR_CONCEPTS)
# What a model segments when its checkpoint does not say: the untreated-tumor concepts every
# checkpoint before the post-treatment concepts was trained on.
PRE_TREATMENT_CODES: tuple[str, ...] = tuple(c.code for c in TUMOR_CONCEPTS if c.timepoint != "post")
