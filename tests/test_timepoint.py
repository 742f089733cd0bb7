"""Pre- or post-treatment: `pre` never reports a cavity, `auto` reports one from a stated size,
answer.json says what was assumed and why; "all sub-regions" follows the time point."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vlseg.errors import InputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model():
    from vlseg.model import build_model

    torch.manual_seed(0)
    return build_model("tiny")


@pytest.fixture
def make(tiny_model, monkeypatch):
    return lambda cavity_mm, **kw: _segmenter(monkeypatch, tiny_model, cavity_mm, **kw)


def _segmenter(monkeypatch, model, cavity_mm: float, *, with_rc: bool = True, **kw):
    """A `tiny` model (RC in its config when ``with_rc``) whose decoder puts the cavity (p 0.9) on
    a cube of ``cavity_mm`` at the case's centre and a tumor (p 0.9) on a cube beside it."""
    from vlseg import Segmenter
    from vlseg.errors import VlsegError
    from vlseg.model import inference
    from vlseg.reasoning import AtlasLocator

    def no_atlas(*a, **k):  # location is not under test: answer without it, faster
        raise VlsegError("atlas skipped in this test")

    monkeypatch.setattr(AtlasLocator, "fit", classmethod(no_atlas))
    concepts = (*model.config.concepts, "RC") if with_rc else tuple(c for c in model.config.concepts if c != "RC")
    # N4 is not under test
    monkeypatch.setattr(model, "config", dataclasses.replace(model.config, concepts=concepts, bias_correction="none"))
    monkeypatch.setattr(model, "embed_prompts", lambda texts: list(texts))
    seg = Segmenter(model=model, **kw)

    def decode(m, prepared, prompts):
        shape = prepared.input_shape
        ijk = np.indices(shape).reshape(3, -1).T
        world = (ijk @ seg.case.affine[:3, :3].T + seg.case.affine[:3, 3]).reshape(*shape, 3)
        centre = seg.case.affine[:3, :3] @ (np.asarray(shape) / 2) + seg.case.affine[:3, 3]
        d = world - centre
        cavity = np.all(np.abs(d) <= cavity_mm / 2, axis=-1)
        tumor = np.all(np.abs(d - [0, 30, 0]) <= 8, axis=-1)
        by_prompt = {"resection cavity": cavity, "whole tumor": tumor, "tumor core": tumor,
                     "enhancing tumor": np.zeros(shape, bool)}
        return np.stack([np.where(by_prompt.get(p, np.zeros(shape, bool)), 0.9, 0.02).astype(np.float32)
                         for p in prompts])

    monkeypatch.setattr(inference, "decode", decode)
    return seg


def test_auto_finds_a_cavity_and_says_why(phantom_case_2mm, make):
    seg = make(cavity_mm=20.0)
    assert seg.set_case(phantom_case_2mm)["timepoint"] == "auto"
    doc = seg.ask("how big is the resection cavity?").to_json()
    assert doc["timepoint"]["asked"] == "auto" and doc["timepoint"]["assumed"] == "post"
    assert "mL was found" in doc["timepoint"]["reason"]
    (rc,) = doc["targets"]
    assert rc["concept"] == "RC" and rc["present"] and 6.0 < rc["volume_ml"] < 12.0  # a 20 mm cube, 2 mm voxels
    # After surgery "all sub-regions" includes the cavity, and the cavity is not tumor.
    doc = seg.ask("segment all sub-regions").to_json()
    assert [t["concept"] for t in doc["targets"]] == ["NCR", "ED", "ET", "RC"]


def test_auto_without_a_cavity_takes_the_scan_as_untreated(phantom_case_2mm, make):
    seg = make(cavity_mm=6.0)  # 0.2 mL: below the auto minimum
    seg.set_case(phantom_case_2mm)
    doc = seg.ask("segment the cavity").to_json()
    assert doc["timepoint"]["assumed"] == "pre" and "1 mL" in doc["timepoint"]["reason"]
    (rc,) = doc["targets"]
    assert not rc["present"] and rc["volume_ml"] == 0
    assert [t["concept"] for t in seg.ask("segment all sub-regions").to_json()["targets"]] == ["NCR", "ED", "ET"]


def test_pre_never_reports_a_cavity_and_post_always_may(phantom_case_2mm, make):
    seg = make(cavity_mm=20.0, timepoint="pre")
    seg.set_case(phantom_case_2mm)
    ans = seg.ask("segment the resection cavity")
    assert ans.refused and "timepoint=pre" in ans.text and ans.to_json()["timepoint"]["assumed"] == "pre"
    seg.set_timepoint("post")                  # the same encoding, decided again
    doc = seg.ask("segment the resection cavity").to_json()
    assert doc["timepoint"] == {"asked": "post", "assumed": "post",
                                "reason": "the scan was given as post-treatment (timepoint=post)"}
    assert doc["targets"][0]["present"]
    with pytest.raises(InputError, match="timepoint must be one of"):
        seg.set_case(phantom_case_2mm, timepoint="later")


def test_a_model_without_the_cavity_takes_every_scan_as_untreated(phantom_case_2mm, make):
    seg = make(cavity_mm=20.0, with_rc=False)
    seg.set_case(phantom_case_2mm)
    ans = seg.ask("segment the whole tumor")
    assert ans.to_json()["timepoint"]["assumed"] == "pre" and "untreated" in ans.to_json()["timepoint"]["reason"]
    ans = seg.ask("segment the surgical cavity")
    assert ans.refused and "does not segment the resection cavity" in ans.text


def test_after_surgery_the_core_is_named_as_in_brats2024_and_the_cavity_is_left_out(phantom_case_2mm, make):
    seg = make(cavity_mm=20.0, timepoint="post")
    seg.set_case(phantom_case_2mm)
    ans = seg.ask("segment the necrotic core")
    (t,) = ans.to_json()["targets"]
    assert t["concept"] == "NCR" and t["name"] == "non-enhancing tumor core"
    assert "resection cavity is not counted in any tumor region" in ans.text
    assert "Non-enhancing tumor core" in ans.text or "non-enhancing tumor core" in ans.text
