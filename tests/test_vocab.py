"""The vocabulary is the one home of concepts: a concept registered there reaches the parser,
the training prompt sampler, the answer text and the renderers with no other edit."""
from __future__ import annotations

import numpy as np
import pytest

from vlseg import picture, vocab
from vlseg.language import intents
from vlseg.vocab.labels import concepts_to_labels, labels_to_concepts

CONCEPTS = vocab.PRE_TREATMENT_CODES
LABEL_CONVENTIONS = vocab.label_conventions()

TOY = vocab.Concept(
    code="CAL", name="calcification", parts=("CAL",), color=(250, 250, 250),
    labels={"brats2024": 5},
    synonyms=("CAL", "calcification", "calcified focus", "tumor calcification"),
    heldout_synonyms=("chalky spot",),
    phrases=("the calcified part", "calcium deposits"),
    keywords=(r"\bcalcif\w*",),
    abbreviations=(("CAL", "calcification"),),
    tier=0,
)


@pytest.fixture
def toy():
    vocab.register(TOY)
    try:
        yield TOY
    finally:
        vocab.unregister("CAL")


def test_bundled_concepts_and_conventions():
    assert CONCEPTS == ("NCR", "ED", "ET", "TC", "WT")
    assert vocab.codes() == (*CONCEPTS, "RC") == vocab.TUMOR_CODES
    assert vocab.all_regions() == ("NCR", "ED", "ET") and vocab.all_regions("post") == ("NCR", "ED", "ET", "RC")
    assert LABEL_CONVENTIONS["brats2024"] == {"NCR": 1, "ED": 2, "ET": 3, "RC": 4}
    rc = vocab.concept("RC")
    assert rc.timepoint == "post" and rc.dicom_type[1].startswith("99") and "RC" not in vocab.concept("WT").parts
    assert vocab.concept("TC").parts == ("NCR", "ET") and vocab.concept("WT").parts == ("NCR", "ED", "ET")
    assert LABEL_CONVENTIONS["brats2021"] == {"NCR": 1, "ED": 2, "ET": 4}
    assert LABEL_CONVENTIONS["brats2023"] == {"NCR": 1, "ED": 2, "ET": 3}
    assert LABEL_CONVENTIONS["msd"] == {"NCR": 2, "ED": 1, "ET": 3}
    with pytest.raises(ValueError, match="unknown concept 'XX'"):
        vocab.concept("XX")
    with pytest.raises(ValueError, match="unknown label convention"):
        vocab.label_convention("brats1999")


def test_label_round_trip_every_convention():
    labels = np.array([0, 1, 2, 3, 4, 0], dtype=np.uint8)
    for conv in ("brats2021", "brats2023", "msd"):
        values = vocab.label_convention(conv)
        lab = np.array([0, values["NCR"], values["ED"], values["ET"], 0], dtype=np.uint8)
        masks = labels_to_concepts(lab, conv)
        assert masks["TC"].tolist() == [False, True, False, True, False]
        assert masks["WT"].tolist() == [False, True, True, True, False]
        assert concepts_to_labels(masks, conv).tolist() == lab.tolist()
    # Composites alone: TC fills as NCR, WT as ED, inner classes win.
    m = concepts_to_labels({"WT": labels > 0, "TC": labels >= 3, "ET": labels == 4}, "brats2023")
    assert m.tolist() == [0, 2, 2, 1, 3, 0]


def test_registration_is_validated():
    with pytest.raises(ValueError, match="already registered"):
        vocab.register(vocab.concept("ET"))
    with pytest.raises(ValueError, match="unknown part"):
        vocab.register(vocab.Concept(code="XT", name="x", parts=("NCR", "ZZ"), color=(1, 2, 3)))
    with pytest.raises(ValueError, match="upper-case"):
        vocab.Concept(code="bad code", name="x", parts=("X",), color=(1, 2, 3))
    with pytest.raises(ValueError, match="is a part of"):
        vocab.unregister("NCR")


def test_toy_concept_reaches_parser(toy):
    from vlseg.language import QueryParser

    parser = QueryParser()
    assert parser.parse("segment the calcification").concepts == ("CAL",)
    assert parser.parse("show CAL and the edema").concepts == ("CAL", "ED")
    assert "calcification (CAL)" in intents.capabilities_text()


def test_post_treatment_names_are_understood():
    from vlseg.language import QueryParser

    parser = QueryParser()
    for q, want in [("segment the resection cavity", ("RC",)), ("show the surgical cavity", ("RC",)),
                    ("segment the post-operative cavity", ("RC",)), ("segment the cavity", ("RC",)),
                    ("show where the tumor was removed", ("RC",)), ("segment the NETC", ("NCR",)),
                    ("segment the non-enhancing tumor core", ("NCR",)), ("segment the SNFH", ("ED",)),
                    ("show the FLAIR signal abnormality", ("ED",)), ("show RC and the edema", ("RC", "ED"))]:
        p = parser.parse(q)
        assert not p.refused and p.concepts == want, q
    for q in ("should we resect it?", "is surgery needed?", "segment the liver"):
        assert parser.parse(q).refused, q


def test_toy_concept_reaches_prompt_sampler(toy):
    from vlseg.training.prompts import canonical_prompt, concept_phrases, heldout_prompts, sample_prompt

    rng = np.random.default_rng(0)
    drawn = {sample_prompt("CAL", rng) for _ in range(50)}
    assert "calcification" in drawn and any("calcified focus" in p for p in drawn)
    assert canonical_prompt("CAL") == "calcification"
    assert "chalky spot" in concept_phrases(include_heldout=True)["CAL"]
    assert any("chalky spot" in p for p in heldout_prompts("CAL"))


def test_toy_concept_reaches_renderers(toy, tmp_path):
    from vlseg.app import render

    bg = np.full((8, 8), 100, np.uint8)
    m = np.zeros((8, 8), bool)
    m[2:4, 2:4] = True
    rgb = picture.blend(bg, {"CAL": m})
    expected = (1 - picture.ALPHA) * 100 + picture.ALPHA * np.array(TOY.color)
    assert np.allclose(rgb[2, 2], expected, atol=1) and np.all(rgb[0, 0] == 100)
    assert picture.legend_label("CAL", 2.5) == "CAL calcification (2.5 mL)"
    vol = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32) + 1
    masks = {"CAL": np.zeros(vol.shape, np.uint8)}
    masks["CAL"][4:8, 4:8, 3:6] = 1
    out = render.render_overlay({"t1c": vol}, masks, (1, 1, 1), tmp_path / "cal.png")
    from PIL import Image

    im = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert (np.abs(im - np.array(TOY.color)).sum(-1) < 30).sum() > 20  # legend patch colour


def test_every_picture_uses_one_convention():
    vol = np.zeros((4, 5, 6))
    vol[3, 4, 5] = 1  # patient's right, anterior, superior corner
    axial = picture.display_plane(vol, 2, 5)
    assert axial[0, 0] == 1            # right on the viewer's left, anterior at the top
    coronal = picture.display_plane(vol, 1, 4)
    assert coronal[0, 0] == 1          # right on the left, superior at the top
    sagittal = picture.display_plane(vol, 0, 3)
    assert sagittal[0, 0] == 1         # anterior on the left, superior at the top
    assert picture.side_marks(2) == ("R", "L") and picture.side_marks(0) == ("A", "P")
    assert picture.CONVENTION == "radiological"
