"""Training on the randomized source, and continuing a run for a bounded number of steps
(``train/continue_run.py``, what ``train/gpu_recipe.sh`` calls) on CPU."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from vlseg.training.config import load_config

REPO = Path(__file__).resolve().parent.parent
TINY_TEST = REPO / "train" / "configs" / "tiny_test.yaml"
RANDOMIZED_ONLY = ("data.sources=[{name: randomized, kind: randomized, weight: 1.0,"
                   " randomize: {tumor_reuse: 1.0, p_no_tumor: 0.0, p_large: 0.0, p_multifocal: 0.0}}]")


def _continue_run():
    spec = importlib.util.spec_from_file_location("continue_run", REPO / "train" / "continue_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_randomized_config_mixes_randomized_and_phantoms():
    cfg = load_config(REPO / "train" / "configs" / "tiny_randomized.yaml")
    kinds = {s.name: s.kind for s in cfg.data.sources}
    assert kinds == {"randomized": "randomized", "phantoms_train": "phantoms"}
    assert cfg.threads == 1 and cfg.data.num_workers == 1
    # It starts from the phantom-only model kept in train/resume/, the base the bundled default records
    from vlseg.model import checkpoint_sha256
    from vlseg.model.checkpoint import read_checkpoint_config, resolve_checkpoint

    start = checkpoint_sha256(resolve_checkpoint(REPO / cfg.init_checkpoint))
    bundled = read_checkpoint_config(resolve_checkpoint("default"))["provenance"]
    assert bundled["base_checkpoint"]["sha256"] == start
    assert cfg.augment.sequence_keep_sets and ("t1c", "t2f") in cfg.augment.sequence_keep_sets
    assert cfg.checkpoint_every == 50
    assert {s.kind for s in cfg.val.sources} == {"phantoms", "brats2023"}


@pytest.fixture(scope="module")
def randomized_run(tmp_path_factory) -> Path:
    from vlseg.training.loop import train

    out = tmp_path_factory.mktemp("rand_run")
    cfg = load_config(TINY_TEST, [RANDOMIZED_ONLY, f"output_dir={out}", "max_steps=2", "checkpoint_every=2",
                                  f"data.cache_dir={out / 'cache'}", "data.batch_size=1"])
    summary = train(cfg, progress=False)
    assert summary["step"] == 2
    return out


def test_training_on_randomized_samples_logs_and_checkpoints(randomized_run):
    log = [json.loads(line) for line in (randomized_run / "log.jsonl").read_text().splitlines()]
    start = next(r for r in log if r["event"] == "start")
    assert start["cases"] == {"randomized": 0}
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert losses and all(loss == loss and loss > 0 for loss in losses)
    assert (randomized_run / "checkpoints" / "step_0000002" / "state.json").is_file()


def test_continue_run_resumes_into_a_new_folder_on_cpu(randomized_run, tmp_path):
    cr = _continue_run()
    out = tmp_path / "more"
    code = cr.main(["--config", str(TINY_TEST), "--from", str(randomized_run), "--steps", "1", "--out", str(out),
                    "--no-progress", "--override", RANDOMIZED_ONLY, "data.batch_size=1",
                    f"data.cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["start_step"] == 2 and summary["step"] == 3 and summary["device"] == "cpu"
    assert summary["mixed_precision"] == "no"
    assert (out / "checkpoints" / "step_0000003" / "state.json").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["resumed_from"].endswith("step_0000002")
    # A non-empty output folder and a missing resume point are one-line errors.
    assert cr.main(["--config", str(TINY_TEST), "--from", str(randomized_run), "--steps", "1",
                    "--out", str(out)]) == 2
    assert cr.main(["--config", str(TINY_TEST), "--from", str(tmp_path / "nothing"), "--steps", "1",
                    "--out", str(tmp_path / "other")]) == 2


def test_continue_run_checks_the_checkpoint_model_with_the_checkpoint_reader(randomized_run, tmp_path, capsys):
    import shutil

    cr = _continue_run()
    ckpt = randomized_run / "checkpoints" / "step_0000002"
    assert cr._checkpoint_model_name(ckpt) == "tiny_test"
    base = ["--config", str(TINY_TEST), "--steps", "1", "--no-progress", "--override", RANDOMIZED_ONLY]
    # A config training another model is refused before anything is copied.
    assert cr.main([*base, "model.name=other", "--from", str(ckpt), "--out", str(tmp_path / "a")]) == 2
    assert "checkpoint is a 'tiny_test' model but the config trains 'other'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # config.json is read as a vlseg checkpoint (format checked), not as any JSON.
    bad = tmp_path / "bad" / "step_0000002"
    shutil.copytree(ckpt, bad)
    meta = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**meta, "format": "something-else"}))
    assert cr.main([*base, "--from", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "continue_run: error:" in capsys.readouterr().err


def test_gpu_recipe_parses_and_checks_its_arguments(tmp_path):
    script = REPO / "train" / "gpu_recipe.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(script), "huge"], capture_output=True, text=True,
                       env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "preset must be tiny, base or refine" in r.stderr
