"""Calibrated probabilities and intervals at a confidence level Q, stored beside a checkpoint.

Pure NumPy + JSON (no torch, no pickle). Two steps, both fitted on labelled validation phantoms
by ``bench/calibration.py fit`` and written to ``<checkpoint>/calibration.json``:

1. **Temperature scaling per concept.** ``p_cal = sigmoid(logit(p) / T_c)``, with ``T_c``
   minimising the per-voxel negative log-likelihood (brain voxels, stratified subsample with
   inverse-probability weights). ``p`` is what ``labelling.final_probabilities`` gives for the
   concept (decoded for WT/TC/ET, derived for NCR/ED). A temperature keeps p = 0.5 at 0.5, so
   the masks users get (``final_masks``, threshold 0.5) are unchanged.
2. **Split-conformal intervals.** On other validation phantoms (disjoint from step 1), each case
   gives a signed, scaled residual per concept and per fraction (every ``PART/WHOLE`` pair of
   ``relations.fraction_pairs``: NCR/TC, ET/TC, NCR/WT, ED/WT, ET/WT, TC/WT):

       volume:  s = (V_true − V̂) / scale,   scale = band_ml + floor_ml + relative · V̂
       ratio:   s = (r_true − r̂) / scale,   scale = ((1 − r̂) · band_part + r̂ · band_rest) / V̂_whole
                                                     + ratio_floor

   ``V̂``/``r̂`` come from the final masks (what the answer reports); ``band_ml`` is the volume
   where the *calibrated* probability lies in [0.1, 0.9): the model's own uncertain rim, so a
   crisp case gets a narrow interval and a hazy one a wide one. ``rest`` is the whole's other
   part (ET for NCR/TC, NCR for ET/TC, TC for ED/WT; the whole itself when no concept is the
   rest, as for NCR/WT), which makes the two core fractions' intervals mirror each other
   (necrotic + enhancing = 100 %). At level Q the interval is built **around the reported
   estimate** (issue 22: an interval with the estimate on its edge, or beside it, reads as a
   contradiction):

       [V̂ − scale · d,  V̂ + scale · d],   d = |s|_(k),  k = ⌈(n+1)Q⌉

   (|s|_(k): the k-th smallest absolute score), clipped to [0, ∞) for volumes and [0, 1] for
   ratios. For exchangeable cases this covers the truth with probability ≥ Q, and the estimate
   is always inside. A volume interval whose lower bound is 0 means the region may be absent
   (``possibly_none``: the text says so). The scores are stored, so any Q in (0, 1) works; Q
   above ``max_confidence`` (n/(n+1)) would need more cases than were fitted, and then the
   largest score is used (``exact(q)`` is False: say so).

**Stages.** A model with a refinement stage (``vlseg.model.refiner``) answers 1 mm scans from
refined probabilities, whose rim is thinner and whose errors differ from the first stage's. Its
file may hold a second fit of both steps for them, under ``"refined"`` (same format, fitted on
1 mm phantoms through the refinement stage, named by the refiner's sha256);
``cal.for_stage(refined=True)`` gives it (else the first stage's, ``refined`` None when the
refiner in the folder is not the one it was fitted for).

Missing, unreadable or foreign calibration (fitted for other weights) gives the identity:
T = 1, ``calibrated`` False, ``problem`` a one-line reason, and uncalibrated *probability-band*
intervals with no coverage guarantee: volume [V(mask ∧ p ≥ (1+Q)/2), V(mask ∨ p ≥ (1−Q)/2)];
ratio r̂ ± the ratio scale computed on the band (1−Q)/2 ≤ p < (1+Q)/2.

API (all arrays (X, Y, Z) on one grid, ``affine`` 4×4 voxel → world mm)::

    cal = Calibration.load(checkpoint_dir)          # the folder holding model.safetensors (or an adapter)
    cal.calibrated, cal.problem, cal.temperatures   # bool, str | None, {concept: T}
    cal.probabilities(concept, p) -> p_cal
    cal.volume_interval(concept, prob, mask, affine, q=0.9) -> (lo_ml, hi_ml)
    cal.ratio_interval(name, probs, masks, affine, q=0.9) -> (lo, hi) | None
    cal.intervals(probs, masks, affine, q=0.9) -> {"volume_ml_interval": {c: (lo, hi)},
                                                   "fraction_intervals": {"NCR/WT": (lo, hi), ...},
                                                   "<ratio>_interval": (lo, hi), ...}
    cal.exact(q) -> bool;  cal.describe(q) -> dict for answer.json

``probs`` are ``final_probabilities(...)`` (raw; calibration is applied inside), ``masks`` are
``final_masks(...)``; a ratio is named by its ``vocab.ratios()`` name or its ``PART/WHOLE`` key
(``fraction_key``). A ratio whose whole is empty in the masks has no interval (None). Format 1
files (scores of the three named ratios, asymmetric bounds) still load; their scores are used
the same, centred way.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vlseg import vocab
from vlseg.errors import ModelError
from vlseg.reasoning.measure import voxel_volume_ml
from vlseg.reasoning.relations import fraction_pairs

CALIBRATION_FILE = "calibration.json"
FORMAT = "vlseg-calibration"
FORMAT_VERSION = 2  # 2: fraction scores keyed PART/WHOLE for every pair; centred intervals
DEFAULT_CONFIDENCE = 0.9
WEIGHT_FILES = ("model.safetensors", "adapter.safetensors")  # full checkpoint, LoRA adapter
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before taking logits
UNCALIBRATED_NOTE = ("intervals are uncalibrated (probability bands, no coverage guarantee): "
                     "no calibration fitted for these weights")


# ----------------------------------------------------------------------------- primitives
def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)`` as float32; T = 1 returns ``p`` unchanged."""
    p = np.asarray(p, dtype=np.float32)
    if temperature == 1.0:
        return p
    return sigmoid(logit(p) / temperature).astype(np.float32)


def raw_level(level: float, temperature: float) -> float:
    """The raw probability whose calibrated value is ``level`` (p_cal >= level ⇔ p >= this)."""
    return float(sigmoid(logit(np.float64(level)) * temperature))


def _weighted_nll(a: float, z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    s = a * z  # logits scaled by 1/T
    return float(np.sum(w * (np.logaddexp(0.0, s) - y * s)) / np.sum(w))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, *,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """T minimising the (weighted) mean binary NLL of ``sigmoid(logits / T)`` against ``labels``.

    The NLL is convex in 1/T, so a bounded golden-section search on 1/T finds the optimum.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (z.shape == y.shape == w.shape) or z.size == 0:
        raise ValueError("logits, labels and weights must be non-empty and of one length")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError("logits and weights must be finite, weights >= 0 with a positive sum")
    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = math.log(lo), math.log(hi)  # search log(1/T): the scale spans decades
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = (_weighted_nll(math.exp(c), z, y, w), _weighted_nll(math.exp(d), z, y, w))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _weighted_nll(math.exp(c), z, y, w)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _weighted_nll(math.exp(d), z, y, w)
    return float(1.0 / math.exp((a + b) / 2.0))


def conformal_radius(scores: np.ndarray, q: float) -> tuple[float, bool]:
    """Split-conformal radius on signed scores at level ``q``: (d, exact), d the
    ⌈(n+1)q⌉-th smallest |score|, so ``estimate ± scale · d`` covers with probability ≥ q.
    When n is too small for ``q`` the largest |score| is used and ``exact`` is False."""
    _check_q(q)
    a = np.sort(np.abs(np.asarray(scores, dtype=np.float64)))
    n = a.size
    if n == 0:
        raise ValueError("no conformal scores")
    k = math.ceil((n + 1) * q - 1e-9)
    return float(a[min(k, n) - 1]), k <= n


def fraction_key(name: str) -> str:
    """``PART/WHOLE`` of a ratio given by its ``vocab.ratios()`` name or as that key."""
    named = vocab.ratios()
    if name in named:
        part, whole, _ = named[name]
        return f"{part}/{whole}"
    if name in fraction_keys():
        return name
    raise ValueError(f"unknown ratio {name!r}; use one of {', '.join([*named, *fraction_keys()])}")


def fraction_keys() -> tuple[str, ...]:
    return tuple(f"{p}/{w}" for p, w in fraction_pairs())


def _check_q(q: float) -> None:
    if not (isinstance(q, (int, float)) and 0.0 < float(q) < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {q!r}")


def refiner_weights_sha256(folder: str | Path) -> str | None:
    """SHA-256 of the refinement stage in ``folder`` (None: there is none)."""
    from vlseg.model.refiner_checkpoint import REFINER_WEIGHTS, refiner_sha256

    return refiner_sha256(folder) if (Path(folder) / REFINER_WEIGHTS).is_file() else None


def weights_sha256(folder: str | Path) -> str | None:
    """SHA-256 of the weights in ``folder`` (model.safetensors, else adapter.safetensors)."""
    from vlseg.model.storage import cached_sha256  # the model loader's cache: hashed once

    for name in WEIGHT_FILES:
        path = Path(folder) / name
        if path.is_file():
            return cached_sha256(path)
    return None


# ----------------------------------------------------------------------------- score rule
@dataclass(frozen=True)
class ScoreRule:
    """How residuals are scaled into nonconformity scores (stored with the scores)."""

    band: tuple[float, float] = (0.1, 0.9)  # calibrated-probability levels of the uncertain rim
    floor_ml: float = 0.5                    # added to every volume scale (hard or empty maps)
    relative: float = 0.02                   # + relative · V̂ in the volume scale
    ratio_floor: float = 0.01                # added to every ratio scale

    def __post_init__(self) -> None:
        lo, hi = self.band
        if not (0.0 < lo < hi < 1.0) or self.floor_ml <= 0 or self.relative < 0 or self.ratio_floor <= 0:
            raise ValueError(f"invalid score rule {self}")


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """Per-concept temperatures + conformal scores for one checkpoint (see module doc)."""

    temperatures: dict[str, float] = field(default_factory=dict)
    volume_scores: dict[str, np.ndarray] = field(default_factory=dict)
    ratio_scores: dict[str, np.ndarray] = field(default_factory=dict)
    rule: ScoreRule = ScoreRule()
    checkpoint_sha256: str | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    calibrated: bool = False
    problem: str | None = None
    refined: Calibration | None = None  # the fit for the refinement stage's outputs (module doc)

    # ------------------------------------------------------------------ construction
    @classmethod
    def identity(cls, problem: str | None = None) -> Calibration:
        """T = 1 everywhere, no scores: uncalibrated probability-band intervals."""
        return cls(problem=problem or "no calibration")

    @classmethod
    def load(cls, folder: str | Path, *, strict: bool = False) -> Calibration:
        """``folder/calibration.json`` if it is valid and was fitted for the weights in ``folder``;
        else the identity with ``problem`` saying why in one line, naming the folder but not its
        full path (``strict``: raise ModelError, full path, instead)."""
        folder = Path(folder)
        try:
            return cls._read(folder)
        except ModelError as e:
            if strict:
                raise
            short = str(e).replace(str(folder / CALIBRATION_FILE), f"{folder.name}/{CALIBRATION_FILE}")
            return cls.identity(short.replace(str(folder), folder.name))

    @classmethod
    def _read(cls, folder: Path) -> Calibration:
        path = folder / CALIBRATION_FILE
        if not path.is_file():
            raise ModelError(f"{path}: no calibration file; intervals are uncalibrated")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{path}: not readable JSON ({str(e).splitlines()[0]})") from None
        cal = cls.from_json(data, where=str(path))
        sha = weights_sha256(folder)
        if sha is not None and cal.checkpoint_sha256 != sha:
            raise ModelError(f"{path}: fitted for weights sha256 {str(cal.checkpoint_sha256)[:12]}... "
                             f"but {folder} holds {sha[:12]}...; refit with bench/calibration.py fit")
        if cal.refined is not None and cal.refined.fitted_on.get("refiner_sha256") != refiner_weights_sha256(folder):
            cal = replace(cal, refined=None)  # fitted for another refinement stage (or none is here)
        return cal

    @classmethod
    def from_json(cls, data: Any, *, where: str = CALIBRATION_FILE) -> Calibration:
        """Validate a parsed calibration JSON (ModelError with a one-line reason if it is not)."""
        def bad(what: str) -> ModelError:
            return ModelError(f"{where}: {what}")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"not a calibration file (format must be {FORMAT!r})")
        if not isinstance(data.get("format_version"), int) or data["format_version"] > FORMAT_VERSION:
            raise bad("unknown format_version; upgrade vlseg")
        temps = data.get("temperatures")
        if not isinstance(temps, dict) or not temps:
            raise bad("'temperatures' must be a non-empty object")
        for c, t in temps.items():
            if c not in vocab.codes() or not isinstance(t, (int, float)) or not (0.0 < float(t) < 1e3):
                raise bad(f"temperature for {c!r} must be a positive number, concept one of {', '.join(vocab.codes())}")
        vol = _score_table(data.get("volume_scores"), set(vocab.codes()), bad, "volume_scores")
        rat = _score_table(data.get("ratio_scores"), set(vocab.ratios()) | set(fraction_keys()), bad,
                           "ratio_scores")
        rat = {fraction_key(k): v for k, v in rat.items()}  # format 1 named the three ratios
        try:
            r = data.get("rule") or {}
            rule = ScoreRule(band=tuple(float(v) for v in r["band"]), floor_ml=float(r["floor_ml"]),
                             relative=float(r["relative"]), ratio_floor=float(r["ratio_floor"]))
        except (KeyError, TypeError, ValueError):
            raise bad("'rule' must give band, floor_ml, relative and ratio_floor") from None
        sha = data.get("checkpoint_sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            raise bad("'checkpoint_sha256' must be a 64-character hex string")
        fitted = data.get("fitted_on") if isinstance(data.get("fitted_on"), dict) else {}
        refined = data.get("refined")
        if refined is not None:
            if not isinstance(refined, dict) or "refined" in refined:
                raise bad("'refined' must be one calibration object (temperatures, scores, rule)")
            refined = cls.from_json({**refined, "format": FORMAT, "format_version": data["format_version"],
                                     "checkpoint_sha256": sha}, where=f"{where} (refined)")
        return cls(temperatures={c: float(t) for c, t in temps.items()}, volume_scores=vol,
                   ratio_scores=rat, rule=rule, checkpoint_sha256=sha, fitted_on=fitted,
                   calibrated=True, problem=None, refined=refined)

    def to_json(self) -> dict[str, Any]:
        def scores(d: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
            return {k: [float(f"{v:.6g}") for v in np.sort(s)] for k, s in d.items()}


        out = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "checkpoint_sha256": self.checkpoint_sha256,
            "method": "per-concept temperature scaling (per-voxel NLL) + split-conformal scaled "
                      "residuals, intervals centred on the estimate (see vlseg/reasoning/calibration.py)",
            "fitted_on": self.fitted_on,
            "temperatures": {c: round(t, 6) for c, t in self.temperatures.items()},
            "rule": {"band": list(self.rule.band), "floor_ml": self.rule.floor_ml,
                     "relative": self.rule.relative, "ratio_floor": self.rule.ratio_floor},
            "volume_scores": scores(self.volume_scores), "ratio_scores": scores(self.ratio_scores),
        }
        if self.refined is not None:
            inner = self.refined.to_json()
            out["refined"] = {k: v for k, v in inner.items()
                              if k not in ("format", "format_version", "checkpoint_sha256", "method")}
        return out

    def for_stage(self, refined: bool) -> Calibration:
        """The calibration of the masks' stage: the refined fit for refined outputs when there is
        one, else this (the first stage's)."""
        return self.refined if refined and self.refined is not None else self

    def save(self, folder: str | Path) -> Path:
        from vlseg.fileio import write_json_atomic

        path = Path(folder) / CALIBRATION_FILE
        write_json_atomic(path, self.to_json())
        return path

    def with_scores(self, volume_scores: Mapping[str, np.ndarray], ratio_scores: Mapping[str, np.ndarray],
                    **kw: Any) -> Calibration:
        return replace(self, volume_scores={k: np.sort(np.asarray(v, float)) for k, v in volume_scores.items()},
                       ratio_scores={fraction_key(k): np.sort(np.asarray(v, float))
                                     for k, v in ratio_scores.items()}, **kw)

    # ------------------------------------------------------------------ probabilities
    def temperature(self, concept: str) -> float:
        return float(self.temperatures.get(concept, 1.0))

    def probabilities(self, concept: str, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``concept`` (identity when it has no temperature)."""
        vocab.check_concept(concept)
        return apply_temperature(p, self.temperature(concept))

    def band_ml(self, concept: str, prob: np.ndarray, affine: np.ndarray,
                band: tuple[float, float] | None = None) -> float:
        """Volume (mL) where the calibrated probability lies in [band[0], band[1])."""
        lo, hi = band or self.rule.band
        t = self.temperature(concept)
        p = np.asarray(prob)
        n = int(np.count_nonzero(p >= raw_level(lo, t))) - int(np.count_nonzero(p >= raw_level(hi, t)))
        return n * voxel_volume_ml(affine)

    # ------------------------------------------------------------------ scales
    def volume_scale(self, concept: str, prob: np.ndarray, mask: np.ndarray, affine: np.ndarray
                     ) -> tuple[float, float]:
        """(V̂ mL from the mask, the scale of its nonconformity score)."""
        v = float(np.count_nonzero(mask)) * voxel_volume_ml(affine)
        return v, self.band_ml(concept, prob, affine) + self.rule.floor_ml + self.rule.relative * v

    def ratio_scale(self, name: str, probs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                    affine: np.ndarray, band: tuple[float, float] | None = None) -> tuple[float, float] | None:
        """(r̂ = |part ∧ whole| / |whole| from the masks, the scale of its score); None when
        the whole is empty or an input is missing. ``name``: a ``vocab.ratios()`` name or a
        ``PART/WHOLE`` key."""
        part, whole, rest = _ratio_parts(name)
        if any(c not in masks for c in (part, whole)) or any(c not in probs for c in (part, rest)):
            return None
        w = np.asarray(masks[whole], dtype=bool)
        nw = int(np.count_nonzero(w))
        if nw == 0:
            return None
        r = float(np.count_nonzero(np.asarray(masks[part], dtype=bool) & w)) / nw
        vw = nw * voxel_volume_ml(affine)
        bp = self.band_ml(part, probs[part], affine, band)
        br = self.band_ml(rest, probs[rest], affine, band)
        return r, ((1.0 - r) * bp + r * br) / max(vw, self.rule.floor_ml) + self.rule.ratio_floor

    # ------------------------------------------------------------------ intervals
    def exact(self, q: float = DEFAULT_CONFIDENCE) -> bool:
        """Whether every stored score table certifies level ``q`` (False when uncalibrated)."""
        _check_q(q)
        tables = list(self.volume_scores.values()) + list(self.ratio_scores.values())
        return self.calibrated and bool(tables) and all(conformal_radius(s, q)[1] for s in tables)

    @property
    def max_confidence(self) -> float:
        """The highest Q every score table certifies: n / (n + 1) for the smallest n."""
        ns = [len(s) for s in list(self.volume_scores.values()) + list(self.ratio_scores.values())]
        return min(ns) / (min(ns) + 1) if self.calibrated and ns else 0.0

    def volume_interval(self, concept: str, prob: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                        q: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
        """Interval (mL) for the true volume of ``concept`` at confidence ``q``, centred on V̂
        (clipped at 0: a lower bound of 0 says the region may be absent)."""
        _check_q(q)
        prob, mask = np.asarray(prob), np.asarray(mask, dtype=bool)
        if prob.shape != mask.shape:
            raise ValueError(f"prob shape {prob.shape} differs from mask shape {mask.shape}")
        scores = self.volume_scores.get(concept)
        if not self.calibrated or scores is None or len(scores) == 0:
            vml = voxel_volume_ml(affine)  # uncalibrated probability band
            lo = np.count_nonzero(mask & (prob >= (1.0 + q) / 2.0)) * vml
            hi = np.count_nonzero(mask | (prob >= (1.0 - q) / 2.0)) * vml
            return float(lo), float(hi)
        v, scale = self.volume_scale(concept, prob, mask, affine)
        d, _ = conformal_radius(scores, q)
        return max(0.0, v - scale * d), v + scale * d

    def ratio_interval(self, name: str, probs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                       affine: np.ndarray, q: float = DEFAULT_CONFIDENCE) -> tuple[float, float] | None:
        """Interval for the ratio ``name`` (a ``vocab.ratios()`` name or ``PART/WHOLE``) at
        confidence ``q``, centred on r̂. None when the ratio is undefined (its whole is empty
        in ``masks``)."""
        _check_q(q)
        scores = self.ratio_scores.get(fraction_key(name))
        if not self.calibrated or scores is None or len(scores) == 0:
            rs = self.ratio_scale(name, probs, masks, affine, band=((1.0 - q) / 2.0, (1.0 + q) / 2.0))
            if rs is None:
                return None
            r, scale = rs  # uncalibrated: r̂ ± the ratio scale on the Q-level band
            return max(0.0, r - scale), min(1.0, r + scale)
        rs = self.ratio_scale(name, probs, masks, affine)
        if rs is None:
            return None
        r, scale = rs
        d, _ = conformal_radius(scores, q)
        return max(0.0, r - scale * d), min(1.0, r + scale * d)

    def intervals(self, probs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                  affine: np.ndarray, q: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
        """Every interval the given maps allow: {"volume_ml_interval": {concept: (lo, hi)},
        "fraction_intervals": {PART/WHOLE: (lo, hi)}, "<ratio>_interval": (lo, hi) for each
        defined named ratio}."""
        out: dict[str, Any] = {"volume_ml_interval": {
            c: self.volume_interval(c, probs[c], masks[c], affine, q) for c in masks if c in probs}}
        fr = {k: self.ratio_interval(k, probs, masks, affine, q) for k in fraction_keys()}
        out["fraction_intervals"] = {k: v for k, v in fr.items() if v is not None}
        for name in vocab.ratios():
            iv = self.ratio_interval(name, probs, masks, affine, q)
            if iv is not None:
                out[f"{name}_interval"] = iv
        return out

    def describe(self, q: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
        """Provenance for answer.json: whether the intervals are calibrated, and on what."""
        _check_q(q)
        d: dict[str, Any] = {"confidence": q, "calibrated": self.calibrated,
                             "temperatures": {c: round(t, 4) for c, t in self.temperatures.items()}}
        if self.calibrated:
            d.update(method="temperature scaling + split-conformal, centred on the estimate "
                            "(validation phantoms)",
                     fitted_on=self.fitted_on, checkpoint_sha256=self.checkpoint_sha256,
                     exact=self.exact(q), max_confidence=round(self.max_confidence, 4))
            if not d["exact"]:
                d["note"] = (f"confidence {q} is above the {d['max_confidence']} the calibration cases "
                             "certify; the interval uses the widest fitted error")
        else:
            d["note"] = UNCALIBRATED_NOTE
            d["problem"] = self.problem
        return d


def _ratio_parts(name: str) -> tuple[str, str, str]:
    """(part, whole, rest) of a ratio: rest is the concept made of the whole's other parts, or
    the whole itself when no concept is (NCR/WT: ED ∪ ET is not one)."""
    part, whole = fraction_key(name).split("/")
    for p, w, rest in vocab.ratios().values():
        if (p, w) == (part, whole):
            return part, whole, rest
    others = set(vocab.concept(whole).parts) - set(vocab.concept(part).parts or (part,))
    rest = next((c.code for c in vocab.concepts() if set(c.parts or (c.code,)) == others), whole)
    return part, whole, rest


def _score_table(d: Any, allowed: set[str], bad, what: str) -> dict[str, np.ndarray]:
    if not isinstance(d, dict):
        raise bad(f"'{what}' must be an object of score lists")
    out = {}
    for k, v in d.items():
        if k not in allowed or not isinstance(v, list) or not v \
                or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            raise bad(f"'{what}[{k!r}]' must be a non-empty list of finite numbers for a known name")
        out[k] = np.sort(np.asarray(v, dtype=np.float64))
    return out
