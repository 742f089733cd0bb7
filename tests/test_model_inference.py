"""Preprocessing and the predictor core: prepare once, decode per prompt, back in the input grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_model_core import HashText, tiny_cfg
from vlseg.errors import ModelError
from vlseg.io import Case, Grid
from vlseg.model import build_model
from vlseg.model.inference import decode, predict_probabilities, prepare
from vlseg.model.preprocess import (
    nonzero_bbox, normalize_case_images, normalize_volume, pad_to_multiple, resample_to_shape,
    resample_to_spacing,
)


def small_model(**kw):
    torch.manual_seed(0)
    return build_model(tiny_cfg(**kw), text_encoder=HashText()).eval()


def blob_case(shape=(20, 24, 18), spacing=3.0, seqs=("t1n", "t1c", "t2w", "t2f")) -> Case:
    rng = np.random.default_rng(0)
    brain = np.zeros(shape, bool)
    brain[3:-3, 4:-4, 2:-2] = True
    images = {s: np.where(brain, rng.normal(100 + 10 * i, 5, shape), 0).astype(np.float32)
              for i, s in enumerate(seqs)}
    affine = np.diag([spacing, spacing, spacing, 1.0])
    return Case(images=images, affine=affine, source_grid=Grid(shape=shape, affine=affine),
                labels=None, case_id="blob")


def test_normalisation():
    vol = np.zeros((10, 10, 10), np.float32)
    vol[2:8, 2:8, 2:8] = np.random.default_rng(0).normal(500, 40, (6, 6, 6))
    vol[5, 5, 5] = 1e6  # outlier is clipped
    out = normalize_volume(vol)
    inside = out[vol != 0]
    assert abs(float(np.median(inside))) < 0.2 and out.max() == 5.0
    assert (out[vol == 0] == 0).all() and out.dtype == np.float32
    assert (normalize_volume(np.zeros((4, 4, 4))) == 0).all()
    images, present = normalize_case_images(blob_case(seqs=("t1c", "t2f")))
    assert images.shape == (4, 20, 24, 18) and present.tolist() == [False, True, False, True]
    assert (images[0] == 0).all() and (images[2] == 0).all() and images[1].std() > 0


def test_resampling_and_crop_helpers():
    vol = torch.rand(2, 20, 24, 18)
    down = resample_to_spacing(vol, (3.0, 3.0, 3.0), 2.0)
    assert down.shape == (2, 30, 36, 27)
    assert resample_to_shape(down, (20, 24, 18)).shape == (2, 20, 24, 18)
    labels = torch.randint(0, 4, (1, 10, 10, 10), dtype=torch.uint8)
    up = resample_to_shape(labels, (20, 20, 20), "nearest")
    assert up.dtype == torch.uint8 and set(up.unique().tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="nearest"):
        resample_to_shape(labels, (20, 20, 20), "trilinear")
    arr = np.zeros((1, 10, 12, 14))
    arr[0, 3:5, 4:9, 2] = 1
    assert nonzero_bbox(arr, margin=1) == (slice(2, 6), slice(3, 10), slice(1, 4))
    padded, valid = pad_to_multiple(torch.ones(1, 5, 8, 9), 4)
    assert padded.shape == (1, 8, 8, 12) and padded[(slice(None), *valid)].all()
    assert padded.sum() == 5 * 8 * 9


def test_prepare_once_decode_many_on_phantom(phantom_case_2mm):
    from vlseg.io import load_case

    case = load_case(phantom_case_2mm)
    model = small_model(patch_size=(96, 96, 96))
    calls = []
    model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(1))
    prepared = prepare(model, case)
    assert not prepared.sliding_window  # a 2 mm brain fits one pass
    a = decode(model, prepared, model.embed_prompts(["edema", "core"]))
    b = decode(model, prepared, ["whole tumor"])
    assert len(calls) == 1
    assert a.shape == (2, *case.shape) and b.shape == (1, *case.shape) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    # Outside the brain box (+ margin) the probability is exactly 0.
    images, _ = normalize_case_images(case)
    box = nonzero_bbox(images, margin=5)
    outside = np.ones(case.shape, bool)
    outside[box] = False
    assert outside.any() and (a[:, outside] == 0).all()
    inside = a[(slice(None), *box)]
    assert inside.max() > 0


def test_resampled_case_and_missing_sequences_round_trip_to_input_grid():
    model = small_model()
    case = blob_case(spacing=3.0, seqs=("t2f",))  # model works at 2 mm
    prepared = prepare(model, case)
    assert prepared.model_shape == (30, 36, 27) and prepared.present == (False, False, False, True)
    out = predict_probabilities(model, case, ["edema", "tumor core"])
    assert set(out) == {"edema", "tumor core"} and out["edema"].shape == case.shape


def test_sliding_window_matches_whole_pass_when_one_window_covers_all():
    model = small_model(patch_size=(64, 64, 64))
    case = blob_case(shape=(20, 24, 18), spacing=2.0)
    whole = prepare(model, case)
    sliding = prepare(model, case, whole_max_voxels=1)
    assert sliding.sliding_window and not whole.sliding_window
    for f, g in zip(whole.features, sliding.features):
        torch.testing.assert_close(f, g)
    small = small_model(patch_size=(16, 16, 16))
    tiled = prepare(small, blob_case(shape=(40, 36, 30), spacing=2.0), whole_max_voxels=1)
    probs = decode(small, tiled, ["edema"])
    assert tiled.sliding_window and probs.shape == (1, 40, 36, 30) and np.isfinite(probs).all()


def test_misuse_fails_clearly():
    model, other = small_model(), small_model()
    prepared = prepare(model, blob_case())
    with pytest.raises(ModelError, match="different model"):
        decode(other, prepared, ["edema"])
    with pytest.raises(TypeError, match="PreparedCase"):
        decode(model, "not prepared", ["edema"])
    with pytest.raises(ModelError, match="requested"):
        prepare(model, blob_case(), device="cuda")


@pytest.mark.parametrize("grid,out,crop", [
    ((30, 36, 27), (20, 24, 18), (slice(3, 20), slice(0, 36), slice(5, 6))),
    ((60, 60, 39), (120, 120, 78), (slice(10, 50), slice(2, 58), slice(0, 39))),
    ((60, 60, 39), (77, 101, 50), (slice(59, 60), slice(0, 1), slice(1, 38))),
])
def test_uncrop_resample_equals_full_volume_interpolation(grid, out, crop):
    from vlseg.model.preprocess import uncrop_resample

    torch.manual_seed(0)
    block = torch.rand(2, *[s.stop - s.start for s in crop])
    full = torch.zeros(2, *grid)
    full[(slice(None), *crop)] = block
    torch.testing.assert_close(torch.from_numpy(uncrop_resample(block, crop, grid, out)), resample_to_shape(full, out),
                               atol=1e-5, rtol=1e-5)
