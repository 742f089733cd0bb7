"""Calibration: temperature fit, conformal intervals, loading (JSON only), the bundled file."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

from vlseg import vocab
import pytest

from vlseg.errors import ModelError
from vlseg.reasoning.calibration import (
    CALIBRATION_FILE, Calibration, apply_temperature, conformal_radius, fit_temperature, fraction_keys, logit, sigmoid,
    weights_sha256,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
DEFAULT = Path(__file__).resolve().parent.parent / "vlseg" / "weights" / "default"


def _logits(n: int, seed: int, true_t: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 4.0, n)  # the model's logits
    y = (rng.random(n) < sigmoid(z / true_t)).astype(np.float64)  # truth follows z / T
    return z, y


@pytest.mark.parametrize("true_t", [0.6, 1.0, 2.5])
def test_temperature_fit_recovers_known_temperature(true_t):
    z, y = _logits(200_000, 0, true_t)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.05)


def test_weighted_fit_equals_duplicated_samples():
    z, y = _logits(20_000, 1, 2.0)
    w = np.where(np.arange(z.size) % 2 == 0, 3.0, 1.0)
    dup = np.r_[np.arange(z.size), np.repeat(np.arange(0, z.size, 2), 2)]
    assert fit_temperature(z, y, w) == pytest.approx(fit_temperature(z[dup], y[dup]), rel=1e-4)


def test_temperature_keeps_the_half_threshold():
    p = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    for t in (0.5, 1.7):
        pc = apply_temperature(p, t)
        assert np.array_equal(pc >= 0.5, p >= 0.5)
        assert np.all(np.diff(pc) >= 0)  # monotone
    assert apply_temperature(p, 1.0) is not None and np.array_equal(apply_temperature(p, 1.0), p)
    assert logit(np.array([0.0, 1.0])).tolist() == pytest.approx([-13.8155, 13.8155], abs=1e-3)


def test_conformal_radius_ranks_and_exactness():
    s = np.r_[np.arange(1.0, 11.0), -np.arange(1.0, 10.0)]  # n = 19, |s| = 1..10, 1..9
    assert conformal_radius(s, 0.9) == (9.0, True)   # rank ceil(20 * 0.9) = 18 of |s| sorted
    assert conformal_radius(s, 0.8) == (8.0, True)   # rank 16
    assert conformal_radius(s, 0.96) == (10.0, False)  # rank 20 > n: needs more cases
    with pytest.raises(ValueError):
        conformal_radius(s, 1.0)


@pytest.mark.parametrize("q", [0.8, 0.9, 0.95])
def test_centred_conformal_coverage_on_exchangeable_data(q):
    rng = np.random.default_rng(7)
    trials, n = 4000, 59
    scores = rng.standard_t(3, size=(trials, n + 1)) + 0.3  # heavy-tailed, biased residuals
    hits = []
    for row in scores:
        d, exact = conformal_radius(row[:n], q)
        assert exact
        hits.append(-d <= row[n] <= d)
    cover = float(np.mean(hits))
    assert q - 0.02 <= cover <= q + 1.0 / (n + 1) + 0.02  # ≥ Q, at most Q + 1/(n+1) (+ MC noise)


# ----------------------------------------------------------------------------- synthetic cases
def _ball(r: float, soft: float, shape=(24, 24, 24), centre=(12.0, 12.0, 12.0)) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    d = np.sqrt(((g - np.asarray(centre)[:, None, None, None]) ** 2).sum(0))
    return sigmoid((r - d) / soft).astype(np.float32)


def _case(rng: np.random.Generator) -> tuple[dict, dict]:
    """Nested soft balls: WT ⊃ TC ⊃ ET, NCR = TC − ET, ED = WT − TC (as final_probabilities)."""
    wt = _ball(rng.uniform(6, 10), rng.uniform(0.3, 1.5))
    tc = _ball(rng.uniform(3, 5.5), rng.uniform(0.3, 1.5))
    et = _ball(rng.uniform(1, 2.5), rng.uniform(0.3, 1.0), centre=(12.0, 13.0, 12.0)) * (tc > 0.5)
    probs = {"WT": wt, "TC": tc, "ET": et.astype(np.float32)}
    probs["NCR"] = np.clip(tc - et, 0, 1).astype(np.float32)
    probs["ED"] = np.clip(wt - tc, 0, 1).astype(np.float32)
    masks = {"WT": wt >= 0.5}
    masks["TC"] = masks["WT"] & (tc >= 0.5)
    masks["ET"] = masks["TC"] & (et >= 0.5)
    masks["NCR"], masks["ED"] = masks["TC"] & ~masks["ET"], masks["WT"] & ~masks["TC"]
    return probs, masks


def _fitted(seed: int = 0, n: int = 40) -> Calibration:
    rng = np.random.default_rng(seed)
    temps = {"WT": 1.6, "TC": 1.4, "ET": 1.2, "NCR": 1.5, "ED": 1.8}
    return Calibration(temperatures=temps, calibrated=True).with_scores(
        {c: rng.normal(0.1, 1.0, n) for c in temps}, {r: rng.normal(0.0, 1.0, n) for r in fraction_keys()},
        checkpoint_sha256="0" * 64, fitted_on={"seed": seed})


@pytest.mark.parametrize("cal", [_fitted(), Calibration.identity()], ids=["calibrated", "uncalibrated"])
def test_intervals_widen_with_q_and_hold_the_estimate(cal):
    probs, masks = _case(np.random.default_rng(3))
    prev: dict = {}
    for q in (0.5, 0.8, 0.9, 0.95):
        got = cal.intervals(probs, masks, AFFINE, q)
        for c, (lo, hi) in got["volume_ml_interval"].items():
            v = masks[c].sum() * 0.008
            assert 0.0 <= lo <= v <= hi
            if c in prev:
                assert lo <= prev[c][0] + 1e-9 and hi >= prev[c][1] - 1e-9
            prev[c] = (lo, hi)
        for name, (part, whole, _) in vocab.ratios().items():
            lo, hi = got[f"{name}_interval"]
            r = (masks[part] & masks[whole]).sum() / masks[whole].sum()
            assert 0.0 <= lo <= r <= hi <= 1.0
            if name in prev:
                assert lo <= prev[name][0] + 1e-9 and hi >= prev[name][1] - 1e-9
            prev[name] = (lo, hi)
        for key, (lo, hi) in got["fraction_intervals"].items():  # every PART/WHOLE phrasing
            part, whole = key.split("/")
            r = (masks[part] & masks[whole]).sum() / masks[whole].sum()
            assert 0.0 <= lo <= r <= hi <= 1.0
        assert set(got["fraction_intervals"]) == set(fraction_keys())
    assert prev["WT"][1] > prev["WT"][0]  # a soft map never collapses to a point


def test_intervals_are_centred_on_the_estimate_even_with_biased_scores():
    """Issue 22: 'edema 61 mL, 50 % interval 61–93 mL' put the estimate on the edge. Scores
    that all lie above 0 (the model always underestimates) still give an interval around V̂."""
    probs, masks = _case(np.random.default_rng(4))
    cal = Calibration(temperatures={"WT": 1.2}, calibrated=True).with_scores(
        {"WT": np.linspace(0.2, 1.0, 39)}, {}, checkpoint_sha256="0" * 64)
    v, scale = cal.volume_scale("WT", probs["WT"], masks["WT"], AFFINE)
    for q in (0.5, 0.9):
        lo, hi = cal.volume_interval("WT", probs["WT"], masks["WT"], AFFINE, q)
        assert lo < v < hi
        if lo > 0:
            assert v - lo == pytest.approx(hi - v)


def test_lower_bound_zero_only_when_the_scale_reaches_it():
    probs, masks = _case(np.random.default_rng(6))
    small = Calibration(temperatures={}, calibrated=True).with_scores(
        {"ET": np.full(39, 0.01)}, {}, checkpoint_sha256="0" * 64)
    wide = small.with_scores({"ET": np.full(39, 1e3)}, {})
    assert small.volume_interval("ET", probs["ET"], masks["ET"], AFFINE)[0] > 0
    assert wide.volume_interval("ET", probs["ET"], masks["ET"], AFFINE)[0] == 0.0


def test_format_1_named_ratio_scores_still_load(tmp_path):
    folder = _folder_with_weights(tmp_path)
    cal = _fitted()
    data = cal.with_scores(cal.volume_scores, {}, checkpoint_sha256=weights_sha256(folder)).to_json()
    data["format_version"] = 1
    data["ratio_scores"] = {"necrotic_fraction_of_core": [0.1, -0.2, 0.3]}
    (folder / CALIBRATION_FILE).write_text(json.dumps(data))
    back = Calibration.load(folder, strict=True)
    assert set(back.ratio_scores) == {"NCR/TC"}


def test_core_fractions_mirror_each_other():
    rng = np.random.default_rng(5)
    s = rng.normal(0, 1, 40)
    cal = Calibration(temperatures={"NCR": 1.3, "ET": 1.1}, calibrated=True).with_scores(
        {}, {"necrotic_fraction_of_core": s, "enhancing_fraction_of_core": -s}, checkpoint_sha256="0" * 64)
    probs, masks = _case(rng)
    n_lo, n_hi = cal.ratio_interval("necrotic_fraction_of_core", probs, masks, AFFINE, 0.9)
    e_lo, e_hi = cal.ratio_interval("enhancing_fraction_of_core", probs, masks, AFFINE, 0.9)
    assert (n_lo, n_hi) == pytest.approx((1 - e_hi, 1 - e_lo))


def test_ratio_undefined_without_a_whole():
    probs, masks = _case(np.random.default_rng(1))
    masks = {c: np.zeros_like(m) for c, m in masks.items()}
    assert _fitted().ratio_interval("edema_fraction_of_whole", probs, masks, AFFINE) is None
    assert "edema_fraction_of_whole_interval" not in _fitted().intervals(probs, masks, AFFINE)
    with pytest.raises(ValueError):
        _fitted().ratio_interval("bogus", probs, masks, AFFINE)
    with pytest.raises(ValueError):
        _fitted().volume_interval("WT", probs["WT"], masks["WT"], AFFINE, q=1.2)


def test_volume_interval_coverage_through_the_api():
    """Truths drawn as V̂ + scale · e with e exchangeable: the fitted intervals cover at ≈ Q
    (399 fitting cases: the coverage given one fit varies by about sqrt(Q(1 − Q)/n))."""
    rng = np.random.default_rng(11)
    cal = Calibration(temperatures={"WT": 1.5}, calibrated=True)

    def draws(n):
        for _ in range(n):
            probs, masks = _case(rng)
            v, scale = cal.volume_scale("WT", probs["WT"], masks["WT"], AFFINE)
            yield probs, masks, max(v + scale * (rng.standard_t(4) - 0.4), 0.0), v, scale

    fit = cal.with_scores({"WT": [(t - v) / s for _, _, t, v, s in draws(399)]}, {}, checkpoint_sha256="0" * 64)
    test = list(draws(300))
    for q in (0.8, 0.9, 0.95):
        hits = [lo <= t <= hi for p, m, t, _, _ in test
                for lo, hi in [fit.volume_interval("WT", p["WT"], m["WT"], AFFINE, q)]]
        assert abs(np.mean(hits) - q) < 0.06, q


# ----------------------------------------------------------------------------- loading
def _folder_with_weights(tmp_path: Path) -> Path:
    (tmp_path / "model.safetensors").write_bytes(b"not really weights")
    return tmp_path


def test_round_trip_json(tmp_path):
    folder = _folder_with_weights(tmp_path)
    cal = _fitted()
    cal = cal.with_scores(cal.volume_scores, cal.ratio_scores, checkpoint_sha256=weights_sha256(folder))
    cal.save(folder)
    back = Calibration.load(folder)
    assert back.calibrated and back.problem is None
    assert back.temperatures == pytest.approx(cal.temperatures)
    for c in cal.volume_scores:
        assert back.volume_scores[c] == pytest.approx(cal.volume_scores[c], rel=1e-5)
    assert back.describe(0.9)["calibrated"] is True
    assert back.max_confidence == pytest.approx(40 / 41)


def test_missing_file_gives_identity(tmp_path):
    cal = Calibration.load(_folder_with_weights(tmp_path))
    assert not cal.calibrated and cal.temperature("WT") == 1.0
    assert "no calibration file" in cal.problem
    d = cal.describe(0.9)
    assert d["calibrated"] is False and "uncalibrated" in d["note"]
    p = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    assert np.array_equal(cal.probabilities("WT", p), p)


@pytest.mark.parametrize("content", [
    b"{ not json", b"\x80\x04\x95", pickle.dumps({"temperatures": {"WT": 2.0}}), b"[1, 2, 3]",
    json.dumps({"format": "vlseg-calibration", "format_version": 1, "temperatures": {"WT": -1}}).encode(),
])
def test_corrupt_file_gives_identity_and_one_line_error(tmp_path, content):
    folder = _folder_with_weights(tmp_path)
    (folder / CALIBRATION_FILE).write_bytes(content)
    cal = Calibration.load(folder)
    assert not cal.calibrated and cal.temperatures == {}
    assert cal.problem and "\n" not in cal.problem and CALIBRATION_FILE in cal.problem
    with pytest.raises(ModelError) as e:
        Calibration.load(folder, strict=True)
    assert "\n" not in str(e.value)


def test_calibration_for_other_weights_is_not_used(tmp_path):
    folder = _folder_with_weights(tmp_path)
    _fitted().save(folder)  # names sha256 "000..."
    cal = Calibration.load(folder)
    assert not cal.calibrated and "refit" in cal.problem


def test_bundled_default_is_calibrated():
    cal = Calibration.load(DEFAULT, strict=True)
    assert cal.calibrated and set(cal.temperatures) == {"NCR", "ED", "ET", "TC", "WT"}
    assert all(0.2 < t < 5 for t in cal.temperatures.values())
    assert cal.exact(0.9) and cal.max_confidence >= 0.95
    assert cal.fitted_on["seed"] not in (1, 2, 3)  # not training, selection or model-card test seeds
    # The bundled refinement stage's outputs have their own fit (1 mm, through the refiner)
    assert cal.refined is not None and cal.for_stage(True) is cal.refined
    assert cal.refined.fitted_on["spacing_mm"] == 1.0 and cal.refined.fitted_on["stage"] == "refined"
    assert cal.refined.fitted_on["seed"] not in (1, 2, 3, 41, 51) and cal.refined.exact(0.9)


def test_module_needs_no_torch():
    code = ("import sys, vlseg.reasoning.calibration; "
            "sys.exit(int('torch' in sys.modules or 'vlseg.model' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_refined_stage_calibration_round_trips_and_is_chosen_by_stage(tmp_path):
    """A second fit for the refinement stage's outputs lives under "refined" in the same file;
    for_stage(True) gives it only while the refiner it was fitted for is the one in the folder."""
    from dataclasses import replace

    from vlseg.reasoning.calibration import refiner_weights_sha256

    folder = _folder_with_weights(tmp_path)
    (folder / "refiner.safetensors").write_bytes(b"refiner weights, version 1")
    first = _fitted(seed=1)
    first = first.with_scores(first.volume_scores, first.ratio_scores, checkpoint_sha256=weights_sha256(folder))
    second = _fitted(seed=2, n=30)
    second = second.with_scores(second.volume_scores, second.ratio_scores, checkpoint_sha256=weights_sha256(folder),
                                fitted_on={"seed": 2, "refiner_sha256": refiner_weights_sha256(folder)})
    replace(first, refined=replace(second, temperatures={**second.temperatures, "ET": 0.7})).save(folder)
    back = Calibration.load(folder, strict=True)
    assert back.refined is not None and back.refined.temperature("ET") == pytest.approx(0.7)
    assert back.for_stage(False) is back and back.for_stage(True) is back.refined
    assert back.for_stage(False).temperature("ET") == pytest.approx(1.2)
    assert back.refined.max_confidence == pytest.approx(30 / 31)
    assert back.refined.describe(0.9)["fitted_on"]["seed"] == 2
    # Another refiner in the folder: its outputs get the first stage's fit, not a stale one
    (folder / "refiner.safetensors").write_bytes(b"refiner weights, version 2")
    other = Calibration.load(folder, strict=True)
    assert other.calibrated and other.refined is None and other.for_stage(True) is other
    # A malformed refined part is refused like any malformed file
    data = json.loads((folder / CALIBRATION_FILE).read_text())
    data["refined"] = {"temperatures": {"ET": -1}}
    (folder / CALIBRATION_FILE).write_text(json.dumps(data))
    assert not Calibration.load(folder).calibrated
