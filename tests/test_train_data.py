"""Training data pieces: phrase bank, partial-label mixture, augmentation, loss, config."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlseg import vocab

CONCEPTS = vocab.PRE_TREATMENT_CODES
CONCEPT_NAMES = vocab.names()
from vlseg.errors import InputError
from vlseg.training.augment import augment, random_crop
from vlseg.training.config import AugmentConfig, SourceConfig, load_config
from vlseg.training.losses import MaskedPromptLoss
from vlseg.training.prompts import (
    canonical_prompt,
    concept_phrases,
    heldout_prompts,
    sample_prompt,
    training_prompts,
)
from vlseg.training.sources import (
    concept_bit,
    MixtureDataset,
    SourceEntries,
    collate,
    folder_label_masks,
    supervised_concepts,
)


# ----------------------------------------------------------------------------- prompts

def test_phrase_bank_is_unambiguous_and_heldout_is_unseen():
    bank = concept_phrases()
    assert set(bank) == set(vocab.codes())
    assert {"necrosis", "oedema", "enhancing rim", "whole tumor", "tumour", "NCR", "ED", "ET", "TC", "WT"} <= {
        t for terms in bank.values() for t in terms}
    owner: dict[str, str] = {}
    for c in CONCEPTS:
        assert canonical_prompt(c) == CONCEPT_NAMES[c]
        assert len(training_prompts(c)) > 50
        for p in training_prompts(c):
            assert owner.setdefault(p, c) == c, f"{p!r} trains both {owner[p]} and {c}"
    for c in CONCEPTS:
        held = heldout_prompts(c)
        assert held and not set(held) & set(owner), "held-out phrasings must never be trained"
    assert len(concept_phrases(include_heldout=True)["ED"]) > len(bank["ED"])
    rng = np.random.default_rng(0)
    drawn = {sample_prompt("ET", rng) for _ in range(200)}
    assert len(drawn) > 20 and drawn <= set(training_prompts("ET")) | {CONCEPT_NAMES["ET"]}


# ----------------------------------------------------------------------------- partial labels

def _cache_file(tmp_path, name: str, shape=(24, 24, 24), seed=0) -> str:
    """A cache file whose labels hold ALL concepts, so any leak would be visible."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(4, *shape)).astype(np.float16)
    bits = np.zeros(shape, np.uint8)
    c = np.array(shape) // 2
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    regions = {"ED": (r < 9) & (r >= 6), "ET": (r < 6) & (r >= 3), "NCR": r < 3}
    for concept, m in regions.items():
        bits[m] |= concept_bit(concept)
    bits[r < 6] |= concept_bit("TC")
    bits[r < 9] |= concept_bit("WT")
    path = tmp_path / f"{name}.npz"
    np.savez_compressed(path, images=images, bits=bits, present=np.ones(4, bool))
    return str(path)


def test_partial_label_mixture_supervises_only_annotated_concepts(tmp_path):
    ed = SourceConfig(name="only_ed", kind="folder", path="x", label_map={"1": "ED"})
    et = SourceConfig(name="only_et", kind="folder", path="x", label_map={"1": "ET"})
    assert supervised_concepts(ed) == ("ED",) and supervised_concepts(et) == ("ET",)
    entries = [
        SourceEntries("only_ed", 1.0, supervised_concepts(ed), (_cache_file(tmp_path, "a", seed=1),)),
        SourceEntries("only_et", 1.0, supervised_concepts(et), (_cache_file(tmp_path, "b", seed=2),)),
    ]
    ds = MixtureDataset(sources=entries, crop_size=(16, 16, 16), prompts_per_sample=3, foreground_prob=1.0,
                        augment_config=None, seed=0)
    rng = np.random.default_rng(0)
    seen = {"only_ed": 0, "only_et": 0}
    empty_supervised = 0
    for _ in range(60):
        s = ds.sample(rng)
        want = {"only_ed": "ED", "only_et": "ET"}[s["source"]]
        seen[s["source"]] += 1
        mask = s["loss_mask"].numpy()
        supervised = [c for c, m in zip(s["concepts"], mask) if m > 0]
        assert supervised == [want]
        assert mask.tolist() == [1.0, 0.0, 0.0] and len(set(s["concepts"])) == 3
        # unsupervised slots carry no target at all
        assert int(s["targets"][1:].sum()) == 0
        # the supervised target is exactly that concept's label in the crop (never e.g. WT)
        tgt = s["targets"][0].numpy().astype(bool)
        empty_supervised += int(not tgt.any())
        assert s["phrases"][0] in set(training_prompts(want)) | {CONCEPT_NAMES[want]}
    assert seen["only_ed"] > 10 and seen["only_et"] > 10
    assert empty_supervised < 10  # crops are centred on the annotated concept

    # Batches keep per-sample prompts; the loss ignores every masked slot
    batch = collate([ds.sample(rng) for _ in range(4)])
    assert batch["images"].shape == (4, 4, 16, 16, 16) and batch["targets"].shape == (4, 3, 16, 16, 16)
    assert batch["loss_mask"].sum() == 4 and len(batch["phrases"]) == 4


def test_annotated_but_absent_concept_is_an_empty_target(tmp_path):
    src = SourceConfig(name="full", kind="phantoms", path="x")
    # Untreated phantoms also say "no resection cavity" (a true negative, not a missing label).
    assert supervised_concepts(src) == (*CONCEPTS, "RC")
    assert supervised_concepts(SourceConfig(name="post", kind="brats2024", path="x")) == (*CONCEPTS, "RC")
    path = tmp_path / "healthy.npz"
    np.savez_compressed(path, images=np.ones((4, 16, 16, 16), np.float16), bits=np.zeros((16, 16, 16), np.uint8),
                        present=np.array([True, False, True, True]))
    ds = MixtureDataset(sources=[SourceEntries("full", 1.0, CONCEPTS, (str(path),))], crop_size=(16, 16, 16),
                        prompts_per_sample=5, foreground_prob=0.67, augment_config=None)
    s = ds.sample(np.random.default_rng(1))
    assert s["loss_mask"].tolist() == [1.0] * 5 and sorted(s["concepts"]) == sorted(CONCEPTS)
    assert int(s["targets"].sum()) == 0
    assert s["present"].tolist() == [True, False, True, True] and float(s["images"][1].abs().sum()) == 0.0
    # Only the trained model's concepts take slots: a model that segments RC is told it is absent.
    entry = SourceEntries("full", 1.0, (*CONCEPTS, "RC"), (str(path),))
    with_rc = MixtureDataset(sources=[entry], crop_size=(16, 16, 16), prompts_per_sample=6, foreground_prob=0.67,
                             augment_config=None, concepts=(*CONCEPTS, "RC"))
    s = with_rc.sample(np.random.default_rng(2))
    assert "RC" in s["concepts"] and s["loss_mask"].tolist() == [1.0] * 6 and int(s["targets"].sum()) == 0
    without = MixtureDataset(sources=[entry], crop_size=(16, 16, 16), prompts_per_sample=5, foreground_prob=0.67,
                             augment_config=None, concepts=CONCEPTS)
    assert "RC" not in without.sample(np.random.default_rng(2))["concepts"]


def test_source_annotation_rules():
    assert supervised_concepts(SourceConfig(name="s", kind="brats2021", path="x", annotates=("NCR", "ET"))) == (
        "NCR", "ET", "TC")
    full_map = {"1": "NCR", "2": "ED", "3": "ET"}
    assert supervised_concepts(SourceConfig(name="s", kind="folder", path="x", label_map=full_map)) == CONCEPTS
    with pytest.raises(InputError, match="only give"):
        supervised_concepts(SourceConfig(name="s", kind="folder", path="x", label_map={"1": "ED"}, annotates=("ET",)))
    with pytest.raises(InputError, match="label_map"):
        SourceConfig(name="s", kind="folder", path="x")
    with pytest.raises(InputError, match="unknown kind"):
        SourceConfig(name="s", kind="nnunet", path="x")


def test_folder_label_map_unions_sub_concepts():
    labels = np.array([0, 1, 2, 2, 3])
    masks = folder_label_masks(labels, {"1": "WT", "2": "ET", "3": "NCR"})
    assert set(masks) == {"NCR", "ET", "TC", "WT"}
    assert masks["WT"].tolist() == [False, True, True, True, True]
    assert masks["TC"].tolist() == [False, False, True, True, True]
    assert masks["ET"].tolist() == [False, False, True, True, False]
    with pytest.raises(InputError, match=r"\[7\]"):
        folder_label_masks(np.array([0, 7]), {"1": "ED"})


# ----------------------------------------------------------------------------- augmentation

def test_crop_pads_small_volumes_and_prefers_foreground():
    rng = np.random.default_rng(0)
    images = np.ones((4, 10, 40, 40), np.float32)
    bits = np.zeros((10, 40, 40), np.uint8)
    bits[5, 35, 35] = 1
    hits = 0
    for _ in range(30):
        img, b = random_crop(images, bits, size=(16, 16, 16), foreground=bits > 0, foreground_prob=1.0, rng=rng)
        assert img.shape == (4, 16, 16, 16) and b.shape == (16, 16, 16)
        assert img[:, :3].sum() == 0  # padded rows along the short axis stay zero
        hits += int(b.any())
    assert hits == 30


def test_augment_keeps_labels_aligned_and_one_sequence():
    rng = np.random.default_rng(3)
    bits = np.zeros((12, 12, 12), np.uint8)
    bits[2:5, 1:3, 7:11] = 1
    images = np.stack([bits.astype(np.float32) + 1.0] * 4)     # image encodes the label
    cfg = AugmentConfig(flip_prob=0.5, scale_range=(1.0, 1.0), shift_range=(0.0, 0.0), gamma_prob=0.0,
                        noise_prob=0.0, sequence_dropout_prob=1.0)
    dropped = 0
    for _ in range(20):
        img, b, present = augment(images, bits, np.ones(4, bool), config=cfg, rng=rng)
        assert 1 <= present.sum() <= 3
        dropped += 4 - int(present.sum())
        for ch in np.flatnonzero(present):
            assert np.array_equal(img[ch] == 2.0, b == 1)
        assert not img[~present].any()
    assert dropped > 0
    # Intensity augmentation leaves the background at zero
    img, _, _ = augment(np.pad(images, ((0, 0), (2, 2), (2, 2), (2, 2))), np.pad(bits, 2), np.ones(4, bool),
                        config=AugmentConfig(noise_prob=1.0, gamma_prob=1.0), rng=rng)
    assert not img[:, 0].any()


def test_sequence_dropout_keeps_the_clinical_sets_it_is_given():
    images = np.ones((4, 6, 6, 6), np.float32)
    bits = np.zeros((6, 6, 6), np.uint8)
    cfg = AugmentConfig(flip_prob=0.0, gamma_prob=0.0, noise_prob=0.0, sequence_dropout_prob=1.0,
                        sequence_keep_sets=(("t1c", "t2f"), ("t1c",)), sequence_keep_prob=1.0)
    rng = np.random.default_rng(0)
    kept = {tuple(np.flatnonzero(augment(images, bits, np.ones(4, bool), config=cfg, rng=rng)[2]))
            for _ in range(40)}
    assert kept == {(1, 3), (1,)}                         # indices of t1c, t2f in SEQUENCES
    # A set that is not a proper subset of what is present is never chosen: random dropout instead
    present = np.array([True, False, True, True])         # t1n, t2w, t2f
    for _ in range(20):
        out = augment(images, bits, present, config=cfg, rng=rng)[2]
        assert 1 <= out.sum() <= 2 and not (out & ~present).any()
    # Same seed, same draw
    a = augment(images, bits, np.ones(4, bool), config=cfg, rng=np.random.default_rng(5))[2]
    b = augment(images, bits, np.ones(4, bool), config=cfg, rng=np.random.default_rng(5))[2]
    assert np.array_equal(a, b)
    with pytest.raises(InputError, match="sequence_keep_sets"):
        AugmentConfig(sequence_keep_sets=(("t1c", "dwi"),))


# ----------------------------------------------------------------------------- loss

def test_masked_loss_has_no_gradient_for_unsupervised_slots():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    target = (torch.rand(2, 3, 8, 8, 8) > 0.7).float()
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = MaskedPromptLoss()(logits, target, mask)
    out.loss.backward()
    g = logits.grad.flatten(2).abs().sum(-1)
    assert (g[mask == 0] == 0).all() and (g[mask == 1] > 0).all()
    assert torch.isclose(out.loss, (out.per_prompt * mask).sum() / 2)
    # An empty target is learned as an empty mask: lower logits, lower loss
    empty = torch.zeros(1, 1, 8, 8, 8)
    lo = MaskedPromptLoss()(torch.full_like(empty, -4.0), empty, torch.ones(1, 1)).loss
    hi = MaskedPromptLoss()(torch.full_like(empty, 1.0), empty, torch.ones(1, 1)).loss
    assert lo < hi


# ----------------------------------------------------------------------------- config

def test_config_overrides_and_errors(tmp_path):
    cfg = load_config("train/configs/tiny_test.yaml", ["max_steps=9", "data.sources.0.weight=3", "data.crop_size=[8,8,8]"])
    assert cfg.max_steps == 9 and cfg.data.sources[0].weight == 3.0 and cfg.data.crop_size == (8, 8, 8)
    for name in ("tiny_phantoms", "base_phantoms", "finetune_lora"):
        assert load_config(f"train/configs/{name}.yaml").name == name
    with pytest.raises(InputError, match="unknown key"):
        load_config("train/configs/tiny_test.yaml", ["optim.learning_rate=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(InputError, match="init_checkpoint"):
        load_config("train/configs/tiny_test.yaml", ["lora.enabled=true"])


def test_train_script_reports_bad_config_in_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", "train/train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.yaml" in err and "cannot read" in err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\ndata: {sources: [{name: a, kind: folder, path: /nowhere, label_map: {'1': ED}}]}\n")
    assert script.main(["--config", str(cfg), "--override", "max_steps=0"]) == 2
    assert "max_steps" in capsys.readouterr().err
