"""End-to-end training on tiny partial-label data: checkpoints, resume, validation, LoRA, 2 ranks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from vlseg.training.config import load_config

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "train" / "configs" / "tiny_test.yaml"


@torch.no_grad()
def fixed_set_loss(model, entries, config, *, samples: int = 8, seed: int = 1234) -> float:
    """Mean training loss over a fixed, un-augmented set of crops (same crops and phrases on every
    call), through the loop's own wrapper, dataset and loss."""
    from vlseg.training.loop import PromptedSegmenter
    from vlseg.training.losses import MaskedPromptLoss
    from vlseg.training.sources import MixtureDataset, collate

    ds = MixtureDataset(sources=entries, crop_size=config.data.crop_size,
                        prompts_per_sample=config.data.prompts_per_sample,
                        foreground_prob=config.data.foreground_prob, augment_config=None, seed=seed)
    rng = np.random.default_rng(seed)
    batch = collate([ds.sample(rng) for _ in range(samples)])
    model.eval()
    logits = PromptedSegmenter(model)(batch["images"], batch["present"], batch["phrases"])
    loss_fn = MaskedPromptLoss(bce_weight=config.loss.bce_weight, dice_weight=config.loss.dice_weight,
                               smooth=config.loss.dice_smooth)
    return float(loss_fn(logits, batch["targets"], batch["loss_mask"]).loss)


def write_tiny_cases(root: Path, *, n: int, label: str, seed: int, shape=(24, 28, 24)) -> Path:
    """Generic-folder cases (``caseNN_{t1n,t1c,t2w,t2f,seg}.nii.gz``, 2 mm) labelling one concept as 1."""
    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    brain = sum(((g - m) / (s * 0.45)) ** 2 for g, m, s in zip((zz, yy, xx), c, shape)) < 1
    for i in range(n):
        d = root / f"case{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        t = c + rng.integers(-3, 4, size=3)
        r = np.sqrt((zz - t[0]) ** 2 + (yy - t[1]) ** 2 + (xx - t[2]) ** 2)
        et, ed = (r < 4) & (r >= 2), (r < 7) & (r >= 4)
        for seq in ("t1n", "t1c", "t2w", "t2f"):
            img = brain * (100 + 10 * rng.normal(size=shape)) + 80 * et * (seq == "t1c") + 60 * ed * (seq in ("t2w", "t2f"))
            nib.save(nib.Nifti1Image(img.astype(np.float32), affine), d / f"case{i:02d}_{seq}.nii.gz")
        nib.save(nib.Nifti1Image((ed if label == "ED" else et).astype(np.uint8), affine), d / f"case{i:02d}_seg.nii.gz")
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_train")
    write_tiny_cases(root / "ed", n=3, label="ED", seed=1)
    write_tiny_cases(root / "et", n=3, label="ET", seed=2)
    write_tiny_cases(root / "val", n=1, label="ED", seed=3)
    return root


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.sources.0.path={data / 'ed'}", f"data.sources.1.path={data / 'et'}",
            f"data.cache_dir={data / 'cache'}", f"output_dir={out}", *extra]


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """4 steps (checkpoints at 2 and 4) with validation on a separate folder at step 4."""
    from vlseg.training.loop import train

    out = tmp_path_factory.mktemp("run")
    val = ("val.sources=[{name: val, kind: folder, path: " + str(tiny_data / "val") + ", label_map: {'1': ED}}]")
    cfg = load_config(CONFIG, overrides(tiny_data, out, val, "val.every=4", "val.max_cases=1",
                                        "val.sequence_sets=[[t1n, t1c, t2w, t2f], [t1c, t2f]]"))
    summary = train(cfg, progress=False)
    assert summary["step"] == 4
    return out


def test_training_writes_checkpoints_logs_and_validation(trained):
    from vlseg.model import load_model

    log = read_log(trained)
    assert [r["step"] for r in log if r["event"] == "train"] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in log if r["event"] == "train")
    val = [r for r in log if r["event"] == "val"]
    assert len(val) == 1 and set(val[0]["all4"]) == {"ED", "mean"}         # only what the source labels
    assert {"all4", "t1c+t2f", "heldout_text"} <= set(val[0])
    assert 0.0 <= val[0]["all4"]["ED"] <= 1.0
    ckpts = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert ckpts == ["step_0000002", "step_0000004"]
    meta = json.loads((trained / "checkpoints" / "step_0000004" / "config.json").read_text())
    prov = meta["provenance"]
    assert prov["steps"] == 4 and prov["seed"] == 0 and "git_commit" in prov and prov["wall_time_s"] > 0
    assert [s["supervises"] for s in prov["data_sources"]] == [["ED"], ["ET"]]
    assert (trained / "best" / "model.safetensors").is_file() and (trained / "config.yaml").is_file()
    # The checkpoint loads through the ordinary (pickle-free) loader; the text base stays out of it
    model = load_model(trained / "checkpoints" / "step_0000004")
    assert model.config.name == "tiny_test"
    from safetensors.torch import load_file

    keys = load_file(str(trained / "checkpoints" / "step_0000004" / "model.safetensors")).keys()
    assert all("lora_" in k for k in keys if k.startswith("text_encoder."))
    assert any("lora_" in k for k in keys)
    state = json.loads((trained / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert state["step"] == 4 and (trained / "checkpoints" / "step_0000004" / "optimizer.safetensors").is_file()


def test_resume_continues_from_last_checkpoint(trained, tiny_data, tmp_path):
    from vlseg.training.loop import build_optimizer, load_optimizer, train

    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    cfg = load_config(CONFIG, overrides(tiny_data, out, "max_steps=6"))
    summary = train(cfg, resume=True, progress=False)
    log = read_log(out)
    starts = [r for r in log if r["event"] == "start"]
    assert starts[-1]["step"] == 4 and starts[-1]["resumed_from"].endswith("step_0000004")
    assert [r["step"] for r in log if r["event"] == "train"][-2:] == [5, 6]
    assert summary["step"] == 6 and summary["wall_time_s"] > 0
    # Optimizer moments survive the safetensors/JSON round trip
    from vlseg.training.build import build_training_model

    model, _ = build_training_model(cfg, resume_dir=out / "checkpoints" / "step_0000006")
    opt = build_optimizer(model, cfg)
    state = json.loads((out / "checkpoints" / "step_0000006" / "state.json").read_text())
    load_optimizer(opt, out / "checkpoints" / "step_0000006" / "optimizer.safetensors", state["optimizer"])
    moments = [s["exp_avg"] for s in opt.state_dict()["state"].values()]
    assert moments and all(torch.isfinite(m).all() for m in moments) and any(m.abs().sum() > 0 for m in moments)


def test_text_encoder_base_is_frozen_lora_trains(tiny_data, tmp_path):
    from vlseg.training.build import build_training_model

    cfg = load_config(CONFIG, overrides(tiny_data, tmp_path))
    model, spec = build_training_model(cfg)
    assert spec is None
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    text = [n for n in trainable if n.startswith("text_encoder.")]
    assert text and all("lora_" in n for n in text)
    assert any(n.startswith("image_encoder.") for n in trainable)
    assert not any(p.requires_grad for n, p in model.text_encoder.named_parameters() if "lora_" not in n)


def test_finetune_lora_lowers_loss_and_saves_only_adapter(trained, tiny_data, tmp_path):
    from vlseg.model import load_model
    from vlseg.model.checkpoint import checkpoint_sha256
    from vlseg.training.cache import build_cache
    from vlseg.training.loop import train

    base = trained / "checkpoints" / "step_0000004"
    out = tmp_path / "ft"
    # Fine-tune on the edema-only set
    cfg = load_config(CONFIG, overrides(tiny_data, out, f"init_checkpoint={base}", "lora.enabled=true",
                                        "lora.rank=4", "lora.alpha=8", "max_steps=16", "checkpoint_every=16",
                                        "optim.lr=0.01", "optim.text_lr=0.002", "optim.scheduler=constant",
                                        "data.sources=[{name: only_ed, kind: folder, path: "
                                        + str(tiny_data / "ed") + ", label_map: {'1': ED}}]"))
    train(cfg, progress=False)
    adapter = out / "checkpoints" / "step_0000016"
    assert {p.name for p in adapter.iterdir()} >= {"adapter.safetensors", "adapter.json"}
    assert not (adapter / "model.safetensors").exists()
    meta = json.loads((adapter / "adapter.json").read_text())
    assert meta["base"] == {"sha256": checkpoint_sha256(base), "name": None, "path": str(base.resolve())}

    entries = build_cache(cfg.data.sources, cache_dir=cfg.data.cache_dir, spacing_mm=2.0, progress=False)
    before = fixed_set_loss(load_model(base), entries, cfg)
    after = fixed_set_loss(load_model(adapter), entries, cfg)   # base found by path, sha checked
    assert after < before, (before, after)


@pytest.fixture(scope="module")
def shipped_lora_run(tiny_data, tmp_path_factory) -> Path:
    """train/configs/finetune_lora.yaml as shipped (bundled base), cut to 2 small steps."""
    from vlseg.training.loop import train

    out = tmp_path_factory.mktemp("finetune_lora")
    cfg = load_config(REPO / "train" / "configs" / "finetune_lora.yaml", [
        f"data.sources.0.path={tiny_data / 'ed'}", f"data.cache_dir={tiny_data / 'cache'}", f"output_dir={out}",
        "max_steps=2", "checkpoint_every=2", "optim.warmup_steps=1", "data.crop_size=[32, 32, 32]",
        "data.batch_size=1", "data.prompts_per_sample=2", "threads=1"])
    train(cfg, progress=False)
    return out / "checkpoints" / "step_0000002"


def test_segment_answers_with_a_lora_run_folder(shipped_lora_run, phantom_case_2mm, tmp_path, capsys):
    """The folder a LoRA run writes is a model: `vlseg segment --model` answers with it and
    answer.json names the base and the adapter; a tampered base sha is a one-line error."""
    from vlseg.cli import main
    from vlseg.model.adapters import adapter_sha256
    from vlseg.model.checkpoint import WEIGHTS_DIR, checkpoint_sha256

    out = tmp_path / "answer"
    rc = main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
               "--out", str(out), "--model", str(shipped_lora_run), "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    model = json.loads((out / "answer.json").read_text())["model"]
    base_sha = checkpoint_sha256(WEIGHTS_DIR / "default")
    assert model["checkpoint"] == "default" and model["checkpoint_sha256"] == base_sha
    assert model["base"] == {"checkpoint": "default", "sha256": base_sha}
    assert model["adapter"]["sha256"] == adapter_sha256(shipped_lora_run)
    assert model["adapter"]["name"].endswith("/step_0000002")
    assert (out / "ED.nii.gz").is_file()
    capsys.readouterr()

    tampered = tmp_path / "tampered"
    shutil.copytree(shipped_lora_run, tampered)
    meta = json.loads((tampered / "adapter.json").read_text())
    meta["base"]["sha256"] = "0" * 64
    (tampered / "adapter.json").write_text(json.dumps(meta))
    rc = main(["segment", "--case", str(phantom_case_2mm), "--query", "segment the edema",
               "--out", str(tmp_path / "bad"), "--model", str(tampered)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "trained on base checkpoint sha256 000000000000" in err
    assert not (tmp_path / "bad" / "answer.json").exists()


@pytest.mark.slow
def test_two_processes_agree_on_weights(tiny_data, tmp_path):
    """`accelerate launch` with 2 CPU processes (DDP over gloo): both ranks end with equal weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "train" / "train.py"), "--config", str(CONFIG), "--no-progress",
           "--override", *overrides(tiny_data, out, "max_steps=3", "checkpoint_every=3")]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    start = read_log(out)[0]
    assert start["processes"] == 2 and "gloo" in start["distributed"]
