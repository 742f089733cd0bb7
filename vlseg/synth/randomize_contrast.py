"""Randomized contrast: per-label Gaussian mixture intensities per sequence (SynthSeg-style).

Each label (``randomize_anatomy.LABELS``) gets a mean and a standard deviation per sequence,
drawn freely (or, with ``p_realistic_contrast``, from the phantom table with a wide jitter).
Only the relations that define the tumor labels are then enforced:

* ET on t1c is brighter than every other label on t1c (its surroundings, NCR included);
* ET enhances: relative to normal tissue (mean of GM and WM), ET is brighter on t1c than on t1n;
* ED is brighter than WM on t2w, and than the parenchyma it infiltrates (GM and WM) on t2f
  (BraTS 2023 defines it as the surrounding FLAIR hyperintensity);
* free water (CSF, ventricles) is darker than GM and WM on t2f: nulling it is what makes a FLAIR;
* NCR and ED differ (relative difference >= ``separation``) in at least one sequence, otherwise
  the core's boundary in a non-enhancing tumor would be invisible in every sequence;
* a resection cavity's fluid does not enhance and is darker than GM and WM on t1n and t1c;
  blood products at its wall are brighter than GM and WM on t1n (so their t1c brightness is not
  enhancement: relative to normal tissue they are no brighter on t1c than on t1n).

Everything else (which tissue is darker, how CSF looks, ...) is left free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlseg.vocab import SEQUENCES
from vlseg.synth.params import BASE_MEANS, POST_BASE_MEANS
from vlseg.synth.randomize_anatomy import LABELS, LabelMap
from vlseg.synth.randomize_params import RandomizeConfig

_L = {name: i for i, name in enumerate(LABELS)}
_S = {name: i for i, name in enumerate(SEQUENCES)}
# Phantom table extended to the extra labels: ventricles look like CSF; a cyst is fluid that is
# dark on T1, bright on T2 and intermediate on FLAIR (proteinaceous).
_CYST = {"t1n": 0.22, "t1c": 0.24, "t2w": 1.0, "t2f": 0.3}
_TABLE = {s: {**BASE_MEANS[s], **POST_BASE_MEANS[s], "VENT": BASE_MEANS[s]["CSF"], "CYST": _CYST[s]}
          for s in SEQUENCES}
REALISTIC = np.array([[_TABLE[s][lab] for lab in LABELS] for s in SEQUENCES], np.float64)  # (4, labels)


@dataclass(frozen=True)
class ContrastDraw:
    means: np.ndarray          # (4, labels) mean per sequence and label (relative units)
    stds: np.ndarray           # (4, labels) within-label standard deviation
    tumor_texture: np.ndarray  # (4,) relative amplitude of tumor heterogeneity
    realistic: bool


def enforce_relations(means: np.ndarray, rng: np.random.Generator, cfg: RandomizeConfig) -> np.ndarray:
    """Adjust (a copy of) ``means`` (4, labels) so the label-defining relations hold with a margin."""
    m = means.copy()
    t1n, t1c, t2w, t2f = (_S[s] for s in ("t1n", "t1c", "t2w", "t2f"))
    et, wm, gm, ed, ncr = _L["ET"], _L["WM"], _L["GM"], _L["ED"], _L["NCR"]
    # FLAIR is the sequence that nulls free water: CSF and the ventricles are darker than the
    # parenchyma on it (without this, FLAIR alone cannot tell periventricular edema from fluid).
    for fluid in (_L["CSF"], _L["VENT"]):
        m[t2f, fluid] = min(m[t2f, fluid], min(m[t2f, wm], m[t2f, gm]) / (1 + rng.uniform(*cfg.fluid_margin)))
    # Edema is bright on T2 (relative to white matter) and on FLAIR (relative to GM and WM).
    m[t2w, ed] = max(m[t2w, ed], m[t2w, wm] * (1 + rng.uniform(*cfg.ed_margin)))
    m[t2f, ed] = max(m[t2f, ed], max(m[t2f, wm], m[t2f, gm]) * (1 + rng.uniform(*cfg.ed_margin)))
    # Necrosis and edema differ somewhere; if not, push necrosis away in one random sequence.
    rel = np.abs(m[:, ncr] - m[:, ed]) / ((m[:, ncr] + m[:, ed]) / 2)
    if rel.max() < cfg.separation:
        s = int(rng.integers(len(SEQUENCES)))
        gap = (2 + cfg.separation) / (2 - cfg.separation) * (1 + rng.uniform(0.0, cfg.separation))  # ratio
        m[s, ncr] = m[s, ed] * gap if rng.uniform() < 0.5 else m[s, ed] / gap
    # Cavity fluid: darker than the parenchyma on both T1s; blood: brighter on t1n, and no
    # brighter on t1c than on t1n relative to normal tissue.
    par = [_L["GM"], wm]
    fluid, blood = _L["FLUID"], _L["BLOOD"]
    for seq in (t1n, t1c):
        m[seq, fluid] = min(m[seq, fluid], m[seq, par].min() / (1 + rng.uniform(*cfg.fluid_margin)))
    m[t1n, blood] = max(m[t1n, blood], m[t1n, par].max() * (1 + rng.uniform(*cfg.fluid_margin)))
    ref = m[:, par].mean(axis=1)
    m[t1c, blood] = min(m[t1c, blood], m[t1n, blood] / ref[t1n] * ref[t1c])
    # Enhancing tumor is the brightest label on t1c.
    others = [i for i in range(len(LABELS)) if i != et]
    m[t1c, et] = max(m[t1c, et], m[t1c, others].max() * (1 + rng.uniform(*cfg.et_margin)))
    # ... and it enhances: relative to GM/WM it is brighter on t1c than on t1n.
    ref = m[:, [_L["GM"], wm]].mean(axis=1)                               # (4,)
    limit = m[t1c, et] / ref[t1c] * ref[t1n] / (1 + rng.uniform(*cfg.enhancement_margin))
    m[t1n, et] = min(m[t1n, et], limit)
    return m


def sample_contrast(rng: np.random.Generator, cfg: RandomizeConfig) -> ContrastDraw:
    shape = (len(SEQUENCES), len(LABELS))
    realistic = bool(rng.uniform() < cfg.p_realistic_contrast)
    if realistic:
        means = REALISTIC * rng.uniform(*cfg.realistic_jitter, size=shape)
    else:
        means = rng.uniform(*cfg.free_mean, size=shape)
    means = enforce_relations(means, rng, cfg)
    stds = means * rng.uniform(*cfg.label_std, size=shape)
    texture = rng.uniform(*cfg.tumor_texture, size=len(SEQUENCES))
    return ContrastDraw(means=means, stds=stds, tumor_texture=texture, realistic=realistic)


def render_intensities(lm: LabelMap, c: ContrastDraw, rng: np.random.Generator) -> np.ndarray:
    """(4, X, Y, Z) float32: partial-volume mixture of label means, label noise, tumor texture;
    0 outside the brain, strictly positive inside."""
    inside = np.flatnonzero(lm.brain)
    frac = lm.fractions.reshape(len(LABELS), -1)[:, inside].T            # (N, 8)
    means = c.means.T.astype(np.float32)                                 # (8, 4)
    v = frac @ means                                                     # (N, 4)
    tumor = frac[:, 4:] @ means[4:]                                      # (N, 4) tumor part
    tex = lm.texture.ravel()[inside][:, None]
    v += tumor * c.tumor_texture.astype(np.float32) * tex
    sd = frac @ c.stds.T.astype(np.float32)                              # (N, 4)
    v += sd * rng.standard_normal(v.shape, dtype=np.float32)
    floor = np.float32(1e-3) * np.maximum(v.max(axis=0, keepdims=True), 1e-3)
    np.maximum(v, floor, out=v)
    out = np.zeros((len(SEQUENCES), lm.brain.size), np.float32)
    out[:, inside] = v.T
    return out.reshape(len(SEQUENCES), *lm.brain.shape)
