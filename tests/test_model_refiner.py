"""The refinement stage (issue 21): network shapes, storage, simulated stage-1 training data,
training + resume, and the predictor's use of it (and --fast)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from vlseg.errors import ModelError
from vlseg.model.refiner import RefinerConfig, build_refiner, list_refiners
from vlseg.model.refiner_checkpoint import has_refiner, load_refiner, save_refiner
from vlseg.training.config import Stage1SimConfig

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from test_train_loop import write_tiny_cases  # noqa: E402

TINY = {"name": "refine_t", "channels": [4, 8, 8], "film_hidden": 8, "patch_size": [16, 16, 16],
        "bias_correction": "none"}


def test_preset_and_config_validation():
    assert "refine_tiny" in list_refiners()
    r = build_refiner("refine_tiny")
    assert r.config.concepts == ("WT", "TC", "ET")
    assert r.num_parameters() < 1_000_000  # a small stage: the bundle stays <= 25 MB
    with pytest.raises(ModelError, match="patch_size"):
        RefinerConfig(name="x", channels=(4, 8, 8), patch_size=(10, 16, 16))
    with pytest.raises(ModelError, match="unknown fields"):
        RefinerConfig.from_dict({"name": "x", "bogus": 1})


def test_shapes_and_untrained_refiner_returns_stage1():
    r = build_refiner(TINY)
    B, P, S = 2, 3, (16, 24, 16)
    images, present = torch.randn(B, 4, *S), torch.ones(B, 4, dtype=torch.bool)
    stage1 = torch.rand(B, P, *S)
    text = torch.randn(P, 384)
    with torch.no_grad():
        logits = r(images, present, stage1, text)
    assert logits.shape == (B, P, *S)
    # Output layers start at zero: an untrained refiner answers what the first stage said
    assert torch.allclose(torch.sigmoid(logits), stage1.clamp(1e-3, 1 - 1e-3), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4"):
        r(torch.randn(1, 4, 10, 16, 16), present[:1], torch.rand(1, P, 10, 16, 16), text)


def test_prompt_changes_the_output_once_trained_weights_move():
    r = build_refiner(TINY)
    torch.manual_seed(0)
    for p in r.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    images, present = torch.randn(1, 4, 16, 16, 16), torch.ones(1, 4, dtype=torch.bool)
    stage1 = torch.rand(1, 2, 16, 16, 16)
    stage1[:, 1] = stage1[:, 0]
    with torch.no_grad():
        out = r(images, present, stage1, torch.randn(2, 384))
    assert not torch.allclose(out[:, 0], out[:, 1])  # same probability, different prompt


def test_save_load_roundtrip_and_sha_check(tmp_path):
    r = build_refiner(TINY)
    for p in r.parameters():
        p.data.normal_()
    save_refiner(r, tmp_path, {"note": "test"})
    assert has_refiner(tmp_path)
    meta = json.loads((tmp_path / "refiner.json").read_text())
    assert meta["format"] == "vlseg-refiner" and len(meta["provenance"]["weights_sha256"]) == 64
    back = load_refiner(tmp_path)
    for (k, a), (_, b) in zip(r.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    data = bytearray((tmp_path / "refiner.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "refiner.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_refiner(tmp_path)


def test_simulated_stage1_is_a_degraded_target():
    from vlseg.training.refine_data import simulate_stage1

    zz, yy, xx = np.mgrid[:48, :48, :48]
    target = ((zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2) < 12 ** 2
    rng = np.random.default_rng(0)
    dices, identical = [], 0
    for _ in range(12):
        p = simulate_stage1(target, rng, Stage1SimConfig())
        assert p.shape == target.shape and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
        m = p >= 0.5
        dices.append(2 * (m & target).sum() / max(1, m.sum() + target.sum()))
        identical += int((m == target).all())
    assert np.median(dices) > 0.7  # close to the truth, as a first stage is
    assert identical == 0          # but never the truth itself
    empty = simulate_stage1(np.zeros_like(target), rng, Stage1SimConfig(p_false_blob=0.0))
    assert empty.max() < 0.5


def test_refine_training_checkpoints_and_resumes(tmp_path):
    """The refinement recipe's loop on tiny cases: partial labels (ET only), checkpoints with the
    refiner + optimizer + state, --resume continues from the newest one."""
    sys.path.insert(0, str(REPO / "train"))
    import train as train_script

    write_tiny_cases(tmp_path / "et", n=3, label="ET", seed=2)
    args = ["--config", str(REPO / "train/configs/refine_test.yaml"), "--no-progress", "--override",
            f"data.sources.0.path={tmp_path / 'et'}", f"data.cache_dir={tmp_path / 'cache'}",
            f"output_dir={tmp_path / 'out'}"]
    assert train_script.main(args) == 0
    ckpts = sorted((tmp_path / "out/checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_0000002", "step_0000004"]
    for name in ("refiner.safetensors", "refiner.json", "optimizer.safetensors", "state.json"):
        assert (ckpts[-1] / name).is_file()
    meta = json.loads((ckpts[-1] / "refiner.json").read_text())
    assert meta["provenance"]["stage"] == "refine" and meta["provenance"]["data_sources"][0]["supervises"] == ["ET"]
    assert train_script.main([*args, "max_steps=6", "--resume"]) == 0
    log = [json.loads(x) for x in (tmp_path / "out/log.jsonl").read_text().splitlines()]
    starts = [e for e in log if e["event"] == "start"]
    assert starts[-1]["step"] == 4 and starts[-1]["resumed_from"].endswith("step_0000004")
    steps = [e["step"] for e in log if e["event"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all("dice_stage1" in e and "dice_refined" in e for e in log if e["event"] == "train")
    load_refiner(tmp_path / "out/checkpoints/step_0000006")


def _write_case_1mm(root: Path, shape: tuple[int, int, int] = (40, 44, 36)) -> Path:
    """A small 1 mm four-sequence case with a ring-enhancing lesion."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    brain = sum(((g - m) / (s * 0.45)) ** 2 for g, m, s in zip((zz, yy, xx), c, shape)) < 1
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for seq in ("t1n", "t1c", "t2w", "t2f"):
        img = brain * (100 + 5 * rng.normal(size=shape)) + 80 * ((r < 6) & (r >= 4)) * (seq == "t1c")
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), root / f"case_{seq}.nii.gz")
    return root


@pytest.fixture(scope="module")
def tiny_stage1():
    from vlseg.model import build_model

    model = build_model({"name": "t", "channels": [4, 8, 16], "res_blocks": 0, "head_scales": 1,
                         "feature_dim": 4, "prompt_dim": 8, "head_hidden": [4], "text_lora_rank": 2,
                         "spacing_mm": 2.0, "patch_size": [32, 32, 32]})
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if not n.startswith("text_encoder.") or "lora_B" in n:
            p.data.normal_(0, 0.3)
    return model


def test_predictor_refines_once_and_fast_skips(tmp_path, tiny_stage1):
    from vlseg.io import load_case
    from vlseg.predict import Predictor

    case = load_case(_write_case_1mm(tmp_path / "case"))
    refiner = build_refiner({**TINY, "crop_threshold": 0.01})
    for p in refiner.parameters():  # a trained-looking refiner: it must change the answer
        p.data.normal_(0, 0.2)
    fast = Predictor(tiny_stage1, fast=True, refiner=refiner)
    assert not fast.refines
    fast.set_case(case)
    m_fast = fast.masks(("WT", "ET", "NCR"))
    assert fast.stages("NCR") == ("first",) and fast.refinement() is None

    slow = Predictor(tiny_stage1, refiner=refiner)
    slow.set_case(case)
    slow.masks(("WT",))
    result = slow.refinement()
    assert result is not None and result.ran and result.spacing_mm == 1.0, result
    assert slow.stages("NCR") == ("first", "refine") and slow.stages("ET") == ("first", "refine")
    probs_fast, _ = fast.labelling()
    probs_slow, _ = slow.labelling()
    assert not np.allclose(probs_fast["WT"], probs_slow["WT"])
    # Outside the crop, the first stage's probabilities stand
    outside = np.ones(case.shape, dtype=bool)
    outside[result.box] = False
    assert np.array_equal(probs_fast["WT"][outside], probs_slow["WT"][outside])
    # Refinement runs once per case, not once per question
    slow.masks(("ET", "NCR", "ED"))
    assert slow.refinement() is result
    assert set(m_fast) == {"WT", "ET", "NCR"}


def test_untrained_refiner_keeps_the_first_stage_answer(tmp_path, tiny_stage1):
    from vlseg.io import load_case
    from vlseg.predict import Predictor

    case = load_case(_write_case_1mm(tmp_path / "case"))
    a, b = Predictor(tiny_stage1), Predictor(tiny_stage1, refiner=build_refiner({**TINY, "crop_threshold": 0.01}))
    for p in (a, b):
        p.set_case(case)
    ma, mb = a.masks(("WT", "TC", "ET")), b.masks(("WT", "TC", "ET"))
    assert b.refinement().ran
    for c in ma:
        assert (ma[c] != mb[c]).mean() < 1e-3, c


def test_refinement_skipped_on_a_scan_no_finer_than_stage1(tmp_path, tiny_stage1):
    from vlseg.model.refine_inference import refine

    from vlseg.model.preprocess import CaseGridBoxes, SequenceNorm

    r = build_refiner(TINY)
    stage1 = np.full((1, 10, 10, 10), 0.9, dtype=np.float32)
    images = CaseGridBoxes(images={"t1c": np.zeros((10, 10, 10))}, shape=(10, 10, 10),
                           norms={"t1c": SequenceNorm(None, 0.0, 1.0)})
    out = refine(r, images=images, present=(True,) * 4,
                 spacing_in=(2.0, 2.0, 2.0), stage1=stage1, text=torch.zeros(1, 384), stage1_spacing_mm=2.0)
    assert not out.ran and "no finer" in out.reason
    none = refine(r, images=images, present=(True,) * 4,
                  spacing_in=(1.0, 1.0, 1.0), stage1=stage1 * 0, text=torch.zeros(1, 384), stage1_spacing_mm=2.0)
    assert not none.ran and "no tumor" in none.reason


def test_lora_disabled_gives_the_frozen_backbone(tiny_stage1):
    from vlseg.model.refine_inference import base_text_embeddings
    from vlseg.text import build_text_encoder

    te = tiny_stage1.text_encoder
    plain = build_text_encoder("minilm").eval()
    phrase = ["the enhancing tumor"]
    adapted = te.encode(phrase)
    base = base_text_embeddings(te, build_refiner(TINY), phrase)
    assert torch.allclose(base, plain.encode(phrase), atol=1e-5)
    assert not torch.allclose(adapted, base, atol=1e-4)  # the LoRA (B != 0) changes the embedding
    assert torch.equal(te.encode(phrase), adapted)      # and its cache was not touched


def test_segmenter_answer_names_both_stages_and_fast(tmp_path, random_checkpoint):
    """answer.json: the refiner's sha256 beside the checkpoint's, the stages of each mask; a
    checkpoint without a refiner (today's default) answers from stage 1; fast skips stage 2."""
    from vlseg.model.refiner_checkpoint import refiner_sha256
    from vlseg.segmenter import Segmenter

    case = _write_case_1mm(tmp_path / "case", (64, 72, 64))  # the smallest field of view answered
    folder = tmp_path / "two_stage"
    shutil.copytree(random_checkpoint, folder)

    single = Segmenter.from_pretrained(folder)
    single.set_case(case)
    js = single.ask("segment the whole tumor").to_json()
    assert js["model"]["refiner"] is None and js["model"]["stages"] == ["first"]
    assert all(t["stages"] == ["first"] for t in js["targets"]) and "refinement" not in js

    refiner = build_refiner({**TINY, "bias_correction": "n4", "crop_threshold": 0.001})
    save_refiner(refiner, folder)
    seg = Segmenter.from_pretrained(folder)
    seg.set_case(case)
    answer = seg.ask("segment the whole tumor and the enhancing tumor")
    js = answer.to_json()
    assert js["model"]["refiner"]["sha256"] == refiner_sha256(folder)
    assert len(js["model"]["checkpoint_sha256"]) == 64 and js["model"]["stages"] == ["first", "refine"]
    assert js["refinement"]["ran"], js["refinement"]
    assert [t["stages"] for t in js["targets"]] == [["first", "refine"]] * len(js["targets"])
    answer.save(tmp_path / "out")
    assert json.loads((tmp_path / "out/answer.json").read_text())["model"]["refiner"]["sha256"] == refiner_sha256(folder)

    fast = Segmenter.from_pretrained(folder, fast=True)
    assert fast.refiner is None
    fast.set_case(case)
    js = fast.ask("segment the whole tumor").to_json()
    assert js["model"]["refiner"] is None and all(t["stages"] == ["first"] for t in js["targets"])
    assert fast.fork().predictor.refines is False and seg.fork().predictor.refines is True
    # A fast fork of a two-stage Segmenter (what `vlseg bench` times beside it): same model, stage 1 only
    quick = seg.fork(fast=True)
    assert quick.model is seg.model and not quick.predictor.refines and seg.predictor.refines
    quick.set_case(case)
    js = quick.ask("segment the whole tumor").to_json()
    assert js["model"]["refiner"] is None and all(t["stages"] == ["first"] for t in js["targets"])
