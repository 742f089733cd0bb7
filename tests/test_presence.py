"""Presence: a calibrated "is it there at all?" per concept, and the gate that makes a tumor-free
brain an answer of 0 mL instead of a mask nobody believes (issue 26)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vlseg.reasoning.presence import (PRESENCE_FILE, Logistic, Presence, features, fit_logistic, sequence_key)

AFFINE_2MM = np.diag([2.0, 2.0, 2.0, 1.0])


def _blob(shape=(20, 20, 20), box=(slice(5, 10),) * 3, p_in=0.95):
    prob = np.zeros(shape, np.float32)
    prob[box] = p_in
    return prob, prob >= 0.5


def test_features_summarise_volume_confidence_and_confident_core():
    prob, mask = _blob(p_in=0.95)
    f = features(prob, mask, AFFINE_2MM)
    ml = 125 * 8 / 1000.0
    assert f == pytest.approx([np.log1p(ml), 0.95, np.log1p(ml), 0.0], rel=1e-5)
    prob2, mask2 = _blob(p_in=0.6)
    f2 = features(prob2, mask2, AFFINE_2MM)
    assert f2[1] == pytest.approx(0.6) and f2[2] == 0.0            # no confident core
    empty = features(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool), AFFINE_2MM)
    assert empty.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert features(prob, mask, AFFINE_2MM, 0.3)[3] == pytest.approx(0.3)


def test_fit_separates_confident_lesions_from_fringes():
    rng = np.random.default_rng(0)
    present = np.column_stack([rng.uniform(1, 5, 50), rng.uniform(0.85, 0.99, 50), rng.uniform(0.5, 4, 50),
                               np.zeros(50)])
    absent = np.column_stack([rng.uniform(0, 3, 50), rng.uniform(0.5, 0.75, 50), rng.uniform(0, 0.3, 50),
                              np.zeros(50)])
    model = fit_logistic(np.vstack([present, absent]), np.r_[np.ones(50), np.zeros(50)])
    assert model.probability(np.array([3.0, 0.95, 3.0, 0.0])) > 0.9
    assert model.probability(np.array([2.0, 0.65, 0.0, 0.0])) < 0.1
    with pytest.raises(ValueError, match="with and without"):
        fit_logistic(present, np.ones(50))


def _presence(wt_bias: float, rc_bias: float | None = None) -> Presence:
    zero = (0.0,) * 4
    models = {"WT": Logistic(zero, wt_bias), "TC": Logistic(zero, wt_bias)}  # the core follows the tumor
    if rc_bias is not None:
        models["RC"] = Logistic(zero, rc_bias)
    return Presence(models=models, checkpoint_sha256="x")


def _probs(shape=(24, 24, 24)):
    """A tumor (WT ⊃ TC ⊃ ET) at one place and a cavity-like blob of 8 mL next to it."""
    probs = {c: np.zeros(shape, np.float32) for c in ("WT", "TC", "ET", "RC")}
    probs["WT"][4:14, 4:14, 4:14] = 0.95
    probs["TC"][6:12, 6:12, 6:12] = 0.95
    probs["ET"][6:12, 6:12, 6:8] = 0.95
    probs["RC"][14:20, 4:14, 4:14] = 0.97
    return probs


def test_absent_whole_tumor_empties_the_whole_chain_but_not_the_cavity():
    _, masks, p = _presence(wt_bias=-5.0).label(_probs(), AFFINE_2MM)
    assert p["WT"] < 0.5 and p["ET"] is None                        # ET has no model: None
    assert not any(masks[c].any() for c in ("WT", "TC", "ET", "NCR", "ED"))
    assert masks["RC"].any()                                        # decided on its own (no model)


def test_present_whole_tumor_keeps_masks_and_absent_cavity_gives_its_voxels_back():
    probs = _probs()
    probs["RC"][8:12, 4:14, 4:14] = 0.99                            # the cavity channel fires on the tumor too
    _, with_rc, _ = Presence.identity().label(probs, AFFINE_2MM)
    assert with_rc["RC"][9, 9, 9] and not with_rc["WT"][9, 9, 9]   # taken from the tumor
    _, masks, p = _presence(wt_bias=5.0, rc_bias=-5.0).label(probs, AFFINE_2MM)
    assert p["WT"] > 0.5 and p["RC"] < 0.5
    assert all(masks[c].any() for c in ("WT", "TC", "ET", "NCR", "ED"))
    assert not masks["RC"].any() and masks["WT"][9, 9, 9]           # given back to the tumor


def test_ruled_out_concepts_are_left_out_of_the_labelling():
    probs = _probs()
    probs["RC"][8:12, 4:14, 4:14] = 0.99
    _, masks, _ = Presence.identity().label(probs, AFFINE_2MM, ruled_out=("RC",))
    assert not masks["RC"].any() and masks["WT"][9, 9, 9] and masks["TC"][9, 9, 9]


def test_presence_is_decided_on_the_evidence_and_the_labelling_on_the_probabilities():
    """A refinement stage's probabilities are labelled, but presence is decided on the first
    stage's (what the presence models were fitted on): a faint first-stage blob that a refiner
    sharpened is still called absent."""
    confident = Logistic((0.0, 20.0, 0.0, 0.0), -15.0)  # present when the mean probability is high
    presence = Presence(models={"WT": confident, "TC": confident}, checkpoint_sha256="x")
    sharp = _probs()
    faint = {c: np.where(q > 0, np.float32(0.55), q) for c, q in sharp.items()}
    _, masks, p = presence.label(sharp, AFFINE_2MM)
    assert p["WT"] > 0.5 and masks["WT"].any()
    _, masks, p = presence.label(sharp, AFFINE_2MM, evidence=faint)
    assert p["WT"] < 0.5 and not masks["WT"].any()
    final, masks, p = presence.label(faint, AFFINE_2MM, evidence=sharp)
    assert p["WT"] > 0.5 and masks["WT"].any()
    assert np.array_equal(final["WT"], faint["WT"])                   # the labelled ones are probs


@pytest.mark.parametrize("tc_bias, kept", [(np.log(0.8 / 0.2), True), (np.log(0.6 / 0.4), False)])
def test_a_plain_core_keeps_a_tumor_whose_whole_tumor_summaries_look_absent(tc_bias, kept):
    """A small ring with little edema: the whole tumor's regression says absent (0.3), the core's
    says present; at P(core) >= CORE_PRESENT_P the tumor is kept and reported present with the
    core's probability, below it the chain is emptied as before."""
    from vlseg.reasoning.presence import CORE_PRESENT_P

    zero = (0.0,) * 4
    presence = Presence(models={"WT": Logistic(zero, float(np.log(0.3 / 0.7))), "TC": Logistic(zero, float(tc_bias))},
                        checkpoint_sha256="x")
    probs = {c: q for c, q in _probs().items() if c != "RC"}
    _, masks, p = presence.label(probs, AFFINE_2MM)
    assert (p["TC"] >= CORE_PRESENT_P) is kept
    assert all(masks[c].any() for c in ("WT", "TC", "ET")) is kept
    assert (p["WT"] >= 0.5) is kept and (p["WT"] == pytest.approx(p["TC"]) if kept else p["WT"] == pytest.approx(0.3))


def test_identity_changes_nothing():
    _, masks, p = Presence.identity().label(_probs(), AFFINE_2MM)
    assert all(v is None for v in p.values()) and all(masks[c].any() for c in ("WT", "TC", "ET", "RC"))


def test_cavity_rival_is_the_enhancing_ring_around_it():
    from vlseg.reasoning.presence import rival_of, shell

    probs = _probs()
    cav = probs["RC"] >= 0.5
    sh = shell(cav, AFFINE_2MM, mm=4.0)
    assert sh.any() and not (sh & cav).any()
    assert rival_of("RC", probs, cav, AFFINE_2MM) == pytest.approx(0.0)      # no ring: a cavity
    probs["ET"][sh] = 0.9                                                   # a full ring: necrosis-like
    assert rival_of("RC", probs, cav, AFFINE_2MM) == pytest.approx(0.9)
    wt = probs["WT"] >= 0.5
    assert rival_of("WT", probs, wt, AFFINE_2MM) == pytest.approx(0.0)


def test_the_models_of_the_case_sequences_decide_and_the_pooled_ones_serve_the_rest(tmp_path):
    pres = _presence(wt_bias=5.0)                                   # pooled: present
    flair = sequence_key(["t2f"])
    pres.models["TC"] = Logistic((0.0,) * 4, 0.0)                   # pooled core: undecided (0.5)
    pres.by_sequences[flair] = {"WT": Logistic((0.0,) * 4, -5.0)}   # FLAIR alone: absent
    assert sequence_key(["t2f", "t1c", "t1c"]) == "t1c+t2f"
    assert pres.model_for("WT", ["t2f"]).bias == -5.0
    assert pres.model_for("TC", ["t2f"]).bias == 0.0                # no TC model for that set: pooled
    assert pres.model_for("WT", ["t1c", "t2f"]).bias == 5.0         # a set not fitted: pooled
    assert pres.model_for("WT").bias == 5.0                         # sequences not given: pooled
    _, masks, p = pres.label(_probs(), AFFINE_2MM, sequences={"t2f": None})
    assert p["WT"] < 0.5 and not masks["WT"].any()
    _, masks, p = pres.label(_probs(), AFFINE_2MM, sequences=["t1n", "t1c", "t2w", "t2f"])
    assert p["WT"] > 0.5 and masks["WT"].any()
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    from vlseg.reasoning.calibration import weights_sha256
    pres.checkpoint_sha256 = weights_sha256(tmp_path)
    pres.save(tmp_path)
    assert Presence.load(tmp_path).by_sequences == pres.by_sequences    # round trip
    data = json.loads((tmp_path / PRESENCE_FILE).read_text())
    data["by_sequences"] = {flair: {"WT": {"weights": [1], "bias": 0}}}
    (tmp_path / PRESENCE_FILE).write_text(json.dumps(data))
    assert "bad model" in Presence.load(tmp_path).problem
    data["by_sequences"] = [1, 2]
    (tmp_path / PRESENCE_FILE).write_text(json.dumps(data))
    assert "by_sequences" in Presence.load(tmp_path).problem


def test_load_checks_file_and_weights(tmp_path):
    assert not Presence.load(tmp_path).calibrated                   # no file: identity, says why
    assert "no presence.json" in Presence.load(tmp_path).problem
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    pres = _presence(1.0)
    pres.save(tmp_path)
    loaded = Presence.load(tmp_path)
    assert not loaded.calibrated and "other weights" in loaded.problem   # sha256 mismatch
    from vlseg.reasoning.calibration import weights_sha256
    pres.checkpoint_sha256 = weights_sha256(tmp_path)
    pres.save(tmp_path)
    loaded = Presence.load(tmp_path)
    assert loaded.calibrated and loaded.models["WT"] == pres.models["WT"]
    (tmp_path / PRESENCE_FILE).write_text(json.dumps({"models": {"WT": {"weights": [1, 2], "bias": 0}}}))
    assert "bad model" in Presence.load(tmp_path).problem
    (tmp_path / PRESENCE_FILE).write_text("{not json")
    assert "not readable JSON" in Presence.load(tmp_path).problem
    assert str(tmp_path.parent) not in Presence.load(tmp_path).problem


def test_predictor_answers_no_tumor_when_the_presence_model_says_so(random_checkpoint, phantom_case_2mm):
    from vlseg.io import load_case
    from vlseg.model import load_model
    from vlseg.predict import Predictor

    model = load_model(str(random_checkpoint))
    case = load_case(phantom_case_2mm)
    pred = Predictor(model, presence=_presence(wt_bias=-5.0))
    pred.set_case(case)
    masks = pred.masks(("WT", "TC", "ET", "NCR", "ED"))
    assert not any(m.any() for m in masks.values())
    assert pred.presence()["WT"] < 0.5
    keep = Predictor(model, presence=_presence(wt_bias=5.0))
    keep.set_case(case)
    assert keep.presence() == {}                                    # nothing labelled yet
    keep.masks(("WT",))
    assert keep.presence()["WT"] > 0.5
    # a checkpoint folder without presence.json: uncalibrated, nothing emptied
    assert not Predictor(model).presence_model.calibrated


def test_tumor_free_answer_says_so_with_zero_volume_and_records_presence(random_checkpoint, phantom_case_2mm,
                                                                        tmp_path):
    import shutil

    from vlseg import Segmenter
    from vlseg.reasoning.calibration import weights_sha256

    folder = tmp_path / "ckpt"
    shutil.copytree(random_checkpoint, folder)
    pres = _presence(wt_bias=-5.0)
    pres.checkpoint_sha256 = weights_sha256(folder)
    pres.save(folder)
    seg = Segmenter.from_pretrained(folder)
    seg.set_case(phantom_case_2mm, timepoint="pre")
    ans = seg.ask("how big is the whole tumor?")
    j = ans.to_json()
    assert j["targets"][0]["volume_ml"] == 0
    assert "no" in ans.text.lower() and "tumor" in ans.text.lower()
    assert j["presence"]["calibrated"] is True and j["presence"]["probability"]["WT"] < 0.5


def test_t1n_alone_is_warned_about():
    from vlseg.io import sequence_warnings

    assert "T1n" in sequence_warnings(["t1n"])[0]
    assert sequence_warnings(["t1n", "t1c"]) == [] and sequence_warnings(["t2f"]) == []
