"""Domain-randomized synthesis: determinism per seed, image/label alignment under warps, the
label-defining intensity relations, thick slices on the model grid, tumor morphologies, and the
``randomized`` training source. Samples are rendered at 4 mm (about 40^3 voxels) to stay small."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vlseg.vocab import SEQUENCES, TUMOR_CODES as CONCEPTS
from vlseg.errors import InputError
from vlseg.synth.randomize import RandomizedSynth
from vlseg.synth.randomize_anatomy import LABELS, load_anatomy, sample_spatial, sample_tumor_draw
from vlseg.synth.randomize_artefacts import acquire, ghosting, motion, thick_slice_matrix, thick_slices
from vlseg.synth.randomize_contrast import ContrastDraw, enforce_relations, render_intensities, sample_contrast
from vlseg.synth.randomize_params import RandomizeConfig
from vlseg.training.config import SourceConfig, config_from_dict
from vlseg.training.sources import MixtureDataset, concept_bit, randomized_entries

SPACING = 4.0
L = {name: i for i, name in enumerate(LABELS)}
S = {name: i for i, name in enumerate(SEQUENCES)}
NO_ARTEFACTS = dict(p_bias=0.0, p_gamma=0.0, p_noise=0.0, p_gibbs=0.0, p_ghosting=0.0, p_motion=0.0,
                    p_spike=0.0, p_thick=0.0, p_lowres=0.0)
WITH_TUMOR = dict(p_no_tumor=0.0, tumor_reuse=1.0)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def synth(**kw) -> RandomizedSynth:
    return RandomizedSynth(spacing_mm=SPACING, config=RandomizeConfig(**kw))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


# ----------------------------------------------------------------------------- determinism

def test_each_stage_is_deterministic_for_a_seed():
    cfg = RandomizeConfig(**WITH_TUMOR)
    anatomy = load_anatomy()
    a, b = sample_spatial(rng(3), cfg, anatomy, SPACING), sample_spatial(rng(3), cfg, anatomy, SPACING)
    assert a[1] == b[1] and np.array_equal(a[2], b[2])
    assert np.array_equal(a[0].elastic_nodes, b[0].elastic_nodes) and np.array_equal(a[0].matrix, b[0].matrix)
    assert not np.array_equal(a[0].matrix, sample_spatial(rng(4), cfg, anatomy, SPACING)[0].matrix)
    t1, t2 = sample_tumor_draw(rng(5), cfg, anatomy), sample_tumor_draw(rng(5), cfg, anatomy)
    assert t1.describe() == t2.describe() and np.array_equal(t1.stack, t2.stack)
    c1, c2 = sample_contrast(rng(6), cfg), sample_contrast(rng(6), cfg)
    assert np.array_equal(c1.means, c2.means) and np.array_equal(c1.stds, c2.stds)
    assert not np.array_equal(c1.means, sample_contrast(rng(7), cfg).means)


@pytest.mark.parametrize("artefact", ["p_bias", "p_gamma", "p_noise", "p_gibbs", "p_ghosting", "p_motion",
                                      "p_spike", "p_thick", "p_lowres"])
def test_each_artefact_is_deterministic_for_a_seed_and_keeps_the_skull_strip(artefact):
    cfg = RandomizeConfig(**{**NO_ARTEFACTS, artefact: 1.0})
    g = rng(0)
    brain = np.zeros((24, 28, 20), bool)
    brain[4:20, 5:23, 3:17] = True
    vol = np.where(brain, 0.5 + 0.5 * g.random(brain.shape), 0.0).astype(np.float32)
    thick = (1, 5.0) if artefact == "p_thick" else None
    out1, rec1 = acquire(vol.copy(), brain, rng(11), cfg, spacing_mm=2.0, thick=thick)
    out2, rec2 = acquire(vol.copy(), brain, rng(11), cfg, spacing_mm=2.0, thick=thick)
    assert rec1.steps == rec2.steps and len(rec1.steps) == 1
    assert np.array_equal(out1, out2)
    assert out1.shape == vol.shape and out1.dtype == np.float32
    assert not np.allclose(out1, vol)
    assert (out1[~brain] == 0).all() and (out1[brain] > 0).all()
    if artefact not in ("p_thick", "p_gibbs", "p_gamma", "p_lowres"):     # random only in strength
        out3, _ = acquire(vol.copy(), brain, rng(12), cfg, spacing_mm=2.0, thick=thick)
        assert not np.array_equal(out1, out3)


def test_sample_is_deterministic_for_a_seed_and_pool_replays():
    s = synth(**WITH_TUMOR)
    a, b = s.sample(rng(1), pool=False), s.sample(rng(1), pool=False)
    assert np.array_equal(a.images, b.images) and a.record == b.record
    for k in a.labels:
        assert np.array_equal(a.labels[k], b.labels[k])
    c = s.sample(rng(2), pool=False)
    assert a.images.shape != c.images.shape or not np.array_equal(a.images, c.images)
    # A pooled synthesizer replays exactly when fed the same stream.
    cfg = dict(p_no_tumor=0.0, p_large=0.0, p_multifocal=0.0, tumor_reuse=3.0, tumor_pool=1)
    s1, s2 = synth(**cfg), synth(**cfg)
    g1, g2 = rng(9), rng(9)
    for _ in range(3):
        x, y = s1.sample(g1), s2.sample(g2)
        assert np.array_equal(x.images, y.images)


def test_sample_layout_matches_the_preprocessing_cache():
    x = synth(**WITH_TUMOR).sample(rng(8), pool=False)
    assert x.images.shape[0] == len(SEQUENCES) and x.images.dtype == np.float32
    assert x.images.shape[1:] == x.brain.shape == x.labels["ET"].shape
    assert all(2 <= n <= 80 for n in x.brain.shape)              # the brain box at 4 mm
    for v in x.images:
        inside = v[x.brain]
        assert (v[~x.brain] == 0).all() and (inside != 0).all()
        assert abs(float(inside.mean())) < 0.1 and 0.7 < float(inside.std()) < 1.3   # z-scored
    tumor = x.labels["NCR"] | x.labels["ED"] | x.labels["ET"]
    assert tumor.any() and not (tumor & ~x.brain).any()


# ----------------------------------------------------------------------------- alignment

def _marker_contrast() -> ContrastDraw:
    """ET bright on t1c (1.0), everything else dark (0.1-0.3), no noise or texture."""
    means = np.full((len(SEQUENCES), len(LABELS)), 0.2)
    means[:, : L["ED"]] = [0.1, 0.15, 0.3, 0.25]
    means[S["t1c"], L["ET"]] = 1.0
    return ContrastDraw(means=means, stds=np.zeros_like(means), tumor_texture=np.zeros(len(SEQUENCES)),
                        realistic=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_warp_moves_image_and_labels_identically(seed):
    s = synth(**NO_ARTEFACTS, **WITH_TUMOR, p_no_enhancement=0.0, p_small=0.0, p_multifocal=0.0,
              elastic_mm=(6.0, 6.0), elastic_spacing_mm=(24.0, 24.0), rotation_deg=(15.0, 15.0),
              flip_prob=1.0, ventricle_scale=(1.5, 1.5))
    x = s.sample(rng(seed), pool=False, artefacts=False, contrast=_marker_contrast())
    t1c = x.raw[S["t1c"]]
    bright = t1c > 0.6                                   # ET voxels by their image intensity
    assert x.labels["ET"].sum() > 20
    assert _dice(bright, x.labels["ET"]) > 0.8
    # The same image against another warp's labels does not line up.
    other = s.sample(rng(seed + 100), pool=False, artefacts=False, contrast=_marker_contrast())
    if other.labels["ET"].shape == bright.shape:
        assert _dice(bright, other.labels["ET"]) < 0.5


# ----------------------------------------------------------------------------- contrast relations

def test_label_defining_relations_hold_for_every_contrast_draw():
    cfg = RandomizeConfig()
    t1n, t1c, t2w, t2f = (S[s] for s in ("t1n", "t1c", "t2w", "t2f"))
    realistic = 0
    for seed in range(300):
        c = sample_contrast(rng(seed), cfg)
        m = c.means
        realistic += c.realistic
        others = [i for i in range(len(LABELS)) if i != L["ET"]]
        assert m[t1c, L["ET"]] > 1.1 * m[t1c, others].max()             # ET brightest on t1c (NCR too)
        ref = m[:, [L["GM"], L["WM"]]].mean(1)
        assert m[t1c, L["ET"]] / ref[t1c] > 1.05 * m[t1n, L["ET"]] / ref[t1n]   # ET enhances
        for s in (t2w, t2f):
            assert m[s, L["ED"]] > 1.05 * m[s, L["WM"]]                   # edema bright on T2 / FLAIR
        assert m[t2f, L["ED"]] > 1.2 * m[t2f, L["GM"]]                    # ... and than GM on FLAIR
        for fluid in ("CSF", "VENT"):                                     # FLAIR nulls free water
            assert m[t2f, L[fluid]] * 1.15 < min(m[t2f, L["GM"]], m[t2f, L["WM"]])
        rel = np.abs(m[:, L["NCR"]] - m[:, L["ED"]]) / ((m[:, L["NCR"]] + m[:, L["ED"]]) / 2)
        assert rel.max() >= cfg.separation                              # core boundary visible somewhere
        assert (m > 0).all() and (c.stds >= 0).all()
    assert 80 < realistic < 220                                          # both modes are drawn


def test_relations_are_enforced_even_on_adversarial_means():
    bad = np.ones((len(SEQUENCES), len(LABELS)))
    bad[:, L["ET"]] = 0.05
    bad[:, L["ED"]] = 0.05
    m = enforce_relations(bad, rng(0), RandomizeConfig())
    assert m[S["t1c"], L["ET"]] > m[S["t1c"], L["NCR"]] and m[S["t2f"], L["ED"]] > m[S["t2f"], L["WM"]]
    assert m[S["t2f"], L["ED"]] > m[S["t2f"], L["GM"]] > m[S["t2f"], L["CSF"]]
    assert m[S["t2f"], L["VENT"]] < m[S["t2f"], L["WM"]]
    assert (np.abs(m[:, L["NCR"]] - m[:, L["ED"]]) / ((m[:, L["NCR"]] + m[:, L["ED"]]) / 2)).max() >= 0.25
    assert m[S["t1n"], L["ET"]] < m[S["t1c"], L["ET"]]


@pytest.mark.parametrize("seed", [10, 11, 12, 13])
def test_relations_hold_in_rendered_images(seed):
    s = synth(**NO_ARTEFACTS, **WITH_TUMOR, p_no_enhancement=0.0, p_small=0.0, p_multifocal=0.0)
    lm, _, _ = s.label_map(rng(seed), pool=False)
    raw = render_intensities(lm, sample_contrast(rng(seed + 1), s.config), rng(seed + 2))
    et, ncr, ed = lm.labels["ET"], lm.labels["NCR"], lm.labels["ED"]
    normal = lm.brain & ~(et | ncr | ed)
    wm = lm.fractions[L["WM"]] > 0.9
    assert et.sum() > 5 and wm.sum() > 5
    t1c = raw[S["t1c"]]
    assert t1c[et].mean() > t1c[ncr | ed].mean() and t1c[et].mean() > t1c[normal].mean()
    for seq in ("t2w", "t2f"):
        if ed.sum() > 5:                                 # some tumors have (almost) no edema
            assert raw[S[seq]][ed].mean() > raw[S[seq]][wm].mean()


# ----------------------------------------------------------------------------- resolution

def test_thick_slices_stay_on_the_model_grid_and_lose_resolution_along_one_axis():
    m = thick_slice_matrix(40, 2.5, 0.7)
    assert m.shape == (40, 40) and np.allclose(m.sum(1), 1.0, atol=1e-5)
    vol = np.zeros((30, 40, 20), np.float32)
    vol[:, 20, :] = 1.0                                                  # one thin plane along axis 1
    out = thick_slices(vol, axis=1, thickness_mm=6.0, spacing_mm=2.0, offset=0.3)
    assert out.shape == vol.shape
    assert np.allclose(out.sum(axis=1), vol.sum(axis=1), atol=0.35)      # roughly conserved
    assert (out[0, :, 0] > 1e-3).sum() >= 3                              # spread over >= 3 voxels
    assert np.allclose(out[:, :, 0], out[:, :, 5])                       # other axes untouched
    const = np.full((10, 12, 9), 3.0, np.float32)
    assert np.allclose(thick_slices(const, axis=2, thickness_mm=7.0, spacing_mm=2.0), 3.0, atol=1e-5)


def test_a_thick_slice_sample_is_on_the_model_grid_with_full_resolution_labels():
    base = dict(**NO_ARTEFACTS, **WITH_TUMOR)
    clean = synth(**base).sample(rng(21), pool=False)
    thick = synth(**{**base, "p_thick": 1.0, "p_thick_shared": 1.0, "thick_mm": (7.0, 7.0)}).sample(rng(21), pool=False)
    assert thick.images.shape == clean.images.shape
    assert all(np.array_equal(thick.labels[k], clean.labels[k]) for k in clean.labels)
    steps = {tuple(v) for v in thick.record["acquisition"].values()}
    assert len(steps) == 1 and "thick(" in next(iter(steps))[0]          # one protocol for all
    assert not np.allclose(thick.images, clean.images)


def test_ghosting_and_motion_keep_shape_and_energy():
    g = rng(1)
    vol = g.random((16, 20, 12)).astype(np.float32)
    for out in (ghosting(vol, axis=1, period=3, strength=0.5),
                motion(vol, axis=0, shift_vox=np.array([2.0, 0.0, 1.0]), start=0.5)):
        assert out.shape == vol.shape and np.isfinite(out).all()
        assert 0.5 < out.sum() / vol.sum() < 1.5 and not np.allclose(out, vol)


# ----------------------------------------------------------------------------- tumor morphology

def _tumor(seed: int, **kw):
    cfg = RandomizeConfig(**{**WITH_TUMOR, "p_small": 0.0, "p_large": 0.0, "p_multifocal": 0.0,
                             "p_callosal": 0.0, "p_infratentorial": 0.0, **kw})
    s = RandomizedSynth(spacing_mm=2.0, config=dataclasses.replace(cfg, **NO_ARTEFACTS))
    lm, draw, _ = s.label_map(rng(seed), pool=False)
    return lm, draw


def _ml(mask: np.ndarray) -> float:
    return float(mask.sum()) * 8.0 / 1000.0                               # 2 mm voxels


def test_morphologies_cover_the_issue_list():
    lm, d = _tumor(1, p_no_enhancement=1.0, p_no_necrosis=0.0)
    assert d.spec.enhancement == "none" and not lm.labels["ET"].any() and lm.labels["NCR"].any()
    lm, d = _tumor(2, p_small=1.0)
    assert d.size == "small" and 0 < _ml(lm.labels["NCR"] | lm.labels["ET"]) < 2.0
    lm, d = _tumor(3, p_large=1.0)
    assert d.size == "large" and _ml(lm.labels["NCR"] | lm.labels["ET"] | lm.labels["ED"]) > 150.0
    lm, d = _tumor(4, p_multifocal=1.0)
    assert len(d.spec.lesions) >= 2
    lm, d = _tumor(5, p_callosal=1.0)
    assert d.site == "callosal" and abs(d.spec.lesions[0].centre_mm[0]) < 6
    lm, d = _tumor(6, p_infratentorial=1.0)
    assert d.site == "infratentorial" and d.spec.lesions[0].centre_mm[2] < 5
    lm, d = _tumor(7, p_cyst=1.0, p_no_enhancement=0.0, p_no_necrosis=0.0)
    assert d.cyst_depth_mm is not None and lm.fractions[L["CYST"]].sum() > 0
    lm, d = _tumor(8, p_no_tumor=1.0)
    assert d.spec is None and not any(v.any() for v in lm.labels.values())


# ----------------------------------------------------------------------------- training source

def test_randomized_source_config_and_errors():
    src = SourceConfig(name="r", kind="randomized")
    assert src.randomize is None and src.path == ""
    cfg = config_from_dict({"name": "t", "data": {"sources": [
        {"name": "r", "kind": "randomized", "weight": 2.0, "randomize": {"p_thick": 0.9, "thick_mm": [3, 6]}}]}})
    assert cfg.data.sources[0].randomize.p_thick == 0.9 and cfg.data.sources[0].randomize.thick_mm == (3.0, 6.0)
    with pytest.raises(InputError, match="takes no path"):
        SourceConfig(name="r", kind="randomized", path="x")
    with pytest.raises(InputError, match="only used by kind"):
        config_from_dict({"name": "t", "data": {"sources": [
            {"name": "p", "kind": "phantoms", "path": "x", "randomize": {}}]}})
    with pytest.raises(InputError, match="p_thick must be a probability"):
        config_from_dict({"name": "t", "data": {"sources": [
            {"name": "r", "kind": "randomized", "randomize": {"p_thick": 2}}]}})
    with pytest.raises(InputError, match="unknown key"):
        config_from_dict({"name": "t", "data": {"sources": [
            {"name": "r", "kind": "randomized", "randomize": {"p_thik": 0.5}}]}})


def test_mixture_streams_randomized_samples_with_every_concept_supervised():
    src = SourceConfig(name="r", kind="randomized", randomize=RandomizeConfig(**WITH_TUMOR))
    entry = randomized_entries(src, SPACING)
    assert entry.files == () and entry.supervised == CONCEPTS
    ds = MixtureDataset(sources=[entry], crop_size=(24, 24, 24), prompts_per_sample=5, foreground_prob=1.0,
                        augment_config=None, seed=0)
    a = ds.sample(rng(3))
    b = MixtureDataset(sources=[entry], crop_size=(24, 24, 24), prompts_per_sample=5, foreground_prob=1.0,
                       augment_config=None, seed=0).sample(rng(3))
    assert a["images"].shape == (4, 24, 24, 24) and a["targets"].shape == (5, 24, 24, 24)
    assert a["source"] == "r" and bool(a["present"].all()) and float(a["loss_mask"].sum()) == 5
    assert np.array_equal(a["images"].numpy(), b["images"].numpy())
    t = {c: a["targets"][i].numpy().astype(bool) for i, c in enumerate(a["concepts"])}
    assert t["WT"].any() and not (t["TC"] & ~t["WT"]).any() and np.array_equal(t["TC"], t["NCR"] | t["ET"])
    assert concept_bit("WT") > 0


# ----------------------------------------------------------------------------- written cases

def test_written_randomized_case_loads_with_its_labels(tmp_path):
    from vlseg.io import load_case
    from vlseg.synth.randomize_cli import main, write_randomized_case

    s = synth(**WITH_TUMOR)
    folder = write_randomized_case(tmp_path, s, 7, 0)
    again = write_randomized_case(tmp_path, s, 7, 0)                     # complete: skipped
    assert again == folder
    files = {k: folder / f"{folder.name}-{k}.nii.gz" for k in (*SEQUENCES, "seg")}
    case = load_case({k: files[k] for k in SEQUENCES}, label=files["seg"], label_convention="brats2023")
    assert set(case.images) == set(SEQUENCES) and case.labels is not None
    assert np.allclose(case.spacing, SPACING)
    assert case.labels["WT"].any() and not (case.labels["TC"] & ~case.labels["WT"]).any()
    assert main(["--out", str(tmp_path), "--n", "0"]) == 2


# ----------------------------------------------------------------------------- post-treatment

def test_post_treatment_samples_carry_a_cavity_with_fluid_and_blood_physics():
    s = synth(**NO_ARTEFACTS, **WITH_TUMOR, p_post=1.0, p_small=0.0, p_multifocal=0.0)
    seen_rc = 0
    for seed in range(3):
        lm, tumor, info = s.label_map(rng(seed), pool=False)
        assert info["tumor"]["timepoint"] == "post" and tumor.post is not None
        labels = lm.labels
        assert set(labels) == {"NCR", "ED", "ET", "RC"}
        stacked = np.stack([labels[c] for c in labels]).sum(0)
        assert stacked.max() <= 1                                    # disjoint
        seen_rc += int(labels["RC"].sum() > 10)
        if not info["tumor"]["postop"]["residual_enhancing"]:
            assert not labels["ET"].any()
    assert seen_rc == 3
    # Relations: the cavity's fluid is darker than the parenchyma on both T1s; blood is bright on
    # t1n and does not enhance.
    for seed in range(100):
        m = sample_contrast(rng(seed), RandomizeConfig()).means
        par = m[:, [L["GM"], L["WM"]]]
        for seq in ("t1n", "t1c"):
            assert m[S[seq], L["FLUID"]] < par[S[seq]].min()
        assert m[S["t1n"], L["BLOOD"]] > par[S["t1n"]].max()
        ref = par.mean(1)
        assert m[S["t1c"], L["BLOOD"]] / ref[S["t1c"]] <= m[S["t1n"], L["BLOOD"]] / ref[S["t1n"]] + 1e-9


def test_pre_treatment_samples_have_an_empty_cavity_label():
    lm, tumor, info = synth(**WITH_TUMOR).label_map(rng(5), pool=False)
    assert tumor.post is None and info["tumor"]["timepoint"] == "pre" and not lm.labels["RC"].any()


def test_written_post_treatment_case_uses_the_brats2024_labels(tmp_path):
    from vlseg.synth.randomize_cli import write_randomized_case
    import json

    folder = write_randomized_case(tmp_path, synth(**WITH_TUMOR, p_post=1.0, p_small=0.0), 3, 0)
    info = json.loads(next(folder.glob("*-synth.json")).read_text())
    assert info["label_convention"] == "brats2024" and info["label_voxels"]["RC"] > 0
